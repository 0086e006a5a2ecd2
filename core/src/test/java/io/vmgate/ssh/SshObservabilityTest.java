package io.vmgate.ssh;

import static org.assertj.core.api.Assertions.assertThat;

import io.vmgate.record.Recordings;
import io.vmgate.text.Json;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * What an operator sees of the SSH front door: the observer's events (for metrics), the live
 * sessions and ending one, and recordings, through the real OpenSSH client against stdio agents.
 */
class SshObservabilityTest {
    @TempDir
    Path dir;

    /** Counts what the server reports, by event name. */
    static final class Counting implements SshObserver {
        final Map<String, AtomicLong> counts = new ConcurrentHashMap<>();

        long get(String key) {
            AtomicLong n = counts.get(key);
            return n == null ? 0 : n.get();
        }

        private void add(String key, long n) {
            counts.computeIfAbsent(key, k -> new AtomicLong()).addAndGet(n);
        }

        @Override
        public void connectionOpened() {
            add("opened", 1);
        }

        @Override
        public void handshake(boolean ok) {
            add("handshake_" + ok, 1);
        }

        @Override
        public void authentication(String method, boolean ok) {
            add("auth_" + method + "_" + ok, 1);
        }

        @Override
        public void connectionClosed() {
            add("closed", 1);
        }

        @Override
        public void refused(String reason) {
            add("refused_" + reason, 1);
        }

        @Override
        public void bytesIn(int n) {
            add("in", n);
        }

        @Override
        public void bytesOut(int n) {
            add("out", n);
        }
    }

    @Test
    void theObserverHearsConnectionsHandshakesAuthenticationsAndBytes() throws Exception {
        Counting seen = new Counting();
        try (TestServer ts = TestServer.start(dir, b -> b.observer(seen))) {
            byte[] stdin = new byte[500];
            SshClientHelper.Result r = ts.ssh().withStdin(stdin).ssh("cat >/dev/null; head -c 3000 /dev/zero; echo e >&2");
            assertThat(r.exitCode()).as(r.toString()).isZero();
            TestServer.await(() -> seen.get("closed") == 1, "the connection's end to be reported");
            assertThat(seen.get("opened")).isEqualTo(1);
            assertThat(seen.get("handshake_true")).isEqualTo(1);
            assertThat(seen.get("handshake_false")).isZero();
            assertThat(seen.get("auth_none_true")).isEqualTo(1);
            assertThat(seen.get("in")).isEqualTo(500);
            assertThat(seen.get("out")).isEqualTo(3002);

            // A client that connects and leaves before the key exchange: a failed handshake.
            try (java.net.Socket s = new java.net.Socket("127.0.0.1", ts.port())) {
                s.getOutputStream().write("SSH-2.0-nope\r\n".getBytes(StandardCharsets.US_ASCII));
            }
            TestServer.await(() -> seen.get("handshake_false") == 1 && seen.get("closed") == 2, "a failed handshake");
            ts.awaitAllVmsDestroyed();
        }
    }

    @Test
    void refusalsAreReportedByReason() throws Exception {
        Counting seen = new Counting();
        try (TestServer ts = TestServer.start(dir, b -> b.observer(seen).maxSessions(1))) {
            Process first = ts.ssh().startSsh(List.of(), "echo up; sleep 30");
            try {
                TestServer.await(() -> ts.server.liveSessions() == 1 && !ts.server.sessions().isEmpty()
                        && ts.server.sessions().getFirst().vm() != null, "the first session to hold its VM");
                SshClientHelper.Result r = ts.ssh().ssh("true");
                assertThat(r.exitCode()).isEqualTo(255);
                assertThat(r.err()).contains("at capacity");
                assertThat(seen.get("refused_capacity")).isEqualTo(1);
            } finally {
                first.destroyForcibly();
                first.waitFor(10, TimeUnit.SECONDS);
            }
            ts.awaitAllVmsDestroyed();
        }
    }

