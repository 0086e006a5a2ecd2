package io.vmgate.sandbox;

import io.vmgate.image.ImageException;
import io.vmgate.image.ImageUsers;
import io.vmgate.image.RootfsImage;
import io.vmgate.image.RootfsStore;
import io.vmgate.image.oci.BlobStore;
import io.vmgate.vm.qemu.Snapshots;
import java.io.IOException;
import java.io.Reader;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashSet;
import java.util.List;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.stream.Stream;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@code vmgate image prune}: removes from the cache what nothing refers to and nobody uses.
 *
 * <ul>
 * <li>root filesystem images that no name means and no live process holds ({@link ImageUsers});
 * <li>built images (kernel + initramfs) other than the current one, unless a live process holds them;
 * <li>snapshot templates whose image or root filesystem image goes (or is unknown), unless a live process holds them;
 * <li>debris of builds that died (their lock is free);
 * <li>OCI blobs ({@link BlobStore}) that no remaining root filesystem image was made from, unless a pull or
 *     import is running.
 * </ul>
 * A live process is a server or {@code run} (or any program) that launched VMs from the thing:
 * it holds it until it exits, whether or not it has a VM at this moment.
 */
public final class CachePruner {
    private static final Logger log = LoggerFactory.getLogger(CachePruner.class);

    private final Path cacheRoot;
    private final RootfsStore rootfs;
    private final BlobStore blobs;

    public CachePruner(Path cacheRoot) {
        this.cacheRoot = cacheRoot;
        this.rootfs = new RootfsStore(cacheRoot);
        this.blobs = new BlobStore(cacheRoot);
    }

    /** One thing to remove (or removed), with why. */
    public record Removal(Path path, String what, long bytes) {}

    /** A snapshot template as {@code image ls} shows it. */
    public record Template(Path dir, Optional<String> imageKey, Optional<String> rootfsId, boolean complete, long bytes) {}

    public Path templatesDir() {
        return cacheRoot.resolve("templates");
    }

    /** Every template directory, with what it was made from (when it says). */
    public List<Template> templates() {
        List<Template> out = new ArrayList<>();
        for (Path d : list(templatesDir(), "*")) {
            if (!Files.isDirectory(d, LinkOption.NOFOLLOW_LINKS)) {
                continue;
            }
            Properties p = properties(d.resolve(Snapshots.PROPERTIES_FILE));
            out.add(new Template(d, Optional.ofNullable(p.getProperty("image")), Optional.ofNullable(p.getProperty("rootfs")),
                    Files.isRegularFile(d.resolve("state")), bytes(d)));
        }
        return out;
    }

    /** What {@link #prune} would remove now. */
    public List<Removal> plan() throws ImageException {
        List<Removal> out = planImages();
        out.addAll(blobRemovals(false));
        return out;
    }

    /** OCI blobs no kept root filesystem image was made from: listed, or removed (under the blob store's lock). */
    private List<Removal> blobRemovals(boolean remove) throws ImageException {
        Set<String> keep = new HashSet<>();
        Set<Path> goes = new HashSet<>();
        for (Removal r : planImages()) {
            goes.add(r.path());
        }
        for (RootfsImage img : rootfs.images()) {
            if (!goes.contains(img.directory())) {
                keep.addAll(img.blobs());
            }
        }
        List<Removal> out = new ArrayList<>();
        try {
            for (Path p : blobs.unreferenced(keep, remove)) {
                String name = p.getFileName().toString();
                out.add(new Removal(p, name.startsWith(".tmp-") ? "an abandoned OCI blob download"
                        : "OCI blob " + p.getParent().getFileName() + ":" + name.substring(0, Math.min(12, name.length())) + " (no image uses it)",
                        remove ? 0 : p.toFile().length()));
            }
        } catch (IOException e) {
            throw new ImageException("cannot list the blob store " + blobs.dir() + ": " + e.getMessage(), e);
        }
        return out;
    }

