package io.vmgate.e2e;

import static org.assertj.core.api.Assertions.assertThat;

import io.vmgate.ssh.SshClientHelper;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Random;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Chaos under one shared server (issue 5): a VM killed or panicking under its session ends only
 * that session (255 and a message); a guest writing to a client that reads slowly holds the
 * server's memory flat (the figures are printed); many sessions in a row with clients killed at
 * random leave no QEMU, no runtime directory and no socket behind.
 */
class ChaosIT {
    /** Sessions in a row; the issue asks for 100, which takes about 2-3 minutes here with snapshots. */
    static final int SESSIONS = Integer.getInteger("vmgate.e2e.sessions", 100);
    static final Duration STARTED = Duration.ofSeconds(120);

    @TempDir
    static Path dir;
    static ServeProcess server;
    static SshClientHelper ssh;
    private final Cleanup cleanup = new Cleanup();

    @BeforeAll
    static void startServer() throws Exception {
        server = ServeProcess.builder(dir).name("ChaosIT").start();
        ssh = server.ssh().withTimeout(Duration.ofSeconds(120));
    }

    @AfterAll
    static void stopServer() {
        if (server != null) {
            server.close();
        }
    }

    @BeforeEach
    void serverIsUp() {
        assertThat(server.isAlive()).as("the shared server is running; log:\n%s", server.tail()).isTrue();
    }

    @AfterEach
    void nothingLeftBehind() throws Exception {
        cleanup.closeAll();
        Host.assertNothingLeft(server.runtimeRoot(), 5);
    }

    private LiveSsh live(String command) throws IOException {
        LiveSsh l = LiveSsh.start(ssh, command);
        cleanup.add(l);
        return l;
    }

    private static Set<Long> qemuPids() {
        Set<Long> pids = new HashSet<>();
        for (String q : Host.qemusUnder(server.runtimeRoot())) {
            pids.add(Long.parseLong(q.substring(0, q.indexOf(' '))));
        }
        return pids;
    }

    /** Starts a session, waits for its "started" line and returns it with the pid of the QEMU it added. */
    private record Started(LiveSsh ssh, long qemuPid) {}

    private Started startSession(String command) throws Exception {
        Set<Long> before = qemuPids();
        LiveSsh l = live(command);
        l.awaitLine("started", STARTED);
        Set<Long> added = qemuPids();
        added.removeAll(before);
        assertThat(added).as("exactly one new QEMU for the new session").hasSize(1);
        return new Started(l, added.iterator().next());
    }

