package io.vmgate.ssh;

import io.vmgate.exec.Guest;
import io.vmgate.exec.GuestGoneException;
import io.vmgate.exec.Execution;
import io.vmgate.exec.Waiting;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.security.SecureRandom;
import io.vmgate.record.Recordings;
import java.time.Duration;
import java.time.Instant;
import java.util.HexFormat;
import java.util.List;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.LongAdder;
import java.util.function.BooleanSupplier;
import org.apache.sshd.common.AttributeRepository.AttributeKey;
import org.apache.sshd.common.session.Session;
import org.apache.sshd.server.session.ServerSession;
import org.slf4j.event.KeyValuePair;
import org.slf4j.spi.LoggingEventBuilder;

/**
 * One SSH connection and its guest. The guest is opened at the first shell/exec/subsystem (so a
 * connection that only authenticates costs nothing), shared by every channel, and closed when the
 * connection ends. If it is lost first, {@link #terminated()} completes with the ending every
 * channel reports to the user.
 *
 * <p>Its collaborators: the server's {@link SessionSlots} (limits), the {@link GuestSource}, and
 * a {@link SessionClock} of its own (idle and lifetime timeouts), which calls back here to warn
 * the user and to end the session: SIGTERM to the guest's processes, the grace period, the guest
 * closed (every command ends with the message and status 255), the connection closed.
 */
@SuppressWarnings("try") // MDC scopes: try-with-resources for the side effect
final class Connection implements SessionClock.Listener {
    static final AttributeKey<Connection> KEY = new AttributeKey<>();
    private static final SecureRandom RANDOM = new SecureRandom();
    /** After a timeout closed the guest: how long commands get to deliver the message before the connection closes. */
    private static final Duration REPORT_TIMEOUT = Duration.ofSeconds(5);
    /** ...and once its channels are closed, how long a client gets to disconnect by itself. */
    private static final Duration CLIENT_LEAVE_TIME = Duration.ofSeconds(1);

    final String id;
    final ServerSession session;
    final String remote;
    final String remoteIp;
    final long acceptedNanos = System.nanoTime();
    /** When the connection was accepted (for {@code vmgate sessions}). */
    final Instant startedAt = Instant.now();
    private final SessionSlots slots;
    private final GuestSource guests;
    private final Duration grace;
    final SshObserver observer;
    /** Where this connection's channels are recorded, or null. */
    final Recordings recordings;
    private final LongAdder bytesIn = new LongAdder();
    private final LongAdder bytesOut = new LongAdder();
    /** The key exchange finished (for the handshake metric). */
    volatile boolean keysEstablished;
    private final BooleanSupplier serverStopping;
    private final SessionClock clock;
    private final AtomicInteger channels = new AtomicInteger();
    private final AtomicInteger channelSeq = new AtomicInteger();
    private final Set<CompletableFuture<Void>> running = ConcurrentHashMap.newKeySet();
    private final Set<GuestCommand> commands = ConcurrentHashMap.newKeySet();
    private final CompletableFuture<Ending> terminated = new CompletableFuture<>();
    private final CompletableFuture<Void> released = new CompletableFuture<>();
    private volatile String user;
    /** Set once a timeout is ending the session: what every command ends with. */
    private volatile Ending ending;
    volatile String lastAuthMethod = "none";

    // guest state, guarded by this
    private CompletableFuture<Guest> opening;
    private Guest guest;
    private long guestStartNanos;
    /** The guest's notice for the user ({@link Guest#notice()}), until the first command takes it. */
    private final java.util.concurrent.atomic.AtomicReference<String> notice = new java.util.concurrent.atomic.AtomicReference<>();
    private SessionSlots.Slot slot;
    private Keepalive keepalive;
    private boolean closed;
    private int busy; // opens and teardowns in progress

