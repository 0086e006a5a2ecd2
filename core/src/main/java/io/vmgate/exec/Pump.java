package io.vmgate.exec;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.util.Objects;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.locks.Lock;
import java.util.function.IntConsumer;

/**
 * The one stream bridge: copies an {@link InputStream} into an {@link OutputStream} on a thread of
 * its own, flushing each chunk, until EOF. Every front end moves guest bytes with it: SSH channels,
 * {@code vmgate run}, and the Sandbox API's transfers and collected output. Blocking end to end,
 * so a slow target holds the source back instead of filling memory.
 *
 * <pre>{@code
 * CompletableFuture<Long> out = Pump.copy(process.stdout(), channelOut).name("ch1-stdout")
 *         .onData(n -> clock.activity()).onTargetFailure(process::kill).start();
 * }</pre>
 */
public final class Pump {
    /** 32 KiB: the size of the agent's DATA chunks and of MINA's channel packets. */
    public static final int CHUNK = 32 * 1024;

    private final InputStream from;
    private final OutputStream to;
    private String name = "pump";
    private boolean closeTarget;
    private IntConsumer onData = n -> { };
    private Runnable onTargetFailure = () -> { };
    private Lock lock;
    private boolean platformThread;

    private Pump(InputStream from, OutputStream to) {
        this.from = Objects.requireNonNull(from, "from");
        this.to = Objects.requireNonNull(to, "to");
    }

    public static Pump copy(InputStream from, OutputStream to) {
        return new Pump(from, to);
    }

    /** The thread's name, for stack dumps. */
    public Pump name(String threadName) {
        this.name = threadName;
        return this;
    }

    /** Close the target at the source's EOF (towards a guest's stdin: EOF). */
    public Pump closeTargetAtEnd() {
        this.closeTarget = true;
        return this;
    }

    /** Told the size of each chunk as it is copied (for idle clocks and byte counters). */
    public Pump onData(IntConsumer listener) {
        this.onData = listener;
        return this;
    }

    /** Called once when a write fails (the reader went away): stop the producer rather than let it block. */
    public Pump onTargetFailure(Runnable action) {
        this.onTargetFailure = action;
        return this;
    }

    /** Held around each write and flush, for a target other writers share (a channel's stderr). */
    public Pump lock(Lock l) {
        this.lock = l;
        return this;
    }

    /**
     * Copy on a platform thread: a virtual thread blocked in a read of a file descriptor (a
     * terminal, a pipe) starts the JDK's I/O poller, whose native thread delays every JVM exit.
     */
    public Pump platformThread() {
        this.platformThread = true;
        return this;
    }

    /**
     * Starts copying. The future completes with the number of bytes copied once the source is at EOF,
     * or exceptionally with the {@link IOException} that ended the copy (a failed read or write).
     */
    public CompletableFuture<Long> start() {
        CompletableFuture<Long> done = new CompletableFuture<>();
        Runnable body = () -> run(done);
        if (platformThread) {
            Thread.ofPlatform().daemon().name(name).start(body);
        } else {
            Thread.ofVirtual().name(name).start(body);
        }
        return done;
    }

    private void run(CompletableFuture<Long> done) {
        byte[] buf = new byte[CHUNK];
        long total = 0;
        try {
            int n;
            while ((n = from.read(buf)) >= 0) {
                if (n == 0) {
                    continue;
                }
                onData.accept(n);
                try {
                    write(buf, n);
                } catch (IOException | RuntimeException e) {
                    onTargetFailure.run();
                    throw e;
                }
                total += n;
            }
            if (closeTarget) {
                to.close();
            }
            done.complete(total);
        } catch (IOException | RuntimeException e) {
            done.completeExceptionally(e);
        }
    }

    private void write(byte[] buf, int n) throws IOException {
        if (lock != null) {
            lock.lock();
        }
        try {
            to.write(buf, 0, n);
            to.flush();
        } finally {
            if (lock != null) {
                lock.unlock();
            }
        }
    }
}
