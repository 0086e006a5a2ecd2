package io.vmgate.image;

import java.io.IOException;
import java.io.InputStream;
import java.io.Reader;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.TreeMap;
import java.util.UUID;
import java.util.function.Consumer;
import java.util.regex.Pattern;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Root filesystem images by name: {@code <cache>/rootfs/<id>/} holds each image (see
 * {@link RootfsImage}), {@code <cache>/names/<name>} says which id a name means.
 *
 * <p>Builds are atomic: everything happens in {@code rootfs/.tmp-<random>/} (locked while it
 * runs, so a concurrent {@code prune} or build leaves it alone; it is made locked, as
 * {@code .new-<random>/} renamed once its lock is held), which is renamed into place when
 * complete and removed whatever goes wrong; a name is switched to the new id by an atomic
 * rename, so a name always means a whole image. An image built again under the same name gets a
 * new id; the old one stays until {@code prune} finds it unused.
 */
public final class RootfsStore {
    private static final Logger log = LoggerFactory.getLogger(RootfsStore.class);
    private static final Pattern NAME = Pattern.compile("[a-z0-9][a-z0-9._-]{0,63}");
    static final String TMP_PREFIX = ".tmp-";
    /** A build directory before its lock is held: never swept while young (see {@link #abandonedBuilds}). */
    private static final String NEW_PREFIX = ".new-";
    private static final java.time.Duration NEW_DEBRIS_AGE = java.time.Duration.ofHours(1);
    private static final String LOCK = ".lock";
    /**
     * Build directories of this JVM. Their lock files are never opened by a sweep here: closing any
     * channel on a file releases every lock this process holds on it (POSIX record locks), which
     * would leave a live build looking abandoned to other processes.
     */
    private static final java.util.Set<Path> BUILDING = java.util.concurrent.ConcurrentHashMap.newKeySet();

    private final Path root;

    /** @param cacheRoot the cache directory ({@link ImageStore#defaultRoot()}) */
    public RootfsStore(Path cacheRoot) {
        this.root = cacheRoot;
    }

    public static RootfsStore atDefaultLocation() {
        return new RootfsStore(ImageStore.defaultRoot());
    }

    public Path imagesDir() {
        return root.resolve("rootfs");
    }

    public Path namesDir() {
        return root.resolve("names");
    }

    /** Image names are short lowercase words: they never look like a path. */
    public static boolean isValidName(String name) {
        return name != null && NAME.matcher(name).matches();
    }

    /** Builds (or, for an unchanged host tree, finds) the image and names it; the old image of that name stays until pruned. */
    public RootfsImage build(String name, RootfsSource source, Consumer<String> progress) throws ImageException {
        checkName(name);
        RootfsImage img = buildUnnamed(name, source, progress);
        setName(name, img);
        progress.accept("image " + name + " is " + img.shortId() + " (" + mib(img.usedBytes()) + " MiB, " + img.files() + " files)");
        return img;
    }

    /**
     * The image of a host tree ({@code --rootfs DIR}), built on first use and found again while
     * the tree is unchanged (its key covers every path's metadata, read with one walk). Unnamed:
     * {@code prune} removes it once no process uses it.
     */
    public RootfsImage forDirectory(Path dir, Consumer<String> progress) throws ImageException {
        return buildUnnamed(null, new RootfsSource.Directory(dir), progress);
    }

    /** The image a name means. */
    public RootfsImage get(String name) throws ImageException {
        checkName(name);
        Optional<String> id = idOf(name);
        if (id.isEmpty()) {
            throw new ImageException("no image named '" + name + "' (`vmgate image ls` lists them; `vmgate image build debian` makes one)");
        }
        return RootfsImage.load(imagesDir().resolve(id.get()));
    }

    public Optional<String> idOf(String name) throws ImageException {
        Path f = namesDir().resolve(name);
        Properties p = new Properties();
        try (Reader r = Files.newBufferedReader(f, StandardCharsets.UTF_8)) {
            p.load(r);
        } catch (NoSuchFileException e) {
            return Optional.empty();
        } catch (IOException | IllegalArgumentException e) {
            throw new ImageException("cannot read " + f + ": " + e.getMessage(), e);
        }
        String id = p.getProperty("id", "");
        if (!id.matches("[0-9a-f]{64}")) {
            throw new ImageException(f + " is malformed (no id=)");
        }
        return Optional.of(id);
    }

