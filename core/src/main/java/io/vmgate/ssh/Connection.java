package io.vmgate.ssh;

import io.vmgate.agent.AgentGoneException;
import io.vmgate.agent.GuestProcess;
import io.vmgate.vm.Vm;
import io.vmgate.vm.VmException;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.HexFormat;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.sshd.common.AttributeRepository.AttributeKey;
import org.apache.sshd.common.SshConstants;
import org.apache.sshd.common.session.Session;
import org.apache.sshd.common.util.buffer.Buffer;
import org.apache.sshd.server.session.ServerSession;

/**
 * One SSH connection and the VM that belongs to it. The VM is launched at the first
 * shell/exec/subsystem (so a connection that only authenticates costs nothing), shared by
 * every channel, and destroyed when the connection ends. If it dies first, {@link #terminated()}
 * completes with the message every channel shows the user.
 *
 * <p>Once the VM is up, the idle timeout and the maximum session time run on the server's one
 * scheduler thread: a check is scheduled for when the next thing could happen (a warning, the
 * end), and channels mark activity by writing a volatile timestamp. A timeout warns the user
 * (stderr of every running command), later sends SIGTERM to the guest processes, waits the grace
 * period, destroys the VM (every command ends with the message and status 255) and closes the
 * connection.
 */
@SuppressWarnings("try") // MDC scopes: try-with-resources for the side effect
final class Connection {
    static final AttributeKey<Connection> KEY = new AttributeKey<>();
    private static final SecureRandom RANDOM = new SecureRandom();
    private static final Duration CONFIGURE_TIMEOUT = Duration.ofSeconds(10);
    /** After a timeout destroyed the VM: how long commands get to deliver the message before the connection closes. */
    private static final Duration REPORT_TIMEOUT = Duration.ofSeconds(5);
    /** ...and once its channels are closed, how long a client gets to disconnect by itself. */
    private static final Duration CLIENT_LEAVE_TIME = Duration.ofSeconds(1);

    final String id;
    final ServerSession session;
    final String remote;
    final String remoteIp;
    final long acceptedNanos = System.nanoTime();
    private final VmgateSshServer server;
    private final AtomicInteger channels = new AtomicInteger();
    private final AtomicInteger channelSeq = new AtomicInteger();
    private final java.util.Set<CompletableFuture<Void>> running = java.util.concurrent.ConcurrentHashMap.newKeySet();
    private final java.util.Set<GuestCommand> commands = java.util.concurrent.ConcurrentHashMap.newKeySet();
    /** Last input from the client or output from the guest on any channel (System.nanoTime). */
    private volatile long lastActivityNanos = System.nanoTime();
    /** Set once a timeout is ending the session: the message every command ends with. */
    private volatile String ending;
    private volatile String user;
    volatile String lastAuthMethod = "none";

    // VM state, guarded by this
    private CompletableFuture<Vm> launch;
    private Vm vm;
    private long vmStartNanos;
    private boolean holdsSlot;
    private String slotUser;
    private ScheduledFuture<?> idleTimer;
    private ScheduledFuture<?> timeTimer;
    private boolean idleWarned;
    private long idleWarnedAt;
    private long activityAtWarning;
    private boolean closed;
    private int busy; // launches and teardowns in progress
    private final CompletableFuture<String> terminated = new CompletableFuture<>();
    private final CompletableFuture<Void> released = new CompletableFuture<>();
    private ScheduledFuture<?> keepalive;
    private int keepaliveMissed;

    Connection(VmgateSshServer server, ServerSession session) {
        this.server = server;
        this.session = session;
        this.id = HexFormat.of().formatHex(randomBytes(4));
        SocketAddress a = session.getClientAddress();
        if (a instanceof InetSocketAddress in) {
            this.remoteIp = in.getAddress() != null ? in.getAddress().getHostAddress() : in.getHostString();
            this.remote = (remoteIp.contains(":") ? "[" + remoteIp + "]" : remoteIp) + ":" + in.getPort();
        } else {
            this.remoteIp = String.valueOf(a);
            this.remote = remoteIp;
        }
    }

