package io.vmgate.ssh;

import io.vmgate.agent.AgentGoneException;
import io.vmgate.vm.Vm;
import io.vmgate.vm.VmException;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.HexFormat;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
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
 */
@SuppressWarnings("try") // MDC scopes: try-with-resources for the side effect
final class Connection {
    static final AttributeKey<Connection> KEY = new AttributeKey<>();
    private static final SecureRandom RANDOM = new SecureRandom();
    private static final Duration CONFIGURE_TIMEOUT = Duration.ofSeconds(10);

    final String id;
    final ServerSession session;
    final String remote;
    final String remoteIp;
    final long acceptedNanos = System.nanoTime();
    private final VmgateSshServer server;
    private final AtomicInteger channels = new AtomicInteger();
    private final AtomicInteger channelSeq = new AtomicInteger();
    private final java.util.Set<CompletableFuture<Void>> running = java.util.concurrent.ConcurrentHashMap.newKeySet();
    private volatile String user;
    volatile String lastAuthMethod = "none";

    // VM state, guarded by this
    private CompletableFuture<Vm> launch;
    private Vm vm;
    private long vmStartNanos;
    private boolean holdsSlot;
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
    CompletableFuture<Void> commandStarted() {
        CompletableFuture<Void> done = new CompletableFuture<>();
        running.add(done);
        done.whenComplete((r, e) -> running.remove(done));
        return done;
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
            if (server.isStopping()) {
                throw new Refusal(VmgateSshServer.SHUTDOWN_MESSAGE);
            }
            theirs = launch;
            if (theirs == null) {
                if (!server.tryAcquireSlot()) {
                    int max = server.config().maxSessions();
                    Events.log.warn("capacity_refused {} max_sessions={}", tag(), max);
                    throw new Refusal("vmgate: server is at capacity (" + max + " sessions), try again later");
                }
                holdsSlot = true;
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
        Events.log.info("vm_starting {} vm={}", tag(), vmId);
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
            Events.log.info("vm_ready {} vm={} ms={} unused=true", tag(), vmId, Events.msSince(t0));
            destroy(v, t0);
            Refusal r = new Refusal("vmgate: the connection is closing");
            mine.completeExceptionally(r);
            throw r;
        }
        Events.log.info("vm_ready {} vm={} ms={}", tag(), vmId, Events.msSince(t0));
        Vm launched = v;
        launched.exited().whenComplete((r, e) -> vmDied(launched, "the VM exited"));
        launched.agent().disconnected().whenComplete((r, e) -> vmDied(launched, "lost the connection to the VM's agent"));
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
        Events.log.info("vm_destroyed {} vm={} ms={} lifetime_ms={}", tag(), v.id(), Events.msSince(t0), Events.msSince(startedNanos));
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
