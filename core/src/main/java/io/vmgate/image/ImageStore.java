package io.vmgate.image;

import java.io.IOException;
import java.io.Writer;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.locks.ReentrantLock;
import java.util.stream.Stream;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The image cache: {@code <root>/images/<key>/} holding {@code vmlinuz}, {@code initrd.img} and
 * {@code image.properties}. The key covers the builder's format, the agent's bytes and every host
 * input's (path, size, mtime), so installing a new kernel, busybox or agent yields a new image.
 *
 * <p>Checking that the image is current runs on every start, so it is kept cheap: the last key
 * is remembered in {@code images/current}, and its image's properties list the inputs; if
 * stat'ing them reproduces the key, nothing else is read (no ldd, no modules.dep). Builds happen
 * in a temporary directory under a file lock and are renamed into place, so concurrent starters
 * never see half an image.
 */
public final class ImageStore {
    private static final Logger log = LoggerFactory.getLogger(ImageStore.class);
    private static final String CURRENT = "current";
    private static final String TMP_PREFIX = ".tmp-";
    /** FileLock is per process; threads of one JVM queue here first (a second lock() would throw). */
    private static final ReentrantLock JVM_LOCK = new ReentrantLock();

    private final Path root;
    private final boolean gzip;

    /** @param root the cache directory (see {@link #defaultRoot()}) */
    public ImageStore(Path root) {
        this(root, false);
    }

    /** @param gzip compress the initramfs (smaller on disk; the uncompressed one boots faster under TCG) */
    public ImageStore(Path root, boolean gzip) {
        this.root = root;
        this.gzip = gzip;
    }

    public static ImageStore atDefaultLocation() {
        return new ImageStore(defaultRoot());
    }

    /** {@code $VMGATE_CACHE}, else {@code $XDG_CACHE_HOME/vmgate}, else {@code ~/.cache/vmgate}. */
    public static Path defaultRoot() {
        return defaultRoot(System.getenv(), System.getProperty("user.home"));
    }

    static Path defaultRoot(Map<String, String> env, String home) {
        String v = env.get("VMGATE_CACHE");
        if (v != null && !v.isBlank()) {
            return Path.of(v);
        }
        String xdg = env.get("XDG_CACHE_HOME");
        if (xdg != null && xdg.startsWith("/")) {
            return Path.of(xdg, "vmgate");
        }
        return Path.of(home, ".cache", "vmgate");
    }

    public Path root() {
        return root;
    }

    public Path imagesDir() {
        return root.resolve("images");
    }

    /** The default image from Debian packages and the agent in the jar, built if needed. */
    public Image defaultImage() throws ImageException {
        return image(ImageSources.debian());
    }

    /** The image for these sources: the cached one if still current, else a fresh build. */
    public Image image(ImageSources sources) throws ImageException {
        long t0 = System.nanoTime();
        String agentSha = sources.agent().sha256();
        String description = description(agentSha);
        ImageSources.Kernel kernel = sources.newestKernel();

        Image cached = current(description, kernel);
        if (cached != null) {
            log.atDebug().setMessage("image_cache_hit").addKeyValue("key", cached.contentHash()).addKeyValue("check_ms", ms(t0)).log();
            return cached;
        }
        ImagePlan plan = ImagePlan.discover(sources, kernel);
        String key = ImageKey.compute(description, plan.inputs());
        Path dir = imagesDir().resolve(key);
        if (!isComplete(dir)) {
            byte[] agent = sources.agent().read();
            if (!ImageKey.sha256Hex(agent).equals(agentSha)) {
                throw new ImageException("the guest agent in " + sources.agent().describe()
                        + " does not match its recorded SHA-256: rebuild the jar (mvn package)");
            }
            build(plan, agent, sources.agent().describe(), description, key);
        }
        remember(key);
        log.atDebug().setMessage("image_resolved").addKeyValue("key", key).addKeyValue("ms", ms(t0)).log();
        return Image.load(dir);
    }

    /**
     * The image the last check found current, not checked again: a VM may start booting from it
     * while {@link #defaultImage()} checks, provided the caller discards that VM unless the check
     * returns this same image.
     */
    public Optional<Image> lastResolved() {
        try {
            String key = rememberedKey();
            return key == null ? Optional.empty() : Optional.of(Image.load(imagesDir().resolve(key)));
        } catch (IOException | ImageException | RuntimeException e) {
            return Optional.empty();
        }
    }

