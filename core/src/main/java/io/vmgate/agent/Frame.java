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
        ByteBuffer header = ByteBuffer.allocate(Protocol.HEADER);
        if (!fill(in, header, true)) {
            return null;
        }
        header.flip();
        long length = Integer.toUnsignedLong(header.getInt());
        if (length < 5 || length > 5L + Protocol.MAX_PAYLOAD) {
            throw ProtocolException.framing("frame length " + length + " outside [5, " + (5 + Protocol.MAX_PAYLOAD) + "]");
        }
        byte type = header.get();
        int id = header.getInt();
        ByteBuffer payload = ByteBuffer.allocate((int) length - 5);
        fill(in, payload, false);
        return new Frame(type, id, payload.array());
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
