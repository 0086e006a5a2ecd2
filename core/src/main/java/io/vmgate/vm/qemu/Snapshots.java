package io.vmgate.vm.qemu;

import io.vmgate.agent.GuestProcess;
import io.vmgate.agent.ProcessSpec;
import io.vmgate.image.ImageUsers;
import io.vmgate.vm.GuestLogin;
import io.vmgate.vm.Accel;
import io.vmgate.vm.Vm;
import io.vmgate.vm.VmConfig;
import io.vmgate.vm.VmException;
import io.vmgate.vm.VmLauncher;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.OptionalLong;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.ReentrantLock;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Snapshot templates: boot one VM per configuration, save it once its guest is idle, and start
 * every later VM from it. A template is a guest-memory file plus QEMU's device state (~60 KB);
 * a restored VM maps the memory file privately, copy-on-write, so it costs only the pages its
 * guest writes, and restores in a fraction of a cold boot (docs/templates.md).
 *
 * <p>Anything that goes wrong with a template falls back to a cold boot (logged with the reason)
 * and the template is rebuilt; a session a cold boot would serve is never failed by the
 * snapshot path. A published template never changes: a rebuild writes a new memory file, then
 * renames a new state file (naming that memory file) into place, and only then unlinks the old
 * memory file, which VMs still running from it keep mapped.
 *
 * <p>A launch that finds no template waits for the one build in progress in this process (a
 * server starts one in the background) for at most the boot timeout, then cold-boots; it never
 * starts a build of its own after another one failed. A restore that times out on a template
 * that restored before in this process keeps the template: a busy host is not a bad template.
 *
 * <p>Templates live in {@code <root>/<key>/}: {@code state}, {@code memory-<hex>} (with
 * {@code scratch-<hex>.ext4}, the scratch disk as it was saved, when the VM has one),
 * {@code template.properties} saying what it was made from, and a {@code lock} file that
 * serialises builds across processes. The key covers everything that must match between save
 * and restore: the format, the image, the root filesystem image's id (a rebuilt image has a new
 * id, so it never meets an old template), the scratch disk's size, a NIC, CPUs, memory,
 * accelerator, agent settings, QEMU's machine, CPU model and kernel command line, and the QEMU
 * binary itself. The guest user and working directory are not in it: they only shape what
 * START sends.
 */
public final class Snapshots implements VmLauncher {
    private static final Logger log = LoggerFactory.getLogger(Snapshots.class);
    static final int FORMAT_VERSION = 5;
    /** What a template was made from, for {@code image ls} and {@code image prune}. */
    public static final String PROPERTIES_FILE = "template.properties";
    private static final ReentrantLock JVM_LOCK = new ReentrantLock();
    private static final SecureRandom RANDOM = new SecureRandom();
    /** The template is saved once its QEMU uses less CPU than this over {@link #IDLE_WINDOW}: boot work done. */
    private static final double IDLE_CPU_FRACTION = 0.05;
    private static final Duration IDLE_WINDOW = Duration.ofMillis(300);
    private static final Duration MAX_SETTLE = Duration.ofSeconds(10);

    private final VmConfig config;
    private final Path root;
    private final boolean rebuildInBackground;
    private final java.util.function.Consumer<Duration> onBuilt;
    /** Builds in progress in this process, by state file: later launches wait for them rather than build again. */
    private static final java.util.concurrent.ConcurrentHashMap<Path, CompletableFuture<Template>> BUILDS =
            new java.util.concurrent.ConcurrentHashMap<>();
    private volatile long noBuildBefore = System.nanoTime();
    private volatile int buildFailures;
    /** Memory files of templates that restored at least once in this process. */
    private static final java.util.Set<Path> PROVEN = java.util.concurrent.ConcurrentHashMap.newKeySet();
    private static final Duration BUILD_BACKOFF = Duration.ofSeconds(30);

