package io.vmgate.image;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.function.Consumer;

/**
 * Turns a root filesystem source into a read-only ext4 image plus what the host needs to know
 * about it without mounting it (its {@link Manifest}, /etc/passwd, /etc/group), in a work
 * directory the caller owns and removes.
 *
 * <ul>
 * <li>A host directory is copied by {@code mke2fs -d} straight from the tree: every owner,
 * mode, hard link, device node and xattr as this user can read them. A file this user cannot
 * read is an error naming it (before mke2fs starts), not a silent gap.
 * <li>Entries (mmdebstrap's tar, later OCI layers) are gathered by {@link Staging} and written
 * into an empty ext4 by {@code debugfs}, with the ownership and modes they say, without root.
 * </ul>
 */
public final class RootfsBuilder {
    // Used through RootfsStore: one build per work directory, which the store renames or removes.
    /** Bumped when what a built image holds or how it is made changes. */
    public static final int FORMAT_VERSION = 1;
    public static final String DISK_FILE = "rootfs.ext4";
    /** Where images commonly keep OpenSSH's sftp-server (Debian/Ubuntu, Fedora/RHEL, Arch/Alpine). */
    static final List<String> SFTP_SERVERS = List.of("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
            "/usr/lib/ssh/sftp-server");

    private final Consumer<String> progress;

    RootfsBuilder(Consumer<String> progress) {
        this.progress = progress;
    }

    /** What a build produced, in its work directory. */
    record Built(Path disk, Manifest manifest, Optional<byte[]> passwd, Optional<byte[]> group, long files) {}

    /** A host tree as the walk saw it: the cache key, the manifest, and the room it needs. */
    record Scan(Path dir, String key, Manifest manifest, Ext4.Sizing sizing) {
        long files() {
            return manifest.entries().size();
        }
    }

    /** One record of {@link #scan}'s find: type, mode, uid, gid, size, mtime, ctime, inode, device, path, target, readable. */
    private static final String FIND_FORMAT = "%y\\0%m\\0%U\\0%G\\0%s\\0%T@\\0%C@\\0%i\\0%D\\0%P\\0%l\\0";

