package io.vmgate.metrics;

import static org.assertj.core.api.Assertions.assertThat;

import io.vmgate.sandbox.SandboxOptions;
import io.vmgate.sandbox.Sandboxes;
import io.vmgate.ssh.ServerConfig;
import io.vmgate.ssh.SshClientHelper;
import io.vmgate.ssh.StdioAgentVm;
import io.vmgate.ssh.VmgateSshServer;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.time.Duration;
import java.util.function.BooleanSupplier;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The metrics wiring end to end without QEMU: an SSH server whose sandboxes are stdio agents (from a
 * warm pool), the observers implemented with Prometheus, and the HTTP endpoint scraped as Prometheus would.
 */
class MetricsTest {
    @TempDir
    Path dir;

    private final HttpClient http = HttpClient.newHttpClient();

    private HttpResponse<String> get(int port, String path) throws Exception {
        return http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + path)).timeout(Duration.ofSeconds(10)).build(),
                HttpResponse.BodyHandlers.ofString());
    }

    /** The value of one series in the exposition, e.g. {@code vmgate_handshakes_total{result="ok"}}. */
    static double value(String exposition, String series) {
        Matcher m = Pattern.compile("(?m)^" + Pattern.quote(series) + " (\\S+)$").matcher(exposition);
        if (!m.find()) {
            throw new AssertionError("no series " + series + " in:\n" + exposition);
        }
        return Double.parseDouble(m.group(1));
    }

    static void await(BooleanSupplier c, String what) throws InterruptedException {
        long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
        while (!c.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("timed out waiting for " + what);
            }
            Thread.sleep(20);
        }
    }

    @Test
    void sessionsVmStartsAuthenticationsAndBytesAreCountedAndServed() throws Exception {
        Metrics metrics = new Metrics().withJvmMetrics();
        StdioAgentVm.Launcher agents = new StdioAgentVm.Launcher();
        try (Sandboxes engine = Sandboxes.builder(SandboxOptions.defaults()).launcher(agents).warmPool(1, 4)
                .observer(metrics.sandboxes()).build()) {
            ServerConfig cfg = ServerConfig.builder((id, user) -> engine.start("ssh-" + id), dir.resolve("host_key"))
                    .port(0).observer(metrics.ssh()).maxSessions(2).build();
            VmgateSshServer server = new VmgateSshServer(cfg);
            server.start();
            metrics.watch(server, engine);
            try (MetricsServer endpoint = MetricsServer.start("127.0.0.1", 0, metrics, new Health(server, engine, metrics)::notReady)) {
                int port = endpoint.port();
                await(() -> engine.idle() == 1, "the pool to fill");
                String before = get(port, "/metrics").body();
                assertThat(value(before, "vmgate_sessions_active")).isZero();
                assertThat(value(before, "vmgate_pool_idle")).isEqualTo(1);
                assertThat(value(before, "vmgate_pool_target")).isEqualTo(1);
                assertThat(value(before, "vmgate_authentications_total{method=\"password\",result=\"failure\"}")).isZero();
                assertThat(before).contains("jvm_memory_used_bytes", "process_cpu_seconds_total");
                assertThat(get(port, "/healthz").statusCode()).isEqualTo(200);
                HttpResponse<String> ready = get(port, "/readyz");
                assertThat(ready.statusCode()).as(ready.body()).isEqualTo(200);

                SshClientHelper ssh = SshClientHelper.forPort(server.port());
                SshClientHelper.Result r = ssh.withStdin(new byte[1234]).ssh("cat >/dev/null; head -c 100 /dev/zero; exit 4");
                assertThat(r.exitCode()).as(r.toString()).isEqualTo(4);
                assertThat(ssh.ssh("true").exitCode()).isZero();
                await(() -> server.liveSessions() == 0 && server.connections() == 0, "both sessions to end");

                String after = get(port, "/metrics").body();
                assertThat(value(after, "vmgate_connections_total")).isEqualTo(2);
                assertThat(value(after, "vmgate_handshakes_total{result=\"ok\"}")).isEqualTo(2);
                assertThat(value(after, "vmgate_authentications_total{method=\"none\",result=\"success\"}")).isEqualTo(2);
                assertThat(value(after, "vmgate_session_bytes_total{direction=\"in\"}")).isEqualTo(1234);
                assertThat(value(after, "vmgate_session_bytes_total{direction=\"out\"}")).isEqualTo(100);
                // The first start was a hand-over from the pool; the second found it refilling, or refilled.
                assertThat(value(after, "vmgate_vm_start_duration_seconds_count{path=\"pooled\"}")
                        + value(after, "vmgate_vm_start_duration_seconds_count{path=\"cold\"}")).isEqualTo(2);
                assertThat(value(after, "vmgate_vm_start_duration_seconds_count{path=\"pooled\"}")).isGreaterThanOrEqualTo(1);
                assertThat(value(after, "vmgate_vm_start_failures_total")).isZero();
                assertThat(value(after, "vmgate_sessions_active")).isZero();
                assertThat(get(port, "/nothing").statusCode()).isEqualTo(404);

                // A failing start: counted, and the server is no longer ready until a start succeeds.
                engine.close(); // no pool: the next start goes to the launcher
                agents.failWith = "no VM today";
                assertThat(ssh.ssh("true").exitCode()).isEqualTo(255);
                String failed = get(port, "/metrics").body();
                assertThat(value(failed, "vmgate_vm_start_failures_total")).isEqualTo(1);
                HttpResponse<String> notReady = get(port, "/readyz");
                assertThat(notReady.statusCode()).isEqualTo(503);
                assertThat(notReady.body()).contains("the last VM start failed");
            } finally {
                server.stop();
                agents.launched.forEach(StdioAgentVm::close);
            }
        }
    }
}
