package io.vmgate.ssh;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.apache.sshd.client.channel.ChannelSession;
import org.apache.sshd.client.future.OpenFuture;
import org.apache.sshd.common.session.ConnectionService;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Capacity (global, per user, channels), shutdown, keepalive and flow control. */
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
                assertThat(ts.lines()).anyMatch(m -> m.startsWith("capacity_refused "));
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
    void aUserAtTheirLimitIsRefusedWhileAnotherUserGetsIn() throws Exception {
        try (TestServer ts = TestServer.start(dir, b -> b.maxSessionsPerUser(1))) {
            SshClientHelper alice = ts.ssh().withUser("alice");
            SshClientHelper bob = ts.ssh().withUser("bob");
            Process holder = alice.startSsh(List.of(), "echo holding; cat >/dev/null");
            try {
                assertThat(new String(holder.getInputStream().readNBytes(8), StandardCharsets.UTF_8)).isEqualTo("holding\n");
                assertThat(ts.server.liveSessions("alice")).isEqualTo(1);
                int mark = ts.mark();
                SshClientHelper.Result refused = alice.ssh("echo should-not-run");
                assertThat(refused.exitCode()).as(refused.toString()).isEqualTo(255);
                assertThat(refused.out()).isEmpty();
                assertThat(refused.err()).isEqualTo(
                        "vmgate: you already have 1 session open, the most allowed per user; close one and try again\n");
                ts.awaitEvent(mark, "session_refused_per_user_limit", "user=alice");
                SshClientHelper.Result other = bob.ssh("echo bob-is-in");
                assertThat(other.exitCode()).as(other.toString()).isZero();
                assertThat(other.out()).isEqualTo("bob-is-in\n");
                assertThat(ts.launcher.launched).as("no VM for the refused session").hasSize(2);
            } finally {
                holder.getOutputStream().close();
                assertThat(holder.waitFor(30, TimeUnit.SECONDS)).isTrue();
            }
            ts.awaitAllVmsDestroyed();
            assertThat(ts.server.liveSessions("alice")).isZero();
            assertThat(alice.ssh("echo alice-again").out()).isEqualTo("alice-again\n");
        }
    }

    @Test
    void thousandsOfChannelsAtOnceAreRefusedAndEveryoneCarriesOn() throws Exception {
        int flood = 3000;
        try (TestServer ts = TestServer.start(dir)) {
            int max = ts.config.maxChannelsPerConnection();
            Process other = ts.ssh().startSsh(List.of(), "echo other-up; cat");
            try (MinaTestClient mina = new MinaTestClient(ts.port())) {
                assertThat(new String(other.getInputStream().readNBytes(9), StandardCharsets.UTF_8)).isEqualTo("other-up\n");
                // Bare session channels, opened as fast as the client can send the requests.
                ConnectionService service = mina.session.getService(ConnectionService.class);
                List<ChannelSession> channels = new ArrayList<>();
                List<OpenFuture> opens = new ArrayList<>();
                for (int i = 0; i < flood; i++) {
                    ChannelSession ch = new ChannelSession();
                    service.registerChannel(ch);
                    channels.add(ch);
                    opens.add(ch.open());
                }
                int opened = 0;
                int refused = 0;
                for (OpenFuture f : opens) {
                    assertThat(f.await(MinaTestClient.TIMEOUT)).as("every open is answered").isTrue();
                    if (f.isOpened()) {
                        opened++;
                    } else {
                        assertThat(f.getException()).hasMessageContaining("too many channels");
                        refused++;
                    }
                }
                assertThat(opened).isEqualTo(max);
                assertThat(refused).isEqualTo(flood - max);
                assertThat(ts.lines().stream().filter(m -> m.startsWith("channel_refused ")).count()).isEqualTo(flood - max);
                assertThat(ts.server.connections()).isEqualTo(2);
                // The other session never noticed...
                OutputStream in = other.getOutputStream();
                in.write("ping\n".getBytes(StandardCharsets.UTF_8));
                in.flush();
                assertThat(new String(other.getInputStream().readNBytes(5), StandardCharsets.UTF_8)).isEqualTo("ping\n");
                // ...and the flooding connection works again once it closes what it holds.
                for (ChannelSession ch : channels) {
                    ch.close(false); // graceful: tells the server
                }
                // (the server counts a channel free once its side has closed, a moment after ours)
                TestServer.await(() -> execQuietly(mina, "echo still-here").equals("still-here\n"),
                        "a command on the flooding connection");
            } finally {
                other.getOutputStream().close();
                assertThat(other.waitFor(30, TimeUnit.SECONDS)).isTrue();
            }
            assertThat(other.exitValue()).isZero();
            ts.awaitAllVmsDestroyed();
        }
    }

    @Test
    void aOneMebibyteCommandFromOpenSshDropsOnlyThatConnection() throws Exception {
        // The exec request would be one SSH packet over the protocol's 256 KiB limit: MINA (like OpenSSH's sshd)
        // cannot even read it and drops that connection. Nobody else notices.
        try (TestServer ts = TestServer.start(dir)) {
            Process other = ts.ssh().startSsh(List.of(), "echo other-up; cat");
            try {
                assertThat(new String(other.getInputStream().readNBytes(9), StandardCharsets.UTF_8)).isEqualTo("other-up\n");
                int mark = ts.mark();
                List<String> command = new ArrayList<>(List.of("true"));
                for (int i = 0; i < 10; i++) {
                    command.add("x".repeat(100 * 1024)); // (each argument under the client's own 128 KiB exec limit)
                }
                SshClientHelper.Result r = ts.ssh().ssh(command.toArray(String[]::new));
                assertThat(r.exitCode()).as(r.toString()).isEqualTo(255);
                ts.awaitEvent(mark, "connection_error", "");
                ts.awaitEvent(mark, "connection_closed", "");
                assertThat(ts.eventsSince(mark)).noneMatch(e -> e.getMessage().equals("vm_requested"));
                OutputStream in = other.getOutputStream();
                in.write("ping\n".getBytes(StandardCharsets.UTF_8));
                in.flush();
                assertThat(new String(other.getInputStream().readNBytes(5), StandardCharsets.UTF_8)).isEqualTo("ping\n");
                assertThat(ts.ssh().ssh("echo ok").out()).isEqualTo("ok\n");
            } finally {
                other.getOutputStream().close();
                assertThat(other.waitFor(30, TimeUnit.SECONDS)).isTrue();
            }
            assertThat(other.exitValue()).isZero();
            ts.awaitAllVmsDestroyed();
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
            assertThat(ts.lines()).noneMatch(m -> m.startsWith("keepalive_timeout "));
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

    private static String execQuietly(MinaTestClient mina, String command) {
        try {
            return mina.exec(command, null).out();
        } catch (IOException e) {
            return e.getMessage();
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
