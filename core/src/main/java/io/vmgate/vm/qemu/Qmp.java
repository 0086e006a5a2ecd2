package io.vmgate.vm.qemu;

import io.vmgate.text.Json;
import java.io.ByteArrayOutputStream;
import java.io.Closeable;
import java.io.IOException;
import java.io.InterruptedIOException;
import java.nio.ByteBuffer;
import java.nio.channels.ByteChannel;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A small QMP client over one byte channel (QEMU's control socket). A virtual thread reads
 * newline-delimited JSON: command answers complete the matching request by id, events go to a
 * bounded queue. Everything QEMU sends is parsed defensively (see {@link Json}).
 */
public final class Qmp implements Closeable {
    private static final Logger log = LoggerFactory.getLogger(Qmp.class);
    /** Far above any answer we ask for (query-qmp-schema is ~150 KB), far below trouble. */
    static final int MAX_LINE = 8 << 20;
    private static final int MAX_QUEUED_EVENTS = 1024;

    private final ByteChannel channel;
    private final String name;
    private final Object writeLock = new Object();
    private final AtomicLong nextId = new AtomicLong(1);
    private final Map<String, CompletableFuture<Map<String, Object>>> pending = new ConcurrentHashMap<>();
    private final BlockingQueue<QmpEvent> events = new LinkedBlockingQueue<>(MAX_QUEUED_EVENTS);
    private final CompletableFuture<Map<String, Object>> greeting = new CompletableFuture<>();
    private final CompletableFuture<Void> closed = new CompletableFuture<>();

    private Qmp(ByteChannel channel, String name) {
        this.channel = channel;
        this.name = name;
    }

    /** Starts reading at once; call {@link #negotiate} before any command. */
    public static Qmp connect(ByteChannel channel, String name) {
        Qmp q = new Qmp(channel, name);
        Thread.ofPlatform().daemon().name("qmp-reader-" + name).start(q::readLoop); // see AgentClient.connect
        return q;
    }

    /** Waits for QEMU's greeting and leaves capabilities-negotiation mode. */
    public void negotiate(Duration timeout) throws IOException, TimeoutException {
        long deadline = System.nanoTime() + timeout.toNanos();
        await(greeting, timeout, "QMP greeting");
        execute("qmp_capabilities", Map.of(), Duration.ofNanos(Math.max(0, deadline - System.nanoTime())));
    }

    /** Runs a command and returns its {@code return} value (an object, or empty for commands returning none). */
    @SuppressWarnings("unchecked")
    public Map<String, Object> execute(String command, Map<String, Object> arguments, Duration timeout)
            throws IOException, TimeoutException {
        String id = Long.toString(nextId.getAndIncrement());
        CompletableFuture<Map<String, Object>> answer = new CompletableFuture<>();
        pending.put(id, answer);
        Map<String, Object> req = new LinkedHashMap<>();
        req.put("execute", command);
        if (!arguments.isEmpty()) {
            req.put("arguments", arguments);
        }
        req.put("id", id);
        try {
            if (closed.isDone()) {
                throw new IOException("QMP connection to " + name + " is closed");
            }
            byte[] line = (Json.write(req) + "\n").getBytes(StandardCharsets.UTF_8);
            synchronized (writeLock) {
                ByteBuffer buf = ByteBuffer.wrap(line);
                while (buf.hasRemaining()) {
                    channel.write(buf);
                }
            }
            Map<String, Object> msg = await(answer, timeout, "QMP " + command);
            if (msg.get("error") instanceof Map<?, ?> err) {
                throw new QmpException(command, String.valueOf(err.get("class")), String.valueOf(err.get("desc")));
            }
            return msg.get("return") instanceof Map<?, ?> r ? (Map<String, Object>) r : Map.of();
        } finally {
            pending.remove(id);
        }
    }

    /** Events in arrival order. The queue is bounded: when nobody drains it, the oldest are dropped. */
    public BlockingQueue<QmpEvent> events() {
        return events;
    }

    /** Waits for the named event, discarding others that arrive first. */
    public QmpEvent awaitEvent(String eventName, Duration timeout) throws InterruptedException, TimeoutException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (true) {
            long left = deadline - System.nanoTime();
            QmpEvent e = left > 0 ? events.poll(left, TimeUnit.NANOSECONDS) : null;
            if (e == null) {
                throw new TimeoutException("no QMP " + eventName + " event within " + timeout.toMillis() + " ms");
            }
            if (e.name().equals(eventName)) {
                return e;
            }
        }
    }

    /** Completes when the connection ends (QEMU exited or {@link #close()}). */
    public CompletableFuture<Void> closed() {
        return closed;
    }

    @Override
    public void close() {
        shutdown(null);
    }

    private void readLoop() {
        IOException cause = null;
        try {
            LineReader lines = new LineReader(channel, MAX_LINE);
            String line;
            while ((line = lines.next()) != null) {
                if (!line.isBlank()) {
                    dispatch(line);
                }
            }
        } catch (IOException e) {
            cause = e;
        } catch (RuntimeException e) {
            log.atError().setMessage("qmp_reader_crashed").addKeyValue("vm", name).setCause(e).log();
            cause = new IOException(e);
        }
        shutdown(cause);
    }

    @SuppressWarnings("unchecked")
    private void dispatch(String line) {
        Map<String, Object> msg;
        try {
            msg = Json.parseObject(line);
        } catch (Json.JsonException e) {
            log.atWarn().setMessage("qmp_bad_message").addKeyValue("vm", name).addKeyValue("error", e.getMessage()).log();
            return;
        }
        if (msg.containsKey("QMP")) {
            greeting.complete(msg);
        } else if (msg.get("event") instanceof String ev) {
            Map<String, Object> data = msg.get("data") instanceof Map<?, ?> d ? (Map<String, Object>) d : Map.of();
            long micros = 0;
            if (msg.get("timestamp") instanceof Map<?, ?> ts && ts.get("seconds") instanceof Long s
                    && ts.get("microseconds") instanceof Long us) {
                micros = s * 1_000_000 + us;
            }
            QmpEvent event = new QmpEvent(ev, data, micros);
            log.atDebug().setMessage("qmp_event").addKeyValue("vm", name).addKeyValue("event", ev).log();
            while (!events.offer(event)) {
                events.poll(); // keep the newest: a stale STOP matters less than the latest SHUTDOWN
            }
        } else if (msg.get("id") instanceof String id && (msg.containsKey("return") || msg.containsKey("error"))) {
            CompletableFuture<Map<String, Object>> f = pending.get(id);
            if (f != null) {
                f.complete(msg);
            }
        } else {
            log.atDebug().setMessage("qmp_unexpected_message").addKeyValue("vm", name).log();
        }
    }

    private void shutdown(IOException cause) {
        if (!closed.complete(null)) {
            return;
        }
        IOException gone = new IOException("QMP connection to " + name + " closed", cause);
        greeting.completeExceptionally(gone);
        pending.values().forEach(f -> f.completeExceptionally(gone));
        try {
            channel.close();
        } catch (IOException ignored) {
            // already gone
        }
    }

    private static <T> T await(CompletableFuture<T> f, Duration timeout, String what) throws IOException, TimeoutException {
        try {
            return f.get(Math.max(0, timeout.toNanos()), TimeUnit.NANOSECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new InterruptedIOException("interrupted waiting for " + what);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof IOException io) {
                throw io;
            }
            throw new IOException(what + " failed", e.getCause());
        } catch (TimeoutException e) {
            throw new TimeoutException("no answer to " + what + " within " + timeout.toMillis() + " ms");
        }
    }

    /** Splits a byte channel into UTF-8 lines; an over-long line is skipped, not buffered. */
    static final class LineReader {
        private final ByteChannel ch;
        private final int max;
        private final ByteBuffer buf = ByteBuffer.allocate(64 * 1024);
        private final ByteArrayOutputStream line = new ByteArrayOutputStream();
        private boolean skipping;
        private boolean eof;

        LineReader(ByteChannel ch, int max) {
            this.ch = ch;
            this.max = max;
            buf.flip();
        }

        /** The next line without its terminator, or null at end of stream. */
        String next() throws IOException {
            while (true) {
                while (buf.hasRemaining()) {
                    byte b = buf.get();
                    if (b == '\n') {
                        boolean skipped = skipping;
                        skipping = false;
                        String s = line.toString(StandardCharsets.UTF_8);
                        line.reset();
                        if (skipped) {
                            log.atWarn().setMessage("qmp_line_too_long").addKeyValue("max_bytes", max).log();
                            continue;
                        }
                        return s.endsWith("\r") ? s.substring(0, s.length() - 1) : s;
                    }
                    if (skipping) {
                        continue;
                    }
                    if (line.size() >= max) {
                        skipping = true;
                        line.reset();
                        continue;
                    }
                    line.write(b);
                }
                if (eof) {
                    return null;
                }
                buf.clear();
                int n = ch.read(buf);
                buf.flip();
                if (n < 0) {
                    eof = true;
                }
            }
        }
    }
}
