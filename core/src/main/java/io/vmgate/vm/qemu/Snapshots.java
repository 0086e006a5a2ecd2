package io.vmgate.vm.qemu;

import io.vmgate.image.ImageUsers;
import io.vmgate.image.ScratchDisk;
import io.vmgate.vm.Accel;
import io.vmgate.vm.Vm;
import io.vmgate.vm.VmConfig;
import io.vmgate.vm.VmException;
import io.vmgate.vm.VmLauncher;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Duration;
import java.util.HexFormat;
import java.util.Map;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.locks.ReentrantLock;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Snapshot templates: boot one VM per configuration to the agent's hello, pause it, save its
 * state, and start every later VM by restoring that state into a fresh QEMU. A restore costs a
 * fraction of a cold boot. Anything that goes wrong with a template falls back to a cold boot
 * (logged with the reason) and the template is rebuilt; a session a cold boot would serve is
 * never failed by the snapshot path.
 *
 * <p>Templates live in {@code <root>/<key>/state} (with {@code scratch.ext4}, the scratch disk as
 * it was saved, when the VM has one, and {@code template.properties} saying what it was made
 * from); the key covers everything that must match between save and restore: the image, the root
 * filesystem image's id (a rebuilt image has a new id, so it never meets an old template), the
 * scratch disk's size, CPUs, memory, accelerator, agent settings, the TSC rate given to the
 * guest, and the QEMU binary itself. The guest user and working directory are not in it: they
 * only shape what START sends.
 */
public final class Snapshots implements VmLauncher {
    private static final Logger log = LoggerFactory.getLogger(Snapshots.class);
    static final int FORMAT_VERSION = 3;
    /** What a template was made from, for {@code image ls} and {@code image prune}. */
    public static final String PROPERTIES_FILE = "template.properties";
    private static final ReentrantLock JVM_LOCK = new ReentrantLock();

    private final VmConfig config;
    private final Path root;
    private final boolean rebuildInBackground;
    private final AtomicBoolean rebuilding = new AtomicBoolean();
    private final java.util.function.Consumer<Duration> onBuilt;

    /**
     * @param rebuildInBackground a missing or failed template is (re)built in the background
     *        while the session cold-boots (a server); otherwise a launch builds a missing template
     *        first and the next launch rebuilds a failed one (a one-shot command, whose process
     *        would not live long enough for a background build)
     */
    public Snapshots(VmConfig config, Path root, boolean rebuildInBackground) {
        this(config, root, rebuildInBackground, took -> { });
    }

    /** As above; {@code onBuilt} hears how long each template build took (for metrics), on the building thread. */
    public Snapshots(VmConfig config, Path root, boolean rebuildInBackground, java.util.function.Consumer<Duration> onBuilt) {
        this.config = config;
        this.root = root;
        this.rebuildInBackground = rebuildInBackground;
        this.onBuilt = onBuilt;
    }

    /** The template's state file (which may not exist yet). */
    public Path statePath() throws VmException {
        return root.resolve(key()).resolve("state");
    }

    @Override
    public Vm launch(String vmId, java.util.function.Consumer<Vm.Phase> progress) throws VmException {
        Path state;
        if (rebuildInBackground && !Files.isRegularFile(statePath())) {
            // A server's first session of a new image: boot it now, make the template meanwhile.
            log.info("snapshot_template_missing vm={} fallback=cold_boot template=building_in_background", vmId);
            rebuildInBackground();
            return QemuVm.boot(config, vmId, progress);
        }
        try {
            state = ensureTemplate();
        } catch (VmException e) {
            log.warn("snapshot_unavailable vm={} reason=\"{}\" fallback=cold_boot", vmId, firstLine(e.getMessage()));
            return QemuVm.boot(config, vmId, progress);
        }
        try {
            return QemuVm.restore(config, vmId, state, progress);
        } catch (VmException e) {
            if (!e.qemuRan()) {
                throw e; // a host-side problem: the template is not at fault, and a cold boot would meet it too
            }
            log.warn("snapshot_restore_failed vm={} reason=\"{}\" fallback=cold_boot template=discarded", vmId,
                    firstLine(e.getMessage()));
            discard(state);
            if (rebuildInBackground) {
                rebuildInBackground();
            }
            return QemuVm.boot(config, vmId, progress);
        }
    }

