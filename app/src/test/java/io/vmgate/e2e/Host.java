package io.vmgate.e2e;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/** Running host commands from end-to-end tests, and checking that vmgate left nothing behind. */
final class Host {
    private Host() {}

    static final Path HOME = Path.of(System.getProperty("vmgate.home", ".")).toAbsolutePath().normalize();

    record Result(int exit, byte[] stdout, String stderr) {
        String out() {
            return new String(stdout, StandardCharsets.UTF_8);
        }
    }

    /** Runs a command with optional stdin bytes; fails the test if it does not end in time. */
    static Result run(List<String> cmd, Map<String, String> env, byte[] stdin, long timeoutSeconds) throws Exception {
        ProcessBuilder pb = new ProcessBuilder(cmd).directory(HOME.toFile());
        pb.environment().putAll(env);
        if (stdin == null) {
            pb.redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")));
        }
        Process p = pb.start();
        var out = new java.util.concurrent.CompletableFuture<byte[]>();
        var err = new java.util.concurrent.CompletableFuture<byte[]>();
        Thread.startVirtualThread(() -> out.complete(readAll(p.getInputStream())));
        Thread.startVirtualThread(() -> err.complete(readAll(p.getErrorStream())));
        if (stdin != null) {
            Thread.startVirtualThread(() -> {
                try (var in = p.getOutputStream()) {
                    in.write(stdin);
                } catch (IOException ignored) {
                    // the command may exit before reading everything
                }
            });
        }
        if (!p.waitFor(timeoutSeconds, TimeUnit.SECONDS)) {
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            p.destroyForcibly();
            throw new AssertionError("timed out after " + timeoutSeconds + " s: " + cmd);
        }
        return new Result(p.exitValue(), out.get(10, TimeUnit.SECONDS), new String(err.get(10, TimeUnit.SECONDS), StandardCharsets.UTF_8));
    }

    private static byte[] readAll(java.io.InputStream in) {
        try {
            return in.readAllBytes();
        } catch (IOException e) {
            return new byte[0];
        }
    }

    /** QEMU processes whose command line mentions this runtime root. */
    static List<String> qemusUnder(Path runtimeRoot) {
        List<String> found = new ArrayList<>();
        ProcessHandle.allProcesses().forEach(ph -> ph.info().commandLine().ifPresent(cl -> {
            if (cl.contains("qemu-system") && cl.contains(runtimeRoot.toString())) {
                found.add(ph.pid() + " " + cl);
            }
        }));
        return found;
    }

    static List<Path> entries(Path dir) throws IOException {
        if (!Files.isDirectory(dir)) {
            return List.of();
        }
        try (Stream<Path> s = Files.list(dir)) {
            return s.toList();
        }
    }

    /** Waits up to {@code seconds} for every QEMU and runtime directory under the root to be gone. */
    static void assertNothingLeft(Path runtimeRoot, int seconds) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        while (System.nanoTime() < deadline && (!qemusUnder(runtimeRoot).isEmpty() || !entries(runtimeRoot).isEmpty())) {
            Thread.sleep(100);
        }
        assertThat(qemusUnder(runtimeRoot)).as("QEMU processes left running").isEmpty();
        assertThat(entries(runtimeRoot)).as("runtime directories left behind").isEmpty();
    }

    /**
     * After vmgate was SIGKILLed: its QEMU must be gone within seconds (parent-death
     * signal); its runtime directory may remain until the next start, which must reap it.
     */
    static void assertNothingLeftOrReapable(Path runtimeRoot) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
        while (System.nanoTime() < deadline && !qemusUnder(runtimeRoot).isEmpty()) {
            Thread.sleep(100);
        }
        assertThat(qemusUnder(runtimeRoot)).as("QEMU outlived a SIGKILLed vmgate").isEmpty();
        Result next = run(List.of("./vmgate", "run", "--", "true"), Map.of("VMGATE_RUNTIME_DIR", runtimeRoot.toString()), null, 120);
        assertThat(next.exit()).as(next.stderr()).isZero();
        assertNothingLeft(runtimeRoot, 10);
    }
}