    static Connection of(Session session) {
        Connection c = session.getAttribute(KEY);
        if (c == null) {
            throw new IllegalStateException("no vmgate connection for " + session);
        }
        return c;
    }

    /** {@code conn=... user=... remote=...}, the prefix of every event about this connection. */
    String tag() {
        return "conn=" + id + " user=" + Events.v(user) + " remote=" + Events.v(remote);
    }

    String user() {
        return user;
    }

    Events.Scope scope() {
        return Events.scope(id);
    }

    int nextChannelNumber() {
        return channelSeq.incrementAndGet();
    }

    void authenticated(String userName) {
        this.user = userName;
        Events.log.info("auth_succeeded {} method={} ms={}", tag(), Events.v(lastAuthMethod), Events.msSince(acceptedNanos));
        startKeepalive();
    }

    /** Counts a new session channel; false if the connection already has its maximum open. */
    boolean tryOpenChannel(int max) {
        while (true) {
            int n = channels.get();
            if (n >= max) {
                return false;
            }
            if (channels.compareAndSet(n, n + 1)) {
                return true;
            }
        }
    }

    void channelClosed() {
        channels.decrementAndGet();
    }

    synchronized boolean isClosed() {
        return closed;
    }

    /** Registers a running command; complete the returned future when its exit has been sent. */
    CompletableFuture<Void> commandStarted(GuestCommand command) {
        CompletableFuture<Void> done = new CompletableFuture<>();
        running.add(done);
        commands.add(command);
        activity();
        done.whenComplete((r, e) -> {
            running.remove(done);
            commands.remove(command);
        });
        return done;
    }

    /** Input from the client or output from the guest: resets the idle clock. Cheap enough for every read. */
    void activity() {
        lastActivityNanos = System.nanoTime();
    }

    /** The message commands end with when a timeout is ending the session, else null. */
    String ending() {
        return ending;
    }

    /** Completes when every command running now has delivered its exit status. */
    CompletableFuture<Void> commandsDone() {
        return CompletableFuture.allOf(running.toArray(CompletableFuture[]::new));
    }

    /** Completes (with the message for the user) when the VM died or the server is shutting down. */
    CompletableFuture<String> terminated() {
        return terminated;
    }

    /** Completes once the connection is closed and nothing of its VM is left. */
    CompletableFuture<Void> released() {
        return released;
    }

    /**
     * The connection's VM, launching it if this is the first request. Blocks for as long as the
     * launch takes, so call it from a thread of the session, never from an I/O thread.
     */
    Vm acquireVm() throws Refusal {
        CompletableFuture<Vm> mine = null;
        CompletableFuture<Vm> theirs;
        synchronized (this) {
            if (closed) {
                throw new Refusal("vmgate: the connection is closing");
            }
            if (terminated.isDone()) {
                throw new Refusal(terminated.join());
            }
            if (ending != null) {
                throw new Refusal(ending);
            }
            if (server.isStopping()) {
                throw new Refusal(VmgateSshServer.SHUTDOWN_MESSAGE);
            }
            theirs = launch;
            if (theirs == null) {
                String u = Objects.requireNonNullElse(user, "");
                if (!server.tryAcquireUserSlot(u)) {
                    int max = server.config().maxSessionsPerUser();
                    Events.log.warn("session_refused_per_user_limit {} max_sessions_per_user={} live={}", tag(), max,
                            server.liveSessions(u));
                    throw new Refusal("vmgate: you already have " + max + (max == 1 ? " session" : " sessions")
                            + " open, the most allowed per user; close one and try again");
                }
                if (!server.tryAcquireSlot()) {
                    server.releaseUserSlot(u);
                    int max = server.config().maxSessions();
                    Events.log.warn("capacity_refused {} max_sessions={}", tag(), max);
                    throw new Refusal("vmgate: server is at capacity (" + max + " sessions), try again later");
                }
                holdsSlot = true;
                slotUser = u;
                busy++;
                launch = mine = new CompletableFuture<>();
            }
        }
        if (theirs != null) {
            try {
                return theirs.join();
            } catch (CompletionException e) {
                throw e.getCause() instanceof Refusal r ? r : new Refusal("vmgate: " + e.getCause().getMessage());
            }
        }
        return launch(mine);
    }