    /** Builds the template if it is missing; returns its state file. */
    public Path ensureTemplate() throws VmException {
        Path state = statePath();
        if (Files.isRegularFile(state)) {
            return state; // written last: its presence means the template is complete
        }
        Path dir = state.getParent();
        JVM_LOCK.lock();
        try {
            Files.createDirectories(dir);
            try (FileChannel lockFile = FileChannel.open(dir.resolve("lock"), StandardOpenOption.CREATE, StandardOpenOption.WRITE);
                    FileLock ignored = lockFile.lock()) {
                if (!Files.isRegularFile(state)) {
                    build(state);
                }
            }
            ImageUsers.hold(dir);
        } catch (IOException e) {
            throw new VmException("cannot write the snapshot template under " + dir + ": " + e.getMessage(), e);
        } finally {
            JVM_LOCK.unlock();
        }
        return state;
    }

    private void build(Path state) throws VmException, IOException {
        long t0 = System.nanoTime();
        String id = "template-" + state.getParent().getFileName().toString().substring(0, 12);
        Path tmp = state.resolveSibling("state.tmp");
        try (QemuVm vm = QemuVm.boot(config, id)) {
            Qmp qmp = vm.qmp();
            Path sock = vm.runtimeDir().path().resolve("migrate.sock");
            try (ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
                server.bind(UnixDomainSocketAddress.of(sock), 1);
                Duration timeout = Duration.ofSeconds(60);
                // Migrate the idle guest without pausing it first: a state saved while paused
                // restores paused, and would need a QMP "cont" on every restore.
                qmp.execute("migrate", Map.of("uri", "unix:" + sock), timeout);
                try (SocketChannel in = server.accept();
                        FileChannel out = FileChannel.open(tmp, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                                StandardOpenOption.TRUNCATE_EXISTING)) {
                    long n = 0;
                    // QEMU closes the connection when the migration stream is complete.
                    while (out.transferFrom(in, n, 1 << 24) > 0) {
                        n = out.size();
                    }
                    out.force(true);
                }
                Map<String, Object> status = qmp.execute("query-migrate", Map.of(), timeout);
                if (!"completed".equals(status.get("status"))) {
                    throw new VmException("saving the template failed: migration status " + status);
                }
                if (config.scratchMib().isPresent()) {
                    // Migration has flushed the disk and stopped the guest: its scratch disk now
                    // matches the saved memory, and every clone starts from a copy-on-write view of it.
                    copySparse(vm.command().scratchFile(), state.resolveSibling(ScratchDisk.FILE));
                }
                writeProperties(state.resolveSibling(PROPERTIES_FILE));
            } catch (TimeoutException e) {
                throw new VmException("saving the template timed out: " + e.getMessage(), e);
            }
        } catch (VmException | IOException e) {
            Files.deleteIfExists(tmp);
            Files.deleteIfExists(state.resolveSibling(ScratchDisk.FILE));
            throw e;
        }
        try {
            Files.move(tmp, state, StandardCopyOption.ATOMIC_MOVE);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(tmp, state, StandardCopyOption.REPLACE_EXISTING);
        }
        log.info("snapshot_template_built key={} bytes={} ms={}", state.getParent().getFileName(), Files.size(state),
                (System.nanoTime() - t0) / 1_000_000);
        onBuilt.accept(Duration.ofNanos(System.nanoTime() - t0));
    }

