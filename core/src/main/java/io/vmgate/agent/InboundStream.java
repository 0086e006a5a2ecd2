package io.vmgate.agent;

import java.io.IOException;
import java.io.InputStream;
import java.io.InterruptedIOException;
import java.nio.ByteBuffer;
import java.nio.channels.ReadableByteChannel;
import java.util.function.IntConsumer;

/**
 * Bytes from the guest as the host reads them: a process's stdout or stderr, or a tunnel's
 * guest-to-host direction. The guest may have at most a window in flight, so this buffer
 * never holds more; reading returns credit to the guest in batches.
 *
 * <p>The agent reader thread reads DATA payloads from the socket straight into the ring
 * ({@link #offer(ReadableByteChannel, int)}): no array per frame, no copy between the socket
 * and here. The ring starts small and grows to the window only for a stream that needs it, so
 * an idle shell holds kilobytes, not a window per stream.
 */
final class InboundStream extends InputStream {
    static final int INITIAL_RING = 8 * 1024;

    private final int capacity;
    private byte[] ring; // replaced (grown) only by the reader thread, under the lock
    private final IntConsumer grantCredit;
    private int head, size;
    private int consumedSinceGrant;
    private boolean eof;
    private IOException failure;

    InboundStream(IntConsumer grantCredit) {
        this(grantCredit, Protocol.INITIAL_WINDOW);
    }

    /** @param window the most the guest may have in flight: the most this buffer holds */
    InboundStream(IntConsumer grantCredit, int window) {
        this.grantCredit = grantCredit;
        this.capacity = window;
        this.ring = new byte[Math.min(INITIAL_RING, window)];
    }

    /** What became of an offered payload. */
    enum Offer { ACCEPTED, DISCARDED, OVERRUN }

    /**
     * Reads {@code n} bytes of a DATA payload from {@code in} into the ring. Called by the
     * reader thread only; blocks only on the channel. OVERRUN (the bytes are consumed and
     * dropped) if the guest sent beyond its credit, or after EOF; DISCARDED (likewise) once the
     * stream was finished by the host ({@code kill}).
     */
    Offer offer(ReadableByteChannel in, int n) throws IOException {
        byte[] r;
        int tail;
        synchronized (this) {
            if (eof || n > capacity - size) {
                Offer o = eof && size == 0 ? Offer.DISCARDED : Offer.OVERRUN;
                skip(in, n);
                return o;
            }
            ensureCapacity(size + n);
            r = ring;
            tail = (head + size) % r.length;
        }
        // Outside the lock: the consumer only moves head forward over published bytes, so the
        // free region from tail on is the reader's alone.
        int first = Math.min(n, r.length - tail);
        Frame.readFully(in, ByteBuffer.wrap(r, tail, first));
        Frame.readFully(in, ByteBuffer.wrap(r, 0, n - first));
        synchronized (this) {
            if (eof) {
                return Offer.DISCARDED; // finished (killed) while the bytes arrived
            }
            size += n;
            notifyAll();
            return Offer.ACCEPTED;
        }
    }

    /** A payload already in memory (a tunnel's TDATA); never blocks. False if the guest overran its credit. */
    synchronized boolean offer(byte[] data) {
        if (eof || data.length > capacity - size) {
            return false;
        }
        ensureCapacity(size + data.length);
        int tail = (head + size) % ring.length;
        int first = Math.min(data.length, ring.length - tail);
        System.arraycopy(data, 0, ring, tail, first);
        System.arraycopy(data, first, ring, 0, data.length - first);
        size += data.length;
        notifyAll();
        return true;
    }

    /** Grows the ring (doubling, up to the window), unwrapping its content; caller holds the lock. */
    private void ensureCapacity(int needed) {
        if (needed <= ring.length) {
            return;
        }
        int cap = ring.length;
        while (cap < needed) {
            cap = Math.min(capacity, cap * 2);
        }
        byte[] bigger = new byte[cap];
        int first = Math.min(size, ring.length - head);
        System.arraycopy(ring, head, bigger, 0, first);
        System.arraycopy(ring, 0, bigger, first, size - first);
        ring = bigger;
        head = 0;
    }

    private static void skip(ReadableByteChannel in, int n) throws IOException {
        ByteBuffer scratch = ByteBuffer.allocate(Math.min(n, 64 * 1024));
        for (int left = n; left > 0; ) {
            int k = Math.min(left, scratch.capacity());
            scratch.clear().limit(k);
            Frame.readFully(in, scratch);
            left -= k;
        }
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
