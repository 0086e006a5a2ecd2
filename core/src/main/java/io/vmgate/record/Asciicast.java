package io.vmgate.record;

import io.vmgate.text.Json;
import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.channels.Channels;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Instant;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;

/**
 * One recording in asciicast v2: a header line, then one JSON array per event,
 * {@code [seconds, type, data]}, with {@code o} (output), {@code i} (input), {@code r} (resize,
 * {@code "COLSxROWS"}) and {@code m} (marker) events.
 *
 * <p>The session's threads only copy bytes into a bounded queue; one virtual thread of the
 * recording escapes them as JSON in one pass over the bytes ({@link Utf8Escaper}: valid UTF-8 is
 * kept, a sequence split across chunks is joined, ill-formed bytes become U+FFFD) and writes,
 * flushing whenever the queue runs dry. A session slows
 * down only if the disk cannot keep up for long enough to fill the queue ({@value #QUEUE_EVENTS}
 * chunks). With a size cap, the event that would take the file past it is replaced by a final
 * marker saying so, and nothing more is written; the session goes on. A write error (disk full)
 * also stops the recording, never the session. Thread-safe; events keep the order of their calls.
 */
public final class Asciicast implements AutoCloseable {
    /** Chunks in flight between the session and the file; a producer blocks beyond it. */
    static final int QUEUE_EVENTS = 256;
    /** Room kept under the cap for the final marker. */
    static final int MARKER_ROOM = 160;
    /** The smallest cap that leaves room for a header and the final marker. */
    public static final long MIN_CAP = 4096;

    /**
     * What goes in the header line.
     *
     * @param width     terminal columns (80 when there is no terminal)
     * @param height    terminal rows (24 when there is no terminal)
     * @param timestamp when the recording starts; event times count from it
     * @param command   what runs (the exec line, {@code sftp}, the login shell), or null
     * @param title     a line for people (who, where, which channel), or null
     * @param env       {@code TERM} and {@code SHELL}, as far as known (null values are left out)
     */
    public record Header(int width, int height, Instant timestamp, String command, String title, Map<String, String> env) {
        public Header {
            Objects.requireNonNull(timestamp, "timestamp");
            env = env == null ? Map.of() : env;
        }

        String toJson() {
            Map<String, Object> h = new LinkedHashMap<>();
            h.put("version", 2);
            h.put("width", width > 0 ? width : 80);
            h.put("height", height > 0 ? height : 24);
            h.put("timestamp", timestamp.getEpochSecond());
            if (command != null) {
                h.put("command", command);
            }
            if (title != null) {
                h.put("title", title);
            }
            Map<String, Object> e = new LinkedHashMap<>();
            env.forEach((k, v) -> {
                if (v != null) {
                    e.put(k, v);
                }
            });
            h.put("env", e);
            return Json.write(h);
        }
    }

    /** Hears how a recording ended early; called on the recording's thread. */
    public interface Listener {
        Listener NONE = new Listener() { };

        /** The cap was reached: the final marker is written, later events are dropped. */
        default void capReached(long cap) { }

        /** Writing failed: the recording stops there (the file keeps what was written). */
        default void failed(IOException e) { }
    }

    /** Where an event's bytes came from: each source has its own UTF-8 decoder. */
    private enum Source {
        STDOUT("o"), STDERR("o"), STDIN("i");

        final String type;

        Source(String type) {
            this.type = type;
        }
    }

    /** An event as the session hands it over: raw bytes (copied) or a finished string. */
    private record Event(long nanos, Source source, String type, byte[] bytes, String text) {}

    private static final Event END = new Event(0, null, null, null, null);

    private final Path file;
    private final long cap;
    private final long startNanos;
    private final Listener listener;
    private final BlockingQueue<Event> queue = new ArrayBlockingQueue<>(QUEUE_EVENTS);
    private final CompletableFuture<Void> done = new CompletableFuture<>();
    private final Object closeLock = new Object();
    private volatile boolean stopped;   // cap reached or write failed: producers stop copying
    private boolean closed;              // guarded by closeLock

    // owned by the writer thread
    private final OutputStream out;
    private final Utf8Escaper[] escapers = new Utf8Escaper[Source.values().length];
    private final Utf8Escaper.Bytes line = new Utf8Escaper.Bytes();
    private long written;

    private Asciicast(Path file, OutputStream out, long cap, long startNanos, Listener listener) {
        this.file = file;
        this.out = out;
        this.cap = cap;
        this.startNanos = startNanos;
        this.listener = listener;
    }