    @Test
    void anOperatorSeesLiveSessionsAndEndsOneWithAMessage() throws Exception {
        Counting seen = new Counting();
        try (TestServer ts = TestServer.start(dir, b -> b.observer(seen))) {
            Process p = ts.ssh().withUser("alice").startSsh(List.of(), "echo up; exec sleep 60");
            try {
                TestServer.await(() -> ts.server.sessions().size() == 1 && ts.server.sessions().getFirst().vm() != null
                        && ts.server.sessions().getFirst().bytesOut() >= 3, "the session with its VM and its first output");
                SessionInfo s = ts.server.sessions().getFirst();
                assertThat(s.user()).isEqualTo("alice");
                assertThat(s.remote()).startsWith("127.0.0.1:");
                assertThat(s.vm()).isEqualTo("ssh-" + s.id());
                assertThat(s.bytesOut()).isEqualTo(3);
                assertThat(s.channels()).isEqualTo(1);
                assertThat(s.started()).isBefore(java.time.Instant.now().plusSeconds(1));
                int mark = ts.mark();
                assertThat(ts.server.kill("nosuchid", "x")).isFalse();
                assertThat(ts.server.kill(s.id(), "maintenance\nat noon")).isTrue();
                assertThat(p.waitFor(20, TimeUnit.SECONDS)).as("ssh ends after the kill").isTrue();
                String err = new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
                assertThat(p.exitValue()).as(err).isEqualTo(255);
                assertThat(err).contains("vmgate: session ended by the operator: maintenance at noon");
                ts.awaitEvent(mark, e -> e.getMessage().equals("session_killed") && e.getKeyValuePairs().stream()
                        .anyMatch(kv -> kv.key.equals("conn") && kv.value.equals(s.id())), "session_killed with the connection id");
                assertThat(seen.get("refused_killed")).isEqualTo(1);
                ts.awaitAllVmsDestroyed();
                TestServer.await(() -> ts.server.sessions().isEmpty(), "no session left");
            } finally {
                p.destroyForcibly();
            }
        }
    }

    @Test
    void execChannelsAreRecordedWithStdoutStderrAndTheExitStatus() throws Exception {
        Path rec = dir.resolve("rec");
        try (TestServer ts = TestServer.start(dir, b -> b.recordings(new Recordings(rec, true, 0)))) {
            Files.createDirectories(rec);
            SshClientHelper.Result r = ts.ssh().withStdin("typed\n".getBytes(StandardCharsets.UTF_8))
                    .ssh("cat; echo to-out; echo to-err >&2; exit 3");
            assertThat(r.exitCode()).as(r.toString()).isEqualTo(3);
            ts.awaitAllVmsDestroyed();
            List<Path> files;
            try (Stream<Path> s = Files.list(rec)) {
                files = s.toList();
            }
            assertThat(files).hasSize(1);
            Path f = files.getFirst();
            assertThat(f.getFileName().toString()).matches("\\d{8}T\\d{6}\\.\\d{3}Z-[0-9a-f]{8}-ch1\\.cast");
            assertThat(Files.getPosixFilePermissions(f)).isEqualTo(PosixFilePermissions.fromString("rw-------"));
            List<String> lines = Files.readAllLines(f, StandardCharsets.UTF_8);
            Map<String, Object> header = Json.parseObject(lines.getFirst());
            assertThat(header).containsEntry("version", 2L).containsEntry("command", "cat; echo to-out; echo to-err >&2; exit 3");
            List<String> out = new ArrayList<>();
            List<String> in = new ArrayList<>();
            List<String> markers = new ArrayList<>();
            for (String line : lines.subList(1, lines.size())) {
                List<?> e = (List<?>) Json.parse(line);
                switch ((String) e.get(1)) {
                    case "o" -> out.add((String) e.get(2));
                    case "i" -> in.add((String) e.get(2));
                    case "m" -> markers.add((String) e.get(2));
                    default -> throw new AssertionError("unexpected event " + line);
                }
            }
            assertThat(String.join("", out)).contains("typed\n", "to-out\n", "to-err\n");
            assertThat(String.join("", in)).isEqualTo("typed\n");
            assertThat(markers).containsExactly("exit-status 3");
        }
    }
}
