package io.vmgate.sandbox;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.vmgate.exec.Command;
import io.vmgate.exec.ExecResult;
import io.vmgate.exec.Execution;
import io.vmgate.exec.ExitStatus;
import io.vmgate.exec.GuestGoneException;
import io.vmgate.exec.Pty;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.ConnectException;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The Sandbox API against real QEMU VMs: commands, streams, terminals, files, SSH, death, and leaks. */
class SandboxIT {
    @TempDir
    static Path dir;
    static Path runtime;
    static Sandboxes sandboxes;

    @BeforeAll
    static void engine() throws Exception {
        runtime = dir.resolve("rt");
        sandboxes = Sandboxes.create(SandboxOptions.builder().runtimeDirectory(runtime).build());
        sandboxes.prepare();
    }

    @AfterAll
    static void closeEngine() {
        if (sandboxes != null) {
            sandboxes.close();
        }
    }

    @AfterEach
    void nothingLeft() throws Exception {
        assertNothingLeft(runtime);
    }

    @Test
    void exitCodesAndSignalsAreResults() throws Exception {
        try (Sandbox s = sandboxes.start()) {
            ExecResult r = s.run(Command.shell("echo out; echo err >&2; exit 7"));
            assertThat(r.exitCode()).isEqualTo(7);
            assertThat(r.out()).isEqualTo("out\n");
            assertThat(r.err()).isEqualTo("err\n");
            ExecResult killed = s.run(Command.shell("kill -9 $$"));
            assertThat(killed.status().signaled()).isTrue();
            assertThat(killed.status().signalName()).isEqualTo("KILL");
            assertThat(killed.exitCode()).isEqualTo(137);
            ExecResult argv = s.run(Command.of("printf", "%s|", "a b", "$HOME", "*").env("X", "1"));
            assertThat(argv.out()).isEqualTo("a b|$HOME|*|");
            assertThat(s.run(Command.of("no-such-program")).exitCode()).isEqualTo(127);
            assertThat(s.run(Command.shell("pwd; echo $X").cwd("/tmp").env("X", "y")).out()).isEqualTo("/tmp\ny\n");
        }
    }

    @Test
    void stdinEofAndATimeLimit() throws Exception {
        try (Sandbox s = sandboxes.start()) {
            Execution wc = s.exec(Command.of("wc", "-c"));
            try (OutputStream in = wc.stdin()) {
                in.write(new byte[100_000]);
            }
            String out = new String(wc.stdout().readAllBytes(), StandardCharsets.UTF_8).strip();
            assertThat(wc.waitFor(Duration.ofSeconds(30)).code()).isZero();
            assertThat(out).isEqualTo("100000");

            long t0 = System.nanoTime();
            assertThatThrownBy(() -> s.run(Command.of("sleep", "60"), Duration.ofMillis(500)))
                    .isInstanceOf(TimeoutException.class);
            assertThat(Duration.ofNanos(System.nanoTime() - t0)).isLessThan(Duration.ofSeconds(20));
            assertThat(s.run(Command.shell("ps | grep -c '[s]leep 60'")).out().strip()).as("the timed-out process was killed").isEqualTo("0");
        }
    }

    @Test
    void aTerminalCanBeResizedAndSignalled() throws Exception {
        try (Sandbox s = sandboxes.start()) {
            Execution sh = s.exec(Command.of("/bin/sh").pty(Pty.of("xterm", 24, 80)));
            Reader screen = new Reader(sh.stdout());
            OutputStream keys = sh.stdin();
            keys.write("stty size\n".getBytes());
            keys.flush();
            screen.await("24 80");
            sh.resize(40, 120);
            keys.write("stty size\n".getBytes());
            keys.flush();
            screen.await("40 120");
            keys.write("exit 5\n".getBytes());
            keys.flush();
            assertThat(sh.waitFor(Duration.ofSeconds(30)).code()).isEqualTo(5);

            Execution sleeper = s.exec(Command.of("sleep", "60"));
            sleeper.signal("TERM");
            ExitStatus st = sleeper.waitFor(Duration.ofSeconds(30));
            assertThat(st.signalName()).isEqualTo("TERM");
        }
    }

    @Test
    void aDeadVmFailsItsCommandsWithTheReason() throws Exception {
        Sandbox s = sandboxes.start();
        try {
            Execution sleeper = s.exec(Command.of("sleep", "600"));
            long qemu = qemuPid(runtime.resolve(s.id()));
            ProcessHandle.of(qemu).orElseThrow().destroyForcibly();
            assertThatThrownBy(() -> sleeper.waitFor(Duration.ofSeconds(30)))
                    .isInstanceOf(GuestGoneException.class).hasMessageContaining("the VM stopped unexpectedly");
            assertThat(s.lost().get(30, TimeUnit.SECONDS)).isNotBlank();
            assertThatThrownBy(() -> s.run(Command.of("true"))).isInstanceOf(GuestGoneException.class);
        } finally {
            s.close();
        }
    }

