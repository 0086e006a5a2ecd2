package io.vmgate.image;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Reads a tar stream (POSIX ustar, pax extended headers, GNU long names) entry by entry, as
 * mmdebstrap and OCI layers write them. The stream is not trusted: every header is
 * checksummed, every number and length is checked before use, extended headers are capped,
 * and paths are normalised by {@link FsEntry#normalize} (no "..", no NUL). Sparse files and
 * other rare types are refused by name rather than guessed at.
 *
 * <pre>
 * TarReader r = new TarReader(in);
 * for (FsEntry e; (e = r.next()) != null; ) { if (e.type() == FILE) copy(r.content(), ...); }
 * </pre>
 */
public final class TarReader {
    static final int BLOCK = 512;
    /** Pax and GNU long-name records larger than this are refused: no path or xattr needs more. */
    static final int MAX_EXTENDED = 1 << 20;

    private final InputStream in;
    private final byte[] header = new byte[BLOCK];
    private long remaining; // content bytes of the current entry not yet read
    private long padding;   // bytes after the content up to the next block
    private long position;  // stream offset, for messages
    private boolean done;
    private Map<String, byte[]> globalPax = Map.of();

    public TarReader(InputStream in) {
        this.in = in;
    }

    /** The next entry, or null at the end-of-archive marker. */
    public FsEntry next() throws IOException {
        if (done) {
            return null;
        }
        skip(remaining + padding);
        remaining = padding = 0;
        Map<String, byte[]> pax = new LinkedHashMap<>(globalPax);
        String longName = null, longLink = null;
        while (true) {
            long at = position;
            if (!readBlock(header)) {
                throw new TarException("truncated archive: no end-of-archive marker at offset " + at);
            }
            if (isZero(header)) {
                done = true; // a second zero block may follow; nothing after the first matters
                return null;
            }
            checkChecksum(at);
            byte type = header[156];
            long size = number(124, 12, "size", at);
            if (type == 'x' || type == 'g' || type == 'L' || type == 'K') {
                byte[] data = readExtended(size, at, (char) type);
                switch (type) {
                    case 'x' -> pax.putAll(parsePax(data, at));
                    case 'g' -> {
                        globalPax = parsePax(data, at);
                        pax.putAll(globalPax);
                    }
                    case 'L' -> longName = cString(data, 0, data.length);
                    default -> longLink = cString(data, 0, data.length);
                }
                continue;
            }
            return entry(type, size, pax, longName, longLink, at);
        }
    }

    /** The current entry's content (for a {@link FsEntry.Type#FILE}); reads at most its size. */
    public InputStream content() {
        return new InputStream() {
            @Override
            public int read() throws IOException {
                byte[] one = new byte[1];
                return read(one, 0, 1) < 0 ? -1 : one[0] & 0xff;
            }

            @Override
            public int read(byte[] b, int off, int len) throws IOException {
                if (remaining == 0) {
                    return -1;
                }
                int n = in.read(b, off, (int) Math.min(len, remaining));
                if (n < 0) {
                    throw new TarException("truncated archive: content ends " + remaining + " bytes early at offset " + position);
                }
                remaining -= n;
                position += n;
                return n;
            }
        };
    }

    private FsEntry entry(byte type, long size, Map<String, byte[]> pax, String longName, String longLink, long at)
            throws IOException {
        String name = longName != null ? longName : cString(header, 0, 100);
        boolean posix = Arrays.equals(Arrays.copyOfRange(header, 257, 263), "ustar\0".getBytes(StandardCharsets.US_ASCII));
        if (longName == null && posix && header[345] != 0) {
            name = cString(header, 345, 155) + "/" + name;
        }
        String link = longLink != null ? longLink : cString(header, 157, 100);
        if (pax.containsKey("path")) {
            name = utf8(pax.get("path"), "path", at);
        }
        if (pax.containsKey("linkpath")) {
            link = utf8(pax.get("linkpath"), "linkpath", at);
        }
        int mode = (int) (number(100, 8, "mode", at) & 07777);
        long uid = paxNumber(pax, "uid", number(108, 8, "uid", at), at);
        long gid = paxNumber(pax, "gid", number(116, 8, "gid", at), at);
        long mtime = Math.max(0, paxNumber(pax, "mtime", number(136, 12, "mtime", at), at));
        size = paxNumber(pax, "size", size, at);
        Map<String, byte[]> xattrs = new LinkedHashMap<>();
        for (Map.Entry<String, byte[]> e : pax.entrySet()) {
            if (e.getKey().startsWith("SCHILY.xattr.")) {
                xattrs.put(e.getKey().substring("SCHILY.xattr.".length()), e.getValue());
            } else if (e.getKey().startsWith("GNU.sparse.")) {
                throw new TarException(printable(name) + ": sparse files are not supported (offset " + at + ")");
            }
        }
        FsEntry.Type t = switch (type) {
            case '0', 0, '7' -> name.endsWith("/") ? FsEntry.Type.DIRECTORY : FsEntry.Type.FILE;
            case '1' -> FsEntry.Type.HARDLINK;
            case '2' -> FsEntry.Type.SYMLINK;
            case '3' -> FsEntry.Type.CHAR_DEVICE;
            case '4' -> FsEntry.Type.BLOCK_DEVICE;
            case '5' -> FsEntry.Type.DIRECTORY;
            case '6' -> FsEntry.Type.FIFO;
            default -> throw new TarException(printable(name) + ": unsupported tar entry type '"
                    + (type >= 0x20 && type < 0x7f ? String.valueOf((char) type) : String.format("\\x%02x", type & 0xff))
                    + "' at offset " + at);
        };
        if (size < 0) {
            throw new TarException(printable(name) + ": negative size at offset " + at);
        }
        // Whatever follows the header is skipped for anything but a regular file (a hard link or a
        // GNU directory listing may carry some); the size field says how much.
        remaining = size;
        padding = (BLOCK - size % BLOCK) % BLOCK;
        int major = 0, minor = 0;
        if (t.isDevice()) {
            major = (int) Math.min(Integer.MAX_VALUE, number(329, 8, "devmajor", at));
            minor = (int) Math.min(Integer.MAX_VALUE, number(337, 8, "devminor", at));
        }
        try {
            String path = FsEntry.normalize(name);
            String target = switch (t) {
                case HARDLINK -> FsEntry.normalize(link);
                case SYMLINK -> link;
                default -> null;
            };
            if (t == FsEntry.Type.SYMLINK && link.indexOf('\0') >= 0) {
                throw new IllegalArgumentException("symlink target contains NUL");
            }
            return new FsEntry(path, t, mode, uid, gid, t == FsEntry.Type.FILE ? size : 0, mtime, target, major, minor, xattrs);
        } catch (IllegalArgumentException e) {
            throw new TarException("bad entry at offset " + at + ": " + e.getMessage());
        }
    }

    private byte[] readExtended(long size, long at, char kind) throws IOException {
        if (size < 0 || size > MAX_EXTENDED) {
            throw new TarException("extended header '" + kind + "' of " + size + " bytes at offset " + at
                    + " (at most " + MAX_EXTENDED + ")");
        }
        byte[] data = new byte[(int) size];
        readFully(data, "extended header");
        skip((BLOCK - size % BLOCK) % BLOCK);
        return data;
    }

    /** Pax records: "LEN KEY=VALUE\n", LEN counting the whole record. Values are bytes (xattrs are binary). */
    static Map<String, byte[]> parsePax(byte[] d, long at) throws TarException {
        Map<String, byte[]> out = new LinkedHashMap<>();
        int p = 0;
        while (p < d.length) {
            if (d[p] == 0) {
                break; // padding some writers leave
            }
            int sp = p;
            long len = 0;
            while (sp < d.length && d[sp] >= '0' && d[sp] <= '9' && len < MAX_EXTENDED) {
                len = len * 10 + (d[sp++] - '0');
            }
            if (sp == p || sp >= d.length || d[sp] != ' ' || len <= sp - p + 1 || p + len > d.length || d[(int) (p + len - 1)] != '\n') {
                throw new TarException("malformed pax record at offset " + at);
            }
            int end = (int) (p + len - 1), eq = sp + 1;
            while (eq < end && d[eq] != '=') {
                eq++;
            }
            if (eq == end || eq == sp + 1) {
                throw new TarException("malformed pax record (no key=value) at offset " + at);
            }
            out.put(new String(d, sp + 1, eq - sp - 1, StandardCharsets.UTF_8), Arrays.copyOfRange(d, eq + 1, end));
            p += (int) len;
        }
        return out;
    }

    private static long paxNumber(Map<String, byte[]> pax, String key, long dflt, long at) throws TarException {
        byte[] v = pax.get(key);
        if (v == null) {
            return dflt;
        }
        String s = new String(v, StandardCharsets.US_ASCII);
        int dot = s.indexOf('.');
        try {
            return Long.parseLong(dot >= 0 ? s.substring(0, dot) : s); // mtime may have a fraction
        } catch (NumberFormatException e) {
            throw new TarException("pax " + key + "='" + printable(s) + "' is not a number at offset " + at);
        }
    }

    /** An octal field, or GNU's base-256 (high bit of the first byte set) for values that do not fit. */
    private long number(int off, int len, String what, long at) throws TarException {
        if ((header[off] & 0x80) != 0) {
            if ((header[off] & 0x40) != 0) {
                return -1; // negative: only a pre-1970 mtime is plausible; clamped by the caller
            }
            long v = header[off] & 0x3f;
            for (int i = 1; i < len; i++) {
                if (v > (Long.MAX_VALUE >> 8)) {
                    throw new TarException(what + " too large at offset " + at);
                }
                v = v << 8 | (header[off + i] & 0xff);
            }
            return v;
        }
        long v = 0;
        int i = off, end = off + len;
        while (i < end && header[i] == ' ') {
            i++;
        }
        for (; i < end && header[i] >= '0' && header[i] <= '7'; i++) {
            if (v > (Long.MAX_VALUE >> 3)) {
                throw new TarException(what + " too large at offset " + at);
            }
            v = v << 3 | (header[i] - '0');
        }
        if (i < end && header[i] != ' ' && header[i] != 0) {
            throw new TarException("bad " + what + " field at offset " + at);
        }
        return v;
    }

    private void checkChecksum(long at) throws TarException {
        long stored = number(148, 8, "checksum", at);
        long unsigned = 0, signed = 0;
        for (int i = 0; i < BLOCK; i++) {
            int b = i >= 148 && i < 156 ? ' ' : header[i];
            unsigned += b & 0xff;
            signed += b;
        }
        if (stored != unsigned && stored != signed) {
            throw new TarException("not a tar archive, or corrupt: header checksum mismatch at offset " + at);
        }
    }

    private static String cString(byte[] b, int off, int len) {
        int end = off;
        while (end < off + len && b[end] != 0) {
            end++;
        }
        return new String(b, off, end - off, StandardCharsets.UTF_8);
    }

    private static String utf8(byte[] v, String what, long at) throws TarException {
        var dec = StandardCharsets.UTF_8.newDecoder();
        try {
            return dec.decode(java.nio.ByteBuffer.wrap(v)).toString();
        } catch (java.nio.charset.CharacterCodingException e) {
            throw new TarException("pax " + what + " is not UTF-8 at offset " + at);
        }
    }

    private static boolean isZero(byte[] b) {
        for (byte x : b) {
            if (x != 0) {
                return false;
            }
        }
        return true;
    }

    private boolean readBlock(byte[] b) throws IOException {
        int n = in.readNBytes(b, 0, BLOCK);
        position += n;
        if (n == 0) {
            return false;
        }
        if (n < BLOCK) {
            throw new TarException("truncated archive: partial header at offset " + (position - n));
        }
        return true;
    }

    private void readFully(byte[] b, String what) throws IOException {
        int n = in.readNBytes(b, 0, b.length);
        position += n;
        if (n < b.length) {
            throw new TarException("truncated archive: " + what + " ends early at offset " + position);
        }
    }

    private void skip(long n) throws IOException {
        byte[] buf = new byte[8192];
        while (n > 0) {
            int r = in.read(buf, 0, (int) Math.min(buf.length, n));
            if (r < 0) {
                throw new TarException("truncated archive at offset " + position);
            }
            n -= r;
            position += r;
        }
    }

    private static String printable(String s) {
        return FsEntry.printable(s);
    }

    /** The archive is malformed or hostile; the message says where. */
    public static final class TarException extends IOException {
        TarException(String message) {
            super(message);
        }
    }

}