    /**
     * @param rebuildInBackground after a failed restore, rebuild the template at once in the
     *        background (a server); otherwise the next launch rebuilds it (a one-shot command,
     *        whose process would not live long enough)
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
        QemuVm.prepare(config);
    }

    /** The template's state file (which may not exist yet). */
    public Path statePath() throws VmException {
        return root.resolve(key()).resolve("state");
    }

    @Override
    public Vm launch(String vmId, java.util.function.Consumer<Vm.Phase> progress) throws VmException {
        return launch(vmId, progress, config);
    }

    /**
     * Launches VMs with {@code userFile} in the home disk slot this template was built with (an
     * empty placeholder, see {@link io.vmgate.vm.HomeDisk}); the file must have the slot's size.
     */
    public VmLauncher withHome(Path userFile) {
        io.vmgate.vm.HomeDisk slot = config.home().orElseThrow(() -> new IllegalStateException("this template has no home disk slot"));
        VmConfig c = config.withHome(slot.with(userFile));
        return (vmId, progress) -> launch(vmId, progress, c);
    }

    private Vm launch(String vmId, java.util.function.Consumer<Vm.Phase> progress, VmConfig config) throws VmException {
        Template template;
        try {
            template = current();
        } catch (Template.Corrupt e) {
            return fallBack(config, vmId, progress, null, e.getMessage(), true);
        } catch (VmException e) {
            log.atWarn().setMessage("snapshot_unavailable").addKeyValue("vm", vmId)
                    .addKeyValue("reason", firstLine(e.getMessage())).addKeyValue("fallback", "cold_boot").log();
            return QemuVm.boot(config, vmId, progress);
        }
        if (template == null) {
            template = buildForLaunch(vmId);
            if (template == null) {
                return QemuVm.boot(config, vmId, progress);
            }
        }
        for (int attempt = 1; ; attempt++) {
            try {
                Vm vm = QemuVm.restore(config, vmId, template, progress);
                PROVEN.add(template.memory());
                return vm;
            } catch (VmException e) {
                if (!e.qemuRan() && Files.exists(template.memory())) {
                    throw e; // a host-side problem: the template is not at fault, and a cold boot would meet it too
                }
                if (!e.qemuRan()) {
                    // QEMU could not open the memory file. A newer template may have replaced this
                    // one between reading its state and starting QEMU (the old file is unlinked
                    // then): use the newer one. Otherwise the state names a file that is gone.
                    Template now = currentQuietly();
                    if (attempt == 1 && now != null && !now.memory().equals(template.memory())) {
                        log.atInfo().setMessage("snapshot_replaced").addKeyValue("vm", vmId)
                                .addKeyValue("note", "a newer template appeared while this VM started; retrying with it").log();
                        template = now;
                        continue;
                    }
                    return fallBack(config, vmId, progress, template, "the template's memory file " + template.memory() + " is missing", true);
                }
                // A timeout proves nothing against a template that restored before: the host is busy.
                boolean suspect = !(e.timedOut() && PROVEN.contains(template.memory()));
                return fallBack(config, vmId, progress, template, e.getMessage(), suspect);
            }
        }
    }