    /** Every name and the id it means, sorted by name. */
    public Map<String, String> names() throws ImageException {
        Map<String, String> out = new TreeMap<>();
        if (!Files.isDirectory(namesDir())) {
            return out;
        }
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(namesDir())) {
            for (Path p : ds) {
                String n = p.getFileName().toString();
                if (isValidName(n)) {
                    idOf(n).ifPresent(id -> out.put(n, id));
                }
            }
        } catch (IOException e) {
            throw new ImageException("cannot list " + namesDir() + ": " + e.getMessage(), e);
        }
        return out;
    }

    /** Every complete image in the store (named or not). Incomplete directories are skipped (prune removes them). */
    public List<RootfsImage> images() throws ImageException {
        List<RootfsImage> out = new ArrayList<>();
        if (!Files.isDirectory(imagesDir())) {
            return out;
        }
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(imagesDir(), "[0-9a-f]*")) {
            for (Path p : ds) {
                try {
                    out.add(RootfsImage.load(p));
                } catch (ImageException e) {
                    log.atDebug().setMessage("rootfs_skipped").addKeyValue("dir", p).addKeyValue("reason", e.getMessage()).log();
                }
            }
        } catch (IOException e) {
            throw new ImageException("cannot list " + imagesDir() + ": " + e.getMessage(), e);
        }
        return out;
    }

    /**
     * Removes a name and, unless another name still means it, its image. Refused while a live
     * process uses that image (a server, a VM), with the process named.
     *
     * @return the image directory removed, if any
     */
    public Optional<Path> remove(String name) throws ImageException {
        RootfsImage img = get(name);
        List<Long> users = ImageUsers.live(img.directory());
        if (!users.isEmpty()) {
            throw new ImageException("image " + name + " is in use by " + String.join(", ", users.stream().map(ImageUsers::describe).toList())
                    + ": stop it first");
        }
        try {
            Files.delete(namesDir().resolve(name));
            boolean stillNamed = names().containsValue(img.id());
            if (stillNamed) {
                return Optional.empty();
            }
            ImageStore.deleteTree(img.directory());
            log.atInfo().setMessage("rootfs_removed").addKeyValue("name", name).addKeyValue("id", img.shortId()).log();
            return Optional.of(img.directory());
        } catch (IOException e) {
            throw new ImageException("cannot remove image " + name + ": " + e.getMessage(), e);
        }
    }

    /** Build directories of builds that are no longer running (a crashed or killed build's debris). */
    public List<Path> abandonedBuilds() {
        List<Path> out = new ArrayList<>();
        if (!Files.isDirectory(imagesDir())) {
            return out;
        }
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(imagesDir(), NEW_PREFIX + "*")) {
            for (Path p : ds) { // a build killed between making its directory and locking it
                if (Files.getLastModifiedTime(p).toInstant().isBefore(Instant.now().minus(NEW_DEBRIS_AGE))) {
                    out.add(p);
                }
            }
        } catch (IOException e) {
            log.atWarn().setMessage("rootfs_tmp_unlisted").addKeyValue("dir", imagesDir()).addKeyValue("error", e.getMessage()).log();
        }
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(imagesDir(), TMP_PREFIX + "*")) {
            for (Path p : ds) {
                if (BUILDING.contains(p.toAbsolutePath())) {
                    continue; // this JVM is building it
                }
                try (FileChannel ch = FileChannel.open(p.resolve(LOCK), StandardOpenOption.CREATE, StandardOpenOption.WRITE);
                        FileLock l = ch.tryLock()) {
                    if (l != null) {
                        out.add(p);
                    }
                } catch (OverlappingFileLockException e) {
                    // this JVM is building it
                } catch (IOException e) {
                    out.add(p); // not even a lock file can be made: certainly not a live build
                }
            }
        } catch (IOException e) {
            log.atWarn().setMessage("rootfs_tmp_unlisted").addKeyValue("dir", imagesDir()).addKeyValue("error", e.getMessage()).log();
        }
        return out;
    }

    /** @param name for messages: the name it will get, or null (a --rootfs DIR image, named by its source) */
    private RootfsImage buildUnnamed(String name, RootfsSource source, Consumer<String> progress) throws ImageException {
        long t0 = System.nanoTime();
        String what = name != null ? "image " + name : source.describe();
        RootfsBuilder.Scan scan = null;
        if (source instanceof RootfsSource.Entries e && e.key().isPresent()) {
            Path existing = imagesDir().resolve(e.key().get());
            if (Files.isRegularFile(existing.resolve(RootfsImage.PROPERTIES_FILE))) {
                RootfsImage img = RootfsImage.load(existing);
                log.atDebug().setMessage("rootfs_cache_hit").addKeyValue("source", source.describe())
                        .addKeyValue("id", img.shortId()).log();
                progress.accept("already in the store as " + img.shortId());
                return img;
            }
        }
        if (source instanceof RootfsSource.Directory d) {
            progress.accept("reading " + d.dir());
            scan = RootfsBuilder.scan(d.dir());
            Path existing = imagesDir().resolve(scan.key());
            if (Files.isRegularFile(existing.resolve(RootfsImage.PROPERTIES_FILE))) {
                RootfsImage img = RootfsImage.load(existing);
                log.atDebug().setMessage("rootfs_cache_hit").addKeyValue("source", source.describe())
                        .addKeyValue("id", img.shortId()).addKeyValue("scan_ms", ms(t0)).log();
                return img;
            }
        }
        for (Path debris : abandonedBuilds()) { // what a killed build left (its lock is free): never an image, gone now
            try {
                ImageStore.deleteTree(debris);
                log.atInfo().setMessage("rootfs_debris_removed").addKeyValue("dir", debris).log();
            } catch (IOException e) {
                log.atWarn().setMessage("rootfs_debris_not_removed").addKeyValue("dir", debris)
                        .addKeyValue("error", e.getMessage()).log();
            }
        }
        String unique = UUID.randomUUID().toString();
        Path work = imagesDir().resolve(TMP_PREFIX + unique);
        Path fresh = imagesDir().resolve(NEW_PREFIX + unique);
        BUILDING.add(work.toAbsolutePath());
        FileChannel lockCh = null;
        try {
            Files.createDirectories(fresh);
            lockCh = FileChannel.open(fresh.resolve(LOCK), StandardOpenOption.CREATE, StandardOpenOption.WRITE);
            lockCh.lock();
            Files.move(fresh, work, StandardCopyOption.ATOMIC_MOVE); // visible to sweeps only once locked
        } catch (IOException e) {
            closeQuietly(lockCh);
            BUILDING.remove(work.toAbsolutePath());
            deleteQuietly(fresh);
            throw new ImageException(what + ": cannot create " + work + ": " + e.getMessage() + " (set VMGATE_CACHE to a writable directory)", e);
        }
        log.atInfo().setMessage("rootfs_building").addKeyValue("source", source.describe()).addKeyValue("work", work).log();
        try (FileChannel ignored = lockCh) {
            RootfsBuilder b = new RootfsBuilder(progress);
            RootfsBuilder.Built built = switch (source) {
                case RootfsSource.Directory d -> b.fromDirectory(scan, work);
                case RootfsSource.Debian d -> b.fromEntries(sink -> DebianBootstrap.run(d, sink, work, progress), work);
                case RootfsSource.Entries e -> b.fromEntries(e.producer(), work);
            };
            ImageDefaults defaults = source instanceof RootfsSource.Entries e ? e.defaults() : ImageDefaults.NONE;
            List<String> blobs = source instanceof RootfsSource.Entries e ? e.blobs() : List.of();
            String id = scan != null ? scan.key()
                    : source instanceof RootfsSource.Entries e && e.key().isPresent() ? e.key().get() : digest(built.disk());
            RootfsImage img = new RootfsImage(id, imagesDir().resolve(id), source.describe(), Instant.now(), Ext4.usedBytes(built.disk()),
                    built.files(), RootfsBuilder.sftpServer(built.manifest()), defaults, blobs);
            GuestRoot.save(work, built.manifest(), built.passwd(), built.group());
            new RootfsImage(id, work, img.source(), img.created(), img.usedBytes(), img.files(), img.sftpServer(), defaults, blobs).write();
            for (Path debris : List.of(work.resolve("mmdebstrap-tmp"))) {
                ImageStore.deleteTree(debris);
            }
            try {
                // With its lock file, still held: deleting it first would let a sweep lock a new one.
                Files.move(work, img.directory(), StandardCopyOption.ATOMIC_MOVE);
                Files.deleteIfExists(img.directory().resolve(LOCK));
            } catch (AtomicMoveNotSupportedException e) {
                throw new IOException("the cache directory " + imagesDir() + " does not support atomic renames", e);
            } catch (java.nio.file.FileSystemException e) {
                // rename(2) says EEXIST or ENOTEMPTY when another build of the same key won: same key, same content
                if (!Files.isRegularFile(img.directory().resolve(RootfsImage.PROPERTIES_FILE))) {
                    throw e;
                }
                log.atDebug().setMessage("rootfs_exists").addKeyValue("id", img.shortId())
                        .addKeyValue("note", "built concurrently").log();
            }
            log.atInfo().setMessage("rootfs_built").addKeyValue("source", source.describe()).addKeyValue("id", img.shortId())
                    .addKeyValue("used_bytes", img.usedBytes()).addKeyValue("files", img.files()).addKeyValue("ms", ms(t0)).log();
            return RootfsImage.load(img.directory());
        } catch (ImageException e) {
            throw new ImageException(what + ": " + e.getMessage() + (e.getMessage().contains("No space left") ? " (the disk of "
                    + imagesDir() + " is full)" : ""), e);
        } catch (IOException e) {
            throw new ImageException(what + ": " + e.getMessage() + (String.valueOf(e.getMessage()).contains("No space") ? " (the disk of "
                    + imagesDir() + " is full)" : ""), e);
        } finally {
            try {
                ImageStore.deleteTree(work); // gone already after a successful rename
            } catch (IOException e) {
                log.atWarn().setMessage("rootfs_cleanup_failed").addKeyValue("work", work).addKeyValue("error", e.getMessage())
                        .addKeyValue("note", "image prune removes it").log();
            }
            BUILDING.remove(work.toAbsolutePath());
        }
    }

    private static void closeQuietly(FileChannel ch) {
        if (ch != null) {
            try {
                ch.close();
            } catch (IOException ignored) {
                // nothing to save
            }
        }
    }

    private static void deleteQuietly(Path dir) {
        try {
            ImageStore.deleteTree(dir);
        } catch (IOException ignored) {
            // a sweep removes it later
        }
    }

    private void setName(String name, RootfsImage img) throws ImageException {
        try {
            Files.createDirectories(namesDir());
            Path tmp = namesDir().resolve(TMP_PREFIX + name + "-" + UUID.randomUUID());
            Files.writeString(tmp, "# vmgate image name\nid=" + img.id() + "\nsource=" + img.source().replace("\n", " ") + "\nnamed="
                    + Instant.now() + "\n", StandardCharsets.UTF_8);
            Files.move(tmp, namesDir().resolve(name), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            throw new ImageException("cannot name image " + name + ": " + e.getMessage(), e);
        }
    }

    private static void checkName(String name) throws ImageException {
        if (!isValidName(name)) {
            throw new ImageException("'" + FsEntry.printable(String.valueOf(name)) + "' is not an image name: use 1-64 of [a-z0-9._-], "
                    + "starting with a letter or digit");
        }
    }

    private static String digest(Path file) throws IOException {
        try (InputStream in = Files.newInputStream(file)) {
            MessageDigest md = MessageDigest.getInstance("SHA-256");
            byte[] buf = new byte[1 << 20];
            for (int n; (n = in.read(buf)) > 0;) {
                md.update(buf, 0, n);
            }
            return HexFormat.of().formatHex(md.digest());
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    private static long mib(long bytes) {
        return (bytes + (1 << 20) - 1) >> 20;
    }

    private static long ms(long t0) {
        return (System.nanoTime() - t0) / 1_000_000;
    }
}
