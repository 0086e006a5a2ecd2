package io.vmgate.agent;

import java.io.IOException;
import java.io.InterruptedIOException;
import java.io.OutputStream;

/**
 * Stdin of a guest process. A write blocks until the guest has granted credit for it,
 * so a fast host-side writer cannot make the guest (or this side) buffer without bound.
 * {@link #close()} sends EOF.
 */
final class OutboundStream extends OutputStream {
    interface Sink {
        /** Sends {@code len} bytes of {@code b} from {@code off}; the sink copies what it keeps. */
        void data(byte[] b, int off, int len) throws IOException;

        void eof() throws IOException;
    }

    private final Sink sink;
    private long credit = Protocol.INITIAL_WINDOW;
    private boolean closed;
    private IOException failure;

    OutboundStream(Sink sink) {
        this.sink = sink;
    }

    synchronized void grant(int increment) {
        credit += increment;
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
                n = (int) Math.min(Math.min(len, credit), Protocol.DATA_CHUNK);
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
