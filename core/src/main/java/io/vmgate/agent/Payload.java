package io.vmgate.agent;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;

/** Field encodings of docs/protocol.md: a checked reader and a writer. */
final class Payload {
    private Payload() {}

    static final class Reader {
        private final ByteBuffer b;

        Reader(byte[] payload) {
            this.b = ByteBuffer.wrap(payload);
        }

        private void need(long n, String what) throws ProtocolException {
            if (n > b.remaining()) {
                throw ProtocolException.message("truncated " + what + ": need " + n + " bytes, have " + b.remaining());
            }
        }

        int u8(String what) throws ProtocolException {
            need(1, what);
            return b.get() & 0xff;
        }

        int u16(String what) throws ProtocolException {
            need(2, what);
            return b.getShort() & 0xffff;
        }

        int i32(String what) throws ProtocolException {
            need(4, what);
            return b.getInt();
        }

        long u32(String what) throws ProtocolException {
            return Integer.toUnsignedLong(i32(what));
        }

        long u64(String what) throws ProtocolException {
            need(8, what);
            return b.getLong();
        }

        byte[] bytes(String what) throws ProtocolException {
            long n = u32(what + " length");
            need(n, what);
            byte[] out = new byte[(int) n];
            b.get(out);
            return out;
        }

        String str(String what) throws ProtocolException {
            byte[] raw = bytes(what);
            for (byte c : raw) {
                if (c == 0) {
                    throw ProtocolException.message(what + " contains NUL");
                }
            }
            return new String(raw, StandardCharsets.UTF_8);
        }

        byte[] rest() {
            byte[] out = new byte[b.remaining()];
            b.get(out);
            return out;
        }

        void end(String what) throws ProtocolException {
            if (b.hasRemaining()) {
                throw ProtocolException.message(b.remaining() + " trailing bytes after " + what);
            }
        }
    }

    static final class Writer {
        private final ByteArrayOutputStream out = new ByteArrayOutputStream(64);

        Writer u8(int v) {
            out.write(v);
            return this;
        }

        Writer u16(int v) {
            if (v < 0 || v > 0xffff) {
                throw new IllegalArgumentException("u16 out of range: " + v);
            }
            out.write(v >>> 8);
            out.write(v);
            return this;
        }

        Writer i32(int v) {
            out.write(v >>> 24);
            out.write(v >>> 16);
            out.write(v >>> 8);
            out.write(v);
            return this;
        }

        Writer u64(long v) {
            i32((int) (v >>> 32));
            return i32((int) v);
        }

        Writer bytes(byte[] v) {
            i32(v.length);
            out.writeBytes(v);
            return this;
        }

        Writer str(String v) {
            if (v.indexOf('\0') >= 0) {
                throw new IllegalArgumentException("string contains NUL");
            }
            return bytes(v.getBytes(StandardCharsets.UTF_8));
        }

        Writer raw(byte[] v, int off, int len) {
            out.write(v, off, len);
            return this;
        }

        int size() {
            return out.size();
        }

        byte[] toByteArray() {
            return out.toByteArray();
        }
    }
}
