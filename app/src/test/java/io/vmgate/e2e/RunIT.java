package io.vmgate.e2e;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** `vmgate run` against real QEMU VMs booted from the default image. */
class RunIT {
    @TempDir
    Path runtimeRoot;

    @BeforeEach
    void noLeftoversBefore() throws Exception {
        Host.assertNothingLeft(runtimeRoot, 1);
    }

    @AfterEach
    void nothingLeftBehind() throws Exception {
        Host.assertNothingLeft(runtimeRoot, 10);
    }

    private Host.Result vmgate(byte[] stdin, String... args) throws Exception {
        List<String> cmd = new ArrayList<>(List.of("./vmgate"));
        cmd.addAll(List.of(args));
        return Host.run(cmd, Map.of("VMGATE_RUNTIME_DIR", runtimeRoot.toString()), stdin, 120);
    }

    private Host.Result run(String... command) throws Exception {
        List<String> args = new ArrayList<>(List.of("run", "--"));
        args.addAll(List.of(command));
        return vmgate(null, args.toArray(String[]::new));
    }

    @Test
    void exitCodeIsTheCommands() throws Exception {
        assertThat(run("sh", "-c", "exit 42").exit()).isEqualTo(42);
    }

    @Test
    void killedBySignalIs128PlusSignal() throws Exception {
        assertThat(run("sh", "-c", "kill -9 $$").exit()).isEqualTo(137);
    }

    @Test
    void stdoutAndStderrArriveSeparately() throws Exception {
        Host.Result r = run("sh", "-c", "echo to-out; echo to-err >&2; echo more-out");
        assertThat(r.exit()).isZero();
        assertThat(r.out()).isEqualTo("to-out\nmore-out\n");
        assertThat(r.stderr()).contains("to-err\n").doesNotContain("to-out");
    }