    /**
     * Walks a host tree without following symlinks: every path's metadata (for the cache key and
     * the manifest) and a check that this user can read all of it and that it is one filesystem.
     * GNU find does the walk and hands over names as bytes: the JVM's file-name encoding (ASCII
     * under a POSIX locale) would refuse or garble names that are not ASCII.
     */
    static Scan scan(Path dir) throws ImageException {
        Path root = dir.toAbsolutePath().normalize();
        if (!Files.isDirectory(root)) {
            throw new ImageException(dir + " is not a directory");
        }
        MessageDigest md = sha256();
        md.update(("vmgate-rootfs format=" + FORMAT_VERSION + " dir=" + root + "\n").getBytes(java.nio.charset.StandardCharsets.UTF_8));
        Manifest.Builder mb = new Manifest.Builder();
        long blocks = 0, inodes = 0;
        Map<String, Long> dirBytes = new java.util.HashMap<>();
        java.util.Set<String> seenInodes = new java.util.HashSet<>();
        List<String> argv = List.of("find", root.toString(), "(", "(", "-type", "d", "-readable", "-executable", ")", "-o", "(", "!",
                "-type", "d", "-readable", ")", ")", "-printf", FIND_FORMAT + "R\\0", "-o", "-printf", FIND_FORMAT + "U\\0");
        Process p;
        try {
            p = new ProcessBuilder(argv).start();
        } catch (IOException e) {
            throw new ImageException("cannot run find to read " + dir + ": " + e.getMessage() + " (install findutils)", e);
        }
        var errors = new java.util.concurrent.CompletableFuture<String>();
        Thread.ofPlatform().daemon().name("find-stderr").start(() -> {
            try {
                errors.complete(new String(p.getErrorStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8));
            } catch (IOException e) {
                errors.complete("");
            }
        });
        String rootDev = null, unreadable = null;
        try (InputStream in = new java.io.BufferedInputStream(p.getInputStream(), 1 << 16)) {
            String[] f = new String[12];
            while (field(in, f, 0)) {
                for (int i = 1; i < f.length; i++) {
                    if (!field(in, f, i)) {
                        throw new ImageException("find's output for " + dir + " ends mid-record");
                    }
                }
                String rel = f[9];
                if (rootDev == null) {
                    rootDev = f[8];
                }
                if (!f[8].equals(rootDev)) {
                    throw new ImageException(root.resolve(rel) + " is on another filesystem (a mount point inside the tree): unmount it, "
                            + "or copy the tree first");
                }
                char type = f[0].charAt(0);
                if (type == 's') {
                    continue; // a socket: nothing a fresh guest could use
                }
                if (f[11].equals("U") && (type == 'f' || type == 'd') && unreadable == null) {
                    unreadable = root + (rel.isEmpty() ? "" : "/" + rel) + " (mode " + f[1] + ", owner " + f[2] + ":" + f[3] + ")";
                }
                String path;
                try {
                    path = FsEntry.normalize(rel);
                } catch (IllegalArgumentException e) {
                    throw new ImageException(root + "/" + FsEntry.printable(rel) + ": " + e.getMessage());
                }
                FsEntry.Type t = switch (type) {
                    case 'd' -> FsEntry.Type.DIRECTORY;
                    case 'l' -> FsEntry.Type.SYMLINK;
                    case 'c' -> FsEntry.Type.CHAR_DEVICE;
                    case 'b' -> FsEntry.Type.BLOCK_DEVICE;
                    case 'p' -> FsEntry.Type.FIFO;
                    case 'f' -> FsEntry.Type.FILE;
                    default -> throw new ImageException(root.resolve(rel) + ": a file of unknown type '" + type + "'");
                };
                long size = t == FsEntry.Type.FILE ? Long.parseLong(f[4]) : 0;
                long mtime = Long.parseLong(f[5].substring(0, f[5].indexOf('.') < 0 ? f[5].length() : f[5].indexOf('.')));
                FsEntry e = new FsEntry(path, t, Integer.parseInt(f[1], 8) & 07777, Long.parseLong(f[2]), Long.parseLong(f[3]), size,
                        Math.max(0, mtime), t == FsEntry.Type.SYMLINK ? f[10] : null, 0, 0, Map.of());
                String ino = f[8] + ":" + f[7];
                mb.add(path, e, ino);
                if (seenInodes.add(ino)) {
                    blocks += Ext4.blocksFor(e);
                    inodes++;
                }
                if (!path.isEmpty()) {
                    String parent = path.lastIndexOf('/') < 0 ? "" : path.substring(0, path.lastIndexOf('/'));
                    dirBytes.merge(parent, 8L + ((path.length() - parent.length() + 3) & ~3), Long::sum);
                }
                md.update(String.join("\0", f).getBytes(java.nio.charset.StandardCharsets.UTF_8));
            }
            p.waitFor(1, java.util.concurrent.TimeUnit.MINUTES);
        } catch (IOException | RuntimeException e) {
            throw new ImageException("cannot read " + dir + ": " + e, e);
        } catch (InterruptedException e) {
            p.destroyForcibly();
            Thread.currentThread().interrupt();
            throw new ImageException("interrupted reading " + dir, e);
        }
        if (unreadable != null) {
            throw new ImageException(unreadable + " cannot be read by this user (uid " + uidOf() + "): build as root, or make the tree readable");
        }
        if (p.exitValue() != 0) {
            String err = errors.getNow("").strip();
            throw new ImageException("cannot read " + dir + ": " + (err.isEmpty() ? "find exited " + p.exitValue() : err.lines().findFirst().orElse(err)));
        }
        for (long bytes : dirBytes.values()) {
            blocks += (bytes + Ext4.BLOCK - 1) / Ext4.BLOCK;
        }
        return new Scan(root, HexFormat.of().formatHex(md.digest()), mb.build(), new Ext4.Sizing(blocks, inodes));
    }

    /** Reads one NUL-terminated field, strictly UTF-8; false at a clean end of input. */
    private static boolean field(InputStream in, String[] f, int i) throws IOException, ImageException {
        java.io.ByteArrayOutputStream b = new java.io.ByteArrayOutputStream(64);
        for (int c; (c = in.read()) != 0;) {
            if (c < 0) {
                if (b.size() == 0 && i == 0) {
                    return false;
                }
                throw new ImageException("find's output ends mid-field");
            }
            b.write(c);
        }
        try {
            f[i] = java.nio.charset.StandardCharsets.UTF_8.newDecoder().decode(java.nio.ByteBuffer.wrap(b.toByteArray())).toString();
        } catch (java.nio.charset.CharacterCodingException e) {
            throw new ImageException("a file name in the tree is not valid UTF-8: '" + FsEntry.printable(b.toString(java.nio.charset.StandardCharsets.ISO_8859_1)) + "'");
        }
        return true;
    }

