package io.vmgate.agent;

import java.io.IOException;
import java.io.InterruptedIOException;
import java.io.OutputStream;

/**
 * Bytes to the guest: stdin of a guest process, or a tunnel's host-to-guest direction. A
 * write blocks until the guest has granted credit for it, so a fast host-side writer cannot
 * make the guest (or this side) buffer without bound. {@link #close()} sends EOF.
 */
final class OutboundStream extends OutputStream {
    interface Sink {
        /** Sends {@code len} bytes of {@code b} from {@code off}; the sink copies what it keeps. */
        void data(byte[] b, int off, int len) throws IOException;

        void eof() throws IOException;
    }

    private final Sink sink;
    private final int window;
    private final int chunk;
    private long credit;
    private boolean closed;
    private IOException failure;

    OutboundStream(Sink sink) {
        this(sink, Protocol.INITIAL_WINDOW, Protocol.DATA_CHUNK);
    }

    /** @param chunk the most one DATA frame carries */
    OutboundStream(Sink sink, int window, int chunk) {
        this.sink = sink;
        this.window = window;
        this.chunk = chunk;
        this.credit = window;
    }

    /** A grant beyond the window is clamped to it, as docs/protocol.md says (the guest is not trusted). */
    synchronized void grant(int increment) {
        credit = Math.min(window, credit + increment);
        notifyAll();
    }

    synchronized void fail(IOException cause) {
        if (failure == null) {
            failure = cause;
        }
        notifyAll();
    }

    @Override
    public void write(int b) throws IOException {
        write(new byte[] {(byte) b}, 0, 1);
    }

    @Override
    public void write(byte[] b, int off, int len) throws IOException {
        java.util.Objects.checkFromIndexSize(off, len, b.length);
        while (len > 0) {
            int n;
            synchronized (this) {
                while (credit == 0 && failure == null && !closed) {
                    try {
                        wait();
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                        throw new InterruptedIOException();
                    }
                }
                if (failure != null) {
                    throw failure;
                }
                if (closed) {
                    throw new IOException("stdin is closed");
                }
                n = (int) Math.min(Math.min(len, credit), chunk);
                credit -= n;
            }
            sink.data(b, off, n);
            off += n;
            len -= n;
        }
    }

    @Override
    public void close() throws IOException {
        synchronized (this) {
            if (closed) {
                return;
            }
            closed = true;
            notifyAll();
            if (failure != null) {
                return;
            }
        }
        sink.eof();
    }
}
