package io.vmgate.e2e;

import io.vmgate.ssh.SshClientHelper;
import java.io.File;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.OptionalLong;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * {@code ./vmgate serve} started as a user would start it: a subprocess on a free loopback port,
 * with its own host key, its own runtime root ({@code VMGATE_RUNTIME_DIR}) so leak checks see
 * only its VMs, and its text log (stderr and stdout) captured to a file that tests can read
 * and wait on. {@link #close()} kills whatever is left (server, then stray QEMUs under its
 * runtime root) and copies the log to {@code target/e2e-logs/} for post-mortems.
 *
 * <pre>{@code
 * try (ServeProcess s = ServeProcess.builder(tmp).args("--no-snapshot").start()) {
 *     s.ssh().ssh("exit 7");     // SshClientHelper aimed at the server
 *     s.sigterm();
 *     int code = s.awaitExit(Duration.ofSeconds(60));
 * }
 * }</pre>
 */
final class ServeProcess implements AutoCloseable {
    /** The line the server prints once it accepts connections. */
    static final String LISTENING = "server_listening";
    /** How long a start may take: the jar may need a rebuild, the image and template a first build. */
    static final Duration START_TIMEOUT = Duration.ofSeconds(300);

    private final Process process;
    private final int port;
    private final Path dir;
    private final Path runtimeRoot;
    private final Path log;
    private final String name;

    private ServeProcess(Process process, int port, Path dir, Path runtimeRoot, Path log, String name) {
        this.process = process;
        this.port = port;
        this.dir = dir;
        this.runtimeRoot = runtimeRoot;
        this.log = log;
        this.name = name;
    }

    static Builder builder(Path dir) {
        return new Builder(dir);
    }

    /** Options for one server; {@link #start()} waits for {@value #LISTENING}, {@link #startNoWait()} does not. */
    static final class Builder {
        private final Path dir;
        private final List<String> args = new ArrayList<>();
        private final Map<String, String> env = new LinkedHashMap<>();
        private Path runtimeRoot;
        private String listenHost = "127.0.0.1";
        private String name = "serve";

        private Builder(Path dir) {
            this.dir = dir;
        }

        /** Extra arguments after {@code serve --listen ... --host-key ...}. */
        Builder args(String... a) {
            args.addAll(List.of(a));
            return this;
        }

        Builder env(String k, String v) {
            env.put(k, v);
            return this;
        }

        /** Default: {@code <dir>/rt}. Pass another server's root to test reaping. */
        Builder runtimeRoot(Path p) {
            runtimeRoot = p;
            return this;
        }

        Builder listenHost(String h) {
            listenHost = h;
            return this;
        }

        /** A name for the log file copied to target/e2e-logs/. */
        Builder name(String n) {
            name = n;
            return this;
        }

        ServeProcess startNoWait() throws IOException {
            return launch(freePort());
        }

        ServeProcess start() throws Exception {
            // A free port can be taken between our probe and the server's bind: retry then.
            for (int attempt = 1; ; attempt++) {
                ServeProcess s = launch(freePort());
                try {
                    s.awaitLog(Pattern.quote(LISTENING), START_TIMEOUT);
                    return s;
                } catch (AssertionError e) {
                    s.close();
                    if (attempt < 3 && s.logs().contains("Address already in use")) {
                        continue;
                    }
                    throw e;
                }
            }
        }

        private ServeProcess launch(int port) throws IOException {
            Path root = runtimeRoot != null ? runtimeRoot : dir.resolve("rt");
            Files.createDirectories(dir);
            Path logFile = Files.createTempFile(dir, name + "-", ".log");
            List<String> cmd = new ArrayList<>(List.of("./vmgate", "serve", "--listen", listenHost + ":" + port,
                    "--host-key", dir.resolve("host_ed25519_key").toString()));
            cmd.addAll(args);
            ProcessBuilder pb = new ProcessBuilder(cmd).directory(Host.HOME.toFile())
                    .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                    .redirectOutput(ProcessBuilder.Redirect.appendTo(logFile.toFile()))
                    .redirectError(ProcessBuilder.Redirect.appendTo(logFile.toFile()));
            // Only what this test sets: no stray VMGATE_* settings from the environment running the tests.
            pb.environment().keySet().removeIf(k -> k.startsWith("VMGATE_"));
            pb.environment().put("VMGATE_RUNTIME_DIR", root.toString());
            pb.environment().putAll(env);
            return new ServeProcess(pb.start(), port, dir, root, logFile, name);
        }
    }

