package io.vmgate.agent;

import java.io.IOException;
import java.io.InputStream;
import java.io.InterruptedIOException;
import java.util.function.IntConsumer;

/**
 * Bytes from the guest as the host reads them: a process's stdout or stderr, or a tunnel's
 * guest-to-host direction. The guest may have at most a window in flight, so this buffer
 * never holds more (it is allocated when the first bytes arrive); reading returns credit to
 * the guest in batches.
 */
final class InboundStream extends InputStream {
    private final int capacity;
    private byte[] ring;
    private final IntConsumer grantCredit;
    private int head, size;
    private int consumedSinceGrant;
    private boolean eof;
    private IOException failure;

    InboundStream(IntConsumer grantCredit) {
        this(grantCredit, Protocol.INITIAL_WINDOW);
    }

    /** @param window the most the guest may have in flight: the buffer's size */
    InboundStream(IntConsumer grantCredit, int window) {
        this.grantCredit = grantCredit;
        this.capacity = window;
    }

    /** Called by the reader thread; never blocks. Returns false if the guest overran its credit. */
    synchronized boolean offer(byte[] data) {
        if (eof || data.length > capacity - size) {
            return false;
        }
        if (ring == null) {
            ring = new byte[capacity];
        }
        int tail = (head + size) % ring.length;
        int first = Math.min(data.length, ring.length - tail);
        System.arraycopy(data, 0, ring, tail, first);
        System.arraycopy(data, first, ring, 0, data.length - first);
        size += data.length;
        notifyAll();
        return true;
    }

    synchronized void finish() {
        eof = true;
        notifyAll();
    }

    synchronized void fail(IOException cause) {
        if (!eof && failure == null) {
            failure = cause;
        }
        notifyAll();
    }

    synchronized boolean finished() {
        return eof && size == 0;
    }

    @Override
    public int read() throws IOException {
        byte[] one = new byte[1];
        int n = read(one, 0, 1);
        return n < 0 ? -1 : one[0] & 0xff;
    }

    @Override
    public int read(byte[] b, int off, int len) throws IOException {
        java.util.Objects.checkFromIndexSize(off, len, b.length);
        if (len == 0) {
            return 0;
        }
        int n;
        int grant = 0;
        synchronized (this) {
            while (size == 0 && !eof && failure == null) {
                try {
                    wait();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new InterruptedIOException();
                }
            }
            if (size == 0) {
                if (failure != null && !eof) {
                    throw failure;
                }
                return -1;
            }
            n = Math.min(len, size);
            int first = Math.min(n, ring.length - head);
            System.arraycopy(ring, head, b, off, first);
            System.arraycopy(ring, 0, b, off + first, n - first);
            head = (head + n) % ring.length;
            size -= n;
            consumedSinceGrant += n;
            // Grant in batches of a quarter window: fewer WINDOW frames, the guest never starves.
            if (!eof && consumedSinceGrant >= capacity / 4) {
                grant = consumedSinceGrant;
                consumedSinceGrant = 0;
            }
        }
        if (grant > 0) {
            grantCredit.accept(grant);
        }
        return n;
    }

    @Override
    public synchronized int available() {
        return size;
    }
}