    Connection(ServerSession session, SessionSlots slots, ServerConfig config, ScheduledExecutorService scheduler,
            SessionClock.Settings clockSettings, BooleanSupplier serverStopping) {
        this.session = session;
        this.slots = slots;
        this.guests = config.guests();
        this.grace = config.timeoutGrace();
        this.observer = config.observer();
        this.recordings = config.recordings();
        this.serverStopping = serverStopping;
        this.id = HexFormat.of().formatHex(randomBytes(4));
        SocketAddress a = session.getClientAddress();
        if (a instanceof InetSocketAddress in) {
            this.remoteIp = in.getAddress() != null ? in.getAddress().getHostAddress() : in.getHostString();
            this.remote = (remoteIp.contains(":") ? "[" + remoteIp + "]" : remoteIp) + ":" + in.getPort();
        } else {
            this.remoteIp = String.valueOf(a);
            this.remote = remoteIp;
        }
        this.clock = new SessionClock(scheduler, clockSettings, this, id, this::tagged);
    }

    static Connection of(Session session) {
        Connection c = session.getAttribute(KEY);
        if (c == null) {
            throw new IllegalStateException("no vmgate connection for " + session);
        }
        return c;
    }

    /**
     * Adds this connection's {@code conn}, {@code user} and {@code remote} to an event, the fields every
     * event about it starts with: {@code conn.tagged(Events.log.atInfo()).setMessage("vm_assigned")...log()}.
     */
    LoggingEventBuilder tagged(LoggingEventBuilder event) {
        return event.addKeyValue("conn", id).addKeyValue("user", user).addKeyValue("remote", remote);
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

    /** Authentication succeeded; {@code probes} (or null) keeps checking that the client is alive. */
    void authenticated(String userName, java.util.function.Function<Connection, Keepalive> probes) {
        this.user = userName;
        tagged(Events.log.atInfo()).setMessage("auth_succeeded").addKeyValue("method", lastAuthMethod)
                .addKeyValue("ms", Events.msSince(acceptedNanos)).log();
        synchronized (this) {
            if (!closed && keepalive == null) {
                keepalive = probes.apply(this);
            }
        }
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
        clock.activity();
    }

    /** {@code n} bytes from the client reached the guest: activity, counted. */
    void bytesIn(int n) {
        clock.activity();
        bytesIn.add(n);
        observer.bytesIn(n);
    }

    /** {@code n} bytes from the guest are going to the client: activity, counted. */
    void bytesOut(int n) {
        clock.activity();
        bytesOut.add(n);
        observer.bytesOut(n);
    }

    /** This session as an operator sees it; null before it has authenticated. */
    SessionInfo info() {
        String u = user;
        if (u == null) {
            return null;
        }
        Guest g;
        synchronized (this) {
            g = closed ? null : guest;
        }
        return new SessionInfo(id, u, remote, g == null ? null : g.id(), startedAt, clock.idle(), bytesIn.sum(),
                bytesOut.sum(), channels.get());
    }

    /** The ending commands report when a timeout is ending the session, else null. */
    Ending ending() {
        return ending;
    }

    /** Completes when every command running now has delivered its exit status. */
    CompletableFuture<Void> commandsDone() {
        return CompletableFuture.allOf(running.toArray(CompletableFuture[]::new));
    }

    /** Completes (with what to tell the user) when the guest is lost or the server is shutting down. */
    CompletableFuture<Ending> terminated() {
        return terminated;
    }

    /** Completes once the connection is closed and nothing of its guest is left. */
    CompletableFuture<Void> released() {
        return released;
    }

    /**
     * The connection's guest, opening it if this is the first request. Blocks for as long as that
     * takes, so call it from a thread of the session, never from an I/O thread.
     */
    Guest acquireGuest(boolean freshMachine) throws Refusal {
        CompletableFuture<Guest> mine = null;
        CompletableFuture<Guest> theirs;
        synchronized (this) {
            if (closed) {
                throw new Refusal(Ending.closing());
            }
            if (terminated.isDone()) {
                throw new Refusal(terminated.join());
            }
            if (ending != null) {
                throw new Refusal(ending);
            }
            if (serverStopping.getAsBoolean()) {
                throw new Refusal(Ending.shutdown());
            }
            theirs = opening;
            if (theirs == null) {
                String u = Objects.requireNonNullElse(user, "");
                try {
                    slot = slots.acquire(u);
                } catch (Refusal r) {
                    observer.refused(r.ending().reason().tag());
                    if (r.ending().reason() == Ending.Reason.PER_USER_LIMIT) {
                        tagged(Events.log.atWarn()).setMessage("session_refused_per_user_limit")
                                .addKeyValue("max_sessions_per_user", slots.maxPerUser()).addKeyValue("live", slots.live(u)).log();
                    } else {
                        tagged(Events.log.atWarn()).setMessage("capacity_refused").addKeyValue("max_sessions", slots.max()).log();
                    }
                    throw r;
                }
                busy++;
                opening = mine = new CompletableFuture<>();
            }
        }
        if (theirs != null) {
            try {
                return theirs.join();
            } catch (CompletionException e) {
                throw e.getCause() instanceof Refusal r ? r : new Refusal(Ending.startFailed(String.valueOf(e.getCause().getMessage())));
            }
        }
        return open(mine, freshMachine);
    }

    private Guest open(CompletableFuture<Guest> mine, boolean freshMachine) throws Refusal {
        long t0 = System.nanoTime();
        String vmId = "ssh-" + id;
        tagged(Events.log.atInfo()).setMessage("vm_requested").addKeyValue("vm", vmId).log();
        Guest g = null;
        String failure;
        try {
            g = guests.open(id, Objects.requireNonNullElse(user, ""), freshMachine);
            failure = g == null ? "the guest source returned no guest" : null;
        } catch (IOException e) {
            failure = e.getMessage();
        } catch (RuntimeException | Error e) {
            failure = "could not start a VM: " + e;
            tagged(Events.log.atError()).setMessage("vm_launch_crashed").setCause(e).log();
        }
        if (failure != null) {
            tagged(Events.log.atWarn()).setMessage("vm_failed").addKeyValue("vm", vmId).addKeyValue("ms", Events.msSince(t0))
                    .addKeyValue("error", failure).log();
            if (g != null) {
                closeQuietly(g);
            }
            Refusal r = new Refusal(Ending.startFailed(failure));
            synchronized (this) {
                opening = null; // a later request on this connection may try again
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
                guest = g;
                guestStartNanos = t0;
                busy--;
            }
        }
        if (closedMeanwhile) {
            tagged(Events.log.atInfo()).setMessage("vm_assigned").addKeyValue("vm", g.id()).addKeyValue("ms", Events.msSince(t0))
                    .addKeyValue("unused", true).log();
            destroy(g, t0);
            Refusal r = new Refusal(Ending.closing());
            mine.completeExceptionally(r);
            throw r;
        }
        tagged(Events.log.atInfo()).setMessage("vm_assigned").addKeyValue("vm", g.id()).addKeyValue("ms", Events.msSince(t0)).log();
        Guest opened = g;
        String told = opened.notice();
        if (told != null && !told.isEmpty()) {
            notice.set(told);
            tagged(Events.log.atInfo()).setMessage("user_notified").addKeyValue("vm", g.id()).addKeyValue("text", told).log();
        }
        opened.lost().whenComplete((why, e) -> guestLost(opened, why != null ? why : String.valueOf(e)));
        clock.start();
        mine.complete(opened);
        return opened;
    }

    /** The guest's one-line notice for the user, the first time it is asked for after the guest opened; else null. */
    String takeNotice() {
        return notice.getAndSet(null);
    }

    /** The user-facing explanation for a failed guest operation, preferring what we know about the guest. */
    String explain(Throwable failure) {
        Ending known = terminated.getNow(null);
        if (known != null) {
            return known.message();
        }
        if (failure instanceof GuestGoneException || failure.getCause() instanceof GuestGoneException) {
            return "vmgate: " + (failure instanceof GuestGoneException ? failure : failure.getCause()).getMessage();
        }
        return "vmgate: " + failure.getMessage();
    }

    private void guestLost(Guest g, String why) {
        long started;
        synchronized (this) {
            if (guest != g || closed) {
                return; // torn down on purpose, or already handled
            }
            guest = null;
            started = guestStartNanos;
            busy++;
        }
        try (var s = scope()) {
            tagged(Events.log.atWarn()).setMessage("vm_died").addKeyValue("vm", g.id()).addKeyValue("reason", why)
                    .addKeyValue("lifetime_ms", Events.msSince(started)).addKeyValue("diagnostics", safeDiagnostics(g)).log();
        }
        clock.stop();
        terminated.complete(Ending.guestLost(why));
        Thread.ofVirtual().name("vm-teardown-" + id).start(() -> {
            try (var s = scope()) {
                destroy(g, started);
            }
        });
    }

    /** Tells every channel that the server is going away (they print it and exit 255). */
    void shutdown() {
        terminated.complete(Ending.shutdown());
    }

    /** The SSH connection is gone: close the guest (if any) and forget everything. */
    void close() {
        Guest g;
        long started;
        synchronized (this) {
            if (closed) {
                return;
            }
            closed = true;
            g = guest;
            guest = null;
            started = guestStartNanos;
            if (g != null) {
                busy++;
            }
            if (keepalive != null) {
                keepalive.stop();
            }
        }
        clock.stop();
        terminated.complete(Ending.closing());
        tagged(Events.log.atInfo()).setMessage("connection_closed").addKeyValue("ms", Events.msSince(acceptedNanos)).log();
        if (g != null) {
            Thread.ofVirtual().name("vm-teardown-" + id).start(() -> {
                try (var s = scope()) {
                    destroy(g, started);
                }
            });
        } else {
            synchronized (this) {
                checkReleased();
            }
        }
    }

    /** Closes a guest and gives its slot back; the caller has counted itself in {@link #busy}. */
    private void destroy(Guest g, long startedNanos) {
        long t0 = System.nanoTime();
        closeQuietly(g);
        tagged(Events.log.atInfo()).setMessage("vm_released").addKeyValue("vm", g.id()).addKeyValue("ms", Events.msSince(t0))
                .addKeyValue("lifetime_ms", Events.msSince(startedNanos)).log();
        synchronized (this) {
            releaseSlot();
            busy--;
            checkReleased();
        }
    }

    /** Caller holds the lock. */
    private void releaseSlot() {
        if (slot != null) {
            slot.close();
            slot = null;
        }
    }

    /** Caller holds the lock. */
    private void checkReleased() {
        if (closed && busy == 0 && guest == null) {
            released.complete(null);
        }
    }

    private static void closeQuietly(Guest g) {
        try {
            g.close();
        } catch (RuntimeException e) {
            Events.log.atError().setMessage("vm_close_failed").addKeyValue("vm", g.id()).setCause(e).log();
        }
    }

    private static String safeDiagnostics(Guest g) {
        try {
            String d = g.diagnostics();
            return d == null ? "" : d.strip();
        } catch (RuntimeException e) {
            return e.toString();
        }
    }

    // --- the session clock's callbacks

    /** Writes a line to the stderr of every running command (asynchronously); returns how many. */
    @Override
    public int warn(String message) {
        List<GuestCommand> now = List.copyOf(commands);
        now.forEach(cmd -> cmd.notice(message));
        return now.size();
    }

    /**
     * Ends the session for a timeout: SIGTERM to every guest process, the grace period (cut short
     * when they have all exited), then the guest is closed, every command ends with the ending's
     * message and status 255, and the connection closes. The waiting runs on a virtual thread.
     */
    @Override
    public void end(Ending why, List<KeyValuePair> details) {
        List<Execution> processes = claimEnding(why);
        if (processes == null) {
            return;
        }
        observer.refused(why.reason().tag());
        LoggingEventBuilder event = tagged(Events.log.atWarn()).setMessage(why.reason().event);
        details.forEach(kv -> event.addKeyValue(kv.key, kv.value));
        event.addKeyValue("processes", processes.size()).addKeyValue("grace_ms", grace.toMillis()).log();
        startTerminating(processes, why, grace);
    }

    /**
     * The operator ends this session ({@code vmgate sessions kill}): every command ends at once with
     * the ending's message on its stderr and status 255, the guest is destroyed, the connection closed.
     *
     * @return false when the session is already ending or gone
     */
    boolean kill(String message) {
        Ending why = Ending.killed(message);
        List<Execution> processes = claimEnding(why);
        boolean hasGuest = processes != null;
        if (!hasGuest) {
            synchronized (this) {
                if (closed || ending != null) {
                    return false;
                }
                ending = why; // no guest (yet): nothing runs in it, the connection just closes
            }
        }
        observer.refused(why.reason().tag());
        tagged(Events.log.atWarn()).setMessage(why.reason().event).addKeyValue("processes", hasGuest ? processes.size() : 0)
                .addKeyValue("told", why.message()).log();
        if (hasGuest) {
            startTerminating(processes, why, Duration.ZERO);
        } else {
            terminated.complete(why);
            Thread.ofVirtual().name("vm-kill-" + id).start(() -> {
                Waiting.await(commandsDone(), REPORT_TIMEOUT);
                session.close(false);
            });
        }
        return true;
    }

    /** Marks the session as ending for {@code why}; returns its running processes, or null without a guest or when already ending. */
    private List<Execution> claimEnding(Ending why) {
        synchronized (this) {
            if (closed || ending != null || guest == null) {
                return null;
            }
            ending = why;
        }
        return commands.stream().map(GuestCommand::execution).filter(p -> p != null && !p.exit().isDone()).toList();
    }

    /** On a virtual thread: SIGTERM to {@code processes}, {@code grace}, the guest destroyed, commands told. */
    private void startTerminating(List<Execution> processes, Ending why, Duration grace) {
        Thread.ofVirtual().name("vm-end-" + id).start(() -> {
            try (var s = scope()) {
                terminate(processes, why, grace);
            }
        });
    }

    private void terminate(List<Execution> processes, Ending why, Duration grace) {
        long t0 = System.nanoTime();
        for (Execution p : processes) {
            try {
                p.signal("TERM");
            } catch (IOException e) {
                // the guest is going away anyway
            }
        }
        boolean exited = Waiting.await(CompletableFuture.allOf(processes.stream()
                .map(p -> p.exit().handle((r, e) -> null)).toArray(CompletableFuture[]::new)), grace);
        Guest g;
        long started;
        synchronized (this) {
            g = guest;
            guest = null;
            started = guestStartNanos;
            if (g != null) {
                busy++;
            }
        }
        terminated.complete(why); // commands still running end with the message and 255
        if (g != null) {
            destroy(g, started);
        }
        tagged(Events.log.atInfo()).setMessage("session_terminated").addKeyValue("reason", why.reason().tag())
                .addKeyValue("exited_in_grace", exited).addKeyValue("ms", Events.msSince(t0)).log();
        // Let clients take the message and exit status and close their channels (OpenSSH then leaves on its
        // own, without "closed by remote host"); close whatever is still open after that.
        Waiting.await(commandsDone(), REPORT_TIMEOUT);
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

    private static byte[] randomBytes(int n) {
        byte[] b = new byte[n];
        RANDOM.nextBytes(b);
        return b;
    }
}