    @Test
    void uploadAndDownloadAreByteIdentical() throws Exception {
        byte[] data = new byte[20 << 20];
        new Random(42).nextBytes(data);
        Path local = dir.resolve("data.bin");
        Files.write(local, data);
        try (Sandbox s = sandboxes.start()) {
            s.upload(local, "/tmp/data.bin");
            assertThat(s.run("sha256sum /tmp/data.bin").out()).startsWith(sha256(data) + " ");
            Path back = dir.resolve("back.bin");
            s.download("/tmp/data.bin", back);
            assertThat(Files.mismatch(local, back)).isEqualTo(-1L);

            ByteArrayOutputStream streamed = new ByteArrayOutputStream();
            s.upload(new java.io.ByteArrayInputStream("small\n".getBytes()), "/tmp/small");
            s.download("/tmp/small", streamed);
            assertThat(streamed.toString()).isEqualTo("small\n");

            Path missing = dir.resolve("missing.bin");
            assertThatThrownBy(() -> s.download("/no/such/file", missing)).isInstanceOf(IOException.class)
                    .hasMessageContaining("/no/such/file");
            assertThat(missing).doesNotExist();
            try (Stream<Path> files = Files.list(dir)) {
                assertThat(files.map(p -> p.getFileName().toString())).noneMatch(n -> n.endsWith(".part"));
            }
            assertThatThrownBy(() -> s.upload(local, "/no/such/dir/x")).isInstanceOf(IOException.class)
                    .hasMessageContaining("/no/such/dir/x");
        }
    }

    @Test
    void enableSshServesTheRealOpenSshClient() throws Exception {
        try (Sandbox s = sandboxes.start()) {
            SshAccess ssh = s.enableSsh();
            Path identity = ssh.identityFile();
            assertThat(Files.getPosixFilePermissions(identity)).extracting(Object::toString)
                    .containsExactlyInAnyOrder("OWNER_READ", "OWNER_WRITE");
            assertThat(ssh.command()).contains("IdentitiesOnly=yes", "ClearAllForwardings=yes", "ForwardAgent=no",
                    "StrictHostKeyChecking=yes").doesNotContain("StrictHostKeyChecking=no");

            Run echo = run(ssh.command("echo hello from $(hostname); exit 3"));
            assertThat(echo.code).as(echo.err).isEqualTo(3);
            assertThat(echo.out).isEqualTo("hello from vmgate\n");

            Path file = dir.resolve("scp.txt");
            Files.writeString(file, "copied by scp\n");
            List<String> scp = new ArrayList<>(List.of("scp", "-F", "none", "-i", identity.toString(),
                    "-o", "IdentitiesOnly=yes", "-o", "UserKnownHostsFile=" + ssh.knownHostsFile(),
                    "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-P", Integer.toString(ssh.port()),
                    file.toString(), ssh.user() + "@" + ssh.host() + ":/tmp/scp.txt"));
            Run copied = run(scp);
            assertThat(copied.code).as(copied.err).isZero();
            assertThat(s.run("cat /tmp/scp.txt").out()).isEqualTo("copied by scp\n");

            int port = ssh.port();
            ssh.close();
            assertThat(identity).doesNotExist();
            assertThat(identity.getParent()).doesNotExist();
            assertThatThrownBy(() -> new Socket("127.0.0.1", port).close()).isInstanceOf(ConnectException.class);
            assertThat(s.run("echo still here").out()).as("the sandbox outlives its endpoint").isEqualTo("still here\n");
        }
    }