    /**
     * No template yet. If one is being built in this process, wait for that build, at most the
     * boot timeout: never start another one in turn (under load a build can be slow or fail, and
     * issue 13 saw sessions queued for one build after another, silently, for minutes). A server
     * starts one in the background (unless backing off after failures) and waits for it the same
     * way; a one-shot command builds it now, unless another process is building it. Returns the
     * template, or null to cold-boot (logged).
     */
    private Template buildForLaunch(String vmId) throws VmException {
        Path state = statePath();
        CompletableFuture<Template> building = BUILDS.get(state);
        if (building == null && rebuildInBackground) {
            building = rebuildInBackground();
        } else if (building == null) {
            if (lockedByAnotherProcess(state)) {
                log.atInfo().setMessage("snapshot_missing").addKeyValue("vm", vmId).addKeyValue("fallback", "cold_boot")
                        .addKeyValue("note", "being built by another process").log();
                return null;
            }
            building = build(); // the first `run`: this process builds it and waits, as before
            try {
                return join(building);
            } catch (VmException e) {
                log.atWarn().setMessage("snapshot_build_failed").addKeyValue("vm", vmId)
                        .addKeyValue("reason", firstLine(e.getMessage())).addKeyValue("fallback", "cold_boot").log();
                return null;
            }
        }
        if (building == null) {
            log.atInfo().setMessage("snapshot_missing").addKeyValue("vm", vmId).addKeyValue("fallback", "cold_boot")
                    .addKeyValue("note", "backing off after a failed build").log();
            return null;
        }
        try {
            return building.get(config.bootTimeout().toMillis(), TimeUnit.MILLISECONDS);
        } catch (TimeoutException e) {
            log.atInfo().setMessage("snapshot_missing").addKeyValue("vm", vmId).addKeyValue("fallback", "cold_boot")
                    .addKeyValue("note", "the template build takes longer than " + config.bootTimeout().toSeconds() + " s").log();
        } catch (ExecutionException e) {
            log.atInfo().setMessage("snapshot_missing").addKeyValue("vm", vmId).addKeyValue("fallback", "cold_boot")
                    .addKeyValue("note", "the template build failed: " + firstLine(e.getCause().getMessage())).log();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new VmException("interrupted while waiting for the snapshot template", e);
        }
        return null;
    }

    private static boolean lockedByAnotherProcess(Path state) {
        if (!JVM_LOCK.tryLock()) {
            return false; // this process builds: not another one
        }
        try {
            Files.createDirectories(state.getParent());
            try (FileChannel lockFile = FileChannel.open(state.resolveSibling("lock"), StandardOpenOption.CREATE, StandardOpenOption.WRITE);
                    FileLock lock = lockFile.tryLock()) {
                return lock == null;
            }
        } catch (IOException e) {
            return false; // the build will report it
        } finally {
            JVM_LOCK.unlock();
        }
    }

    /**
     * After a failed restore: discard the template if it is {@code suspect} (unless already
     * replaced) and rebuild it, then cold-boot this VM.
     */
    private Vm fallBack(VmConfig config, String vmId, java.util.function.Consumer<Vm.Phase> progress, Template failed, String reason,
            boolean suspect) throws VmException {
        if (!suspect) {
            log.atWarn().setMessage("snapshot_restore_failed").addKeyValue("vm", vmId).addKeyValue("reason", firstLine(reason))
                    .addKeyValue("fallback", "cold_boot").addKeyValue("template", "kept")
                    .addKeyValue("note", "it restored before: a busy host, not a bad template").log();
            return QemuVm.boot(config, vmId, progress);
        }
        log.atWarn().setMessage("snapshot_restore_failed").addKeyValue("vm", vmId).addKeyValue("reason", firstLine(reason))
                .addKeyValue("fallback", "cold_boot").addKeyValue("template", "discarded").log();
        discard(failed);
        if (rebuildInBackground) {
            rebuildInBackground();
        }
        return QemuVm.boot(config, vmId, progress);
    }

    /** The published template, or null if there is none yet; throws {@link Template.Corrupt} for a bad one. */
    private Template current() throws VmException, Template.Corrupt {
        Path state = statePath();
        try {
            Template t = Template.read(state);
            ImageUsers.hold(state.getParent()); // image prune leaves a template this process uses alone
            return t;
        } catch (NoSuchFileException e) {
            return null;
        } catch (Template.Corrupt e) {
            throw e;
        } catch (IOException e) {
            throw new VmException("cannot read the snapshot template " + state + ": " + e.getMessage(), e);
        }
    }

    private Template currentQuietly() {
        try {
            return current();
        } catch (VmException | Template.Corrupt e) {
            return null;
        }
    }