    private Vm launch(CompletableFuture<Vm> mine) throws Refusal {
        long t0 = System.nanoTime();
        String vmId = "ssh-" + id;
        Events.log.info("vm_requested {} vm={}", tag(), vmId);
        Vm v = null;
        String failure;
        try {
            v = server.config().launcher().launch(vmId);
            if (v == null) {
                throw new VmException("the VM launcher returned no VM");
            }
            String hostname = server.config().guestHostname();
            if (hostname != null) {
                v.agent().configure(System.currentTimeMillis() * 1_000_000L, hostname, randomBytes(64), CONFIGURE_TIMEOUT);
            }
            failure = null;
        } catch (VmException e) {
            failure = e.getMessage();
        } catch (IOException | TimeoutException e) {
            failure = "the VM started but its agent did not answer: " + e.getMessage();
        } catch (RuntimeException | Error e) {
            failure = "could not start a VM: " + e;
            Events.log.error("vm_launch_crashed {}", tag(), e);
        }
        if (failure != null) {
            Events.log.warn("vm_failed {} vm={} ms={} error={}", tag(), vmId, Events.msSince(t0), Events.v(failure));
            if (v != null) {
                closeQuietly(v);
            }
            Refusal r = new Refusal("vmgate: " + failure);
            synchronized (this) {
                launch = null; // a later request on this connection may try again
                releaseSlot();
                busy--;
                checkReleased();
            }
            mine.completeExceptionally(r);
            throw r;
        }
        boolean closedMeanwhile;
        synchronized (this) {
            closedMeanwhile = closed;
            if (!closedMeanwhile) {
                vm = v;
                vmStartNanos = t0;
                busy--;
            }
        }
        if (closedMeanwhile) {
            Events.log.info("vm_assigned {} vm={} ms={} unused=true", tag(), vmId, Events.msSince(t0));
            destroy(v, t0);
            Refusal r = new Refusal("vmgate: the connection is closing");
            mine.completeExceptionally(r);
            throw r;
        }
        Events.log.info("vm_assigned {} vm={} ms={}", tag(), vmId, Events.msSince(t0));
        Vm launched = v;
        launched.exited().whenComplete((r, e) -> vmDied(launched, "the VM exited"));
        launched.agent().disconnected().whenComplete((r, e) -> vmDied(launched, "lost the connection to the VM's agent"));
        startTimers();
        mine.complete(launched);
        return launched;
    }

    /** The user-facing explanation for a failed guest operation, preferring what we know about the VM. */
    String explain(Throwable failure) {
        String known = terminated.getNow(null);
        if (known != null) {
            return known;
        }
        if (failure instanceof AgentGoneException || failure.getCause() instanceof AgentGoneException) {
            return "vmgate: the VM stopped unexpectedly: lost the connection to the VM's agent";
        }
        return "vmgate: " + failure.getMessage();
    }

    private void vmDied(Vm v, String reason) {
        long started;
        synchronized (this) {
            if (vm != v || closed) {
                return; // torn down on purpose, or already handled
            }
            vm = null;
            started = vmStartNanos;
            busy++;
        }
        try (var s = scope()) {
            Events.log.warn("vm_died {} vm={} reason={} lifetime_ms={} diagnostics={}", tag(), v.id(), Events.v(reason),
                    Events.msSince(started), Events.v(safeDiagnostics(v)));
        }
        terminated.complete("vmgate: the VM stopped unexpectedly: " + reason);
        Thread.ofVirtual().name("vm-teardown-" + id).start(() -> {
            try (var s = scope()) {
                destroy(v, started);
            }
        });
    }

