package io.vmgate.vm.qemu;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.channels.ReadableByteChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.concurrent.CompletableFuture;

/**
 * The guest's serial console, read from QEMU's socket: the last {@link #TAIL_BYTES} stay in
 * memory for error messages, and the first {@link #FILE_CAP} go to {@code console.log} for
 * operators. Both bounds exist because the guest (root inside) can write to the console
 * without end.
 */
final class ConsoleLog {
    static final int TAIL_BYTES = 64 * 1024;
    static final long FILE_CAP = 1 << 20;

    private final byte[] ring = new byte[TAIL_BYTES];
    private long total;
    private final CompletableFuture<Void> finished = new CompletableFuture<>();

    /** Starts a virtual thread that drains {@code channel} until end of stream. */
    static ConsoleLog start(ReadableByteChannel channel, Path file, String vmId) {
        ConsoleLog c = new ConsoleLog();
        Thread.ofPlatform().daemon().name("console-" + vmId).start(() -> c.drain(channel, file)); // see AgentClient.connect
        return c;
    }

    private void drain(ReadableByteChannel channel, Path file) {
        ByteBuffer buf = ByteBuffer.allocate(8192);
        OutputStream out = null;
        long written = 0;
        try {
            out = Files.newOutputStream(file, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
            while (channel.read(buf) >= 0) {
                buf.flip();
                int n = buf.remaining();
                append(buf.array(), 0, n);
                if (out != null && written < FILE_CAP) {
                    int m = (int) Math.min(n, FILE_CAP - written);
                    out.write(buf.array(), 0, m);
                    out.flush();
                    written += m;
                    if (written == FILE_CAP) {
                        out.write("\n[vmgate: console.log stops here at 1 MiB]\n".getBytes(StandardCharsets.UTF_8));
                        out.close();
                        out = null;
                    }
                }
                buf.clear();
            }
        } catch (IOException e) {
            // QEMU gone or the channel closed by teardown: the tail so far is what we have
        } finally {
            if (out != null) {
                try {
                    out.close();
                } catch (IOException ignored) {
                    // the file is only for operators
                }
            }
            try {
                channel.close();
            } catch (IOException ignored) {
                // closing
            }
            finished.complete(null);
        }
    }

    private synchronized void append(byte[] b, int off, int len) {
        for (int i = 0; i < len; i++) {
            ring[(int) ((total + i) % TAIL_BYTES)] = b[off + i];
        }
        total += len;
    }

    /** Completes when QEMU closed the console (it exited) or teardown closed it. */
    CompletableFuture<Void> finished() {
        return finished;
    }

    /** The last {@code lines} lines, made safe to print on a terminal. */
    synchronized String tail(int lines) {
        int n = (int) Math.min(total, TAIL_BYTES);
        byte[] b = new byte[n];
        for (int i = 0; i < n; i++) {
            b[i] = ring[(int) ((total - n + i) % TAIL_BYTES)];
        }
        return Tails.lastLines(new String(b, StandardCharsets.UTF_8), lines);
    }
}