    @Test
    void aKilledQemuAndAGuestPanicEndOnlyTheirOwnSessions() throws Exception {
        int diedBefore = server.logLines("vm_died").size();
        Started killed = startSession("echo started; sleep 600");
        Started panics = startSession("echo started; read x; echo c > /proc/sysrq-trigger; sleep 600");
        Started bystander = startSession("echo started; read x; echo still-here; exit 5");

        ProcessHandle.of(killed.qemuPid()).orElseThrow().destroyForcibly(); // SIGKILL
        panics.ssh().writeLine("go");

        for (Started s : List.of(killed, panics)) {
            int code = s.ssh().awaitExit(Duration.ofSeconds(30));
            assertThat(code).as("a session whose VM died; %s", s.ssh()).isEqualTo(255);
            assertThat(s.ssh().stderr()).as("the message for the user").contains("vmgate:").containsIgnoringCase("VM");
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
        while (qemuPids().size() > 1 && System.nanoTime() < deadline) {
            Thread.sleep(50);
        }
        assertThat(qemuPids()).as("only the bystander's QEMU is left").containsExactly(bystander.qemuPid());
        while (Host.entries(server.runtimeRoot()).size() > 1 && System.nanoTime() < deadline) {
            Thread.sleep(50);
        }
        assertThat(Host.entries(server.runtimeRoot())).as("only the bystander's runtime directory is left").hasSize(1);

        assertThat(bystander.ssh().isAlive()).isTrue();
        bystander.ssh().writeLine("go");
        bystander.ssh().awaitLine("still-here", Duration.ofSeconds(30));
        assertThat(bystander.ssh().awaitExit(Duration.ofSeconds(30))).as("the unaffected session's own status").isEqualTo(5);
        assertThat(bystander.ssh().stderr()).isEmpty();
        assertThat(server.logLines("vm_died")).hasSize(diedBefore + 2);
    }

    /** GC.heap_info's used and committed KiB (young + old), or null if jcmd cannot attach. */
    static long[] heapKb(long pid) {
        Path jcmd = Path.of(ProcessHandle.current().info().command().orElse("java")).resolveSibling("jcmd");
        try {
            SshClientHelper.Result r = SshClientHelper.run(List.of(jcmd.toString(), Long.toString(pid), "GC.heap_info"), null,
                    java.util.Map.of(), Duration.ofSeconds(20));
            Matcher m = Pattern.compile("total (\\d+)K, used (\\d+)K").matcher(r.out());
            long total = 0;
            long used = 0;
            boolean any = false;
            while (m.find()) {
                total += Long.parseLong(m.group(1));
                used += Long.parseLong(m.group(2));
                any = true;
            }
            return any ? new long[] {used, total} : null;
        } catch (Exception e) {
            return null;
        }
    }

    @Test
    void aFastWriterToASlowReaderHoldsServerMemoryFlat() throws Exception {
        // Warm up (JIT, buffers, one full-speed bulk transfer), then take the baseline.
        SshClientHelper.Result w = SshClientHelper.run(sshCommand("head -c 50000000 /dev/zero | wc -c"), null, java.util.Map.of(),
                Duration.ofSeconds(120));
        assertThat(w.exitCode()).as(w.toString()).isZero();
        Thread.sleep(2000);
        long pid = server.pid();
        long baseline = server.rssKb().orElseThrow();
        long[] heapBefore = heapKb(pid);

        Process p = new ProcessBuilder(sshCommand("cat /dev/zero"))
                .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                .redirectError(ProcessBuilder.Redirect.DISCARD).start();
        cleanup.add(p::destroyForcibly);
        AtomicLong received = new AtomicLong();
        int seconds = 20;
        Thread reader = Thread.ofVirtual().start(() -> {
            // 1 MB/s: 100 KB every 100 ms.
            try (InputStream in = p.getInputStream()) {
                long t0 = System.nanoTime();
                for (int tick = 1; tick <= seconds * 10; tick++) {
                    byte[] got = in.readNBytes(100_000);
                    received.addAndGet(got.length);
                    if (got.length < 100_000) {
                        return;
                    }
                    long sleepMs = tick * 100L - TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0);
                    if (sleepMs > 0) {
                        Thread.sleep(sleepMs);
                    }
                }
            } catch (IOException | InterruptedException e) {
                // ended below
            }
        });
        List<Long> rss = new ArrayList<>();
        List<String> heap = new ArrayList<>();
        for (int i = 0; i < seconds + 1; i++) {
            Thread.sleep(1000);
            rss.add(server.rssKb().orElse(-1));
            if (i % 5 == 4) {
                long[] h = heapKb(pid);
                heap.add(h == null ? "n/a" : (h[0] / 1024) + "/" + (h[1] / 1024) + " MiB");
            }
        }
        reader.join(TimeUnit.SECONDS.toMillis(30));
        boolean stillRunning = p.isAlive();
        p.destroyForcibly();
        p.waitFor(10, TimeUnit.SECONDS);
        long max = rss.stream().mapToLong(Long::longValue).max().orElseThrow();
        long[] heapAfter = heapKb(pid);
        String report = String.format(
                "slow reader (1 MB/s for %d s, guest `cat /dev/zero`): received %.1f MB; server JVM RSS baseline %d MiB, max %d MiB"
                        + " (+%d MiB), end %d MiB; per second (MiB): %s; heap used/committed before %s, every 5 s %s, after %s",
                seconds, received.get() / 1e6, baseline / 1024, max / 1024, (max - baseline) / 1024, rss.getLast() / 1024,
                rss.stream().map(k -> Long.toString(k / 1024)).toList(), fmt(heapBefore), heap, fmt(heapAfter));
        System.out.println(report);
        Files.createDirectories(Host.HOME.resolve("target/e2e-logs"));
        Files.writeString(Host.HOME.resolve("target/e2e-logs/slow-reader-memory.txt"), report + "\n");

        assertThat(stillRunning).as("the guest kept writing for the whole run (the client was not dropped)").isTrue();
        assertThat(received.get()).as("the reader got about 1 MB/s").isBetween(10_000_000L, 25_000_000L);
        assertThat(rss).as("RSS samples").doesNotContain(-1L);
        assertThat(max - baseline).as("server RSS growth in KiB over %d s of a fast writer and a slow reader; %s", seconds, report)
                .isLessThan(150 * 1024);
    }