    /** Tells every channel that the server is going away (they print it and exit 255). */
    void shutdown(String message) {
        terminated.complete(message);
    }

    /** The SSH connection is gone: destroy the VM (if any) and forget everything. */
    void close() {
        Vm v;
        long started;
        synchronized (this) {
            if (closed) {
                return;
            }
            closed = true;
            v = vm;
            vm = null;
            started = vmStartNanos;
            if (v != null) {
                busy++;
            }
            if (keepalive != null) {
                keepalive.cancel(false);
            }
            cancelTimers();
        }
        terminated.complete("vmgate: the connection is closing");
        Events.log.info("connection_closed {} ms={}", tag(), Events.msSince(acceptedNanos));
        if (v != null) {
            Thread.ofVirtual().name("vm-teardown-" + id).start(() -> {
                try (var s = scope()) {
                    destroy(v, started);
                }
            });
        } else {
            synchronized (this) {
                checkReleased();
            }
        }
    }

    /** Tears a VM down and gives its slot back; the caller has counted itself in {@link #busy}. */
    private void destroy(Vm v, long startedNanos) {
        long t0 = System.nanoTime();
        closeQuietly(v);
        Events.log.info("vm_released {} vm={} ms={} lifetime_ms={}", tag(), v.id(), Events.msSince(t0), Events.msSince(startedNanos));
        synchronized (this) {
            releaseSlot();
            busy--;
            checkReleased();
        }
    }

    private void releaseSlot() {
        if (holdsSlot) {
            holdsSlot = false;
            server.releaseSlot();
            server.releaseUserSlot(slotUser);
        }
    }

    private void checkReleased() {
        if (closed && busy == 0 && vm == null) {
            released.complete(null);
        }
    }

    private static void closeQuietly(Vm v) {
        try {
            v.close();
        } catch (RuntimeException e) {
            Events.log.error("vm_close_failed vm={}", v.id(), e);
        }
    }

    private static String safeDiagnostics(Vm v) {
        try {
            String d = v.diagnostics();
            return d == null ? "" : d.strip();
        } catch (RuntimeException e) {
            return e.toString();
        }
    }

    // --- idle timeout and maximum session time

    /** The VM is ready: the session clocks start. */
    private void startTimers() {
        ServerConfig c = server.config();
        activity();
        synchronized (this) {
            if (closed || ending != null) {
                return;
            }
            if (!c.idleTimeout().isZero()) {
                idleTimer = schedule(this::idleCheck, c.idleTimeout().minus(c.warningBefore(c.idleTimeout())).toNanos());
            }
            Duration max = c.maxSessionTime();
            if (!max.isZero()) {
                Duration warn = c.warningBefore(max);
                timeTimer = warn.isZero() ? schedule(this::timeLimit, max.toNanos())
                        : schedule(this::timeWarning, max.minus(warn).toNanos());
            }
        }
    }

    /** Caller holds the lock. */
    private void cancelTimers() {
        if (idleTimer != null) {
            idleTimer.cancel(false);
        }
        if (timeTimer != null) {
            timeTimer.cancel(false);
        }
    }

    /** Runs {@code task} on the server's timer thread, in this connection's MDC scope; null once the server stopped. */
    private ScheduledFuture<?> schedule(Runnable task, long delayNanos) {
        try {
            return server.scheduler().schedule(() -> {
                try (var s = scope()) {
                    task.run();
                } catch (RuntimeException e) {
                    Events.log.error("timer_failed {}", tag(), e);
                }
            }, Math.max(0, delayNanos), TimeUnit.NANOSECONDS);
        } catch (RejectedExecutionException e) {
            return null; // the server is stopping
        }
    }

