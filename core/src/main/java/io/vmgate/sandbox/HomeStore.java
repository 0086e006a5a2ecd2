package io.vmgate.sandbox;

import io.vmgate.image.HomeImage;
import io.vmgate.image.ImageException;
import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.List;
import java.util.Set;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Users' persistent homes on the host: {@code <root>/<hash>/} per user, where {@code <hash>} is
 * the first 32 hex digits of the SHA-256 of the user name (so no user name, however hostile, is
 * ever part of a path), made 0700, holding {@code home.ext4} (the home disk), {@code user} (the
 * name, for operators) and {@code lock}, all 0600. The lock is held (a file lock) while a VM has
 * the disk attached, so two processes never attach one home at once ({@link #tryLock}: the only way
 * it is taken). A home is made on first use
 * under a temporary name and renamed into place: a crash leaves the old state or a complete new one.
 */
final class HomeStore {
    private static final Logger log = LoggerFactory.getLogger(HomeStore.class);
    static final String IMAGE = "home.ext4", USER = "user", LOCK = "lock";
    private static final Set<PosixFilePermission> DIR_MODE = PosixFilePermissions.fromString("rwx------");
    private static final Set<PosixFilePermission> FILE_MODE = PosixFilePermissions.fromString("rw-------");
    /**
     * The home directories whose lock this process holds (or is taking). Checked before a lock file
     * is opened: a record lock belongs to the process, so closing a second descriptor of a held
     * lock file (after a failed try) would silently drop the lock a VM holds through the first.
     */
    private static final Set<Path> HELD_HERE = java.util.concurrent.ConcurrentHashMap.newKeySet();

    private final Path root;
    private final long bytes;

    /** Homes of {@code bytes} each under {@code root} (made 0700 by {@link #prepare}). */
    HomeStore(Path root, long bytes) {
        this.root = root;
        this.bytes = bytes;
    }

    /** {@code $XDG_STATE_HOME/vmgate}, else {@code ~/.local/state/vmgate}: where the server's host key lives too. */
    static Path defaultStateRoot() {
        String state = System.getenv("XDG_STATE_HOME");
        Path base = state != null && state.startsWith("/") ? Path.of(state) : Path.of(System.getProperty("user.home"), ".local", "state");
        return base.resolve("vmgate");
    }

    Path root() {
        return root;
    }

    long bytes() {
        return bytes;
    }

    /** The directory of {@code user}'s home: its name depends on the user name only through its hash. */
    Path directoryOf(String user) {
        try {
            byte[] h = MessageDigest.getInstance("SHA-256").digest(user.getBytes(StandardCharsets.UTF_8));
            return root.resolve(HexFormat.of().formatHex(h, 0, 16));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /**
     * Makes the root (0700) if missing and proves it writable, so that a server refuses to start
     * rather than fail its users' logins one by one.
     */
    void prepare() throws SandboxException {
        try {
            makeDirectory(root);
            Path probe = Files.createTempFile(root, ".probe-", "");
            Files.delete(probe);
        } catch (IOException e) {
            throw new SandboxException("cannot keep persistent homes in " + root + ": " + describe(e)
                    + " (give a writable directory: --state-dir, or SandboxOptions.stateDirectory)", e);
        }
    }

    /**
     * Takes {@code user}'s home for one VM: locks it, makes it on first use, checks it. The caller
     * attaches {@link Home#image()} and closes the {@link Home} once the VM is gone.
     *
     * @throws SandboxException naming the cause: in use by another process, a state directory that
     *         cannot be written, an image of the wrong size or no filesystem at all
     */
    Home open(String user) throws SandboxException {
        if (user == null || user.isEmpty()) {
            throw new IllegalArgumentException("a persistent home needs a user name");
        }
        Path dir = directoryOf(user);
        boolean madeDir = false;
        Lock lockFile = null;
        try {
            madeDir = makeDirectory(dir);
            lockFile = tryLock(dir, true);
            if (lockFile == null) {
                log.atWarn().setMessage("home_refused").addKeyValue("user", user).addKeyValue("dir", dir)
                        .addKeyValue("reason", "in_use_by_another_process").log();
                throw new SandboxException("the persistent home of " + user + " is in use by another vmgate process");
            }
            Path image = dir.resolve(IMAGE);
            boolean created = false;
            if (!Files.exists(image, LinkOption.NOFOLLOW_LINKS)) {
                create(dir, image, user);
                created = true;
            }
            HomeImage.check(image, bytes);
            return new Home(user, dir, image, created, lockFile);
        } catch (SandboxException | RuntimeException e) {
            abandon(lockFile, madeDir ? dir : null);
            throw e;
        } catch (ImageException e) {
            abandon(lockFile, madeDir ? dir : null);
            // The operator needs the file; the user (who sees the exception's message) does not.
            log.atWarn().setMessage("home_refused").addKeyValue("user", user).addKeyValue("dir", dir)
                    .addKeyValue("reason", e.getMessage()).log();
            throw new SandboxException("the persistent home of " + user + " cannot be used: " + e.getMessage(), e);
        } catch (IOException e) {
            abandon(lockFile, madeDir ? dir : null);
            log.atWarn().setMessage("home_refused").addKeyValue("user", user).addKeyValue("dir", dir)
                    .addKeyValue("reason", describe(e)).log();
            throw new SandboxException("cannot open the persistent home of " + user + " (the server's log says why: home_refused)", e);
        }
    }

    /** A new home: mke2fs under a temporary name, then renamed into place (with the user's name beside it). */
    private void create(Path dir, Path image, String user) throws IOException, ImageException {
        Path tmp = dir.resolve(IMAGE + ".tmp");
        Files.deleteIfExists(tmp); // a crash's leftover: we hold the lock
        try {
            Files.createFile(tmp, PosixFilePermissions.asFileAttribute(FILE_MODE));
            HomeImage.create(tmp, bytes);
            try (FileChannel f = FileChannel.open(tmp, StandardOpenOption.WRITE)) {
                f.force(true);
            }
            Path name = dir.resolve(USER);
            Files.write(name, user.getBytes(StandardCharsets.UTF_8));
            Files.setPosixFilePermissions(name, FILE_MODE);
            try {
                Files.move(tmp, image, StandardCopyOption.ATOMIC_MOVE);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(tmp, image);
            }
            syncDirectory(dir);
        } finally {
            Files.deleteIfExists(tmp);
        }
        log.atInfo().setMessage("home_created").addKeyValue("dir", dir.getFileName()).addKeyValue("mib", bytes >> 20).log();
    }

    /** Creates {@code dir} 0700 (whatever the umask); true if it did not exist. A link or a file there is refused. */
    private static boolean makeDirectory(Path dir) throws IOException {
        try {
            Files.createDirectories(dir.getParent());
        } catch (FileAlreadyExistsException e) {
            throw new IOException(e.getFile() + " is not a directory", e);
        }
        try {
            Files.createDirectory(dir, PosixFilePermissions.asFileAttribute(DIR_MODE));
            Files.setPosixFilePermissions(dir, DIR_MODE);
            return true;
        } catch (FileAlreadyExistsException e) {
            if (!Files.isDirectory(dir, LinkOption.NOFOLLOW_LINKS)) {
                throw new IOException(dir + " is not a directory", e);
            }
            return false;
        }
    }

    /** After a failed open: release the lock, and remove a directory this open made (nothing is left behind). */
    private static void abandon(Lock lockFile, Path madeDir) {
        try {
            if (madeDir != null) {
                for (String f : new String[] {IMAGE + ".tmp", IMAGE, USER, LOCK}) {
                    Files.deleteIfExists(madeDir.resolve(f));
                }
                Files.deleteIfExists(madeDir);
            }
        } catch (IOException e) {
            log.atWarn().setMessage("home_cleanup_failed").addKeyValue("dir", madeDir).addKeyValue("error", e.toString()).log();
        }
        if (lockFile != null) {
            lockFile.close();
        }
    }

    /**
     * Takes the lock of home directory {@code dir} (its file made first with {@code create}), or
     * null when it is held: by a VM of this process (or an operator's request in it), or by another
     * process.
     *
     * @throws java.nio.file.NoSuchFileException without {@code create}, when the home has no lock file
     */
    static Lock tryLock(Path dir, boolean create) throws IOException {
        Path key = dir.toAbsolutePath().normalize();
        if (!HELD_HERE.add(key)) {
            return null;
        }
        FileChannel ch = null;
        try {
            ch = create ? FileChannel.open(dir.resolve(LOCK), Set.of(StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                    LinkOption.NOFOLLOW_LINKS), PosixFilePermissions.asFileAttribute(FILE_MODE))
                    : FileChannel.open(dir.resolve(LOCK), StandardOpenOption.WRITE, LinkOption.NOFOLLOW_LINKS);
            FileLock lock;
            try {
                lock = ch.tryLock();
            } catch (OverlappingFileLockException e) {
                lock = null; // taken in this JVM other than through here
            }
            if (lock == null) {
                ch.close();
                HELD_HERE.remove(key);
                return null;
            }
            return new Lock(key, ch);
        } catch (IOException | RuntimeException e) {
            if (ch != null) {
                ch.close();
            }
            HELD_HERE.remove(key);
            throw e;
        }
    }

    /** A home's lock held by this process, until closed (idempotent). */
    static final class Lock implements AutoCloseable {
        private final Path key;
        private final FileChannel channel;
        private final java.util.concurrent.atomic.AtomicBoolean closed = new java.util.concurrent.atomic.AtomicBoolean();

        private Lock(Path key, FileChannel channel) {
            this.key = key;
            this.channel = channel;
        }

        @Override
        public void close() {
            if (!closed.compareAndSet(false, true)) {
                return;
            }
            try {
                channel.close(); // releases the lock with the descriptor
            } catch (IOException e) {
                // the lock goes with the descriptor regardless
            } finally {
                HELD_HERE.remove(key);
            }
        }
    }

    private static void syncDirectory(Path dir) {
        try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
            d.force(true);
        } catch (IOException e) {
            // not every file system lets a directory be synced; the rename is atomic regardless
        }
    }

    private static String describe(IOException e) {
        if (e instanceof java.nio.file.AccessDeniedException) {
            return "permission denied (" + e.getMessage() + ")";
        }
        if (e instanceof java.nio.file.FileSystemException f && f.getReason() != null) {
            return f.getReason() + " (" + f.getFile() + ")";
        }
        return e.getMessage() != null ? e.getMessage() : e.toString();
    }

    /** A home as {@link #list()} finds it on disk. */
    record Listed(String directory, String user, long sizeBytes, long usedBytes, java.time.Instant modified) {}

    /**
     * The homes under the root, by directory name: the user (from {@code user}, at most 256 bytes,
     * "?" if missing), the image's size and the bytes it takes on the host ({@code du}: it is sparse),
     * and when it was last written. Empty when the root does not exist.
     */
    List<Listed> list() throws IOException {
        if (!Files.isDirectory(root, LinkOption.NOFOLLOW_LINKS)) {
            return List.of();
        }
        List<Path> dirs;
        try (java.util.stream.Stream<Path> s = Files.list(root)) {
            dirs = s.filter(d -> d.getFileName().toString().matches("[0-9a-f]{32}"))
                    .filter(d -> Files.isRegularFile(d.resolve(IMAGE), LinkOption.NOFOLLOW_LINKS)).sorted().toList();
        }
        java.util.Map<Path, Long> used = diskUsage(dirs.stream().map(d -> d.resolve(IMAGE)).toList());
        List<Listed> out = new java.util.ArrayList<>();
        for (Path d : dirs) {
            Path image = d.resolve(IMAGE);
            String user = "?";
            try (java.io.InputStream in = Files.newInputStream(d.resolve(USER), LinkOption.NOFOLLOW_LINKS)) {
                user = new String(in.readNBytes(256), StandardCharsets.UTF_8);
            } catch (IOException e) {
                // a home made by hand, or its name file lost: listed without a name
            }
            out.add(new Listed(d.getFileName().toString(), user, Files.size(image), used.getOrDefault(image, -1L),
                    Files.getLastModifiedTime(image).toInstant()));
        }
        return out;
    }

    /** Bytes each file takes on the host ({@code du -B1}: Java cannot see a file's allocated blocks). */
    private static java.util.Map<Path, Long> diskUsage(List<Path> files) {
        java.util.Map<Path, Long> m = new java.util.HashMap<>();
        if (files.isEmpty()) {
            return m;
        }
        List<String> cmd = new java.util.ArrayList<>(List.of("du", "-B1", "--"));
        files.forEach(f -> cmd.add(f.toString()));
        try {
            Process p = new ProcessBuilder(cmd).redirectError(ProcessBuilder.Redirect.DISCARD).start();
            for (String line : new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).split("\n")) {
                String[] f = line.split("\t", 2);
                if (f.length == 2 && f[0].matches("\\d+")) {
                    m.put(Path.of(f[1]), Long.parseLong(f[0]));
                }
            }
            p.waitFor();
        } catch (IOException e) {
            log.atDebug().setMessage("home_du_failed").addKeyValue("error", e.toString()).log();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        return m;
    }

    /** One user's home, locked for one VM until closed. */
    static final class Home implements AutoCloseable {
        private final String user;
        private final Path dir;
        private final Path image;
        private final boolean created;
        private final Lock lock;

        private Home(String user, Path dir, Path image, boolean created, Lock lock) {
            this.user = user;
            this.dir = dir;
            this.image = image;
            this.created = created;
            this.lock = lock;
        }

        String user() {
            return user;
        }

        Path directory() {
            return dir;
        }

        Path image() {
            return image;
        }

        /** Made by this open (the user's first login). */
        boolean created() {
            return created;
        }

        /** Releases the lock: call once no VM has the disk attached. Idempotent. */
        @Override
        public void close() {
            lock.close();
        }
    }
}