    private void writeProperties(Path file) throws IOException {
        java.util.Properties p = new java.util.Properties();
        p.setProperty("image", config.image().contentHash());
        p.setProperty("image_dir", config.image().directory().toAbsolutePath().toString());
        config.rootfs().ifPresent(r -> {
            p.setProperty("rootfs", r.id());
            p.setProperty("rootfs_dir", r.directory().toAbsolutePath().toString());
        });
        config.scratchMib().ifPresent(v -> p.setProperty("scratch_mib", Integer.toString(v)));
        p.setProperty("cpus", Integer.toString(config.cpus()));
        p.setProperty("memory_mib", Integer.toString(config.memoryMib()));
        p.setProperty("created", java.time.Instant.now().toString());
        try (var w = Files.newBufferedWriter(file, java.nio.charset.StandardCharsets.UTF_8)) {
            p.store(w, "vmgate snapshot template");
        }
    }

    /** {@code cp --sparse=always}: the disk is mostly holes, which Java's copies would fill in. */
    private static void copySparse(Path from, Path to) throws IOException, VmException {
        Path tmp = to.resolveSibling(to.getFileName() + ".tmp");
        Process p = new ProcessBuilder("cp", "--sparse=always", from.toString(), tmp.toString()).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
        try {
            if (!p.waitFor(5, java.util.concurrent.TimeUnit.MINUTES) || p.exitValue() != 0) {
                p.destroyForcibly();
                Files.deleteIfExists(tmp);
                throw new VmException("saving the template's scratch disk failed: " + out.strip());
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            Files.deleteIfExists(tmp);
            throw new VmException("interrupted while saving the template's scratch disk", e);
        }
        Files.move(tmp, to, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }

    private void discard(Path state) {
        try {
            Files.deleteIfExists(state);
        } catch (IOException e) {
            log.warn("snapshot_discard_failed path={} error={}", state, e.toString());
        }
    }

    private void rebuildInBackground() {
        if (rebuilding.compareAndSet(false, true)) {
            Thread.ofVirtual().name("template-rebuild").start(() -> {
                try {
                    ensureTemplate();
                } catch (VmException e) {
                    log.warn("snapshot_rebuild_failed reason=\"{}\"", firstLine(e.getMessage()));
                } finally {
                    rebuilding.set(false);
                }
            });
        }
    }

    /** Everything that must be identical between the saving QEMU and the restoring one. */
    String key() throws VmException {
        Path qemu = QemuBinary.resolve(config.qemuBinary());
        StringBuilder b = new StringBuilder()
                .append("format=").append(FORMAT_VERSION)
                .append("\nimage=").append(config.image().contentHash())
                .append("\ncpus=").append(config.cpus())
                .append("\nmemory=").append(config.memoryMib())
                .append("\naccel=").append(config.accel().qemuName())
                .append("\nrwsize=").append(config.rwsizeMib())
                .append("\nmaxprocs=").append(config.maxProcs())
                .append("\nrootfs=").append(config.rootfs().map(r -> r.id() + " " + r.fsType()).orElse("none"))
                .append("\nscratch=").append(config.scratchMib())
                .append("\nmachine=").append(QemuCommand.MACHINE)
                .append("\ntsc=").append(config.accel() == Accel.TCG ? HostClock.tscKhz() : "");
        if (config.network() != io.vmgate.vm.Network.NONE) { // a NIC is a device: its state is in the template
            b.append("\nnetwork=").append(config.network());
        }
        try {
            b.append("\nqemu=").append(qemu.toRealPath()).append(' ').append(Files.size(qemu)).append(' ')
                    .append(Files.getLastModifiedTime(qemu).toMillis());
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(b.toString().getBytes()));
        } catch (IOException | NoSuchAlgorithmException e) {
            throw new VmException("cannot identify the QEMU binary " + qemu + ": " + e.getMessage(), e);
        }
    }

    private static String firstLine(String s) {
        if (s == null) {
            return "";
        }
        int nl = s.indexOf('\n');
        return nl < 0 ? s : s.substring(0, nl);
    }
}
