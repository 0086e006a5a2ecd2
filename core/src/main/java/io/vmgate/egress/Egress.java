package io.vmgate.egress;

import io.vmgate.agent.AgentClient;
import io.vmgate.agent.GuestTunnel;
import java.io.IOException;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.slf4j.spi.LoggingEventBuilder;

/**
 * One VM's egress: the host end of the HTTP proxy its agent serves on the guest's loopback.
 * Every connection a guest process makes through that proxy arrives here as a
 * {@link GuestTunnel}; the {@link EgressPolicy} decides, names are resolved here on the host,
 * and an allowed connection is opened from here and relayed ({@link Relay}). Every decision is
 * logged: {@code egress_allowed} (when the connection ends, with its bytes and duration),
 * {@code egress_denied}, {@code egress_failed} (allowed, but unresolvable or unreachable).
 *
 * <p>Use: after the VM is up (booted, restored or taken from a pool), {@link #start} it with
 * the session's policy, add {@link #environment()} to every process the session starts, and
 * {@link #close()} it when the session ends. An empty policy starts nothing: no proxy, no
 * environment, no network.
 */
public final class Egress implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(Egress.class);
    /** Where the guest's proxy listens (127.0.0.1): squid's port, which users recognise. */
    public static final int DEFAULT_PROXY_PORT = 3128;
    private static final Duration ANSWER_TIMEOUT = Duration.ofSeconds(10);

    final EgressPolicy policy;
    final EgressLimits limits;
    final Setup setup;
    final String vm;
    final String user;
    private final int proxyPort; // 0: not serving
    private final Set<Relay> relays = ConcurrentHashMap.newKeySet();
    private final AtomicInteger connections = new AtomicInteger();
    private final AtomicInteger allowed = new AtomicInteger();
    private final AtomicInteger denied = new AtomicInteger();
    final AtomicLong bytesOut = new AtomicLong();
    final AtomicLong bytesIn = new AtomicLong();
    private volatile boolean closed;

    /**
     * How egress does its work beyond policy and limits: the resolver, the guest's proxy port, and
     * whom the host trusts when it speaks TLS for a client ({@code GET https://} through the
     * proxy, as busybox wget does). {@link #defaults()} for production; tests bring their own.
     */
    public record Setup(Resolver resolver, int proxyPort, javax.net.ssl.SSLContext tls) {
        public Setup {
            java.util.Objects.requireNonNull(resolver, "resolver");
            java.util.Objects.requireNonNull(tls, "tls");
            if (proxyPort < 1 || proxyPort > 65535) {
                throw new IllegalArgumentException("proxy port " + proxyPort + " out of range");
            }
        }

        /** The host's resolver, port 3128, the JDK's default trust store. */
        public static Setup defaults() {
            try {
                return new Setup(Resolver.system(), DEFAULT_PROXY_PORT, javax.net.ssl.SSLContext.getDefault());
            } catch (java.security.NoSuchAlgorithmException e) {
                throw new IllegalStateException("this JDK has no default TLS context", e);
            }
        }

        public Setup withResolver(Resolver v) {
            return new Setup(v, proxyPort, tls);
        }

        public Setup withProxyPort(int v) {
            return new Setup(resolver, v, tls);
        }

        public Setup withTls(javax.net.ssl.SSLContext v) {
            return new Setup(resolver, proxyPort, v);
        }
    }

    private Egress(EgressPolicy policy, EgressLimits limits, Setup setup, String vm, String user, int proxyPort) {
        this.policy = policy;
        this.limits = limits;
        this.setup = setup;
        this.vm = vm;
        this.user = user == null || user.isEmpty() ? "-" : user;
        this.proxyPort = proxyPort;
    }

    /**
     * Asks the VM's agent to serve the proxy on {@code 127.0.0.1:3128} and applies {@code policy}
     * to every connection made through it; returns once the guest listens. With an empty policy
     * nothing is started and the VM keeps having no network at all.
     *
     * @param user who the session belongs to, for the logs (may be null)
     */
    public static Egress start(AgentClient agent, EgressPolicy policy, EgressLimits limits, String user)
            throws IOException {
        return start(agent, policy, limits, user, Setup.defaults());
    }

    /** {@link #start(AgentClient, EgressPolicy, EgressLimits, String)} with a {@link Setup} of one's own. */
    public static Egress start(AgentClient agent, EgressPolicy policy, EgressLimits limits, String user, Setup setup)
            throws IOException {
        int proxyPort = setup.proxyPort();
        if (policy.isEmpty()) {
            return new Egress(policy, limits, setup, agent.name(), user, 0);
        }
        Egress e = new Egress(policy, limits, setup, agent.name(), user, proxyPort);
        try {
            agent.serveEgress(proxyPort, e::open).get(ANSWER_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
        } catch (ExecutionException ex) {
            throw ex.getCause() instanceof IOException io ? io : new IOException("egress: " + ex.getCause(), ex.getCause());
        } catch (TimeoutException ex) {
            throw new IOException("the guest agent did not start its egress proxy within " + ANSWER_TIMEOUT.toSeconds() + " s", ex);
        } catch (InterruptedException ex) {
            Thread.currentThread().interrupt();
            throw new java.io.InterruptedIOException("interrupted while starting egress");
        }
        log.atInfo().setMessage("egress_started").addKeyValue("vm", e.vm).addKeyValue("user", e.user)
                .addKeyValue("proxy", "127.0.0.1:" + proxyPort).addKeyValue("rules", policy)
                .addKeyValue("max_connections", limits.maxConnections()).log();
        return e;
    }

    /**
     * The variables every process of the session needs so that curl, wget, pip, apt, git and
     * the like use the proxy; empty when egress is off. Lower and upper case both, since tools
     * disagree (curl reads only lower-case {@code http_proxy}).
     */
    public Map<String, String> environment() {
        if (proxyPort == 0) {
            return Map.of();
        }
        String url = "http://127.0.0.1:" + proxyPort;
        String local = "localhost,127.0.0.1,::1";
        Map<String, String> env = new LinkedHashMap<>();
        env.put("http_proxy", url);
        env.put("https_proxy", url);
        env.put("HTTP_PROXY", url);
        env.put("HTTPS_PROXY", url);
        env.put("no_proxy", local);
        env.put("NO_PROXY", local);
        return Map.copyOf(env);
    }

    public EgressPolicy policy() {
        return policy;
    }

    /** What the session has used so far. */
    public record Stats(int allowed, int denied, int open, long bytesOut, long bytesIn) {}

    public Stats stats() {
        return new Stats(allowed.get(), denied.get(), connections.get(), bytesOut.get(), bytesIn.get());
    }

    /**
     * Cuts every connection and refuses any later one; returns once the relays have ended (they
     * end at once: their sockets are closed under them), or after 5 s. Idempotent.
     */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        List<Relay> cut = List.copyOf(relays);
        cut.forEach(r -> r.abort("the session's egress was closed"));
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
        for (Relay r : cut) {
            if (!r.awaitEnd(Duration.ofNanos(Math.max(1, deadline - System.nanoTime())))) {
                log.atWarn().setMessage("egress_relay_stuck").addKeyValue("vm", vm)
                        .addKeyValue("note", "still running 5 s after the close").log();
            }
        }
        if (proxyPort != 0) {
            Stats s = stats();
            log.atInfo().setMessage("egress_closed").addKeyValue("vm", vm).addKeyValue("user", user)
                    .addKeyValue("allowed", s.allowed()).addKeyValue("denied", s.denied()).addKeyValue("bytes_out", s.bytesOut())
                    .addKeyValue("bytes_in", s.bytesIn()).log();
        }
    }

    /** A new tunnel, on the agent's reader thread: refuse at once, or hand it to a relay thread. */
    private void open(GuestTunnel t) {
        String limit = closed ? null : limitReached();
        if (closed) {
            refuse(t, GuestTunnel.Refusal.DENIED, "egress has ended for this VM");
        } else if (limit != null) {
            refuse(t, GuestTunnel.Refusal.LIMIT, limit);
        } else if (connections.incrementAndGet() > limits.maxConnections()) {
            connections.decrementAndGet();
            refuse(t, GuestTunnel.Refusal.LIMIT, limits.maxConnections() + " connections at once is this VM's egress limit");
        } else {
            Relay r = new Relay(this, t);
            relays.add(r);
            r.start("egress-" + vm + "-" + t.id());
        }
    }

    private void refuse(GuestTunnel t, GuestTunnel.Refusal why, String reason) {
        denied(t, why, reason, null, 0);
        t.refuse(why, reason);
    }

    /** A byte limit the session has reached, in words, or null. */
    String limitReached() {
        if (bytesOut.get() >= limits.maxBytesOut()) {
            return "this VM has sent its egress limit of " + limits.maxBytesOut() + " bytes";
        }
        if (bytesIn.get() >= limits.maxBytesIn()) {
            return "this VM has received its egress limit of " + limits.maxBytesIn() + " bytes";
        }
        return null;
    }

    boolean closed() {
        return closed;
    }

    // ---- what relays report ----

    void denied(GuestTunnel t, GuestTunnel.Refusal why, String reason, String address, long nanos) {
        denied.incrementAndGet();
        log.atInfo().setMessage("egress_denied").addKeyValue("vm", vm).addKeyValue("user", user)
                .addKeyValue("host", EgressPolicy.printable(t.host())).addKeyValue("port", t.port())
                .addKeyValue("address", address).addKeyValue("reason", reason)
                .addKeyValue("kind", why.name().toLowerCase(java.util.Locale.ROOT)).addKeyValue("ms", nanos / 1_000_000).log();
    }

    void failed(GuestTunnel t, String address, String reason, long nanos) {
        denied.incrementAndGet();
        log.atInfo().setMessage("egress_failed").addKeyValue("vm", vm).addKeyValue("user", user)
                .addKeyValue("host", EgressPolicy.printable(t.host())).addKeyValue("port", t.port())
                .addKeyValue("address", address).addKeyValue("reason", reason)
                .addKeyValue("ms", nanos / 1_000_000).log();
    }

    void ended(Relay r, GuestTunnel t, String address, EgressRule rule, long out, long in, long nanos, String abort) {
        allowed.incrementAndGet();
        LoggingEventBuilder event = log.atInfo().setMessage("egress_allowed").addKeyValue("vm", vm).addKeyValue("user", user)
                .addKeyValue("host", EgressPolicy.printable(t.host())).addKeyValue("port", t.port()).addKeyValue("address", address)
                .addKeyValue("rule", rule).addKeyValue("bytes_out", out).addKeyValue("bytes_in", in).addKeyValue("ms", nanos / 1_000_000);
        if (t.tls()) {
            event.addKeyValue("tls", "host");
        }
        if (abort != null) {
            event.addKeyValue("cut", abort);
        }
        event.log();
        finished(r);
    }

    void finished(Relay r) {
        if (relays.remove(r)) {
            connections.decrementAndGet();
        }
    }
}