    static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }

    int port() {
        return port;
    }

    /** The server's pid: {@code ./vmgate} execs java, so it is the JVM itself once it listens. */
    long pid() {
        return process.pid();
    }

    Process process() {
        return process;
    }

    Path runtimeRoot() {
        return runtimeRoot;
    }

    Path dir() {
        return dir;
    }

    Path logFile() {
        return log;
    }

    /** The whole log so far. */
    String logs() {
        try {
            return Files.readString(log, StandardCharsets.UTF_8);
        } catch (IOException e) {
            return "";
        }
    }

    List<String> logLines(String regex) {
        Pattern p = Pattern.compile(regex);
        return logs().lines().filter(l -> p.matcher(l).find()).toList();
    }

    /** Waits for a log line matching the regex; returns it, or fails with the log. */
    String awaitLog(String regex, Duration timeout) throws InterruptedException {
        return awaitLogCount(regex, 1, timeout).getLast();
    }

    /** Waits until at least {@code n} log lines match. */
    List<String> awaitLogCount(String regex, int n, Duration timeout) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (true) {
            List<String> found = logLines(regex);
            if (found.size() >= n) {
                return found;
            }
            if (!process.isAlive() && logLines(regex).size() < n) {
                throw new AssertionError("vmgate serve exited (" + process.exitValue() + ") before logging " + n + " x /"
                        + regex + "/; log:\n" + tail());
            }
            if (System.nanoTime() > deadline) {
                throw new AssertionError("waited " + timeout.toSeconds() + " s for " + n + " log line(s) matching /" + regex
                        + "/, saw " + found.size() + "; log:\n" + tail());
            }
            Thread.sleep(100);
        }
    }

    /** The last lines of the log, for failure messages. */
    String tail() {
        List<String> lines = logs().lines().toList();
        return String.join("\n", lines.subList(Math.max(0, lines.size() - 60), lines.size()));
    }

    /** The OpenSSH client aimed at this server. */
    SshClientHelper ssh() {
        return SshClientHelper.forPort(port);
    }

    boolean isAlive() {
        return process.isAlive();
    }

    /** SIGTERM (the JVM's shutdown hook drains sessions). */
    void sigterm() {
        process.destroy();
    }

    /** SIGKILL: no shutdown hook runs. */
    void sigkill() {
        process.destroyForcibly();
    }

    /** The exit code, or fails if the server has not exited in time. */
    int awaitExit(Duration timeout) throws InterruptedException {
        if (!process.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
            throw new AssertionError("vmgate serve still running after " + timeout.toSeconds() + " s; log:\n" + tail());
        }
        return process.exitValue();
    }

    /** The server JVM's resident set size in KiB, from /proc/PID/status. */
    OptionalLong rssKb() {
        return procStatusKb(pid(), "VmRSS");
    }

    static OptionalLong procStatusKb(long pid, String field) {
        try {
            for (String line : Files.readAllLines(Path.of("/proc", Long.toString(pid), "status"))) {
                if (line.startsWith(field + ":")) {
                    Matcher m = Pattern.compile("(\\d+)").matcher(line);
                    if (m.find()) {
                        return OptionalLong.of(Long.parseLong(m.group(1)));
                    }
                }
            }
        } catch (IOException e) {
            // the process is gone
        }
        return OptionalLong.empty();
    }

    /** How many sockets the server process holds open (its /proc/PID/fd entries that are sockets). */
    int openSockets() throws IOException {
        Path fds = Path.of("/proc", Long.toString(pid()), "fd");
        int n = 0;
        try (Stream<Path> s = Files.list(fds)) {
            for (Path fd : s.toList()) {
                try {
                    if (Files.readSymbolicLink(fd).toString().startsWith("socket:")) {
                        n++;
                    }
                } catch (IOException e) {
                    // closed while we looked
                }
            }
        }
        return n;
    }

    /** Kills the server if still alive (SIGKILL), then any QEMU left under its runtime root; keeps the log. */
    @Override
    public void close() {
        if (process.isAlive()) {
            process.descendants().forEach(ProcessHandle::destroyForcibly);
            process.destroyForcibly();
            try {
                process.waitFor(30, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        killQemusUnder(runtimeRoot);
        try {
            Path keep = Host.HOME.resolve("target/e2e-logs");
            Files.createDirectories(keep);
            Files.copy(log, keep.resolve(log.getFileName()), StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            // the log is a convenience
        }
    }

    /** Cleanup only (tests assert before this): SIGKILL every QEMU whose command line names the root. */
    static void killQemusUnder(Path root) {
        for (String q : Host.qemusUnder(root)) {
            long pid = Long.parseLong(q.substring(0, q.indexOf(' ')));
            ProcessHandle.of(pid).ifPresent(ProcessHandle::destroyForcibly);
        }
    }

    @Override
    public String toString() {
        return "vmgate serve " + name + " on port " + port + " (pid " + process.pid() + ", log " + log + ", dir " + dir + ")";
    }
}