    /** Builds the template if it is missing (or not one of ours), or waits for the build in progress; returns it. */
    public Template ensureTemplate() throws VmException {
        try {
            Template t = current();
            if (t != null) {
                return t;
            }
        } catch (Template.Corrupt e) {
            log.atWarn().setMessage("snapshot_corrupt").addKeyValue("reason", e.getMessage()).addKeyValue("note", "rebuilding it").log();
        }
        return join(build());
    }

    /** The build in progress for this template in this process, or a new one on its own thread. */
    private CompletableFuture<Template> build() throws VmException {
        Path state = statePath();
        CompletableFuture<Template> mine = new CompletableFuture<>();
        CompletableFuture<Template> theirs = BUILDS.putIfAbsent(state, mine);
        if (theirs != null) {
            return theirs;
        }
        Thread.ofVirtual().name("template-build").start(() -> {
            try {
                mine.complete(buildLocked(state));
            } catch (VmException | RuntimeException e) {
                mine.completeExceptionally(e);
            } finally {
                BUILDS.remove(state, mine);
            }
        });
        return mine;
    }

    private static Template join(CompletableFuture<Template> f) throws VmException {
        try {
            return f.get();
        } catch (ExecutionException e) {
            if (e.getCause() instanceof VmException v) {
                throw v;
            }
            throw new VmException("building the snapshot template failed: " + e.getCause(), e.getCause());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new VmException("interrupted while waiting for the snapshot template", e);
        }
    }

    /** Under the JVM lock and the directory's file lock (another process may build too): the template, built if missing. */
    private Template buildLocked(Path state) throws VmException {
        Path dir = state.getParent();
        JVM_LOCK.lock();
        try {
            Files.createDirectories(dir);
            try (FileChannel lockFile = FileChannel.open(dir.resolve("lock"), StandardOpenOption.CREATE, StandardOpenOption.WRITE);
                    FileLock ignored = lockFile.lock()) {
                try {
                    Template t = Template.read(state);
                    if (Files.exists(t.memory())) {
                        return t; // another process built it while we waited
                    }
                } catch (NoSuchFileException | Template.Corrupt e) {
                    // build it
                }
                return build(state);
            }
        } catch (IOException e) {
            throw new VmException("cannot write the snapshot template under " + dir + ": " + e.getMessage(), e);
        } finally {
            JVM_LOCK.unlock();
        }
    }