    /**
     * Creates {@code file} (mode 0600; it must not exist), writes the header and starts the
     * recording's writer.
     *
     * @param cap the most bytes the file may hold, or 0 for no cap; at least {@link #MIN_CAP}
     */
    public static Asciicast create(Path file, Header header, long cap, Listener listener) throws IOException {
        if (cap != 0 && cap < MIN_CAP) {
            throw new IllegalArgumentException("a recording cap must be at least " + MIN_CAP + " bytes, not " + cap);
        }
        long start = System.nanoTime();
        FileChannel ch = FileChannel.open(file, java.util.Set.of(StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE),
                PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
        OutputStream out = new BufferedOutputStream(Channels.newOutputStream(ch), 64 * 1024);
        Asciicast a = new Asciicast(file, out, cap, start, listener == null ? Listener.NONE : listener);
        try {
            byte[] h = (header.toJson() + "\n").getBytes(StandardCharsets.UTF_8);
            a.writeLine(h, h.length);
            out.flush();
        } catch (IOException | RuntimeException e) {
            out.close();
            throw e;
        }
        Thread.ofVirtual().name("record-" + file.getFileName()).start(a::drain);
        return a;
    }

    public Path file() {
        return file;
    }

    /** Output the user sees (stdout, or the terminal): an {@code o} event. */
    public void output(byte[] b, int off, int len) {
        enqueueBytes(Source.STDOUT, b, off, len);
    }

    /** Standard error of a command without a terminal: an {@code o} event too (v2 has no other output type). */
    public void errorOutput(byte[] b, int off, int len) {
        enqueueBytes(Source.STDERR, b, off, len);
    }

    /** What the user typed or sent: an {@code i} event. */
    public void input(byte[] b, int off, int len) {
        enqueueBytes(Source.STDIN, b, off, len);
    }

    /** The terminal's new size: an {@code r} event, {@code "COLSxROWS"}. */
    public void resize(int cols, int rows) {
        enqueue(new Event(System.nanoTime(), null, "r", null, cols + "x" + rows));
    }

    /** A marker ({@code m} event) with a label, e.g. the exit status. */
    public void marker(String label) {
        enqueue(new Event(System.nanoTime(), null, "m", null, label));
    }

    /** True once the cap was reached or a write failed: nothing more is recorded. */
    public boolean stopped() {
        return stopped;
    }

    /** Bytes in the file so far (as far as the writer got). */
    public long size() {
        synchronized (this) {
            return written;
        }
    }

    private void enqueueBytes(Source s, byte[] b, int off, int len) {
        if (len <= 0 || stopped) {
            return;
        }
        byte[] copy = new byte[len];
        System.arraycopy(b, off, copy, 0, len);
        enqueue(new Event(System.nanoTime(), s, s.type, copy, null));
    }

    private void enqueue(Event e) {
        if (stopped) {
            return;
        }
        synchronized (closeLock) {
            if (closed) {
                return;
            }
        }
        try {
            queue.put(e);
        } catch (InterruptedException ie) {
            Thread.currentThread().interrupt(); // the event is lost; the session goes on
        }
    }

    /** Writes what is queued, then closes the file; returns once it is closed. Idempotent. */
    @Override
    public void close() {
        boolean first;
        synchronized (closeLock) {
            first = !closed;
            closed = true;
        }
        if (first) {
            boolean interrupted = false;
            while (true) {
                try {
                    queue.put(END);
                    break;
                } catch (InterruptedException e) {
                    interrupted = true;
                }
            }
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
        done.join();
    }

    // --- the writer thread

    private void drain() {
        try {
            while (true) {
                Event e = queue.poll();
                if (e == null) {
                    if (!stopped) {
                        out.flush(); // the queue ran dry: what is written so far reaches the file
                    }
                    e = queue.take();
                }
                if (e == END) {
                    if (!stopped) {
                        flushPending();
                    }
                    break;
                }
                if (!stopped) {
                    write(e);
                }
            }
        } catch (IOException e) {
            stopped = true;
            listener.failed(e);
        } catch (InterruptedException e) {
            stopped = true;
        } finally {
            try {
                out.close();
            } catch (IOException e) {
                if (!stopped) {
                    listener.failed(e);
                }
            }
            queue.clear();
            done.complete(null);
        }
    }

    private void write(Event e) throws IOException {
        line.clear();
        startLine(e.nanos, e.type);
        int contentStart = line.length();
        if (e.text != null) {
            byte[] q = Json.quote(e.text).getBytes(StandardCharsets.UTF_8);
            line.put(q, 1, q.length - 2);
        } else {
            escaper(e.source).escape(e.bytes, 0, e.bytes.length, line);
        }
        if (line.length() == contentStart) {
            return; // nothing to show yet (the start of a character whose rest comes next)
        }
        line.put('"').put(']').put('\n');
        writeOrStop(e.nanos);
    }

    private Utf8Escaper escaper(Source s) {
        Utf8Escaper x = escapers[s.ordinal()];
        if (x == null) {
            x = escapers[s.ordinal()] = new Utf8Escaper();
        }
        return x;
    }

    /** {@code [seconds, "type", "} into the line buffer; seconds since the start, with microseconds. */
    private void startLine(long nanos, String type) {
        long micros = Math.max(0, (nanos - startNanos) / 1_000);
        String frac = Long.toString(micros % 1_000_000);
        line.put('[').put(Long.toString(micros / 1_000_000)).put('.').put("000000".substring(frac.length())).put(frac)
                .put(", \"").put(type).put("\", \"");
    }

    /** Writes the line buffer, or, if it would take the file past the cap, the final marker and stops. */
    private void writeOrStop(long nanos) throws IOException {
        if (cap > 0 && written + line.length() > cap - MARKER_ROOM) {
            stopped = true;
            line.clear();
            startLine(nanos, "m");
            line.put("vmgate: recording stopped: size limit of " + cap + " bytes reached").put('"').put(']').put('\n');
            if (written + line.length() <= cap) {
                writeLine(line.array(), line.length());
            }
            out.flush();
            listener.capReached(cap);
            return;
        }
        writeLine(line.array(), line.length());
    }

    /** A sequence still incomplete at the end was never going to be completed: it is written as U+FFFD. */
    private void flushPending() throws IOException {
        for (Source s : Source.values()) {
            Utf8Escaper x = escapers[s.ordinal()];
            if (x != null && x.hasPending()) {
                long now = System.nanoTime();
                line.clear();
                startLine(now, s.type);
                x.finish(line);
                line.put('"').put(']').put('\n');
                writeOrStop(now);
            }
        }
    }

    private void writeLine(byte[] b, int length) throws IOException {
        out.write(b, 0, length);
        synchronized (this) {
            written += length;
        }
    }

}
