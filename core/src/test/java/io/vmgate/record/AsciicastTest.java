package io.vmgate.record;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.vmgate.text.Json;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The asciicast v2 writer: header, events, escaping of hostile output, the size cap, file mode. */
class AsciicastTest {
    @TempDir
    Path dir;

    private static final Instant T0 = Instant.parse("2026-12-01T16:35:38.123Z");

    private static Asciicast.Header header(int cols, int rows) {
        return new Asciicast.Header(cols, rows, T0, "/bin/sh -l", "vmgate conn x", Map.of("TERM", "xterm-256color", "SHELL", "/bin/sh"));
    }

    /** The file's lines parsed: the header object, then each event as a list [time, type, data]. */
    private static List<Object> lines(Path f) throws Exception {
        List<Object> out = new ArrayList<>();
        for (String line : Files.readAllLines(f, StandardCharsets.UTF_8)) {
            out.add(Json.parse(line));
        }
        return out;
    }

    @SuppressWarnings("unchecked")
    private static List<List<Object>> events(Path f) throws Exception {
        List<Object> all = lines(f);
        return all.subList(1, all.size()).stream().map(o -> (List<Object>) o).toList();
    }

    @Test
    void headerAndEventsAreAsciicastV2() throws Exception {
        Path f = dir.resolve("a.cast");
        try (Asciicast a = Asciicast.create(f, header(100, 30), 0, null)) {
            a.output("hello\r\n".getBytes(StandardCharsets.UTF_8), 0, 7);
            a.resize(120, 40);
            a.input("ls\r".getBytes(StandardCharsets.UTF_8), 0, 3);
            a.errorOutput("oops\n".getBytes(StandardCharsets.UTF_8), 0, 5);
            a.marker("exit-status 3");
        }
        @SuppressWarnings("unchecked")
        Map<String, Object> h = (Map<String, Object>) lines(f).getFirst();
        assertThat(h).containsEntry("version", 2L).containsEntry("width", 100L).containsEntry("height", 30L)
                .containsEntry("timestamp", T0.getEpochSecond()).containsEntry("command", "/bin/sh -l")
                .containsEntry("env", Map.of("TERM", "xterm-256color", "SHELL", "/bin/sh"));
        List<List<Object>> ev = events(f);
        assertThat(ev).extracting(e -> e.get(1)).containsExactly("o", "r", "i", "o", "m");
        assertThat(ev).extracting(e -> e.get(2)).containsExactly("hello\r\n", "120x40", "ls\r", "oops\n", "exit-status 3");
        double last = -1;
        for (List<Object> e : ev) {
            double t = ((Number) e.get(0)).doubleValue();
            assertThat(t).as("times are seconds from the start, in order").isGreaterThanOrEqualTo(last).isLessThan(60);
            last = t;
        }
        assertThat(Files.getPosixFilePermissions(f)).isEqualTo(PosixFilePermissions.fromString("rw-------"));
    }

    @Test
    void noTerminalMeans80x24AndAnExistingFileIsNeverOverwritten() throws Exception {
        Path f = dir.resolve("b.cast");
        Asciicast.create(f, new Asciicast.Header(0, 0, T0, "echo hi", null, null), 0, null).close();
        @SuppressWarnings("unchecked")
        Map<String, Object> h = (Map<String, Object>) lines(f).getFirst();
        assertThat(h).containsEntry("width", 80L).containsEntry("height", 24L).doesNotContainKey("title");
        assertThatThrownBy(() -> Asciicast.create(f, header(80, 24), 0, null)).isInstanceOf(FileAlreadyExistsException.class);
    }

