package io.vmgate.image.oci;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.function.LongConsumer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Blobs by digest, shared by every pull and import: {@code <cache>/oci/blobs/sha256/<hex>}. A blob
 * is written to a temporary name in the same directory, its size and digest checked as it
 * streams in, and renamed into place only when both match, so a name always holds exactly the
 * bytes its digest says: a dropped connection, a lying registry or a full disk leaves nothing
 * under it (and the temporary file is removed). Two pulls of one blob at once each write their
 * own temporary file; the second rename replaces identical bytes, atomically. A blob already
 * present is never fetched again.
 *
 * <p>While a pull or import runs it holds a {@link #lease()}; {@code image prune} removes blobs
 * that no image refers to only when nobody holds one, so it never takes a blob from under a pull
 * that has fetched it but not yet built its image.
 */
public final class BlobStore {
    private static final Logger log = LoggerFactory.getLogger(BlobStore.class);
    static final String TMP_PREFIX = ".tmp-";
    private static final int BUFFER = 1 << 16;
    /** Leases this JVM holds, by lock file: file locks are per process, so threads share one. */
    private static final Map<Path, Shared> LEASES = new HashMap<>();

    private final Path dir;

    /** @param cacheRoot the cache directory ({@code ImageStore.defaultRoot()}) */
    public BlobStore(Path cacheRoot) {
        this.dir = cacheRoot.resolve("oci").resolve("blobs");
    }

    public Path dir() {
        return dir;
    }

    public Path path(Digest d) {
        return dir.resolve(d.algorithm()).resolve(d.hex());
    }

    /** True if the blob is stored (with this size, unless {@code size} is negative). */
    public boolean has(Digest d, long size) {
        try {
            return size < 0 ? Files.isRegularFile(path(d)) : Files.size(path(d)) == size;
        } catch (IOException e) {
            return false;
        }
    }

    /**
     * Stores the blob {@code expected} from {@code in}: at most {@code size} bytes are read (more is
     * a mismatch), the digest is computed on the way, and only exact bytes get the name.
     *
     * @param progress told the running byte count now and then (and at the end)
     * @throws OciException the bytes are not the blob (size or digest), naming both
     * @throws IOException  reading {@code in} or writing failed (the message is the cause's)
     */
    public Path put(Digest expected, long size, InputStream in, LongConsumer progress) throws IOException, OciException {
        Path target = path(expected);
        Files.createDirectories(target.getParent());
        Path tmp = target.resolveSibling(TMP_PREFIX + UUID.randomUUID());
        MessageDigest md = expected.newMessageDigest();
        long n = 0;
        try {
            try (OutputStream out = Files.newOutputStream(tmp, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
                byte[] buf = new byte[BUFFER];
                long lastReport = 0;
                for (int r; (r = in.read(buf, 0, (int) Math.min(buf.length, size - n + 1))) > 0;) {
                    n += r;
                    if (n > size) {
                        throw new OciException("blob " + expected.shortForm() + " is longer than the " + size + " bytes its descriptor says");
                    }
                    md.update(buf, 0, r);
                    out.write(buf, 0, r);
                    if (n - lastReport >= (1 << 20)) {
                        progress.accept(n);
                        lastReport = n;
                    }
                }
            }
            if (n != size) {
                throw new OciException("blob " + expected.shortForm() + " ended after " + n + " of its " + size + " bytes");
            }
            Digest got = expected.of(md);
            if (!got.equals(expected)) {
                throw new OciException("digest mismatch: blob " + expected + " has the digest " + got + " (corrupt or tampered with)");
            }
            rename(tmp, target);
            progress.accept(n);
            return target;
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    /**
     * Stores bytes whose digest is not known in advance (a file of a docker archive), at most
     * {@code maxBytes} of them, and returns their sha256 digest.
     */
    public Digest putComputed(InputStream in, long maxBytes, String what) throws IOException, OciException {
        Path sha = dir.resolve("sha256");
        Files.createDirectories(sha);
        Path tmp = sha.resolve(TMP_PREFIX + UUID.randomUUID());
        MessageDigest md = Digest.sha256();
        try {
            long n = 0;
            try (OutputStream out = Files.newOutputStream(tmp, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
                byte[] buf = new byte[BUFFER];
                for (int r; (r = in.read(buf)) > 0;) {
                    n += r;
                    if (n > maxBytes) {
                        throw new OciException(what + " is larger than the " + maxBytes + " bytes allowed (--max-size)");
                    }
                    md.update(buf, 0, r);
                    out.write(buf, 0, r);
                }
            }
            Digest d = new Digest("sha256", java.util.HexFormat.of().formatHex(md.digest()));
            rename(tmp, path(d));
            return d;
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    private static void rename(Path tmp, Path target) throws IOException {
        try {
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE); // replaces identical bytes if another pull was first
        } catch (AtomicMoveNotSupportedException e) {
            throw new IOException("the cache directory " + target.getParent() + " does not support atomic renames", e);
        }
    }

    /** Opens a stored blob. */
    public InputStream open(Digest d) throws IOException {
        return Files.newInputStream(path(d));
    }

    /**
     * A small stored blob (a manifest, a config), read whole and checked against its digest again:
     * these are parsed, so they are verified at the moment of use as well.
     */
    byte[] read(Digest d, int maxBytes) throws IOException, OciException {
        long size;
        try {
            size = Files.size(path(d));
        } catch (NoSuchFileException e) {
            throw new OciException("blob " + d + " is not in the blob store");
        }
        if (size > maxBytes) {
            throw new OciException("blob " + d.shortForm() + " is " + size + " bytes, more than the " + maxBytes + " accepted for it");
        }
        byte[] b = Files.readAllBytes(path(d));
        Digest got = d.of(digestOf(d, b));
        if (!got.equals(d)) {
            throw new OciException("digest mismatch: stored blob " + d + " has the digest " + got + " (the cache was changed; run `vmgate image prune`)");
        }
        return b;
    }

    private static MessageDigest digestOf(Digest d, byte[] b) {
        MessageDigest md = d.newMessageDigest();
        md.update(b);
        return md;
    }

    /** Every stored blob's digest ({@code sha256:...}) and its path. */
    public Map<String, Path> all() throws IOException {
        Map<String, Path> out = new java.util.TreeMap<>();
        for (String alg : List.of("sha256", "sha512")) {
            Path d = dir.resolve(alg);
            if (!Files.isDirectory(d)) {
                continue;
            }
            try (DirectoryStream<Path> ds = Files.newDirectoryStream(d)) {
                for (Path p : ds) {
                    try {
                        out.put(new Digest(alg, p.getFileName().toString()).toString(), p);
                    } catch (IllegalArgumentException notABlob) {
                        // a temporary file, or something that is not ours
                    }
                }
            }
        }
        return out;
    }

    /**
     * Blobs not in {@code keep}, and temporary files of transfers that died, if no pull or import
     * holds a lease now; else empty (they are pruned another time). With {@code remove}, they are
     * deleted while the lock is held, so no pull can start using one in between.
     */
    public List<Path> unreferenced(Set<String> keep, boolean remove) throws IOException {
        List<Path> out = new ArrayList<>();
        try (Exclusive ex = exclusive()) {
            if (ex == null) {
                log.atInfo().setMessage("oci_blobs_not_pruned").addKeyValue("reason", "a pull or import is running").log();
                return out;
            }
            for (Map.Entry<String, Path> e : all().entrySet()) {
                if (!keep.contains(e.getKey())) {
                    out.add(e.getValue());
                }
            }
            for (String alg : List.of("sha256", "sha512")) {
                Path d = dir.resolve(alg);
                if (Files.isDirectory(d)) {
                    try (DirectoryStream<Path> ds = Files.newDirectoryStream(d, TMP_PREFIX + "*")) {
                        ds.forEach(out::add);
                    }
                }
            }
            if (remove) {
                for (Path p : out) {
                    Files.deleteIfExists(p);
                    log.atInfo().setMessage("oci_blob_pruned").addKeyValue("path", p).log();
                }
            }
        }
        return out;
    }

    /** A lease that keeps {@code prune} from removing blobs; close it when the image is in the store. */
    public interface Lease extends AutoCloseable {
        @Override
        void close();
    }

    public Lease lease() throws IOException {
        Path lockFile = lockFile();
        synchronized (LEASES) {
            Shared s = LEASES.get(lockFile);
            if (s == null) {
                FileChannel ch = FileChannel.open(lockFile, StandardOpenOption.CREATE, StandardOpenOption.READ, StandardOpenOption.WRITE);
                FileLock l;
                try {
                    l = ch.lock(0, Long.MAX_VALUE, true); // shared: pulls do not exclude each other
                } catch (IOException | RuntimeException e) {
                    ch.close();
                    throw e;
                }
                s = new Shared(ch, l);
                LEASES.put(lockFile, s);
            }
            s.count++;
        }
        boolean[] closed = {false};
        return () -> {
            synchronized (LEASES) {
                if (closed[0]) {
                    return;
                }
                closed[0] = true;
                Shared s = LEASES.get(lockFile);
                if (--s.count == 0) {
                    LEASES.remove(lockFile);
                    try {
                        s.lock.release();
                        s.channel.close();
                    } catch (IOException e) {
                        log.atDebug().setMessage("oci_lease_release_failed").addKeyValue("error", e.getMessage()).log();
                    }
                }
            }
        };
    }

    private interface Exclusive extends AutoCloseable {
        @Override
        void close() throws IOException;
    }

    /** The exclusive lock, or null while anyone (this JVM included) holds a lease. */
    private Exclusive exclusive() throws IOException {
        Path lockFile = lockFile();
        synchronized (LEASES) {
            if (LEASES.containsKey(lockFile)) {
                return null;
            }
            FileChannel ch = FileChannel.open(lockFile, StandardOpenOption.CREATE, StandardOpenOption.READ, StandardOpenOption.WRITE);
            FileLock l;
            try {
                l = ch.tryLock();
            } catch (OverlappingFileLockException e) {
                l = null;
            }
            if (l == null) {
                ch.close();
                return null;
            }
            FileLock held = l;
            return () -> {
                held.release();
                ch.close();
            };
        }
    }

    private Path lockFile() throws IOException {
        Files.createDirectories(dir);
        return dir.resolve(".lock");
    }

    private static final class Shared {
        final FileChannel channel;
        final FileLock lock;
        int count;

        Shared(FileChannel channel, FileLock lock) {
            this.channel = channel;
            this.lock = lock;
        }
    }
}
