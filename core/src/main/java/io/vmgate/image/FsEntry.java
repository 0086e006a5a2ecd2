package io.vmgate.image;

import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;

/**
 * One entry of a root filesystem as a tar stream or a directory walk describes it: what a
 * {@link Staging} tree and then the filesystem image must reproduce exactly.
 *
 * @param path       relative to the root, '/'-separated, without "." or ".." components; "" is the root
 * @param mode       permission bits with setuid, setgid and sticky (07777), without the type
 * @param size       content bytes of a {@link Type#FILE}; 0 otherwise
 * @param mtime      seconds since the epoch
 * @param linkTarget a symlink's target (any string), or a hard link's target path (normalised like {@code path})
 * @param xattrs     extended attributes by full name ({@code security.capability}), values as bytes
 */
public record FsEntry(String path, Type type, int mode, long uid, long gid, long size, long mtime, String linkTarget,
        int devMajor, int devMinor, Map<String, byte[]> xattrs) {

    public enum Type {
        FILE(0100000), DIRECTORY(0040000), SYMLINK(0120000), HARDLINK(0100000), CHAR_DEVICE(0020000),
        BLOCK_DEVICE(0060000), FIFO(0010000);

        /** The S_IFMT bits of this type in an inode's mode. */
        public final int typeBits;

        Type(int typeBits) {
            this.typeBits = typeBits;
        }

        public boolean isDevice() {
            return this == CHAR_DEVICE || this == BLOCK_DEVICE;
        }
    }

    /** The largest uid or gid an ext4 inode holds (and not 0xFFFFFFFF, which means "no change" to chown). */
    static final long MAX_ID = 0xFFFF_FFFEL;

    public FsEntry {
        Objects.requireNonNull(path, "path");
        Objects.requireNonNull(type, "type");
        xattrs = java.util.Collections.unmodifiableMap(new TreeMap<>(xattrs));
        if ((mode & ~07777) != 0) {
            throw new IllegalArgumentException(path + ": mode " + Integer.toOctalString(mode) + " has bits beyond 07777");
        }
        if (uid < 0 || uid > MAX_ID || gid < 0 || gid > MAX_ID) {
            throw new IllegalArgumentException(path + ": owner " + uid + ":" + gid + " out of range");
        }
        if ((type == Type.SYMLINK || type == Type.HARDLINK) && (linkTarget == null || linkTarget.isEmpty())) {
            throw new IllegalArgumentException(path + ": " + type + " without a target");
        }
        if (size < 0 || (type != Type.FILE && size != 0)) {
            throw new IllegalArgumentException(path + ": size " + size + " for a " + type);
        }
    }

    public static FsEntry directory(String path, int mode, long uid, long gid, long mtime) {
        return new FsEntry(path, Type.DIRECTORY, mode, uid, gid, 0, mtime, null, 0, 0, Map.of());
    }

    public static FsEntry file(String path, int mode, long uid, long gid, long size, long mtime) {
        return new FsEntry(path, Type.FILE, mode, uid, gid, size, mtime, null, 0, 0, Map.of());
    }

    public static FsEntry symlink(String path, String target, long uid, long gid, long mtime) {
        return new FsEntry(path, Type.SYMLINK, 0777, uid, gid, 0, mtime, target, 0, 0, Map.of());
    }

    public FsEntry withXattrs(Map<String, byte[]> x) {
        return new FsEntry(path, type, mode, uid, gid, size, mtime, linkTarget, devMajor, devMinor, x);
    }

    /**
     * Normalises an archive path: strips leading "/" and "./", collapses "//" and ".", and refuses
     * ".." (an entry may never name anything outside the root), NUL, and line breaks (which no
     * tool in the pipeline can quote). Returns "" for the root itself.
     */
    public static String normalize(String raw) {
        StringBuilder out = new StringBuilder();
        for (String part : raw.split("/")) {
            if (part.isEmpty() || part.equals(".")) {
                continue;
            }
            if (part.equals("..")) {
                throw new IllegalArgumentException("path '" + printable(raw) + "' leaves the root (..)");
            }
            if (part.getBytes(java.nio.charset.StandardCharsets.UTF_8).length > 255) {
                throw new IllegalArgumentException("path '" + printable(raw) + "' has a name longer than 255 bytes");
            }
            if (out.length() > 0) {
                out.append('/');
            }
            out.append(part);
        }
        String p = out.toString();
        for (int i = 0; i < p.length(); i++) {
            char c = p.charAt(i);
            if (c == 0 || c == '\n' || c == '\r') {
                throw new IllegalArgumentException("path '" + printable(raw) + "' contains a NUL or a line break");
            }
            if (c == '\uFFFD') {
                throw new IllegalArgumentException("path '" + printable(raw) + "' is not valid UTF-8");
            }
        }
        if (p.length() > 4000) {
            throw new IllegalArgumentException("path '" + printable(raw).substring(0, 100) + "...' is longer than 4000 characters");
        }
        return p;
    }

    /** For messages: control characters shown as \xNN. */
    static String printable(String s) {
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < s.length() && b.length() < 300; i++) {
            char c = s.charAt(i);
            b.append(c < 0x20 || c == 0x7f ? String.format("\\x%02x", (int) c) : String.valueOf(c));
        }
        return b.toString();
    }
}
