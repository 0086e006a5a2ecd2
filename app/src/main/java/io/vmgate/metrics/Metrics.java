package io.vmgate.metrics;

import io.prometheus.metrics.core.datapoints.CounterDataPoint;
import io.prometheus.metrics.core.metrics.Counter;
import io.prometheus.metrics.core.metrics.GaugeWithCallback;
import io.prometheus.metrics.core.metrics.Histogram;
import io.prometheus.metrics.instrumentation.jvm.JvmMetrics;
import io.prometheus.metrics.model.registry.PrometheusRegistry;
import io.vmgate.sandbox.SandboxObserver;
import io.vmgate.sandbox.Sandboxes;
import io.vmgate.ssh.SshObserver;
import io.vmgate.ssh.VmgateSshServer;
import java.time.Duration;
import java.util.List;

/**
 * vmgate's metrics, in a registry of their own: the events of the SSH front door
 * ({@link SshObserver}) and of the sandbox engine ({@link SandboxObserver}) counted, the state of
 * the server and its pool read at scrape time, plus the JVM's and the process's own metrics.
 * Names and meanings are listed in the README ("Operating vmgate").
 *
 * <pre>{@code
 * Metrics m = new Metrics();
 * Sandboxes engine = Sandboxes.builder(options).observer(m.sandboxes()).build();
 * VmgateSshServer server = new VmgateSshServer(config.toBuilder().observer(m.ssh()).build());
 * m.watch(server, engine);
 * }</pre>
 */
public final class Metrics {
    /** VM start latency buckets, in seconds: a pool hand-over (ms) to a slow cold boot under TCG. */
    static final double[] START_BUCKETS = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
    /** The labels every counter with labels starts with, so each series exists (at 0) from the first scrape. */
    static final List<String> AUTH_METHODS = List.of("publickey", "password", "none");
    static final List<String> REFUSALS = List.of("capacity", "per_user_limit", "too_many_channels", "idle_timeout",
            "time_limit", "killed");

    private final PrometheusRegistry registry = new PrometheusRegistry();
    private final Counter connections;
    private final Counter handshakes;
    private final Counter authentications;
    private final Counter refusals;
    private final Counter bytes;
    private final Histogram vmStart;
    private final Counter vmStartFailures;
    private final Counter vmsReaped;
    private final Counter templateBuilds;
    private final SshObserver ssh;
    private final SandboxObserver sandboxes;
    /** System.nanoTime of the last start, if it failed; 0 after a success (or before any start). */
    private volatile long lastStartFailedAt;

    /** The vmgate metrics, without JVM and process metrics (see {@link #withJvmMetrics()}). */
    public Metrics() {
        connections = Counter.builder().name("vmgate_connections_total")
                .help("SSH connections accepted").register(registry);
        handshakes = Counter.builder().name("vmgate_handshakes_total")
                .help("SSH key exchanges by result: ok, or failed (the connection ended before keys were established)")
                .labelNames("result").register(registry);
        authentications = Counter.builder().name("vmgate_authentications_total")
                .help("Authentication attempts by method (publickey, password, none) and result (success, failure)")
                .labelNames("method", "result").register(registry);
        refusals = Counter.builder().name("vmgate_refusals_total")
                .help("Sessions or channels refused by a limit (capacity, per_user_limit, too_many_channels), and sessions"
                        + " ended by a timeout (idle_timeout, time_limit) or by the operator (killed)")
                .labelNames("reason").register(registry);
        bytes = Counter.builder().name("vmgate_session_bytes_total")
                .help("Bytes moved between SSH clients and their VMs: in (client to VM), out (VM to client)")
                .labelNames("direction").register(registry);
        vmStart = Histogram.builder().name("vmgate_vm_start_duration_seconds")
                .help("Time a caller waited for a VM, by path: pooled (handed over from the warm pool), restored"
                        + " (from the snapshot template), cold (booted)")
                .classicOnly().classicUpperBounds(START_BUCKETS).withoutExemplars()
                .labelNames("path").register(registry);
        vmStartFailures = Counter.builder().name("vmgate_vm_start_failures_total")
                .help("VM starts that failed (the session was told why)").register(registry);
        vmsReaped = Counter.builder().name("vmgate_vms_reaped_total")
                .help("VMs left behind by crashed vmgate processes, removed at start-up").register(registry);
        templateBuilds = Counter.builder().name("vmgate_template_builds_total")
                .help("Snapshot templates built (when missing, and again after one failed to restore)").register(registry);

        for (String r : List.of("ok", "failed")) {
            handshakes.initLabelValues(r);
        }
        for (String m : AUTH_METHODS) {
            authentications.initLabelValues(m, "success");
            authentications.initLabelValues(m, "failure");
        }
        REFUSALS.forEach(refusals::initLabelValues);
        bytes.initLabelValues("in");
        bytes.initLabelValues("out");
        for (SandboxObserver.StartPath p : SandboxObserver.StartPath.values()) {
            vmStart.initLabelValues(p.label());
        }
        ssh = new SshCounters(bytes.labelValues("in"), bytes.labelValues("out"));
        sandboxes = new SandboxCounters();
    }