    private String rememberedKey() throws IOException {
        String key = Files.readString(imagesDir().resolve(CURRENT), StandardCharsets.US_ASCII).strip();
        return key.matches("[0-9a-f]{64}") ? key : null;
    }

    /** The remembered image, if stat'ing its recorded inputs still yields its key. */
    private Image current(String description, ImageSources.Kernel kernel) {
        try {
            String key = rememberedKey();
            if (key == null) {
                return null;
            }
            Path dir = imagesDir().resolve(key);
            Properties props = Image.readProperties(dir.resolve(Image.PROPERTIES_FILE));
            List<Path> inputs = new ArrayList<>();
            for (String name : new TreeMap<>(props).keySet().stream().map(Object::toString)
                    .filter(k -> k.startsWith("input.")).sorted(Comparator.comparingInt(ImageStore::inputIndex)).toList()) {
                String v = props.getProperty(name);
                inputs.add(Path.of(v.substring(0, v.indexOf('\t') < 0 ? v.length() : v.indexOf('\t'))));
            }
            if (inputs.isEmpty() || !inputs.contains(kernel.path())) {
                return null; // a newer kernel appeared, or the properties are not ours
            }
            return ImageKey.compute(description, inputs).equals(key) ? Image.load(dir) : null;
        } catch (IOException | ImageException | RuntimeException e) {
            return null; // anything odd: take the slow, authoritative path
        }
    }

    /** Builds are renamed into place whole, so only a hand-damaged directory can be incomplete. */
    private static boolean isComplete(Path dir) {
        return Files.isRegularFile(dir.resolve(Image.PROPERTIES_FILE)) && Files.isRegularFile(dir.resolve(Image.INITRD_FILE))
                && (Files.isRegularFile(dir.resolve(Image.PVH_KERNEL_FILE)) || Files.isRegularFile(dir.resolve(Image.KERNEL_FILE)));
    }

    private static int inputIndex(String name) {
        try {
            return Integer.parseInt(name.substring("input.".length()));
        } catch (NumberFormatException e) {
            return Integer.MAX_VALUE;
        }
    }

    private void build(ImagePlan plan, byte[] agent, String agentOrigin, String description, String key)
            throws ImageException {
        Path images = imagesDir();
        Path dir = images.resolve(key);
        JVM_LOCK.lock();
        try {
            Files.createDirectories(images);
            try (FileChannel lockFile = FileChannel.open(images.resolve(".lock"), StandardOpenOption.CREATE,
                    StandardOpenOption.WRITE); FileLock ignored = lockFile.lock()) {
                if (isComplete(dir)) {
                    return; // another process built it while we waited
                }
                removeStaleBuilds(images); // we hold the lock: any temp dir is from a crashed build
                deleteTree(dir); // damaged (a file deleted by hand): rebuild it
                Path tmp = images.resolve(TMP_PREFIX + key);
                Files.createDirectories(tmp);
                long t0 = System.nanoTime();
                log.atInfo().setMessage("image_building").addKeyValue("key", key).addKeyValue("kernel", plan.kernel().release())
                        .addKeyValue("dir", dir).log();
                String kernelFile = Image.PVH_KERNEL_FILE;
                if (!KernelImage.extractPvhKernel(plan.kernel().path(), tmp.resolve(Image.PVH_KERNEL_FILE))) {
                    kernelFile = Image.KERNEL_FILE;
                    Files.copy(plan.kernel().path(), tmp.resolve(Image.KERNEL_FILE), StandardCopyOption.REPLACE_EXISTING);
                }
                ImageBuilder builder = new ImageBuilder(plan, agent);
                ImageBuilder.InitrdSizes sizes = builder.writeInitrd(tmp.resolve(Image.INITRD_FILE), gzip);
                GuestRoot.save(tmp, builder.rootManifest(), java.util.Optional.of(ImageBuilder.PASSWD.getBytes(StandardCharsets.UTF_8)),
                        java.util.Optional.of(ImageBuilder.GROUP.getBytes(StandardCharsets.UTF_8)));
                writeProperties(tmp, kernelFile, plan, agent, agentOrigin, description, key, sizes);
                try {
                    Files.move(tmp, dir, StandardCopyOption.ATOMIC_MOVE);
                } catch (AtomicMoveNotSupportedException e) {
                    throw new IOException("the cache directory " + images + " does not support atomic renames", e);
                }
                log.atInfo().setMessage("image_built").addKeyValue("key", key).addKeyValue("kernel", kernelFile)
                        .addKeyValue("initrd_bytes", sizes.fileBytes()).addKeyValue("cpio_bytes", sizes.cpioBytes())
                        .addKeyValue("gzip", gzip).addKeyValue("build_ms", ms(t0)).log();
            }
        } catch (IOException e) {
            throw new ImageException("cannot build the image in " + images + ": " + e.getMessage()
                    + " (set VMGATE_CACHE to a writable directory)", e);
        } finally {
            JVM_LOCK.unlock();
        }
    }

