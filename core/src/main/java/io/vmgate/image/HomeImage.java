package io.vmgate.image;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;

/**
 * A user's persistent home ({@code --persist home}): a sparse ext4 image with a journal, which the
 * guest mounts at the user's home. The host makes it and checks that it is one, but never reads
 * the filesystem inside: its bytes were written by a guest, and a guest is not trusted (the
 * guest's own kernel mounts it, and replays its journal).
 */
public final class HomeImage {
    /** ext4's superblock is at byte 1024; its magic at offset 56 in it, little-endian. */
    private static final int SUPERBLOCK = 1024, MAGIC_OFFSET = 56;
    private static final short EXT_MAGIC = (short) 0xEF53;

    private HomeImage() {}

    /**
     * Makes a sparse, empty ext4 of {@code bytes} at {@code file} (which must not exist), with a
     * journal (a VM may be killed at any time) and no reserved blocks. The file takes a few MiB on
     * the host whatever its size.
     */
    public static void create(Path file, long bytes) throws ImageException {
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            f.setLength(bytes);
        } catch (IOException e) {
            throw new ImageException("cannot make the home image " + file + ": " + e.getMessage(), e);
        }
        try {
            Ext4.Result r = Ext4.run(List.of(Ext4.tool("mke2fs"), "-q", "-F", "-t", "ext4", "-b", Integer.toString(Ext4.BLOCK),
                    "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", "-L", "vmgate-home", file.toString()));
            if (!r.ok()) {
                throw new ImageException("mke2fs of the home image " + file + " failed: " + r.summary());
            }
        } catch (IOException e) {
            throw new ImageException("mke2fs of the home image " + file + " failed: " + e.getMessage(), e);
        }
    }

    /**
     * Checks that {@code file} can be attached as a home disk of {@code bytes}: a regular file (not
     * a link), exactly that size (the guest's kernel knows the size of the slot it is put in), with
     * an ext2/3/4 superblock magic. Says what is wrong otherwise, without the path (the message
     * may reach a user); whether the filesystem inside is sound is for the guest's mount to find out.
     */
    public static void check(Path file, long bytes) throws ImageException {
        if (!Files.isRegularFile(file, LinkOption.NOFOLLOW_LINKS)) {
            throw new ImageException("the home image is not a regular file");
        }
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ, LinkOption.NOFOLLOW_LINKS)) {
            long size = ch.size();
            if (size != bytes) {
                throw new ImageException("the home image is " + mib(size) + " but homes are " + mib(bytes)
                        + " (--persist-size): start the server with --persist-size " + mib(size) + ", or move the image away");
            }
            ByteBuffer b = ByteBuffer.allocate(2).order(ByteOrder.LITTLE_ENDIAN);
            while (b.hasRemaining() && ch.read(b, SUPERBLOCK + MAGIC_OFFSET + b.position()) > 0) {
                // a regular file: reads return what is there
            }
            if (b.hasRemaining() || b.getShort(0) != EXT_MAGIC) {
                throw new ImageException("the home image holds no ext4 filesystem (corrupt?)");
            }
        } catch (IOException e) {
            throw new ImageException("cannot read the home image: " + e.getMessage(), e);
        }
    }

    private static String mib(long bytes) {
        return bytes % (1L << 30) == 0 ? (bytes >> 30) + "G" : bytes % (1 << 20) == 0 ? (bytes >> 20) + "M" : bytes + " bytes";
    }
}
