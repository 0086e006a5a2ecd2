package io.vmgate.ssh;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Capacity, shutdown, keepalive and flow control. */
class SshLimitsTest {
    @TempDir
    Path dir;

    @Test
    void beyondMaxSessionsTheCommandGetsAFriendlyRefusal() throws Exception {
        try (TestServer ts = TestServer.start(dir, b -> b.maxSessions(1))) {
            Process holder = ts.ssh().startSsh(List.of(), "echo holding; cat >/dev/null");
            try {
                assertThat(new String(holder.getInputStream().readNBytes(8), StandardCharsets.UTF_8)).isEqualTo("holding\n");
                assertThat(ts.server.liveSessions()).isEqualTo(1);
                SshClientHelper.Result refused = ts.ssh().ssh("echo should-not-run");
                assertThat(refused.exitCode()).as(refused.toString()).isEqualTo(255);
                assertThat(refused.out()).isEmpty();
                assertThat(refused.err()).isEqualTo("vmgate: server is at capacity (1 sessions), try again later\n");
                assertThat(ts.messages()).anyMatch(m -> m.startsWith("capacity_refused "));
            } finally {
                holder.getOutputStream().close(); // EOF: cat ends, and the session with it
                assertThat(holder.waitFor(30, TimeUnit.SECONDS)).isTrue();
            }
            assertThat(holder.exitValue()).isZero();
            ts.awaitAllVmsDestroyed();
            assertThat(ts.ssh().ssh("echo now-fine").out()).isEqualTo("now-fine\n");
        }
    }

    @Test
    void stopTellsRunningSessionsAndDestroysEveryVm() throws Exception {
        TestServer ts = TestServer.start(dir);
        Process a = ts.ssh().startSsh(List.of(), "echo up; sleep 60");
        Process b = ts.ssh().startSsh(List.of("-tt"), "echo up; sleep 60");
        try {
            assertThat(new String(a.getInputStream().readNBytes(3), StandardCharsets.UTF_8)).isEqualTo("up\n");
            assertThat(new String(b.getInputStream().readNBytes(2), StandardCharsets.UTF_8)).isEqualTo("up");
            assertThat(ts.server.liveSessions()).isEqualTo(2);
        } catch (Throwable t) {
            a.destroyForcibly();
            b.destroyForcibly();
            throw t;
        }
        ts.close(); // asserts every VM was closed
        for (Process p : List.of(a, b)) {
            assertThat(p.waitFor(30, TimeUnit.SECONDS)).isTrue();
            String err = new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
            String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            assertThat(p.exitValue()).as(err).isEqualTo(255);
            assertThat(err + out).contains("vmgate: the server is shutting down");
        }
        assertThat(ts.launcher.alive()).isZero();
        assertThat(ts.server.liveSessions()).isZero();
    }

    @Test
    void keepaliveProbesAreAnsweredByRealClients() throws Exception {
        try (TestServer ts = TestServer.start(dir, b -> b.keepaliveInterval(Duration.ofMillis(100)).keepaliveCountMax(2))) {
            // Our probes are answered by the client; the client's own probes are answered by us.
            SshClientHelper.Result r = ts.ssh().withOption("ServerAliveInterval=1").withOption("ServerAliveCountMax=1")
                    .ssh("sleep 2.5; echo still-connected");
            assertThat(r.exitCode()).as(r.toString()).isZero();
            assertThat(r.out()).isEqualTo("still-connected\n");
            assertThat(ts.messages()).noneMatch(m -> m.startsWith("keepalive_timeout "));
        }
    }

    @Test
    void aClientThatDoesNotReadStopsTheGuestInsteadOfFillingMemory() throws Exception {
        // The guest writes 64 MiB in 64 KiB blocks and records each block it got rid of.
        Path progress = dir.resolve("progress");
        int blocks = 1024;
        String script = "i=0; while [ $i -lt " + blocks + " ]; do head -c 65536 /dev/zero; i=$((i+1)); echo $i > " + progress
                + "; done";
        try (TestServer ts = TestServer.start(dir)) {
            Process p = ts.ssh().startSsh(List.of(), script);
            try {
                // Nobody reads ssh's stdout: wait until the guest is stuck (its progress stops moving).
                TestServer.await(() -> Files.exists(progress), "the guest started writing");
                int stuckAt = awaitStable(progress);
                long buffered = (long) stuckAt * 65536;
                System.err.println("flow control: the guest got rid of " + buffered + " bytes before it was stopped");
                assertThat(buffered).as("bytes the guest got rid of while nobody read").isLessThan(16L * 1024 * 1024);
                // Now read everything: the guest resumes and finishes.
                InputStream out = p.getInputStream();
                long total = 0;
                byte[] buf = new byte[65536];
                int n;
                while ((n = out.read(buf)) >= 0) {
                    total += n;
                }
                assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
                assertThat(p.exitValue()).isZero();
                assertThat(total).isEqualTo((long) blocks * 65536);
                assertThat(Files.readString(progress).strip()).isEqualTo(String.valueOf(blocks));
            } finally {
                p.destroyForcibly();
            }
        }
    }

    /** The value in the progress file once it has not changed for a second. */
    private static int awaitStable(Path progress) throws Exception {
        String last = "";
        long since = System.nanoTime();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (System.nanoTime() < deadline) {
            String now = Files.readString(progress).strip();
            if (!now.equals(last)) {
                last = now;
                since = System.nanoTime();
            } else if (!now.isEmpty() && System.nanoTime() - since > TimeUnit.SECONDS.toNanos(1)) {
                return Integer.parseInt(now);
            }
            Thread.sleep(50);
        }
        throw new AssertionError("the guest never stopped writing: progress " + last);
    }
}