    private List<Removal> planImages() throws ImageException {
        List<Removal> out = new ArrayList<>();
        Set<String> keptRootfs = new HashSet<>(rootfs.names().values());
        for (Path d : list(rootfs.imagesDir(), "[0-9a-f]*")) {
            String id = d.getFileName().toString();
            if (!ImageUsers.live(d).isEmpty()) {
                keptRootfs.add(id);
            } else if (!keptRootfs.contains(id)) {
                out.add(new Removal(d, "root filesystem image " + id.substring(0, Math.min(12, id.length())) + " " + describe(d)
                        + " (no name, not in use)", bytes(d)));
            }
        }
        for (Path d : rootfs.abandonedBuilds()) {
            out.add(new Removal(d, "an abandoned root filesystem build", bytes(d)));
        }

        Set<String> keptBoot = new HashSet<>();
        Path images = cacheRoot.resolve("images");
        current(images).ifPresent(keptBoot::add);
        for (Path d : list(images, "*")) {
            String name = d.getFileName().toString();
            if (!Files.isDirectory(d, LinkOption.NOFOLLOW_LINKS)) {
                continue;
            }
            if (name.startsWith(".tmp-")) {
                if (!locked(images.resolve(".lock"))) {
                    out.add(new Removal(d, "an abandoned image build", bytes(d)));
                }
            } else if (!ImageUsers.live(d).isEmpty()) {
                keptBoot.add(name);
            } else if (!keptBoot.contains(name)) {
                out.add(new Removal(d, "image " + name.substring(0, Math.min(12, name.length())) + " (not the current build, not in use)", bytes(d)));
            }
        }

        for (Template t : templates()) {
            if (!ImageUsers.live(t.dir()).isEmpty() || (!t.complete() && locked(t.dir().resolve("lock")))) {
                continue; // in use, or being built
            }
            boolean imageKept = t.imageKey().map(keptBoot::contains).orElse(false);
            boolean rootfsKept = t.rootfsId().map(keptRootfs::contains).orElse(true);
            if (!imageKept || !rootfsKept) {
                out.add(new Removal(t.dir(), "snapshot template " + t.dir().getFileName().toString().substring(0, 12)
                        + (t.imageKey().isEmpty() ? " (from an older vmgate)" : !imageKept ? " (its image goes)" : " (its root filesystem image goes)"),
                        t.bytes()));
            }
        }
        return out;
    }

    /** Removes what {@link #plan} lists; returns it. */
    public List<Removal> prune() throws ImageException {
        List<Removal> plan = planImages();
        List<Removal> blobPlan = blobRemovals(false); // sized now; removed below under the blob store's lock
        for (Removal r : plan) {
            try {
                deleteTree(r.path());
                log.atInfo().setMessage("cache_pruned").addKeyValue("path", r.path()).addKeyValue("what", r.what())
                        .addKeyValue("bytes", r.bytes()).log();
            } catch (IOException e) {
                throw new ImageException("cannot remove " + r.path() + ": " + e.getMessage(), e);
            }
        }
        Set<Path> removedBlobs = new HashSet<>();
        blobRemovals(true).forEach(r -> removedBlobs.add(r.path()));
        List<Removal> done = new ArrayList<>(plan);
        blobPlan.stream().filter(r -> removedBlobs.contains(r.path())).forEach(done::add);
        return done;
    }

    private static String describe(Path rootfsDir) {
        try {
            return "(" + RootfsImage.load(rootfsDir).source() + ")";
        } catch (ImageException e) {
            return "(incomplete)";
        }
    }

    private static Optional<String> current(Path images) {
        try {
            String key = Files.readString(images.resolve("current"), StandardCharsets.US_ASCII).strip();
            return key.matches("[0-9a-f]{64}") ? Optional.of(key) : Optional.empty();
        } catch (IOException e) {
            return Optional.empty();
        }
    }

    /** True if someone holds the lock file (a build in progress). */
    private static boolean locked(Path lockFile) {
        if (!Files.exists(lockFile)) {
            return false;
        }
        try (FileChannel ch = FileChannel.open(lockFile, StandardOpenOption.WRITE); FileLock l = ch.tryLock()) {
            return l == null;
        } catch (OverlappingFileLockException e) {
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    private static Properties properties(Path f) {
        Properties p = new Properties();
        try (Reader r = Files.newBufferedReader(f, StandardCharsets.UTF_8)) {
            p.load(r);
        } catch (NoSuchFileException e) {
            // an older template, or one being written
        } catch (IOException | IllegalArgumentException e) {
            log.atDebug().setMessage("template_properties_unreadable").addKeyValue("file", f).addKeyValue("error", e.getMessage()).log();
        }
        return p;
    }

    private static List<Path> list(Path dir, String glob) {
        List<Path> out = new ArrayList<>();
        if (!Files.isDirectory(dir)) {
            return out;
        }
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir, glob)) {
            ds.forEach(out::add);
        } catch (IOException e) {
            log.atWarn().setMessage("cache_unlisted").addKeyValue("dir", dir).addKeyValue("error", e.getMessage()).log();
        }
        out.sort(Comparator.naturalOrder());
        return out;
    }

    /** Apparent bytes of a tree (sparse images count their full size; good enough for a report). */
    static long bytes(Path dir) {
        try (Stream<Path> s = Files.walk(dir)) {
            return s.filter(p -> Files.isRegularFile(p, LinkOption.NOFOLLOW_LINKS)).mapToLong(p -> {
                try {
                    return Files.size(p);
                } catch (IOException e) {
                    return 0;
                }
            }).sum();
        } catch (IOException | java.io.UncheckedIOException e) {
            return 0;
        }
    }

    private static void deleteTree(Path p) throws IOException {
        if (!Files.exists(p, LinkOption.NOFOLLOW_LINKS)) {
            return;
        }
        try (Stream<Path> s = Files.walk(p)) {
            for (Path q : s.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(q);
            }
        }
    }
}