    @Test
    void hostileOutputIsEscapedAndSplitUtf8IsJoined() throws Exception {
        Path f = dir.resolve("c.cast");
        byte[] euro = "€".getBytes(StandardCharsets.UTF_8); // 3 bytes, split across two chunks
        byte[] evil = "\"]\n[0.0, \"o\", \"forged\"]\n\u0000\u001b[2J\\".getBytes(StandardCharsets.UTF_8);
        try (Asciicast a = Asciicast.create(f, header(80, 24), 0, null)) {
            a.output(euro, 0, 1);
            a.output(euro, 1, 2);
            a.output(evil, 0, evil.length);
            a.output(new byte[] {(byte) 0xff, 'x'}, 0, 2); // invalid UTF-8
            a.output(euro, 0, 2);                          // cut short at the end
        }
        List<String> raw = Files.readAllLines(f, StandardCharsets.UTF_8);
        // (the first byte of € alone is no event: it waits for the rest)
        assertThat(raw).as("one line per event: output cannot add lines").hasSize(1 + 4);
        List<List<Object>> ev = events(f);
        assertThat(ev).extracting(e -> e.get(2))
                .containsExactly("€", "\"]\n[0.0, \"o\", \"forged\"]\n\u0000\u001b[2J\\", "\ufffdx", "\ufffd");
    }

    @Test
    void theCapStopsTheRecordingWithAFinalMarkerNotTheWriter() throws Exception {
        Path f = dir.resolve("d.cast");
        AtomicLong capHeard = new AtomicLong();
        byte[] chunk = "x".repeat(1000).getBytes(StandardCharsets.UTF_8);
        try (Asciicast a = Asciicast.create(f, header(80, 24), 8192, new Asciicast.Listener() {
            @Override
            public void capReached(long cap) {
                capHeard.set(cap);
            }
        })) {
            for (int i = 0; i < 100; i++) {
                a.output(chunk, 0, chunk.length); // callers never fail, before or after the cap
            }
            a.marker("exit-status 0");
        }
        assertThat(Files.size(f)).isLessThanOrEqualTo(8192);
        List<List<Object>> ev = events(f);
        assertThat(ev.size()).isBetween(5, 9);
        assertThat(ev.getLast()).element(1).isEqualTo("m");
        assertThat(ev.getLast()).element(2).isEqualTo("vmgate: recording stopped: size limit of 8192 bytes reached");
        assertThat(ev.subList(0, ev.size() - 1)).allSatisfy(e -> assertThat(e.get(2)).isEqualTo("x".repeat(1000)));
        assertThat(capHeard.get()).isEqualTo(8192);
        assertThatThrownBy(() -> Asciicast.create(dir.resolve("e.cast"), header(80, 24), 100, null))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("at least 4096");
    }

    @Test
    void manyEventsFromSeveralThreadsAllArriveInTheirOrderPerThread() throws Exception {
        Path f = dir.resolve("f.cast");
        try (Asciicast a = Asciicast.create(f, header(80, 24), 0, null)) {
            List<Thread> threads = new ArrayList<>();
            for (int t = 0; t < 4; t++) {
                int id = t;
                threads.add(Thread.ofVirtual().start(() -> {
                    for (int i = 0; i < 500; i++) {
                        byte[] b = (id + ":" + i + "\n").getBytes(StandardCharsets.UTF_8);
                        a.output(b, 0, b.length);
                    }
                }));
            }
            for (Thread t : threads) {
                t.join();
            }
        }
        List<List<Object>> ev = events(f);
        assertThat(ev).hasSize(2000);
        for (int t = 0; t < 4; t++) {
            String prefix = t + ":";
            List<Integer> seq = ev.stream().map(e -> (String) e.get(2)).filter(s -> s.startsWith(prefix))
                    .map(s -> Integer.parseInt(s.substring(prefix.length()).strip())).toList();
            assertThat(seq).hasSize(500).isSorted();
        }
    }

    @Test
    void recordingsAreNamedByTimeConnectionAndChannelInAPrivateDirectory() throws IOException {
        Path d = dir.resolve("rec");
        Recordings r = Recordings.open(d, false, 0);
        assertThat(Files.getPosixFilePermissions(d)).isEqualTo(PosixFilePermissions.fromString("rwx------"));
        assertThat(r.fileName(T0, "3fa2c1d0", 2)).isEqualTo("20261201T163538.123Z-3fa2c1d0-ch2.cast");
        assertThatThrownBy(() -> r.fileName(T0, "../x", 1)).isInstanceOf(IllegalArgumentException.class);
        Files.writeString(dir.resolve("file"), "x");
        assertThatThrownBy(() -> Recordings.open(dir.resolve("file"), false, 0)).isInstanceOf(IOException.class)
                .hasMessageContaining("not a directory");
    }
}