    /** Boots the template VM with a fresh memory file, saves it once idle, publishes it and retires older memory files. */
    private Template build(Path state) throws VmException, IOException {
        long t0 = System.nanoTime();
        Path dir = state.getParent();
        String memoryName = "memory-" + HexFormat.of().formatHex(randomBytes());
        Path memory = dir.resolve(memoryName);
        Path tmp = state.resolveSibling("state.tmp");
        Files.deleteIfExists(tmp);
        Files.createFile(memory, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
        byte[] stream;
        String vmId = "template-" + dir.getFileName().toString().substring(0, 12) + "-" + HexFormat.of().formatHex(randomBytes()).substring(0, 6);
        try (QemuVm vm = QemuVm.bootTemplate(config, vmId, memory)) {
            vm.agent().configureFresh(QemuVm.HOSTNAME, Duration.ofSeconds(30));
            warmSessionPath(vm, vmId);
            long settleMs = settle(vm);
            stream = save(vm);
            if (config.scratchMib().isPresent()) {
                // Migration has flushed the disk and stopped the guest: its scratch disk now
                // matches the saved memory, and every clone starts from a copy-on-write view of it.
                copySparse(vm.command().scratchFile(), Template.scratchFor(memory));
            }
            vm.kill();
            log.atInfo().setMessage("snapshot_template_saved").addKeyValue("key", dir.getFileName())
                    .addKeyValue("state_bytes", stream.length).addKeyValue("settle_ms", settleMs).log();
        } catch (VmException | IOException | RuntimeException e) {
            Files.deleteIfExists(memory);
            Files.deleteIfExists(Template.scratchFor(memory));
            throw e;
        } catch (TimeoutException e) {
            Files.deleteIfExists(memory);
            Files.deleteIfExists(Template.scratchFor(memory));
            throw new VmException("the template VM did not answer CONFIGURE: " + e.getMessage(), e);
        }
        try {
            try (FileChannel m = FileChannel.open(memory, StandardOpenOption.WRITE)) {
                m.force(true); // the guest's memory, written through QEMU's shared mapping
            }
            writeProperties(dir.resolve(PROPERTIES_FILE));
            try (FileChannel out = FileChannel.open(tmp, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
                ByteBuffer b = ByteBuffer.allocate(Template.header(memoryName).length + stream.length)
                        .put(Template.header(memoryName)).put(stream).flip();
                while (b.hasRemaining()) {
                    out.write(b);
                }
                out.force(true);
            }
            try {
                Files.move(tmp, state, StandardCopyOption.ATOMIC_MOVE);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(tmp, state, StandardCopyOption.REPLACE_EXISTING);
            }
            syncDirectory(dir);
        } catch (IOException e) {
            Files.deleteIfExists(tmp);
            Files.deleteIfExists(memory);
            Files.deleteIfExists(Template.scratchFor(memory));
            throw e;
        }
        int retired = retireOthers(dir, memoryName);
        log.atInfo().setMessage("snapshot_template_built").addKeyValue("key", dir.getFileName())
                .addKeyValue("state_bytes", stream.length).addKeyValue("memory_mib", Files.size(memory) >> 20)
                .addKeyValue("retired", retired).addKeyValue("ms", (System.nanoTime() - t0) / 1_000_000).log();
        onBuilt.accept(Duration.ofNanos(System.nanoTime() - t0));
        return Template.read(state);
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
        Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
        try (var w = Files.newBufferedWriter(tmp, java.nio.charset.StandardCharsets.UTF_8)) {
            p.store(w, "vmgate snapshot template");
        }
        Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }

    /** {@code cp --sparse=always}: the disk is mostly holes, which Java's copies would fill in. */
    private static void copySparse(Path from, Path to) throws IOException, VmException {
        Path tmp = to.resolveSibling(to.getFileName() + ".tmp");
        Process p = new ProcessBuilder("cp", "--sparse=always", from.toString(), tmp.toString()).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
        try {
            if (!p.waitFor(5, TimeUnit.MINUTES) || p.exitValue() != 0) {
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

    /**
     * Runs what a session's first command runs (the guest user's shell with {@code -c}, and as a
     * login shell) once in the template guest, so the shell, its libraries and the profile files
     * are in the template's page cache, which every clone shares, instead of read from the root
     * disk by each clone (a Debian clone's first {@code ssh host true} spent 0.7–1.5 s there).
     * Best effort: a failure here costs clones speed, never correctness.
     */
    private void warmSessionPath(QemuVm vm, String vmId) {
        GuestLogin login;
        try {
            login = GuestLogin.resolve(config);
        } catch (VmException e) {
            return; // the session will say what is wrong with the user; the template does not care
        }
        for (ProcessSpec spec : List.of(login.command("true", null, Map.of()), login.shell(null, Map.of()))) {
            try {
                GuestProcess p = vm.agent().start(spec);
                p.stdin().close(); // a login shell without a terminal reads its profile, then ends at EOF
                Thread.ofVirtual().start(() -> drain(p.stderr()));
                drain(p.stdout());
                p.exit().get(20, TimeUnit.SECONDS);
            } catch (IOException | ExecutionException | TimeoutException e) {
                log.atDebug().setMessage("snapshot_warm_up_failed").addKeyValue("vm", vmId).addKeyValue("error", e.toString()).log();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
        }
    }

    private static void drain(java.io.InputStream in) {
        try (in) {
            in.transferTo(java.io.OutputStream.nullOutputStream());
        } catch (IOException e) {
            // the process's exit says what happened
        }
    }

    private static byte[] randomBytes() {
        byte[] b = new byte[8];
        RANDOM.nextBytes(b);
        return b;
    }

    /**
     * Waits until the template guest is idle (its boot-time work done: deferred kernel work, the
     * agent's warm-up process), so that clones do not repeat that work, each writing (and so
     * copying) memory for it. Returns how long it waited.
     */
    static long settle(QemuVm vm) {
        long t0 = System.nanoTime();
        OptionalLong pid = vm.pid();
        if (pid.isEmpty()) {
            return 0;
        }
        long deadline = t0 + MAX_SETTLE.toNanos();
        long ticksPerSecond = 100; // USER_HZ on Linux
        long budget = Math.max(1, Math.round(IDLE_WINDOW.toMillis() * IDLE_CPU_FRACTION * ticksPerSecond / 1000.0));
        try {
            OptionalLong before = ProcStat.cpuTicks(pid.getAsLong());
            while (before.isPresent() && System.nanoTime() < deadline) {
                Thread.sleep(IDLE_WINDOW.toMillis());
                OptionalLong after = ProcStat.cpuTicks(pid.getAsLong());
                if (after.isEmpty() || after.getAsLong() - before.getAsLong() < budget) {
                    break;
                }
                before = after;
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        return (System.nanoTime() - t0) / 1_000_000;
    }

    /**
     * Migrates the running guest into a socket with {@code x-ignore-shared}: its RAM stays in the
     * memory file, the stream carries the device state only. The guest is not paused first: a
     * state saved while paused restores paused, and would need a QMP "cont" on every restore.
     */
    private static byte[] save(QemuVm vm) throws VmException, IOException {
        Qmp qmp = vm.qmp();
        Path sock = vm.runtimeDir().migrateSocket();
        Duration timeout = Duration.ofSeconds(60);
        try (ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            server.bind(UnixDomainSocketAddress.of(sock), 1);
            qmp.execute("migrate-set-capabilities", Map.of("capabilities",
                    List.of(Map.of("capability", "x-ignore-shared", "state", true))), timeout);
            qmp.execute("migrate", Map.of("uri", "unix:" + sock), timeout);
            ByteArrayOutputStream out = new ByteArrayOutputStream(1 << 17);
            try (SocketChannel in = server.accept()) {
                ByteBuffer buf = ByteBuffer.allocate(1 << 16);
                // QEMU closes the connection when the migration stream is complete.
                while (in.read(buf.clear()) >= 0) {
                    out.write(buf.array(), 0, buf.position());
                    if (out.size() > Template.MAX_STATE_BYTES) {
                        throw new VmException("saving the template failed: the state exceeds " + Template.MAX_STATE_BYTES
                                + " bytes (is x-ignore-shared unsupported by this QEMU?)");
                    }
                }
            }
            Map<String, Object> status = qmp.execute("query-migrate", Map.of(), timeout);
            if (!"completed".equals(status.get("status"))) {
                throw new VmException("saving the template failed: migration status " + status);
            }
            return out.toByteArray();
        } catch (TimeoutException e) {
            throw new VmException("saving the template timed out: " + e.getMessage(), e);
        }
    }

    /**
     * Unlinks memory files other than the current one (VMs mapping them keep them) and their
     * scratch disks (VMs keep those open too); returns how many memory files went.
     */
    private static int retireOthers(Path dir, String keep) {
        int n = 0;
        String keepScratch = Template.scratchFor(dir.resolve(keep)).getFileName().toString();
        try (DirectoryStream<Path> files = Files.newDirectoryStream(dir, "scratch-*")) {
            for (Path f : files) {
                if (!f.getFileName().toString().equals(keepScratch)) {
                    Files.deleteIfExists(f);
                }
            }
        } catch (IOException e) {
            log.atWarn().setMessage("snapshot_retire_failed").addKeyValue("dir", dir).addKeyValue("error", e.toString()).log();
        }
        try (DirectoryStream<Path> files = Files.newDirectoryStream(dir, "memory-*")) {
            for (Path f : files) {
                if (!f.getFileName().toString().equals(keep)) {
                    Files.deleteIfExists(f);
                    n++;
                }
            }
        } catch (IOException e) {
            log.atWarn().setMessage("snapshot_retire_failed").addKeyValue("dir", dir).addKeyValue("error", e.toString()).log();
        }
        return n;
    }

    private static void syncDirectory(Path dir) {
        try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
            d.force(true);
        } catch (IOException e) {
            // not every file system lets a directory be synced; the rename is atomic regardless
        }
    }

    /**
     * Removes the published template if it is still {@code failed} (a corrupt state file when
     * null). Skipped while another thread or process builds one: it is about to be replaced.
     */
    private void discard(Template failed) {
        if (!JVM_LOCK.tryLock()) {
            return;
        }
        try {
            Path state = statePath();
            Files.createDirectories(state.getParent());
            try (FileChannel lockFile = FileChannel.open(state.resolveSibling("lock"), StandardOpenOption.CREATE, StandardOpenOption.WRITE);
                    FileLock lock = lockFile.tryLock()) {
                if (lock == null) {
                    return;
                }
                Template now;
                try {
                    now = Template.read(state);
                } catch (Template.Corrupt e) {
                    now = null;
                }
                if (failed == null ? now == null : now != null && now.memory().equals(failed.memory())) {
                    Files.deleteIfExists(state);
                    if (failed != null) {
                        Files.deleteIfExists(failed.memory());
                        Files.deleteIfExists(failed.scratch());
                    }
                }
            }
        } catch (NoSuchFileException e) {
            // already gone
        } catch (IOException | VmException e) {
            log.atWarn().setMessage("snapshot_discard_failed").addKeyValue("error", e.toString()).log();
        } finally {
            JVM_LOCK.unlock();
        }
    }

    /**
     * Starts a build on a background thread (or returns the one in progress), unless backing off
     * after failed ones (30 s, doubling to 8 min); null when backing off.
     */
    private CompletableFuture<Template> rebuildInBackground() throws VmException {
        CompletableFuture<Template> running = BUILDS.get(statePath());
        if (running != null) {
            return running;
        }
        if (System.nanoTime() - noBuildBefore < 0) {
            return null;
        }
        CompletableFuture<Template> f = build();
        f.whenComplete((t, e) -> {
            if (e == null) {
                buildFailures = 0;
                return;
            }
            int n = ++buildFailures;
            Duration backoff = BUILD_BACKOFF.multipliedBy(1L << Math.min(n - 1, 4));
            noBuildBefore = System.nanoTime() + backoff.toNanos();
            log.atWarn().setMessage("snapshot_rebuild_failed").addKeyValue("attempt", n)
                    .addKeyValue("retry_after_s", backoff.toSeconds())
                    .addKeyValue("reason", firstLine((e.getCause() != null ? e.getCause() : e).getMessage())).log();
        });
        return f;
    }

    /**
     * This template's key: a digest of everything that must be identical between the saving QEMU
     * and the restoring one (its directory's name under the template root).
     */
    public String key() throws VmException {
        Path qemu = QemuBinary.resolve(config.qemuBinary());
        OptionalLong tsc = config.accel() == Accel.TCG ? HostClock.tscKhz() : OptionalLong.empty();
        QemuCommand cmd = new QemuCommand(qemu, config, new RuntimeDir(root), "key", false, tsc, GuestMemory.CLONE);
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
                .append("\nmachine=").append(cmd.machine())
                .append("\ncpu=").append(cmd.cpu())
                .append("\ncmdline=").append(cmd.kernelCmdline())
                .append("\ntsc=").append(tsc);
        if (config.home().isPresent()) { // a disk is a device, and the guest learnt its size
            b.append("\nhome=").append(config.home().get().bytes());
        }
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
