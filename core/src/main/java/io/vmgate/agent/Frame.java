package io.vmgate.agent;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.ReadableByteChannel;

/** One frame on the wire: {@code u32 length | u8 type | u32 id | payload}. */
public record Frame(byte type, int id, byte[] payload) {

    public Frame {
        if (payload.length > Protocol.MAX_PAYLOAD) {
            throw new IllegalArgumentException("payload of " + payload.length + " bytes exceeds MAX_PAYLOAD");
        }
    }

    /** The frame as it goes on the wire. */
    public ByteBuffer encode() {
        ByteBuffer b = ByteBuffer.allocate(Protocol.HEADER + payload.length);
        b.putInt(5 + payload.length).put(type).putInt(id).put(payload).flip();
        return b;
    }

    /**
     * Reads one frame. Returns null on a clean end of stream between frames; throws
     * {@link EOFException} on one inside a frame and a framing {@link ProtocolException}
     * on an impossible length, before allocating anything for it.
     */
    public static Frame read(ReadableByteChannel in) throws IOException {
        Header h = readHeader(in, ByteBuffer.allocate(Protocol.HEADER));
        return h == null ? null : readPayload(in, h);
    }

    /** A frame's header, checked; its payload is still on the channel. */
    record Header(byte type, int id, int payloadLength) {}

    /**
     * Reads and checks a header into {@code buf} (reused; {@link Protocol#HEADER} bytes). Null on a
     * clean end of stream; a framing {@link ProtocolException} on an impossible length.
     */
    static Header readHeader(ReadableByteChannel in, ByteBuffer buf) throws IOException {
        buf.clear().limit(Protocol.HEADER);
        if (!fill(in, buf, true)) {
            return null;
        }
        buf.flip();
        long length = Integer.toUnsignedLong(buf.getInt());
        if (length < 5 || length > 5L + Protocol.MAX_PAYLOAD) {
            throw ProtocolException.framing("frame length " + length + " outside [5, " + (5 + Protocol.MAX_PAYLOAD) + "]");
        }
        return new Header(buf.get(), buf.getInt(), (int) length - 5);
    }

    /** The rest of the frame whose header was read. */
    static Frame readPayload(ReadableByteChannel in, Header h) throws IOException {
        ByteBuffer payload = ByteBuffer.allocate(h.payloadLength());
        fill(in, payload, false);
        return new Frame(h.type(), h.id(), payload.array());
    }

    /** Reads exactly {@code buf.remaining()} bytes; EOFException if the stream ends first. */
    static void readFully(ReadableByteChannel in, ByteBuffer buf) throws IOException {
        fill(in, buf, false);
    }

    private static boolean fill(ReadableByteChannel in, ByteBuffer buf, boolean eofAllowedAtStart) throws IOException {
        while (buf.hasRemaining()) {
            int n = in.read(buf);
            if (n < 0) {
                if (eofAllowedAtStart && buf.position() == 0) {
                    return false;
                }
                throw new EOFException("stream ended inside a frame");
            }
        }
        return true;
    }
}