    @Test
    void fiftySandboxesFromEightThreadsLeaveNothing() throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(8);
        try {
            List<Future<String>> results = new ArrayList<>();
            for (int i = 0; i < 50; i++) {
                int n = i;
                results.add(pool.submit(() -> {
                    try (Sandbox s = sandboxes.start()) {
                        return s.run(Command.of("echo", "n" + n)).out().strip();
                    }
                }));
            }
            for (int i = 0; i < 50; i++) {
                assertThat(results.get(i).get(10, TimeUnit.MINUTES)).isEqualTo("n" + i);
            }
        } finally {
            pool.shutdownNow();
        }
    }

    @Test
    void closeIsIdempotentAndThreadSafe() throws Exception {
        Sandbox s = sandboxes.start();
        Execution running = s.exec(Command.of("sleep", "600"));
        Thread[] closers = new Thread[4];
        for (int i = 0; i < closers.length; i++) {
            closers[i] = Thread.ofPlatform().start(s::close);
        }
        for (Thread t : closers) {
            t.join(Duration.ofSeconds(60));
        }
        s.close();
        assertThatThrownBy(() -> running.waitFor(Duration.ofSeconds(10))).isInstanceOf(GuestGoneException.class)
                .hasMessageContaining("closed");
        assertThatThrownBy(() -> s.exec(Command.of("true"))).isInstanceOf(GuestGoneException.class);
    }

    @Test
    void aOneOffSandboxNeedsNoEngine() throws Exception {
        try (Sandbox s = Sandbox.start(SandboxOptions.builder().runtimeDirectory(runtime).memoryMib(192).build())) {
            assertThat(s.run("grep MemTotal /proc/meminfo").out()).contains("kB");
        }
    }

    // --- helpers

    /** No runtime directory and no QEMU process of this root is left. */
    @Test
    void aUsersMachineIsSavedAndResumedThroughTheApi() throws Exception {
        Path rt = dir.resolve("rt-persist");
        Path state = dir.resolve("state");
        try (Sandboxes engine = Sandboxes.create(SandboxOptions.builder().runtimeDirectory(rt).persist(SandboxOptions.Persist.MACHINE)
                .persistSizeMib(128).stateDirectory(state).build())) {
            engine.prepareHomes();
            try (Sandbox s = engine.start("api-machine-1", Sandboxes.Session.of("alice"))) {
                assertThat(s.run("echo kept > /tmp/marker; echo home > ~/notes").exitCode()).isZero();
                assertThat(s.notice()).isEmpty();
            } // the last view of alice's machine closed: it is saved
            try (Sandbox s = engine.start("api-machine-2", Sandboxes.Session.of("alice"))) {
                ExecResult r = s.run("cat /tmp/marker ~/notes");
                assertThat(r.out()).as(r.toString()).isEqualTo("kept\nhome\n");
                try (Sandbox again = engine.start("api-machine-3", Sandboxes.Session.of("alice"))) {
                    assertThat(again.id()).as("a second session of alice's is a view of the same machine").isEqualTo(s.id());
                }
            }
            try (Sandbox s = engine.start("api-machine-4", Sandboxes.Session.of("alice").freshMachine(true))) {
                assertThat(s.run("cat /tmp/marker 2>/dev/null || echo fresh; cat ~/notes").out()).isEqualTo("fresh\nhome\n");
            }
            try (Sandbox s = engine.start("api-machine-5", Sandboxes.Session.of("bob"))) {
                assertThat(s.run("ls -A ~").out()).as("bob's home is his own").isEqualTo("lost+found\n");
            }
        }
        assertNothingLeft(rt);
    }

    static void assertNothingLeft(Path root) throws Exception {
        long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
        while (true) {
            List<String> dirs;
            try (Stream<Path> s = Files.exists(root) ? Files.list(root) : Stream.empty()) {
                dirs = s.map(p -> p.getFileName().toString()).toList();
            }
            List<Long> qemus = ProcessHandle.allProcesses()
                    .filter(p -> p.info().commandLine().orElse("").contains(root.toString()))
                    .map(ProcessHandle::pid).toList();
            if (dirs.isEmpty() && qemus.isEmpty()) {
                return;
            }
            if (System.nanoTime() > deadline) {
                throw new AssertionError("left behind under " + root + ": directories " + dirs + ", processes " + qemus);
            }
            Thread.sleep(100);
        }
    }

    static long qemuPid(Path vmDir) throws IOException {
        for (String line : Files.readAllLines(vmDir.resolve("qemu.pid"))) {
            if (line.startsWith("qemu_pid=")) {
                return Long.parseLong(line.substring("qemu_pid=".length()).strip());
            }
        }
        throw new IOException("no qemu_pid in " + vmDir);
    }

    static String sha256(byte[] b) throws Exception {
        return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(b));
    }

    record Run(int code, String out, String err) {}

    static Run run(List<String> argv) throws Exception {
        Process p = new ProcessBuilder(argv).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null"))).start();
        var out = p.getInputStream();
        var err = p.getErrorStream();
        var errText = java.util.concurrent.CompletableFuture.supplyAsync(() -> {
            try {
                return new String(err.readAllBytes(), StandardCharsets.UTF_8);
            } catch (IOException e) {
                return e.toString();
            }
        });
        String outText = new String(out.readAllBytes(), StandardCharsets.UTF_8);
        if (!p.waitFor(60, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new AssertionError("timed out: " + argv);
        }
        return new Run(p.exitValue(), outText, errText.get());
    }

    /** Collects a terminal's output and waits for text to appear in it. */
    static final class Reader {
        private final StringBuffer seen = new StringBuffer();

        Reader(InputStream in) {
            Thread.ofVirtual().start(() -> {
                byte[] b = new byte[4096];
                try {
                    for (int n; (n = in.read(b)) >= 0; ) {
                        seen.append(new String(b, 0, n, StandardCharsets.UTF_8));
                    }
                } catch (IOException e) {
                    // the process ended
                }
            });
        }

        void await(String text) throws InterruptedException, ExecutionException {
            long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
            while (!seen.toString().contains(text)) {
                if (System.nanoTime() > deadline) {
                    throw new AssertionError("no '" + text + "' on the terminal; it shows: " + seen);
                }
                Thread.sleep(20);
            }
        }
    }
}