    @Test
    void twentyMegabytesThroughStdoutAreByteIdentical() throws Exception {
        // Deterministic, incompressible-looking bytes: the guest hashes what it sends.
        Host.Result r = run("sh", "-c",
                "head -c 20000000 /dev/urandom > /tmp/blob && sha256sum /tmp/blob >&2 && cat /tmp/blob");
        assertThat(r.exit()).isZero();
        assertThat(r.stdout()).hasSize(20_000_000);
        String guestHash = r.stderr().strip().split("\\s+")[0];
        String hostHash = HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(r.stdout()));
        assertThat(hostHash).isEqualTo(guestHash);
    }

    /**
     * Three VMs at once, each streaming stdout and stderr with small and large writes: every
     * byte arrives, in order, on the right stream. (A splice(2)-based agent output path that
     * passed every single-VM test stalled under this kind of load.)
     */
    @Test
    void concurrentVmsStreamBothOutputsExactly() throws Exception {
        String script = "seq 1 200000; dd if=/dev/zero bs=4k count=5000 2>/dev/null; seq 1 200000 >&2; seq 7 90000";
        var runs = new ArrayList<java.util.concurrent.Future<Host.Result>>();
        try (var pool = java.util.concurrent.Executors.newVirtualThreadPerTaskExecutor()) {
            for (int i = 0; i < 3; i++) {
                runs.add(pool.submit(() -> run("sh", "-c", script)));
            }
        }
        StringBuilder seq = new StringBuilder(), seq7 = new StringBuilder();
        for (int i = 1; i <= 200000; i++) {
            seq.append(i).append('\n');
        }
        for (int i = 7; i <= 90000; i++) {
            seq7.append(i).append('\n');
        }
        byte[] head = seq.toString().getBytes(StandardCharsets.UTF_8), tail = seq7.toString().getBytes(StandardCharsets.UTF_8);
        byte[] expected = new byte[head.length + 5000 * 4096 + tail.length];
        System.arraycopy(head, 0, expected, 0, head.length);
        System.arraycopy(tail, 0, expected, head.length + 5000 * 4096, tail.length);
        for (var f : runs) {
            Host.Result r = f.get();
            assertThat(r.exit()).as(r.stderr().length() > 300 ? r.stderr().substring(0, 300) : r.stderr()).isZero();
            assertThat(r.stdout()).as("stdout").isEqualTo(expected);
            assertThat(r.stderr()).as("stderr").isEqualTo(seq.toString());
        }
    }

    @Test
    void stdinIsPassedThroughWithEof() throws Exception {
        Host.Result r = vmgate("a\nb\n".getBytes(StandardCharsets.UTF_8), "run", "--", "wc", "-l");
        assertThat(r.exit()).isZero();
        assertThat(r.out().strip()).isEqualTo("2");
    }

    @Test
    void guestRunsItsOwnKernelWithOnlyLoopback() throws Exception {
        String hostKernel = new String(new ProcessBuilder("uname", "-r").start().getInputStream().readAllBytes()).strip();
        Host.Result r = run("sh", "-c", "uname -r; ls /sys/class/net");
        assertThat(r.exit()).isZero();
        List<String> lines = r.out().lines().toList();
        assertThat(lines.get(0)).endsWith("-cloud-amd64").isNotEqualTo(hostKernel);
        assertThat(lines.subList(1, lines.size())).containsExactly("lo");
    }

    @Test
    void writesDieWithTheVm() throws Exception {
        assertThat(run("sh", "-c", "echo secret > /root/note && cat /root/note").out()).isEqualTo("secret\n");
        Host.Result second = run("sh", "-c", "test -e /root/note && echo present || echo absent");
        assertThat(second.out()).isEqualTo("absent\n");
    }

    @Test
    void pipedCommandListStopsAtFirstFailure() throws Exception {
        String script = "# comment\n\necho one\ncd /tmp\npwd\nsh -c 'exit 3'\necho never\n";
        Host.Result r = vmgate(script.getBytes(StandardCharsets.UTF_8), "run");
        assertThat(r.exit()).isEqualTo(3);
        assertThat(r.out()).isEqualTo("one\n/tmp\n");
    }

    @Test
    void pipedCommandListSucceeds() throws Exception {
        Host.Result r = vmgate("x=5\necho $x\n".getBytes(StandardCharsets.UTF_8), "run");
        assertThat(r.exit()).isZero();
        assertThat(r.out()).isEqualTo("5\n");
    }

    @Test
    void missingProgramIs127() throws Exception {
        Host.Result r = run("no-such-program");
        assertThat(r.exit()).isEqualTo(127);
        assertThat(r.stderr()).contains("no-such-program");
    }

    @Test
    void bootTimeoutIsAClearErrorAndLeavesNothing() throws Exception {
        Host.Result r = vmgate(null, "run", "--no-snapshot", "--boot-timeout", "0.3", "--", "true");
        assertThat(r.exit()).isEqualTo(125);
        assertThat(r.stderr()).containsIgnoringCase("boot").contains("0.3");
    }

    @Test
    void commandTimeoutKillsAndExits124() throws Exception {
        Host.Result r = vmgate(null, "run", "--timeout", "2", "--", "sleep", "60");
        assertThat(r.exit()).isEqualTo(124);
        assertThat(r.stderr()).contains("did not finish within 2 s");
    }

    /** `vmgate run` of a long command, returned once the command prints that it runs. */
    private Process startedInBackground() throws Exception {
        ProcessBuilder pb = new ProcessBuilder("./vmgate", "run", "--", "sh", "-c", "echo started; sleep 60")
                .directory(Host.HOME.toFile());
        pb.environment().put("VMGATE_RUNTIME_DIR", runtimeRoot.toString());
        Process p = pb.start();
        var out = new java.io.BufferedReader(new java.io.InputStreamReader(p.getInputStream()));
        assertThat(out.readLine()).isEqualTo("started");
        return p;
    }

    @Test
    void vmgateKilledMidCommandLeavesNothing() throws Exception {
        Process p = startedInBackground();
        assertThat(Host.qemusUnder(runtimeRoot)).hasSize(1);
        p.destroyForcibly(); // SIGKILL: no shutdown hook runs; QEMU must die with its parent
        p.waitFor();
        Host.assertNothingLeftOrReapable(runtimeRoot);
    }

    @Test
    void vmgateTerminatedMidCommandTearsDown() throws Exception {
        Process p = startedInBackground();
        p.destroy(); // SIGTERM: forwarded to the command, which dies of it
        assertThat(p.waitFor()).isEqualTo(128 + 15);
    }

    /**
     * SIGTERM while the VM still boots (cold, so the boot is long) abandons the boot at once: exit
     * 128+15, no "did not start" message, no vm_ready, nothing left. Both the early VM (neutral
     * options) and the normal path (--cpus) are covered.
     */
    @Test
    void vmgateTerminatedMidBootAbandonsTheBoot() throws Exception {
        for (List<String> options : List.of(List.of("--no-snapshot"), List.of("--no-snapshot", "--cpus", "1"))) {
            List<String> cmd = new ArrayList<>(List.of("./vmgate", "run", "--verbose"));
            cmd.addAll(options);
            cmd.addAll(List.of("--", "true"));
            ProcessBuilder pb = new ProcessBuilder(cmd).directory(Host.HOME.toFile()).redirectErrorStream(true);
            pb.environment().put("VMGATE_RUNTIME_DIR", runtimeRoot.toString());
            Process p = pb.start();
            var out = new java.io.BufferedReader(new java.io.InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8));
            StringBuilder seen = new StringBuilder();
            for (String line; (line = out.readLine()) != null && !line.contains("vm_starting"); ) {
                seen.append(line).append('\n');
            }
            p.toHandle().destroy(); // SIGTERM (Process.destroy() would close our end of its output too)
            out.lines().forEach(l -> seen.append(l).append('\n'));
            assertThat(p.waitFor()).as(seen.toString()).isEqualTo(128 + 15);
            assertThat(seen.toString()).as(options.toString()).doesNotContain("vm_ready").doesNotContain("vmgate: ");
            Host.assertNothingLeft(runtimeRoot, 10);
        }
    }

    /**
     * `run` starts its VM before parsing its options when nothing can change them; a usage error
     * found afterwards must still tear that VM down (the runtime root shows it existed).
     */
    @Test
    void usageErrorAfterAnEarlyStartLeavesNothing() throws Exception {
        ProcessBuilder pb = new ProcessBuilder("./vmgate", "run", "--no-snapshot", "-v", "-v", "--", "true")
                .directory(Host.HOME.toFile()).redirectErrorStream(true);
        pb.environment().put("VMGATE_RUNTIME_DIR", runtimeRoot.toString());
        Process p = pb.start();
        boolean sawVm = false;
        while (!p.waitFor(20, java.util.concurrent.TimeUnit.MILLISECONDS)) {
            try (var dirs = Files.list(runtimeRoot)) {
                sawVm |= dirs.anyMatch(d -> d.getFileName().toString().startsWith("run-"));
            }
        }
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.exitValue()).isEqualTo(2);
        assertThat(out).contains("should be specified only once");
        assertThat(sawVm).as("the VM was started before the options were parsed").isTrue();
    }

    /**
     * The early VM boots the image found current last time without checking it; the check runs
     * during the boot, and a stale image (here: a copy whose kernel command line is marked) is
     * torn down before anything runs in it.
     */
    @Test
    void aStaleRememberedImageIsBootedEarlyButNeverUsed(@TempDir Path cache) throws Exception {
        Map<String, String> env = Map.of("VMGATE_RUNTIME_DIR", runtimeRoot.toString(), "VMGATE_CACHE", cache.toString());
        Host.Result first = Host.run(List.of("./vmgate", "run", "--no-snapshot", "--", "true"), env, null, 300);
        assertThat(first.exit()).as(first.stderr()).isZero();
        Path images = cache.resolve("images");
        String key = Files.readString(images.resolve("current")).strip();
        String staleKey = "a".repeat(64);
        Path stale = Files.createDirectories(images.resolve(staleKey));
        Properties props = new Properties();
        try (var in = Files.newBufferedReader(images.resolve(key).resolve("image.properties"))) {
            props.load(in);
        }
        for (String f : List.of(props.getProperty("kernel_file"), "initrd.img")) {
            Files.createLink(stale.resolve(f), images.resolve(key).resolve(f));
        }
        props.setProperty("key", staleKey);
        props.setProperty("cmdline", props.getProperty("cmdline") + " vmgate.stale=1");
        try (var out = Files.newBufferedWriter(stale.resolve("image.properties"))) {
            props.store(out, "a stale image");
        }
        Files.writeString(images.resolve("current"), staleKey + "\n");

        Host.Result r = Host.run(List.of("./vmgate", "run", "--no-snapshot", "--verbose", "--", "cat", "/proc/cmdline"),
                env, null, 120);
        assertThat(r.exit()).as(r.stderr()).isZero();
        assertThat(r.stderr()).as("the stale image was booted early").contains("image=" + staleKey);
        assertThat(r.out()).doesNotContain("vmgate.stale").contains("console=ttyS0");
        assertThat(Files.readString(images.resolve("current")).strip()).isEqualTo(key);
    }

    /**
     * A failure on the early path reads exactly like the same failure on the normal path; and a
     * host-side problem (here: the runtime directory) does not cost the snapshot template.
     */
    @Test
    void earlyStartFailureIsReportedLikeAnyOther() throws Exception {
        Host.Result args = Host.run(List.of("./vmgate", "image", "qemu-args", runtimeRoot.toString(), "--template"),
                Map.of(), null, 300);
        assertThat(args.exit()).as(args.stderr()).isZero();
        Path template = Path.of(args.out().lines().findFirst().orElseThrow());
        var templateTime = Files.getLastModifiedTime(template);
        Path notADirectory = runtimeRoot.resolve("file");
        Files.writeString(notADirectory, "x");
        Map<String, String> env = Map.of("VMGATE_RUNTIME_DIR", notADirectory.toString());
        Host.Result early = Host.run(List.of("./vmgate", "run", "--", "true"), env, null, 120);
        Host.Result normal = Host.run(List.of("./vmgate", "run", "--cpus", "1", "--", "true"), env, null, 120);
        assertThat(early.exit()).isEqualTo(125);
        assertThat(normal.exit()).isEqualTo(125);
        assertThat(early.stderr()).contains(notADirectory.toString()).isEqualTo(normal.stderr());
        assertThat(Files.getLastModifiedTime(template)).as("template kept").isEqualTo(templateTime);
        Files.delete(notADirectory);
    }
}
