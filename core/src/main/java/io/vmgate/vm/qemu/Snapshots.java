package io.vmgate.vm.qemu;

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
 * <p>Templates live in {@code <root>/<key>/state}; the key covers everything that must match
 * between save and restore: the image, CPUs, memory, accelerator, agent settings, the TSC rate
 * given to the guest, and the QEMU binary itself.
 */
public final class Snapshots implements VmLauncher {
    private static final Logger log = LoggerFactory.getLogger(Snapshots.class);
    static final int FORMAT_VERSION = 2;
    private static final ReentrantLock JVM_LOCK = new ReentrantLock();

    private final VmConfig config;
    private final Path root;
    private final boolean rebuildInBackground;
    private final AtomicBoolean rebuilding = new AtomicBoolean();

    /**
     * @param rebuildInBackground after a failed restore, rebuild the template at once in the
     *        background (a server); otherwise the next launch rebuilds it (a one-shot command,
     *        whose process would not live long enough)
     */
    public Snapshots(VmConfig config, Path root, boolean rebuildInBackground) {
        this.config = config;
        this.root = root;
        this.rebuildInBackground = rebuildInBackground;
    }

    /** The template's state file (which may not exist yet). */
    public Path statePath() throws VmException {
        return root.resolve(key()).resolve("state");
    }

    @Override
    public Vm launch(String vmId, java.util.function.Consumer<Vm.Phase> progress) throws VmException {
        Path state;
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
            return state;
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
            } catch (TimeoutException e) {
                throw new VmException("saving the template timed out: " + e.getMessage(), e);
            }
        } catch (VmException | IOException e) {
            Files.deleteIfExists(tmp);
            throw e;
        }
        try {
            Files.move(tmp, state, StandardCopyOption.ATOMIC_MOVE);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(tmp, state, StandardCopyOption.REPLACE_EXISTING);
        }
        log.info("snapshot_template_built key={} bytes={} ms={}", state.getParent().getFileName(), Files.size(state),
                (System.nanoTime() - t0) / 1_000_000);
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
