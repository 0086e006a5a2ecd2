package io.vmgate.e2e;

import static org.assertj.core.api.Assertions.assertThat;

import io.vmgate.ssh.SshClientHelper;
import io.vmgate.text.Json;
import java.io.IOException;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.io.TempDir;

/**
 * Issue 16, end to end with the real neighbours: one {@code vmgate serve} with metrics, recordings,
 * its control socket and JSON logs; a real Prometheus (Debian's) scraping it; {@code promtool} checking
 * the exposition; OpenSSH in a real terminal (tmux) and {@code asciinema cat} reading the recording;
 * {@code vmgate sessions} listing and ending a live session.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class ObservabilityIT {
    @TempDir
    static Path dir;

    ServeProcess server;
    int metricsPort;
    Path recordings;
    Path socket;
    final HttpClient http = HttpClient.newHttpClient();

    @BeforeAll
    void start() throws Exception {
        metricsPort = ServeProcess.freePort();
        recordings = dir.resolve("rec");
        socket = dir.resolve("control.sock");
        server = ServeProcess.builder(dir).name("ObservabilityIT")
                .args("--metrics-listen", "127.0.0.1:" + metricsPort, "--record", recordings.toString(),
                        "--log-format", "json")
                .start();
    }

    @AfterAll
    void stop() throws Exception {
        if (server == null) {
            return;
        }
        try {
            server.sigterm();
            assertThat(server.awaitExit(Duration.ofSeconds(60))).isZero();
            assertThat(socket).as("the control socket is removed at exit").doesNotExist();
            Host.assertNothingLeft(server.runtimeRoot(), 10);
            everyLogLineIsAJsonEventWithTheFieldsOnTop();
        } finally {
            server.close();
        }
    }

    /** Every log line (after the launcher's own output, if any) is one JSON object with its event name. */
    void everyLogLineIsAJsonEventWithTheFieldsOnTop() throws Exception {
        List<String> lines = server.logs().lines().dropWhile(l -> !l.startsWith("{")).toList();
        assertThat(lines).hasSizeGreaterThan(20);
        for (String line : lines) {
            Map<String, Object> e = Json.parseObject(line);
            assertThat(e).as(line).containsKeys("timestamp", "level", "event");
            assertThat((String) e.get("event")).as(line).matches("[a-z][a-z0-9_]*");
            if (!e.get("event").equals("log")) {
                assertThat(e).as("our events are all fields, no text: " + line).doesNotContainKey("message");
            }
        }
        Map<String, Object> assigned = Json.parseObject(server.logLines("\"event\":\"vm_assigned\"").getFirst());
        assertThat(assigned.get("ms")).as("numbers stay numbers").isInstanceOf(Long.class);
        assertThat(assigned).containsKeys("conn", "user", "remote", "vm");
        Map<String, Object> accepted = Json.parseObject(server.logLines("\"event\":\"connection_accepted\"").getFirst());
        assertThat(accepted).containsKeys("sid", "conn", "remote");
        Map<String, Object> killed = Json.parseObject(server.logLines("\"event\":\"session_killed\"").getFirst());
        assertThat(killed).containsEntry("processes", 1L).containsKeys("sid", "conn", "user", "told");
    }

    private HttpResponse<String> get(String url) throws Exception {
        return http.send(HttpRequest.newBuilder(URI.create(url)).timeout(Duration.ofSeconds(10)).build(),
                HttpResponse.BodyHandlers.ofString());
    }

    // --- metrics

    @Test
    void aRealPrometheusSeesSessionsActiveGoZeroOneZeroAndPromtoolAcceptsTheMetrics() throws Exception {
        HttpResponse<String> metrics = get("http://127.0.0.1:" + metricsPort + "/metrics");
        assertThat(metrics.statusCode()).isEqualTo(200);
        Host.Result check = Host.run(List.of("promtool", "check", "metrics"), Map.of(),
                metrics.body().getBytes(StandardCharsets.UTF_8), 60);
        assertThat(check.exit()).as("promtool check metrics: %s%s", check.out(), check.stderr()).isZero();
        assertThat(get("http://127.0.0.1:" + metricsPort + "/healthz").statusCode()).isEqualTo(200);
        awaitTrue(() -> get("http://127.0.0.1:" + metricsPort + "/readyz").statusCode() == 200, 120, "/readyz to say ready");

        try (Prometheus prom = Prometheus.start(dir.resolve("prometheus"), "127.0.0.1:" + metricsPort)) {
            awaitTrue(() -> "1".equals(prom.value("up{job=\"vmgate\"}")), 60, "Prometheus to scrape vmgate");
            awaitTrue(() -> "0".equals(prom.value("vmgate_sessions_active")), 30, "vmgate_sessions_active 0 in Prometheus");
            try (LiveSsh session = LiveSsh.start(server.ssh(), "echo ready; exec sleep 120")) {
                session.awaitLine("ready", Duration.ofSeconds(120));
                awaitTrue(() -> "1".equals(prom.value("vmgate_sessions_active")), 30, "vmgate_sessions_active 1 in Prometheus");
                session.kill9();
            }
            awaitTrue(() -> "0".equals(prom.value("vmgate_sessions_active")), 30, "vmgate_sessions_active back to 0");
            assertThat(Double.parseDouble(prom.value("sum(vmgate_vm_start_duration_seconds_count)"))).isGreaterThanOrEqualTo(1);
            assertThat(prom.value("vmgate_handshakes_total{result=\"ok\"}")).isNotNull();
        }
    }

    // --- recordings

    private List<Path> castFiles() throws IOException {
        try (Stream<Path> s = Files.list(recordings)) {
            return s.filter(p -> p.toString().endsWith(".cast")).sorted().toList();
        }
    }

    /** The recording whose header has this command. */
    private Path castWithCommand(String command) throws Exception {
        List<Path> found = new ArrayList<>();
        for (Path p : castFiles()) {
            String header = Files.readAllLines(p, StandardCharsets.UTF_8).getFirst();
            if (command.equals(Json.parseObject(header).get("command"))) {
                found.add(p);
            }
        }
        assertThat(found).as("recordings of " + command + " among " + castFiles()).hasSize(1);
        return found.getFirst();
    }

    /** Waits for the writer to have closed the file (the exit marker is its last event). */
    @SuppressWarnings("unchecked")
    private static List<List<Object>> events(Path cast, String lastMarkerPrefix) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (true) {
            List<String> lines = Files.readAllLines(cast, StandardCharsets.UTF_8);
            List<List<Object>> ev = new ArrayList<>();
            for (String l : lines.subList(1, lines.size())) {
                ev.add((List<Object>) Json.parse(l));
            }
            if (ev.stream().anyMatch(e -> e.get(1).equals("m") && ((String) e.get(2)).startsWith(lastMarkerPrefix))
                    || System.nanoTime() > deadline) {
                return ev;
            }
            Thread.sleep(100);
        }
    }

    @Test
    void aTerminalSessionIsRecordedAndAsciinemaPrintsItWithItsResize() throws Exception {
        SshClientHelper ssh = server.ssh().withUser("root");
        List<String> cmd = new ArrayList<>(List.of("ssh"));
        cmd.addAll(ssh.commonOptions());
        cmd.addAll(List.of("-tt", ssh.destination()));
        Path status = dir.resolve("pty-status");
        String line = cmd.stream().map(SshPtyIT::q).collect(Collectors.joining(" ")) + "; echo $? > " + SshPtyIT.q(status.toString());
        try (Tmux t = new Tmux(dir, line, 100, 30)) {
            t.await(s -> s.contains("root@vmgate:~#"), 120, "a shell prompt");
            t.type("echo marker-$((6 * 7))");
            t.await(s -> s.contains("marker-42"), 10, "the marker");
            t.resize(120, 40);
            t.type("clear; stty size");
            t.await(s -> s.contains("40 120"), 10, "the resize to reach the guest");
            t.type("exit 3");
            awaitTrue(() -> Files.exists(status) && !Files.readString(status).isBlank(), 30, "ssh to exit");
            assertThat(Files.readString(status).strip()).isEqualTo("3");
        }
        Path cast = castWithCommand("/bin/sh -l");
        assertThat(Files.getPosixFilePermissions(cast)).isEqualTo(PosixFilePermissions.fromString("rw-------"));
        assertThat(Files.getPosixFilePermissions(recordings)).isEqualTo(PosixFilePermissions.fromString("rwx------"));
        assertThat(cast.getFileName().toString()).matches("\\d{8}T\\d{6}\\.\\d{3}Z-[0-9a-f]{8}-ch1\\.cast");
        Map<String, Object> header = Json.parseObject(Files.readAllLines(cast, StandardCharsets.UTF_8).getFirst());
        assertThat(header).containsEntry("version", 2L).containsEntry("width", 100L).containsEntry("height", 30L)
                .containsKey("timestamp");
        @SuppressWarnings("unchecked")
        Map<String, Object> env = (Map<String, Object>) header.get("env");
        assertThat(env).containsEntry("SHELL", "/bin/sh").containsKey("TERM");
        List<List<Object>> ev = events(cast, "exit-status");
        assertThat(ev).filteredOn(e -> e.get(1).equals("r")).extracting(e -> e.get(2)).contains("120x40");
        assertThat(ev).filteredOn(e -> e.get(1).equals("m")).extracting(e -> e.get(2)).containsExactly("exit-status 3");
        assertThat(ev).filteredOn(e -> e.get(1).equals("i")).as("no input without --record-input").isEmpty();

        // asciinema cat wants a terminal (/dev/tty): run it in one, its output to a file.
        Path printed = dir.resolve("asciinema-cat.out");
        Path catStatus = dir.resolve("asciinema-cat.status");
        Files.createDirectories(dir.resolve("cat"));
        try (Tmux t = new Tmux(dir.resolve("cat"),
                "asciinema cat " + SshPtyIT.q(cast.toString()) + " > " + SshPtyIT.q(printed.toString()) + " 2>&1; echo $? > "
                        + SshPtyIT.q(catStatus.toString()), 100, 30)) {
            awaitTrue(() -> Files.exists(catStatus) && !Files.readString(catStatus).isBlank(), 30, "asciinema cat to finish");
        }
        assertThat(Files.readString(catStatus).strip()).as(Files.readString(printed)).isEqualTo("0");
        assertThat(Files.readString(printed)).contains("marker-42", "40 120");
    }

    @Test
    void anExecChannelIsRecordedWithStdoutStderrAndItsExitStatus() throws Exception {
        String command = "echo to-out; echo to-err >&2; exit 3";
        SshClientHelper.Result r = server.ssh().ssh(command);
        assertThat(r.exitCode()).as(r.toString()).isEqualTo(3);
        Path cast = castWithCommand(command);
        Map<String, Object> header = Json.parseObject(Files.readAllLines(cast, StandardCharsets.UTF_8).getFirst());
        assertThat(header).containsEntry("width", 80L).containsEntry("height", 24L);
        List<List<Object>> ev = events(cast, "exit-status");
        String output = ev.stream().filter(e -> e.get(1).equals("o")).map(e -> (String) e.get(2)).collect(Collectors.joining());
        assertThat(output).contains("to-out\n", "to-err\n");
        assertThat(ev.getLast()).element(1).isEqualTo("m");
        assertThat(ev.getLast()).element(2).isEqualTo("exit-status 3");
    }

    // --- sessions

    @Test
    void vmgateSessionsListsALiveSessionAndKillEndsItWithTheMessage() throws Exception {
        assertThat(Files.getPosixFilePermissions(socket)).isEqualTo(PosixFilePermissions.fromString("rw-------"));
        try (LiveSsh session = LiveSsh.start(server.ssh().withUser("carol"), "echo ready; exec sleep 120")) {
            session.awaitLine("ready", Duration.ofSeconds(120));
            Host.Result list = vmgate("sessions", "--control-socket", socket.toString());
            assertThat(list.exit()).as(list.stderr()).isZero();
            List<String> rows = list.out().lines().toList();
            assertThat(rows.getFirst()).startsWith("ID").contains("USER", "REMOTE", "VM", "STARTED", "IDLE", "IN", "OUT");
            String row = rows.stream().filter(l -> l.contains(" carol ")).findFirst()
                    .orElseThrow(() -> new AssertionError("no session of carol in:\n" + list.out()));
            Matcher m = Pattern.compile("^([0-9a-f]{8})\\s+carol\\s+127\\.0\\.0\\.1:\\d+\\s+ssh-\\1\\s+\\S+Z\\s+\\d+s\\s+0\\s+6$").matcher(row);
            assertThat(m.find()).as("row: " + row).isTrue();
            String id = m.group(1);

            Host.Result unknown = vmgate("sessions", "--control-socket", socket.toString(), "kill", "00000000");
            assertThat(unknown.exit()).isEqualTo(1);
            assertThat(unknown.stderr()).contains("no live session 00000000");

            Host.Result kill = vmgate("sessions", "--control-socket", socket.toString(), "kill", id, "--reason", "lab is over");
            assertThat(kill.exit()).as(kill.stderr()).isZero();
            assertThat(session.awaitExit(Duration.ofSeconds(30))).isEqualTo(255);
            assertThat(session.stderr()).contains("vmgate: session ended by the operator: lab is over");
            server.awaitLog("\"event\":\"session_killed\".*\"conn\":\"" + id + "\"", Duration.ofSeconds(10));
        }
        awaitTrue(() -> vmgate("sessions", "--control-socket", socket.toString()).out().lines().count() == 1, 30,
                "no session listed after the kill");
        // A second server on the same state directory (the same host key, so the same control socket) refuses clearly.
        try (ServeProcess second = ServeProcess.builder(dir).name("ObservabilityIT-second").runtimeRoot(dir.resolve("rt2"))
                .startNoWait()) {
            assertThat(second.awaitExit(Duration.ofSeconds(180))).isNotZero();
            assertThat(second.logs()).contains("another vmgate serve is using the control socket " + socket)
                    .doesNotContain(ServeProcess.LISTENING);
            Host.assertNothingLeft(second.runtimeRoot(), 5);
        }
        assertThat(vmgate("sessions", "--control-socket", socket.toString()).exit()).as("the first server still answers").isZero();
        Host.Result none = vmgate("sessions", "--control-socket", dir.resolve("nope.sock").toString());
        assertThat(none.exit()).isEqualTo(125);
        assertThat(none.stderr()).contains("no control socket at");
    }

    private static Host.Result vmgate(String... args) throws Exception {
        List<String> cmd = new ArrayList<>(List.of("./vmgate"));
        cmd.addAll(List.of(args));
        return Host.run(cmd, Map.of(), null, 120);
    }

    interface Check {
        boolean ok() throws Exception;
    }

    static void awaitTrue(Check c, int seconds, String what) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        while (!c.ok()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("waited " + seconds + " s for " + what);
            }
            Thread.sleep(200);
        }
    }

    /** Debian's Prometheus on a free loopback port with its own config and data directory, scraping one target every second. */
    static final class Prometheus implements AutoCloseable {
        private final Process process;
        private final int port;
        private final Path log;
        private final HttpClient http = HttpClient.newHttpClient();

        private Prometheus(Process process, int port, Path log) {
            this.process = process;
            this.port = port;
            this.log = log;
        }

        static Prometheus start(Path dir, String target) throws Exception {
            Files.createDirectories(dir.resolve("data"));
            Path config = dir.resolve("prometheus.yml");
            Files.writeString(config, """
                    global:
                      scrape_interval: 1s
                      evaluation_interval: 1s
                    scrape_configs:
                      - job_name: vmgate
                        static_configs:
                          - targets: ["%s"]
                    """.formatted(target));
            int port = ServeProcess.freePort();
            Path log = dir.resolve("prometheus.log");
            Process p = new ProcessBuilder("prometheus", "--config.file=" + config, "--storage.tsdb.path=" + dir.resolve("data"),
                    "--web.listen-address=127.0.0.1:" + port, "--query.lookback-delta=3s")
                    .redirectErrorStream(true).redirectOutput(log.toFile()).start();
            Prometheus prom = new Prometheus(p, port, log);
            try {
                awaitTrue(() -> {
                    if (!p.isAlive()) {
                        throw new AssertionError("prometheus exited: " + Files.readString(log));
                    }
                    try {
                        return prom.get("/-/ready").statusCode() == 200;
                    } catch (IOException e) {
                        return false;
                    }
                }, 60, "prometheus to be ready");
            } catch (Throwable t) {
                prom.close();
                throw t;
            }
            return prom;
        }

        private HttpResponse<String> get(String path) throws IOException, InterruptedException {
            return http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + path)).timeout(Duration.ofSeconds(10))
                    .build(), HttpResponse.BodyHandlers.ofString());
        }

        /** The query's single value now (as Prometheus formats it), or null when it has none. */
        String value(String query) throws Exception {
            HttpResponse<String> r = get("/api/v1/query?query=" + URLEncoder.encode(query, StandardCharsets.UTF_8));
            Map<String, Object> body = Json.parseObject(r.body());
            assertThat(body).as(r.body()).containsEntry("status", "success");
            List<?> result = (List<?>) ((Map<?, ?>) body.get("data")).get("result");
            if (result.isEmpty()) {
                return null;
            }
            List<?> value = (List<?>) ((Map<?, ?>) result.getFirst()).get("value");
            return (String) value.get(1);
        }

        @Override
        public void close() throws Exception {
            process.destroy();
            if (!process.waitFor(30, TimeUnit.SECONDS)) {
                process.destroyForcibly();
                process.waitFor(10, TimeUnit.SECONDS);
            }
        }
    }
}