    /**
     * The idle clock, on the timer thread: warn once the connection has been idle for the timeout
     * minus the warning, end it if nothing happened during the warning, else start over. Always
     * reschedules itself for the next moment something could happen; never blocks.
     */
    private void idleCheck() {
        ServerConfig c = server.config();
        Duration timeout = c.idleTimeout();
        Duration warning = c.warningBefore(timeout);
        long now = System.nanoTime();
        long last = lastActivityNanos;
        long idle = now - last;
        boolean warn = false;
        synchronized (this) {
            if (closed || ending != null) {
                return;
            }
            if (idleWarned && last != activityAtWarning) {
                idleWarned = false; // there was activity after the warning: start over
            }
            if (idleWarned) {
                long left = idleWarnedAt + warning.toNanos() - now;
                if (left > 0) {
                    idleTimer = schedule(this::idleCheck, left);
                    return;
                }
            } else if (!warning.isZero()) {
                long untilWarning = timeout.minus(warning).toNanos() - idle;
                if (untilWarning > 0) {
                    idleTimer = schedule(this::idleCheck, untilWarning);
                    return;
                }
                idleWarned = true;
                idleWarnedAt = now;
                activityAtWarning = last;
                idleTimer = schedule(this::idleCheck, warning.toNanos());
                warn = true;
            } else if (idle < timeout.toNanos()) {
                idleTimer = schedule(this::idleCheck, timeout.toNanos() - idle);
                return;
            }
        }
        if (warn) {
            // (the idle time as it is: after activity that followed an earlier warning it can exceed timeout - warning)
            long idleMs = idle / 1_000_000;
            Duration idleFor = idleMs >= 1000 ? Duration.ofSeconds((idleMs + 500) / 1000) : Duration.ofMillis(idleMs);
            int n = notifyCommands("vmgate: this session has been idle for " + Durations.format(idleFor)
                    + "; it will be closed in " + Durations.format(warning) + " unless there is activity");
            Events.log.info("session_idle_warning {} idle_ms={} closes_in_ms={} channels={}", tag(), idle / 1_000_000,
                    warning.toMillis(), n);
            return;
        }
        end("session_idle_timeout", "idle_ms=" + idle / 1_000_000 + " timeout_ms=" + timeout.toMillis(), "idle_timeout",
                "vmgate: session closed: idle for " + Durations.format(timeout));
    }

    private void timeWarning() {
        ServerConfig c = server.config();
        Duration max = c.maxSessionTime();
        Duration warning = c.warningBefore(max);
        synchronized (this) {
            if (closed || ending != null) {
                return;
            }
            timeTimer = schedule(this::timeLimit, warning.toNanos());
        }
        int n = notifyCommands("vmgate: this session will end in " + Durations.format(warning) + " (maximum session time "
                + Durations.format(max) + ")");
        Events.log.info("session_time_warning {} max_ms={} closes_in_ms={} channels={}", tag(), max.toMillis(),
                warning.toMillis(), n);
    }

    private void timeLimit() {
        Duration max = server.config().maxSessionTime();
        end("session_time_limit", "max_ms=" + max.toMillis(), "time_limit",
                "vmgate: session closed: maximum session time " + Durations.format(max) + " reached");
    }

    /** Writes a line to the stderr of every running command (asynchronously); returns how many. */
    private int notifyCommands(String message) {
        List<GuestCommand> now = List.copyOf(commands);
        now.forEach(cmd -> cmd.notice(message));
        return now.size();
    }

    /**
     * Ends the session for a timeout: SIGTERM to every guest process, the grace period (cut short
     * when they have all exited), then the VM is destroyed, every command ends with {@code message}
     * and status 255, and the connection closes. Runs the waiting on a virtual thread.
     */
    private void end(String event, String details, String reason, String message) {
        synchronized (this) {
            if (closed || ending != null || vm == null) {
                return;
            }
            ending = message;
            cancelTimers();
        }
        List<GuestProcess> processes = commands.stream().map(GuestCommand::process)
                .filter(p -> p != null && !p.exit().isDone()).toList();
        Duration grace = server.config().timeoutGrace();
        Events.log.warn("{} {} {} processes={} grace_ms={}", event, tag(), details, processes.size(), grace.toMillis());
        Thread.ofVirtual().name("vm-timeout-" + id).start(() -> {
            try (var s = scope()) {
                terminate(processes, grace, reason, message);
            }
        });
    }

