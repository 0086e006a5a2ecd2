package io.vmgate.image;

import java.io.Closeable;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.Set;

/**
 * Writes a cpio archive in the "newc" format the Linux kernel unpacks as an initramfs.
 *
 * <p>The output is deterministic: every entry is owned by 0:0 with mtime 0, and inode numbers
 * are handed out sequentially, so the same calls produce the same bytes. Missing parent
 * directories are emitted automatically (mode 0755) because the kernel's unpacker does not
 * create them. Every inode is distinct, so the kernel never mistakes two files for hard links.
 */
public final class CpioWriter implements Closeable {
    private static final String MAGIC = "070701";
    private static final String TRAILER = "TRAILER!!!";
    private static final int S_IFDIR = 0040000, S_IFREG = 0100000, S_IFLNK = 0120000, S_IFCHR = 0020000;
    /** The newc header stores sizes as 8 hex digits. */
    private static final long MAX_FILE_SIZE = 0xFFFF_FFFFL;

    private final OutputStream out;
    private final Set<String> paths = new HashSet<>();
    private java.util.function.Consumer<FsEntry> listener = e -> { };
    private long offset;
    private int nextIno = 1;
    private boolean finished;

    public CpioWriter(OutputStream out) {
        this.out = out;
    }

    /** Tells {@code l} of every entry written (all owned by 0:0, mtime 0), e.g. to keep a {@link Manifest}. */
    public CpioWriter onEntry(java.util.function.Consumer<FsEntry> l) {
        this.listener = l;
        return this;
    }

    /** Adds a directory; adding one that exists already is a no-op. */
    public CpioWriter directory(String path, int mode) throws IOException {
        String name = normalize(path);
        if (paths.contains(name)) {
            return this;
        }
        parents(name);
        header(name, S_IFDIR | (mode & 07777), 2, 0, 0, 0);
        listener.accept(FsEntry.directory(name, mode & 07777, 0, 0, 0));
        return this;
    }

    public CpioWriter file(String path, int mode, byte[] data) throws IOException {
        String name = entry(path);
        header(name, S_IFREG | (mode & 07777), 1, data.length, 0, 0);
        listener.accept(FsEntry.file(name, mode & 07777, 0, 0, data.length, 0));
        out.write(data);
        offset += data.length;
        pad();
        return this;
    }

    /** Adds a regular file whose content is streamed from {@code source} (symlinks followed). */
    public CpioWriter file(String path, int mode, Path source) throws IOException {
        String name = entry(path);
        long size = Files.size(source);
        if (size > MAX_FILE_SIZE) {
            throw new IOException(source + " is too large for a cpio newc archive (" + size + " bytes)");
        }
        header(name, S_IFREG | (mode & 07777), 1, size, 0, 0);
        listener.accept(FsEntry.file(name, mode & 07777, 0, 0, size, 0));
        long copied;
        try (InputStream in = Files.newInputStream(source)) {
            copied = copy(in, size);
        }
        if (copied != size) {
            // The header already promised `size` bytes; a file that changed under us would corrupt the archive.
            throw new IOException(source + " changed size while it was being archived");
        }
        offset += size;
        pad();
        return this;
    }

    public CpioWriter symlink(String path, String target) throws IOException {
        String name = entry(path);
        byte[] t = target.getBytes(StandardCharsets.UTF_8);
        if (t.length == 0 || target.indexOf('\0') >= 0) {
            throw new IllegalArgumentException("bad symlink target: " + target);
        }
        header(name, S_IFLNK | 0777, 1, t.length, 0, 0);
        listener.accept(FsEntry.symlink(name, target, 0, 0, 0));
        out.write(t);
        offset += t.length;
        pad();
        return this;
    }

    /** Adds a character device node (no privileges needed: it is only a header). */
    public CpioWriter charDevice(String path, int mode, int major, int minor) throws IOException {
        String name = entry(path);
        header(name, S_IFCHR | (mode & 07777), 1, 0, major, minor);
        listener.accept(new FsEntry(name, FsEntry.Type.CHAR_DEVICE, mode & 07777, 0, 0, 0, 0, null, major, minor, java.util.Map.of()));
        return this;
    }

    /** Writes the trailer. The underlying stream is left open. */
    public void finish() throws IOException {
        if (finished) {
            return;
        }
        finished = true;
        writeHeader(TRAILER, 0, 0, 1, 0, 0, 0);
        out.flush();
    }

    /** Finishes the archive and closes the underlying stream. */
    @Override
    public void close() throws IOException {
        try {
            finish();
        } finally {
            out.close();
        }
    }

    /** Bytes written so far. */
    public long size() {
        return offset;
    }

    private String entry(String path) throws IOException {
        String name = normalize(path);
        if (paths.contains(name)) {
            throw new IllegalArgumentException("duplicate cpio entry: " + name);
        }
        parents(name);
        return name;
    }

    private void parents(String name) throws IOException {
        int slash = name.lastIndexOf('/');
        if (slash > 0) {
            directory(name.substring(0, slash), 0755);
        }
    }

    /** Entry names are relative ("bin/sh"), the convention of the kernel's own gen_init_cpio. */
    static String normalize(String path) {
        String p = path;
        while (p.startsWith("/")) {
            p = p.substring(1);
        }
        while (p.endsWith("/")) {
            p = p.substring(0, p.length() - 1);
        }
        if (p.isEmpty() || p.indexOf('\0') >= 0 || p.contains("//")) {
            throw new IllegalArgumentException("bad cpio path: '" + path + "'");
        }
        for (String part : p.split("/")) {
            if (part.equals(".") || part.equals("..")) {
                throw new IllegalArgumentException("bad cpio path: '" + path + "'");
            }
        }
        return p;
    }

    private void header(String name, int mode, int nlink, long size, int rdevMajor, int rdevMinor) throws IOException {
        if (finished) {
            throw new IllegalStateException("archive already finished");
        }
        paths.add(name);
        writeHeader(name, nextIno++, mode, nlink, size, rdevMajor, rdevMinor);
    }

    private void writeHeader(String name, int ino, int mode, int nlink, long size, int rdevMajor, int rdevMinor)
            throws IOException {
        byte[] n = name.getBytes(StandardCharsets.UTF_8);
        StringBuilder h = new StringBuilder(110).append(MAGIC);
        for (long field : new long[] {ino, mode, 0, 0, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, n.length + 1, 0}) {
            // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
            h.append(String.format("%08x", field));
        }
        byte[] hb = h.toString().getBytes(StandardCharsets.US_ASCII);
        out.write(hb);
        out.write(n);
        out.write(0);
        offset += hb.length + n.length + 1;
        pad();
    }

    private long copy(InputStream in, long limit) throws IOException {
        byte[] buf = new byte[64 * 1024];
        long total = 0;
        int r;
        while (total < limit && (r = in.read(buf, 0, (int) Math.min(buf.length, limit - total))) > 0) {
            out.write(buf, 0, r);
            total += r;
        }
        if (total == limit && in.read() >= 0) {
            return total + 1; // grew: report the mismatch
        }
        return total;
    }

    private void pad() throws IOException {
        while (offset % 4 != 0) {
            out.write(0);
            offset++;
        }
    }
}
