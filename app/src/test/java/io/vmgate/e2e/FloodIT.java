package io.vmgate.e2e;

import static org.assertj.core.api.Assertions.assertThat;

import io.vmgate.ssh.SshClientHelper;
import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * An unauthenticated flood (issue 13): 2,000 TCP connections from one loopback address that
 * send an SSH identification line and then nothing, held open, while a real client from another
 * address runs {@code ssh host true}. With the default pre-authentication limits the flood is
 * dropped at accept, the server keeps no socket for it, and the real client answers within twice
 * its time before the flood. Loopback only; bounded in count (2,000) and time (the flood is given
 * 60 s to open).
 */
class FloodIT {
    static final int FLOOD = 2_000;
    static final int RUNS = 5;
    static final String FLOOD_FROM = "127.0.0.2"; // all of 127/8 is loopback on Linux
    static final Pattern DROPPED = Pattern.compile("connection_dropped remote=127\\.0\\.0\\.2:\\d+ reason=(\\S+) .* dropped=(\\d+)");

    @TempDir
    Path dir;

    static double medianSeconds(SshClientHelper ssh, int runs) throws Exception {
        List<Double> t = new ArrayList<>();
        for (int i = 0; i < runs; i++) {
            long t0 = System.nanoTime();
            SshClientHelper.Result r = ssh.ssh("true");
            t.add((System.nanoTime() - t0) / 1e9);
            assertThat(r.exitCode()).as("ssh host true: %s", r).isZero();
        }
        Collections.sort(t);
        return t.get(t.size() / 2);
    }

    @Test
    void aFloodOfUnauthenticatedConnectionsLeavesAuthenticatedSessionsAnswering() throws Exception {
        int metricsPort = ServeProcess.freePort();
        try (ServeProcess server = ServeProcess.builder(dir).name("FloodIT").args("--metrics-listen", "127.0.0.1:" + metricsPort).start()) {
            SshClientHelper ssh = server.ssh().withTimeout(Duration.ofSeconds(120));
            assertThat(ssh.ssh("true").exitCode()).isZero(); // the template exists, the JIT is warm
            double normal = medianSeconds(ssh, RUNS);
            int socketsBefore = server.openSockets();

            List<Socket> held = Collections.synchronizedList(new ArrayList<>());
            AtomicInteger opened = new AtomicInteger();
            AtomicInteger refusedAtConnect = new AtomicInteger();
            byte[] hello = "SSH-2.0-flood\r\n".getBytes(StandardCharsets.US_ASCII);
            ExecutorService flood = Executors.newFixedThreadPool(8);
            long floodStart = System.nanoTime();
            for (int i = 0; i < FLOOD; i++) {
                flood.submit(() -> {
                    Socket s = new Socket();
                    try {
                        s.bind(new InetSocketAddress(InetAddress.getByName(FLOOD_FROM), 0));
                        s.connect(new InetSocketAddress(InetAddress.getLoopbackAddress(), server.port()), 5_000);
                        s.getOutputStream().write(hello);
                        held.add(s);
                        opened.incrementAndGet();
                    } catch (IOException e) {
                        refusedAtConnect.incrementAndGet(); // a backlog overflow or a reset: also not getting in
                        closeQuietly(s);
                    }
                    return null;
                });
            }
            flood.shutdown();
            // Measured while the flood is still being opened and all of it is held.
            double during = medianSeconds(ssh, RUNS);
            assertThat(flood.awaitTermination(60, TimeUnit.SECONDS)).as("the flood opened within 60 s").isTrue();
            double floodSeconds = (System.nanoTime() - floodStart) / 1e9;
            double after = medianSeconds(ssh, RUNS); // the whole flood held open
            System.out.printf("FloodIT: ssh host true median %.3f s before, %.3f s during, %.3f s after %d connections"
                    + " (%d opened, %d failed to connect) opened in %.1f s%n", normal, during, after, FLOOD, opened.get(),
                    refusedAtConnect.get(), floodSeconds);
            assertThat(during).as("ssh host true while the flood opens (before: %.3f s)", normal).isLessThanOrEqualTo(2 * normal);
            assertThat(after).as("ssh host true with the flood held open (before: %.3f s)", normal).isLessThanOrEqualTo(2 * normal);

            // The flood was dropped at accept: at most a per-address share of it ever became a session.
            long accepted = server.logLines("connection_accepted conn=\\S+ remote=127\\.0\\.0\\.2:").size();
            assertThat(accepted).as("flood connections let in").isLessThanOrEqualTo(8);
            long droppedLogged = 0;
            for (String line : server.logLines("connection_dropped remote=127\\.0\\.0\\.2:")) {
                Matcher m = DROPPED.matcher(line);
                assertThat(m.find()).as(line).isTrue();
                assertThat(m.group(1)).isEqualTo("per_source_max_startups");
                droppedLogged += Long.parseLong(m.group(2));
            }
            assertThat(droppedLogged).as("drops counted in the log (one line a second at most)").isPositive()
                    .isLessThanOrEqualTo(FLOOD);
            assertThat(server.openSockets()).as("sockets the server holds during the flood (before: %d)", socketsBefore)
                    .isLessThanOrEqualTo(socketsBefore + 8 + 4);
            // Every drop is counted in the metrics (the log aggregates them a second at a time, so it may lag).
            String metrics = java.net.http.HttpClient.newHttpClient().send(java.net.http.HttpRequest.newBuilder(
                    java.net.URI.create("http://127.0.0.1:" + metricsPort + "/metrics")).build(),
                    java.net.http.HttpResponse.BodyHandlers.ofString()).body();
            Matcher counted = Pattern.compile("(?m)^vmgate_refusals_total\\{reason=\"per_source_max_startups\"\\} (\\S+)$").matcher(metrics);
            assertThat(counted.find()).as("vmgate_refusals_total for the drops in:%n%s", metrics).isTrue();
            assertThat((long) Double.parseDouble(counted.group(1))).as("drops counted").isGreaterThanOrEqualTo(droppedLogged)
                    .isLessThanOrEqualTo(FLOOD);

            held.forEach(FloodIT::closeQuietly);
            SshClientHelper.Result still = ssh.ssh("echo still-serving");
            assertThat(still.out()).as(still.toString()).isEqualTo("still-serving\n");
            Host.assertNothingLeft(server.runtimeRoot(), 10);
        }
    }

    static void closeQuietly(Socket s) {
        try {
            s.close();
        } catch (IOException ignored) {
            // going away anyway
        }
    }
}