    private void terminate(List<GuestProcess> processes, Duration grace, String reason, String message) {
        long t0 = System.nanoTime();
        for (GuestProcess p : processes) {
            try {
                p.signal("TERM");
            } catch (IOException e) {
                // the VM is going away anyway
            }
        }
        boolean exited = awaitQuietly(CompletableFuture.allOf(processes.stream()
                .map(p -> p.exit().handle((r, e) -> null)).toArray(CompletableFuture[]::new)), grace);
        Vm v;
        long started;
        synchronized (this) {
            v = vm;
            vm = null;
            started = vmStartNanos;
            if (v != null) {
                busy++;
            }
        }
        terminated.complete(message); // commands still running end with the message and 255
        if (v != null) {
            destroy(v, started);
        }
        Events.log.info("session_terminated {} reason={} exited_in_grace={} ms={}", tag(), reason, exited, Events.msSince(t0));
        // Let clients take the message and exit status and close their channels (OpenSSH then leaves on its
        // own, without "closed by remote host"); close whatever is still open after that.
        awaitQuietly(commandsDone(), REPORT_TIMEOUT);
        long deadline = System.nanoTime() + REPORT_TIMEOUT.toNanos();
        long noChannelsSince = 0;
        while (!isClosed() && System.nanoTime() < deadline) {
            if (channels.get() > 0) {
                noChannelsSince = 0;
            } else if (noChannelsSince == 0) {
                noChannelsSince = System.nanoTime();
            } else if (System.nanoTime() - noChannelsSince > CLIENT_LEAVE_TIME.toNanos()) {
                break; // a client that keeps the connection without channels
            }
            try {
                Thread.sleep(20);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
        }
        if (!isClosed()) {
            session.close(false);
        }
    }

    private static boolean awaitQuietly(CompletableFuture<?> f, Duration timeout) {
        try {
            f.get(timeout.toNanos(), TimeUnit.NANOSECONDS);
            return true;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        } catch (ExecutionException e) {
            return true;
        } catch (TimeoutException e) {
            return false;
        }
    }

    // --- keepalive, like OpenSSH's ClientAliveInterval / ClientAliveCountMax

    private void startKeepalive() {
        Duration every = server.config().keepaliveInterval();
        if (every.isZero()) {
            return;
        }
        synchronized (this) {
            if (closed || keepalive != null) {
                return;
            }
            keepalive = server.scheduler().scheduleAtFixedRate(this::probe, every.toMillis(), every.toMillis(), TimeUnit.MILLISECONDS);
        }
    }

    private void probe() {
        try (var s = scope()) {
            int missed;
            synchronized (this) {
                if (closed) {
                    return;
                }
                missed = ++keepaliveMissed;
            }
            if (missed > server.config().keepaliveCountMax()) {
                Events.log.warn("keepalive_timeout {} unanswered={}", tag(), missed - 1);
                session.close(true);
                return;
            }
            Buffer b = session.createBuffer(SshConstants.SSH_MSG_GLOBAL_REQUEST, 32);
            b.putString("keepalive@openssh.com");
            b.putBoolean(true);
            session.request(b, "keepalive@openssh.com", (cmd, reply) -> {
                synchronized (this) {
                    keepaliveMissed = 0;
                }
            });
        } catch (IOException | RuntimeException e) {
            // the session is closing; its close listener does the rest
        }
    }

    private static byte[] randomBytes(int n) {
        byte[] b = new byte[n];
        RANDOM.nextBytes(b);
        return b;
    }
}