    /** Adds the JVM's metrics (memory, GC, threads, class loading) and the process's ({@code process_*}). */
    public Metrics withJvmMetrics() {
        JvmMetrics.builder().register(registry);
        return this;
    }

    /** The registry to expose. */
    public PrometheusRegistry registry() {
        return registry;
    }

    /** For {@code ServerConfig.Builder.observer}. */
    public SshObserver ssh() {
        return ssh;
    }

    /** For {@code Sandboxes.Builder.observer}. */
    public SandboxObserver sandboxes() {
        return sandboxes;
    }

    /**
     * Whether the most recent VM start failed, less than {@code within} ago (none yet: false). Bounded
     * in time so that a server taken out of rotation for one failure gets traffic again to show it recovered.
     */
    public boolean lastStartFailed(java.time.Duration within) {
        long at = lastStartFailedAt;
        return at != 0 && System.nanoTime() - at < within.toNanos();
    }

    /** Adds the gauges read from the running server and engine at each scrape. */
    public Metrics watch(VmgateSshServer server, Sandboxes engine) {
        GaugeWithCallback.builder().name("vmgate_sessions_active")
                .help("SSH connections holding a VM (or starting one) now")
                .callback(cb -> cb.call(server.liveSessions())).register(registry);
        GaugeWithCallback.builder().name("vmgate_connections_open")
                .help("SSH connections open now, authenticated or not")
                .callback(cb -> cb.call(server.connections())).register(registry);
        GaugeWithCallback.builder().name("vmgate_pool_idle")
                .help("VMs started and idle in the warm pool now")
                .callback(cb -> cb.call(engine.idle())).register(registry);
        GaugeWithCallback.builder().name("vmgate_pool_target")
                .help("VMs the warm pool keeps idle when it can (--pool)")
                .callback(cb -> cb.call(engine.poolSize())).register(registry);
        return this;
    }

    private final class SshCounters implements SshObserver {
        // Looked up once: bytes are counted for every chunk a session moves.
        private final CounterDataPoint in;
        private final CounterDataPoint out;

        SshCounters(CounterDataPoint in, CounterDataPoint out) {
            this.in = in;
            this.out = out;
        }
        @Override
        public void connectionOpened() {
            connections.inc();
        }

        @Override
        public void handshake(boolean ok) {
            handshakes.labelValues(ok ? "ok" : "failed").inc();
        }

        @Override
        public void authentication(String method, boolean ok) {
            authentications.labelValues(method, ok ? "success" : "failure").inc();
        }

        @Override
        public void refused(String reason) {
            refusals.labelValues(reason).inc();
        }

        @Override
        public void bytesIn(int n) {
            in.inc(n);
        }

        @Override
        public void bytesOut(int n) {
            out.inc(n);
        }
    }

    private final class SandboxCounters implements SandboxObserver {
        @Override
        public void started(StartPath path, Duration took) {
            lastStartFailedAt = 0;
            vmStart.labelValues(path.label()).observe(took.toNanos() / 1e9);
        }

        @Override
        public void startFailed() {
            lastStartFailedAt = System.nanoTime() | 1; // never 0
            vmStartFailures.inc();
        }

        @Override
        public void templateBuilt(Duration took) {
            templateBuilds.inc();
        }

        @Override
        public void reaped(int count) {
            vmsReaped.inc(count);
        }
    }
}