    private static void writeProperties(Path dir, String kernelFile, ImagePlan plan, byte[] agent, String agentOrigin, String description,
            String key, ImageBuilder.InitrdSizes sizes) throws IOException, ImageException {
        Properties p = new Properties();
        p.setProperty("key", key);
        p.setProperty("format", Integer.toString(ImageBuilder.FORMAT_VERSION));
        p.setProperty("description", description);
        p.setProperty("built_at", Instant.now().toString());
        p.setProperty("kernel_release", plan.kernel().release());
        p.setProperty("cmdline", Image.DEFAULT_CMDLINE);
        p.setProperty("kernel_file", kernelFile);
        p.setProperty("kernel_source", plan.kernel().path().toString());
        p.setProperty("kernel_bytes", Long.toString(Files.size(dir.resolve(kernelFile))));
        p.setProperty("initrd_bytes", Long.toString(sizes.fileBytes()));
        p.setProperty("initrd_cpio_bytes", Long.toString(sizes.cpioBytes()));
        p.setProperty("initrd_compression", sizes.fileBytes() == sizes.cpioBytes() ? "none" : "gzip");
        p.setProperty("agent", agentOrigin);
        p.setProperty("agent_sha256", ImageKey.sha256Hex(agent));
        p.setProperty("modules", String.join(" ", plan.modules()));
        p.setProperty("disk_modules", String.join(" ", plan.diskModules()));
        p.setProperty("tools_sftp_server", String.join("\t", plan.toolsSftpServer()));
        p.setProperty("net_modules", String.join(" ", plan.netModules()));
        List<Path> inputs = plan.inputs();
        for (int i = 0; i < inputs.size(); i++) {
            p.setProperty("input." + i, inputs.get(i) + "\t" + ImageKey.stat(inputs.get(i)));
        }
        try (Writer w = Files.newBufferedWriter(dir.resolve(Image.PROPERTIES_FILE), StandardCharsets.UTF_8)) {
            p.store(w, "vmgate image, built by io.vmgate.image.ImageStore");
        }
    }

    private void remember(String key) {
        Path tmp = imagesDir().resolve(CURRENT + ".tmp-" + ProcessHandle.current().pid() + "-" + Thread.currentThread().threadId());
        try {
            Files.writeString(tmp, key + "\n", StandardCharsets.US_ASCII);
            Files.move(tmp, imagesDir().resolve(CURRENT), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            // only costs a slower check next time
            log.atDebug().setMessage("image_current_not_saved").addKeyValue("error", e.toString()).log();
            try {
                Files.deleteIfExists(tmp);
            } catch (IOException ignored) {
                // nothing more to do
            }
        }
    }

    private static void removeStaleBuilds(Path images) throws IOException {
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(images, TMP_PREFIX + "*")) {
            for (Path p : ds) {
                deleteTree(p);
            }
        }
    }

    static void deleteTree(Path p) throws IOException {
        if (!Files.exists(p, java.nio.file.LinkOption.NOFOLLOW_LINKS)) {
            return;
        }
        try (Stream<Path> s = Files.walk(p)) {
            for (Path q : s.sorted(Comparator.reverseOrder()).toList()) {
                try {
                    Files.deleteIfExists(q);
                } catch (NoSuchFileException ignored) {
                    // raced with another cleaner
                }
            }
        }
    }

    private String description(String agentSha) {
        return "vmgate-image format=" + ImageBuilder.FORMAT_VERSION + " gzip=" + gzip + " agent_sha256=" + agentSha
                + " cmdline=" + Image.DEFAULT_CMDLINE;
    }

    private static long ms(long t0) {
        return (System.nanoTime() - t0) / 1_000_000;
    }
}