    /** Builds from a scanned host tree into {@code work}. */
    Built fromDirectory(Scan scan, Path work) throws ImageException, IOException {
        requireRootfs(scan.manifest(), scan.dir().toString());
        Path disk = work.resolve(DISK_FILE);
        progress.accept("writing " + DISK_FILE + " from " + scan.dir() + " (" + scan.files() + " files, "
                + mib(scan.sizing().blocks() * Ext4.BLOCK) + " MiB of data)");
        Ext4.format(disk, Optional.of(scan.dir()), scan.sizing(), "vmgate-root");
        Ext4.checkAndSeal(disk);
        return new Built(disk, scan.manifest(), readIn(scan.manifest(), scan.dir(), "/etc/passwd"),
                readIn(scan.manifest(), scan.dir(), "/etc/group"), scan.files());
    }

    /** Builds from entries (tar streams, layers) into {@code work}: their bytes are kept there until debugfs writes the tree. */
    Built fromEntries(RootfsSource.Producer producer, Path work) throws ImageException, IOException {
        Staging staging = new Staging(work.resolve("content"), System.currentTimeMillis() / 1000, n -> {
            if (n % 5000 == 0) {
                progress.accept("read " + n + " entries");
            }
        });
        producer.produce(staging);
        Manifest manifest = staging.manifest();
        requireRootfs(manifest, "the archive");
        Ext4.Sizing sizing = staging.sizing();
        Path disk = work.resolve(DISK_FILE);
        Ext4.format(disk, Optional.empty(), sizing, "vmgate-root");
        Path values = Files.createDirectories(work.resolve("xattrs"));
        List<String> script = staging.script(values);
        progress.accept("writing " + DISK_FILE + " (" + manifest.entries().size() + " files, " + mib(sizing.blocks() * Ext4.BLOCK)
                + " MiB of data, " + script.size() + " debugfs commands)");
        Ext4.debugfs(disk, script, work.resolve("build.debugfs"));
        Ext4.checkAndSeal(disk);
        Built b = new Built(disk, manifest, staging.read(manifest, "/etc/passwd"), staging.read(manifest, "/etc/group"),
                manifest.entries().size());
        ImageStore.deleteTree(staging.dir());
        ImageStore.deleteTree(values);
        Files.deleteIfExists(work.resolve("build.debugfs"));
        return b;
    }

    /** A root filesystem has a shell at /bin/sh: without one nothing vmgate starts can run. */
    static void requireRootfs(Manifest m, String where) throws ImageException {
        Optional<Manifest.Entry> sh = m.lookup("/bin/sh");
        if (sh.isEmpty() || !sh.get().isExecutableFile()) {
            throw new ImageException(where + " is not a root filesystem: it has no executable /bin/sh"
                    + (sh.isPresent() ? " (it leads to a " + sh.get().type() + " of mode " + Integer.toOctalString(sh.get().mode()) + ")" : ""));
        }
    }

    /** A small file of the tree by its guest path (symlinks resolved inside the tree), if it is a regular file. */
    static Optional<byte[]> readIn(Manifest m, Path tree, String guestPath) throws IOException {
        Optional<String> real = m.resolve(guestPath);
        if (real.isEmpty() || !m.entry(real.get()).map(Manifest.Entry::isFile).orElse(false)) {
            return Optional.empty();
        }
        Path p = tree.resolve(real.get());
        try (InputStream in = Files.newInputStream(p, LinkOption.NOFOLLOW_LINKS)) {
            byte[] b = in.readNBytes(16 << 20);
            if (in.read() >= 0) {
                throw new IOException(guestPath + " is larger than 16 MiB");
            }
            return Optional.of(b);
        }
    }

    /** The first of the usual sftp-server paths that is an executable file in the tree. */
    static Optional<String> sftpServer(Manifest m) {
        return SFTP_SERVERS.stream().filter(p -> m.lookup(p).map(Manifest.Entry::isExecutableFile).orElse(false)).findFirst();
    }

    private static long mib(long bytes) {
        return (bytes + (1 << 20) - 1) >> 20;
    }

    static long uidOf() {
        try {
            return ((Number) Files.getAttribute(Path.of("/proc/self"), "unix:uid")).longValue();
        } catch (IOException | RuntimeException e) {
            return -1;
        }
    }

    private static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