    private static String fmt(long[] h) {
        return h == null ? "n/a" : (h[0] / 1024) + "/" + (h[1] / 1024) + " MiB";
    }

    private static List<String> sshCommand(String command) {
        List<String> cmd = new ArrayList<>(List.of("ssh"));
        cmd.addAll(ssh.commonOptions());
        cmd.add(ssh.destination());
        cmd.add(command);
        return cmd;
    }

    @Test
    void manySessionsInARowWithRandomKillsLeaveNothingBehind() throws Exception {
        SshClientHelper.Result warm = ssh.ssh("true");
        assertThat(warm.exitCode()).as(warm.toString()).isZero();
        Host.assertNothingLeft(server.runtimeRoot(), 5);
        Thread.sleep(500);
        int socketsBefore = server.openSockets();

        long seed = Long.getLong("vmgate.e2e.seed", System.nanoTime());
        Random random = new Random(seed);
        int normal = 0;
        int killedAfterStart = 0;
        int killedAnyTime = 0;
        long t0 = System.nanoTime();
        for (int i = 0; i < SESSIONS; i++) {
            double dice = random.nextDouble();
            if (dice < 0.6) {
                SshClientHelper.Result r = ssh.ssh("echo ok-" + i);
                assertThat(r.exitCode()).as("session %d (seed %d): %s", i, seed, r).isZero();
                assertThat(r.out()).isEqualTo("ok-" + i + "\n");
                normal++;
            } else if (dice < 0.85) {
                try (LiveSsh l = LiveSsh.start(ssh, "echo started; sleep 600")) {
                    l.awaitLine("started", STARTED);
                    l.kill9();
                }
                killedAfterStart++;
            } else {
                // Killed at a random moment: during the handshake, the VM's start, or the command.
                try (LiveSsh l = LiveSsh.start(ssh, "echo started; sleep 600")) {
                    Thread.sleep(random.nextInt(1500));
                    l.kill9();
                }
                killedAnyTime++;
            }
        }
        double secs = (System.nanoTime() - t0) / 1e9;
        System.out.printf("%d sessions in a row (seed %d): %d normal, %d killed after start, %d killed at a random moment, %.1f s%n",
                SESSIONS, seed, normal, killedAfterStart, killedAnyTime, secs);

        SshClientHelper.Result after = ssh.ssh("echo still-serving");
        assertThat(after.out()).as(after.toString()).isEqualTo("still-serving\n");
        Host.assertNothingLeft(server.runtimeRoot(), 10);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (server.openSockets() > socketsBefore && System.nanoTime() < deadline) {
            Thread.sleep(100);
        }
        assertThat(server.openSockets()).as("sockets the server holds after %d sessions (before: %d)", SESSIONS, socketsBefore)
                .isLessThanOrEqualTo(socketsBefore);
        assertThat(server.logLines("vm_released conn=").size()).as("VMs destroyed, against VMs started (vm_failed: %s)",
                server.logLines("vm_failed")).isEqualTo(server.logLines("vm_requested conn=").size());
    }
}
