package io.vmgate.vm.qemu;

import io.vmgate.vm.Accel;
import io.vmgate.vm.Vm;
import io.vmgate.vm.VmConfig;
import io.vmgate.vm.VmException;
import io.vmgate.vm.VmLauncher;

import io.vmgate.agent.AgentClient;
import io.vmgate.image.ImageException;
import io.vmgate.image.ImageUsers;
import io.vmgate.image.ScratchDisk;
import io.vmgate.agent.Message;
import java.io.File;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.OptionalInt;
import java.util.OptionalLong;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.Consumer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A VM run by QEMU, cold-booted from an image.
 *
 * <p>Start-up: make the runtime directory, listen on the console, agent and QMP sockets, spawn
 * QEMU (which connects to all three as it starts), then wait for the agent's HELLO. Nothing
 * polls: an early QEMU exit wakes the accept loop, and a dead QEMU closes the agent socket.
 * Any failure tears everything down and reports the console and QEMU's stderr.
 */
public final class QemuVm implements Vm {
    private static final Logger log = LoggerFactory.getLogger(QemuVm.class);
    static final int TAIL_LINES = 20;
    private static final Duration QUIT_GRACE = Duration.ofSeconds(2);
    private static final Duration TERM_GRACE = Duration.ofSeconds(2);
    private static final Duration KILL_WAIT = Duration.ofSeconds(10);

    /**
     * VMs starting at once in this process; more wait their turn, and the wait does not count
     * against their boot timeout. A start is CPU-bound (QEMU's own start-up, then the guest's
     * boot or, after a restore, TCG translating its code anew: ~0.25 s of CPU for a restore here),
     * so twenty at once on two cores all finish late, and under load past their boot timeout;
     * a few per core finish as fast, in order.
     */
    static final int MAX_PARALLEL_STARTS = Math.max(2, 2 * Runtime.getRuntime().availableProcessors());
    private static final java.util.concurrent.Semaphore STARTS = new java.util.concurrent.Semaphore(MAX_PARALLEL_STARTS, true);

    private final String id;
    private final VmConfig config;
    private final RuntimeDir dir;
    private final long createdNanos = System.nanoTime();
    private final List<Phase> phases = new CopyOnWriteArrayList<>();
    private final Consumer<Phase> progress;
    private final CompletableFuture<Void> exited = new CompletableFuture<>();
    private final CompletableFuture<Void> closeDone = new CompletableFuture<>();
    private final AtomicBoolean closing = new AtomicBoolean();
    private final List<ServerSocketChannel> listeners = new CopyOnWriteArrayList<>();
    private final List<SocketChannel> channels = new CopyOnWriteArrayList<>();
    private volatile QemuCommand command;
    /** The template (or saved machine) this VM was restored from; null after a cold boot. */
    private volatile Template restoredFrom;
    private volatile Process process;
    private volatile ConsoleLog console;
    private volatile Qmp qmp;
    private volatile boolean qmpReady;
    private volatile AgentClient agent;
    private volatile Message.Hello hello;
    private volatile String finalDiagnostics;
    private volatile boolean killed;

    /** Every VM this driver returns has been configured (clock, hostname, entropy) with this name. */
    public static final String HOSTNAME = Vm.HOSTNAME;

    private QemuVm(VmConfig config, String id, RuntimeDir dir, Consumer<Phase> progress) {
        this.config = config;
        this.id = id;
        this.dir = dir;
        this.progress = progress;
    }

    private static final java.util.Set<Path> REAPED_ROOTS = java.util.concurrent.ConcurrentHashMap.newKeySet();

    /**
     * A launcher that cold-boots VMs with this configuration. Making one also reaps (once per
     * runtime root and process) what crashed servers left there, and starts the one-off QEMU
     * capability probe early.
     */
    public static VmLauncher launcher(VmConfig config) {
        prepare(config);
        return (vmId, progress) -> boot(config, vmId, progress);
    }

    /**
     * Reaps (once per runtime root and process) what crashed servers left, starts the QEMU
     * capability probe, and holds the config's images (see {@link #holdImages}).
     */
    static void prepare(VmConfig config) {
        holdImages(config);
        QemuBinary.find(config.qemuBinary()).ifPresent(QemuBinary::sandboxSupported);
        if (REAPED_ROOTS.add(config.runtimeRoot().toAbsolutePath())) {
            RuntimeDirs.reapStale(config.runtimeRoot());
        }
    }

    /** Boots a VM and returns once its agent has said hello; on any failure nothing is left behind. */
    public static QemuVm boot(VmConfig config, String vmId) throws VmException {
        return start(config, vmId, GuestMemory.ANONYMOUS, null, phase -> { });
    }

    /** {@link #boot(VmConfig, String)}, telling {@code progress} of each phase as it completes. */
    public static QemuVm boot(VmConfig config, String vmId, Consumer<Phase> progress) throws VmException {
        return start(config, vmId, GuestMemory.ANONYMOUS, null, progress);
    }

    /**
     * Cold-boots the VM a template is saved from: its guest RAM is {@code memoryFile}, mapped
     * shared (see {@link Snapshots}).
     */
    static QemuVm bootTemplate(VmConfig config, String vmId, Path memoryFile) throws VmException {
        return start(config, vmId, new GuestMemory.TemplateFile(memoryFile), null, phase -> { });
    }

    /**
     * Starts a fresh QEMU from a template (see {@link Snapshots}): guest RAM is a private,
     * copy-on-write mapping of the template's memory file, the device state is fed over QMP,
     * and it returns once the agent has answered CONFIGURE, which gives the guest the current
     * time and new entropy before anything else runs in it. On any failure nothing is left behind.
     */
    public static QemuVm restore(VmConfig config, String vmId, Template template, Consumer<Phase> progress) throws VmException {
        return start(config, vmId, GuestMemory.CLONE, template, progress);
    }

    /** {@link #restore} of a state saved from a stopped guest (a saved machine): it is continued once loaded. */
    static QemuVm restoreStopped(VmConfig config, String vmId, Template saved, Consumer<Phase> progress) throws VmException {
        CONTINUE_AFTER_LOAD.set(Boolean.TRUE);
        try {
            return start(config, vmId, GuestMemory.CLONE, saved, progress);
        } finally {
            CONTINUE_AFTER_LOAD.remove();
        }
    }

    /** Set on the launching thread by {@link #restoreStopped} (the start path has no other per-call options). */
    private static final ThreadLocal<Boolean> CONTINUE_AFTER_LOAD = new ThreadLocal<>();

    /**
     * Tells the image store that this process uses the config's images (until it exits), so
     * {@code image rm} and {@code image prune} leave them alone while it runs. Idempotent.
     */
    static void holdImages(VmConfig config) {
        ImageUsers.hold(config.image().directory());
        config.rootfs().ifPresent(r -> ImageUsers.hold(r.directory()));
    }

    private static QemuVm start(VmConfig config, String vmId, GuestMemory memory, Template template, Consumer<Phase> progress)
            throws VmException {
        if (!RuntimeDirs.isValidVmId(vmId)) {
            throw new VmException("bad VM id '" + vmId + "': use 1-64 characters of [A-Za-z0-9._-], starting with a letter or digit");
        }
        holdImages(config);
        Path qemu = QemuBinary.resolve(config.qemuBinary());
        CompletableFuture<Boolean> sandbox = QemuBinary.sandboxSupported(qemu);
        long queued = System.nanoTime();
        try {
            STARTS.acquire();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new VmException("VM " + vmId + " did not start: interrupted while waiting for its turn to start", e);
        }
        try {
            long waitedMs = (System.nanoTime() - queued) / 1_000_000;
            if (waitedMs >= 100) {
                log.atInfo().setMessage("vm_start_queued").addKeyValue("vm", vmId).addKeyValue("waited_ms", waitedMs)
                        .addKeyValue("max_parallel_starts", MAX_PARALLEL_STARTS).log();
            }
            return startNow(config, vmId, memory, template, progress, qemu, sandbox);
        } finally {
            STARTS.release();
        }
    }

    private static QemuVm startNow(VmConfig config, String vmId, GuestMemory memory, Template template, Consumer<Phase> progress,
            Path qemu, CompletableFuture<Boolean> sandbox) throws VmException {
        RuntimeDir dir;
        try {
            dir = RuntimeDirs.create(config.runtimeRoot(), vmId);
        } catch (FileAlreadyExistsException e) {
            throw new VmException("a VM named " + vmId + " already runs (its directory " + e.getFile() + " exists)");
        } catch (IOException e) {
            throw new VmException("cannot create the VM's runtime directory under " + config.runtimeRoot() + ": "
                    + e.getMessage() + " (set VMGATE_RUNTIME_DIR to a writable directory)", e);
        }
        QemuVm vm = new QemuVm(config, vmId, dir, progress);
        try {
            vm.start(qemu, sandbox, memory, template);
            return vm;
        } catch (BootFailure | RuntimeException e) {
            String reason = e instanceof BootFailure ? e.getMessage() : "internal error: " + e;
            boolean timedOut = e instanceof BootFailure b && b.timedOut && vm.process != null && vm.process.isAlive();
            vm.close(); // first: QEMU's stderr is complete only once it has exited
            // The console's last lines say what the guest saw (a panic, a poweroff): the first thing to read.
            log.atWarn().setMessage("vm_boot_failed").addKeyValue("vm", vmId).addKeyValue("reason", reason)
                    .addKeyValue("restore", template != null)
                    // the end of it: a text log cuts values at 200 characters, and the last lines say most
                    .addKeyValue("diagnostics", tail(vm.diagnostics().strip(), 190)).log();
            throw new VmException("VM " + vmId + " did not start: " + reason + "\n" + vm.diagnostics(), e, vm.process != null, timedOut);
        }
    }

    private static String tail(String s, int max) {
        return s.length() <= max ? s : "..." + s.substring(s.length() - max);
    }

    /** Why a boot failed, in words for the user; the diagnostics are added by {@link #boot}. */
    private static final class BootFailure extends Exception {
        final boolean timedOut;

        BootFailure(String message, Throwable cause) {
            this(message, cause, false);
        }

        private BootFailure(String message, Throwable cause, boolean timedOut) {
            super(message, cause);
            this.timedOut = timedOut;
        }

        /** The boot deadline passed with QEMU still running. */
        static BootFailure timeout(String message, Throwable cause) {
            return new BootFailure(message, cause, true);
        }
    }

    private void start(Path qemu, CompletableFuture<Boolean> sandboxProbe, GuestMemory memory, Template restoreFrom)
            throws BootFailure {
        this.restoredFrom = restoreFrom;
        long deadline = createdNanos + config.bootTimeout().toNanos();
        RuntimeDir.Owners owners = RuntimeDir.Owners.self();
        ServerSocketChannel consoleL, agentL, qmpL;
        try {
            dir.writeOwners(owners);
            consoleL = track(listen(dir.consoleSocket()));
            agentL = track(listen(dir.agentSocket()));
            qmpL = track(listen(dir.qmpSocket()));
        } catch (IOException e) {
            throw new BootFailure("cannot listen in " + dir.path() + ": " + e.getMessage(), e);
        }

        boolean sandbox = joinQuietly(sandboxProbe, Duration.ofSeconds(10)).orElse(false);
        OptionalLong tsc = config.accel() == Accel.TCG ? HostClock.tscKhz() : OptionalLong.empty();
        if (config.accel() == Accel.TCG && tsc.isEmpty()) {
            log.atWarn().setMessage("vm_tsc_rate_unknown").addKeyValue("vm", id)
                    .addKeyValue("note", "no 'cpu MHz' in /proc/cpuinfo: without tsc_early_khz= TCG guests often hang"
                            + " calibrating their clock").log();
        }
        command = new QemuCommand(qemu, config, dir, id, sandbox, tsc, memory);
        if (config.scratchMib().isPresent()) {
            try {
                if (restoreFrom == null) {
                    ScratchDisk.create(command.scratchFile(), config.scratchMib().getAsInt());
                } else {
                    // The template's disk as it was when its memory was saved: the restored guest's
                    // ext4 expects exactly those bytes. Read-only underneath, written through an overlay.
                    Path saved = restoreFrom.scratch();
                    if (!Files.isRegularFile(saved)) {
                        throw new BootFailure("the snapshot template has no saved scratch disk (" + saved + ")", null);
                    }
                    command = command.withScratchTemplate(saved);
                }
            } catch (ImageException e) {
                throw new BootFailure(e.getMessage(), e);
            }
        }
        if (config.home().isPresent() && config.home().get().file().isEmpty()) {
            // A template's empty slot: zeroes of the size every user's disk has (see HomeDisk).
            try (java.io.RandomAccessFile f = new java.io.RandomAccessFile(command.homePlaceholder().toFile(), "rw")) {
                f.setLength(config.home().get().bytes());
            } catch (IOException e) {
                throw new BootFailure("cannot make the home disk placeholder " + command.homePlaceholder() + ": " + e.getMessage(), e);
            }
        }
        List<String> argv = new ArrayList<>();
        Optional<Path> setpriv = QemuBinary.setpriv();
        if (setpriv.isPresent()) {
            argv.addAll(List.of(setpriv.get().toString(), "--pdeathsig", "KILL", "--"));
        } else {
            log.atWarn().setMessage("vm_no_parent_death_signal").addKeyValue("vm", id)
                    .addKeyValue("note", "install util-linux for setpriv; a crashed server leaves QEMU running until the next"
                            + " start reaps it").log();
        }
        argv.addAll(command.argv());
        ProcessBuilder pb = new ProcessBuilder(argv)
                // A clone maps the template's memory file through its stdin (see GuestMemory.Clone).
                .redirectInput(ProcessBuilder.Redirect.from(restoreFrom != null ? restoreFrom.memory().toFile() : new File("/dev/null")))
                .redirectOutput(ProcessBuilder.Redirect.appendTo(dir.qemuStderr().toFile()))
                .redirectErrorStream(true);
        // A temporary disk overlay (snapshot=on) goes here, so it dies with the VM's directory.
        pb.environment().put("TMPDIR", dir.path().toString());
        try {
            process = Spawner.start(pb);
        } catch (IOException e) {
            throw new BootFailure("cannot start " + qemu + ": " + e.getMessage(), e);
        }
        phase("qemu_started");
        // Logged once QEMU runs, not before: while logback still starts, a call costs milliseconds.
        log.atInfo().setMessage("vm_starting").addKeyValue("vm", id).addKeyValue("pid", process.pid())
                .addKeyValue("accel", config.accel().qemuName()).addKeyValue("cpus", config.cpus())
                .addKeyValue("memory_mib", config.memoryMib()).addKeyValue("sandbox", sandbox)
                .addKeyValue("image", config.image().contentHash())
                .addKeyValue("rootfs", config.rootfs().map(r -> r.shortId()).orElse("none"))
                .addKeyValue("scratch_mib", config.scratchMib().isPresent() ? config.scratchMib().getAsInt() : 0).log();
        log.atDebug().setMessage("vm_command").addKeyValue("vm", id).addKeyValue("argv", argv).log();
        if (config.network() == io.vmgate.vm.Network.OPEN) {
            log.atWarn().setMessage("vm_network_open").addKeyValue("vm", id)
                    .addKeyValue("note", "full outbound network through NAT, no allowlist; the guest also reaches services on"
                            + " the host's loopback as 10.0.2.2").log();
        }
        process.onExit().thenRun(this::onQemuExit);
        try {
            long pid = process.pid();
            dir.writeOwners(owners.withQemu(pid, ProcStat.startTime(pid).orElse(-1)));
        } catch (IOException e) {
            throw new BootFailure("cannot write " + dir.pidFile() + ": " + e.getMessage(), e);
        }

        SocketChannel[] c = acceptAll(List.of(consoleL, agentL, qmpL), deadline);
        phase("qemu_connected");
        console = ConsoleLog.start(c[0], dir.consoleLog(), id);
        Qmp q = Qmp.connect(c[2], id);
        qmp = q;
        CompletableFuture<Void> qmpNegotiated = CompletableFuture.runAsync(() -> {
            try {
                q.negotiate(remaining(deadline));
                qmpReady = true;
            } catch (IOException | TimeoutException e) {
                throw new java.util.concurrent.CompletionException(e);
            }
        }, r -> Thread.ofVirtual().name("qmp-negotiate-" + id).start(r));
        agent = AgentClient.connect(c[1], id);

        if (restoreFrom != null) {
            restoreState(restoreFrom, qmpNegotiated, deadline);
            phase("agent_restored");
        } else {
            try {
                hello = agent.awaitHello(remaining(deadline));
            } catch (TimeoutException e) {
                throw BootFailure.timeout("the guest agent did not say hello within " + seconds(config.bootTimeout())
                        + ". A cold boot takes about 3 s under TCG; if the console below shows the kernel still booting, "
                        + "raise the boot timeout; if it shows a panic or nothing at all, the image is broken", e);
            } catch (IOException e) {
                throw new BootFailure(agentFailure(e), e);
            }
            phase("agent_hello");
            // A cold-booted guest gets the same set-up as a restored one, so callers never must.
            // HELLO proved the agent live, and it handles frames in order: whatever the caller
            // sends next runs configured, so the answer is checked without waiting for it.
            try {
                agent.configureFreshAsync(HOSTNAME)
                        .orTimeout(Math.max(1, remaining(deadline).toMillis()), TimeUnit.MILLISECONDS)
                        .whenComplete((ok, e) -> {
                            if (e != null && !closing.get()) {
                                log.atWarn().setMessage("vm_configure_failed").addKeyValue("vm", id).addKeyValue("error", e.toString())
                                        .addKeyValue("note", "the VM is torn down").log();
                                Thread.ofVirtual().name("vm-close-" + id).start(this::close);
                            }
                        });
            } catch (IOException e) {
                throw new BootFailure(agentFailure(e), e);
            }
        }
        awaitQmp(qmpNegotiated, deadline);
        if (hello == null) {
            log.atInfo().setMessage("vm_ready").addKeyValue("vm", id).addKeyValue("restored", true)
                    .addKeyValue("boot_ms", (System.nanoTime() - createdNanos) / 1_000_000).log();
        } else {
            log.atInfo().setMessage("vm_ready").addKeyValue("vm", id)
                    .addKeyValue("boot_ms", (System.nanoTime() - createdNanos) / 1_000_000)
                    .addKeyValue("guest_boot_ms", hello.bootNanos() / 1_000_000).addKeyValue("kernel", hello.kernelRelease()).log();
        }
    }

    /**
     * Feeds a clone its template's device state and waits until the agent answers CONFIGURE.
     * CONFIGURE goes out first: QEMU reads the agent socket only once the loaded guest runs, so
     * it is the first frame the guest sees. Then, over QMP: the {@code x-ignore-shared}
     * capability (the state was saved with it; QEMU 7.2 has no command-line switch for it), and
     * {@code migrate-incoming} on a socket in the runtime directory, where the host writes the
     * state.
     */
    /**
     * A state saved from a stopped guest loads stopped: wait until QEMU has loaded it (its run
     * state leaves {@code inmigrate}), then {@code cont}. Polled every 10 ms: this path is rare
     * (a saved machine resumes) and the load takes tens of milliseconds.
     */
    private void continueWhenLoaded(long deadline) throws BootFailure {
        try {
            while (true) {
                Object status = qmp.execute("query-status", Map.of(), remaining(deadline)).get("status");
                if (!"inmigrate".equals(status)) {
                    if (!"paused".equals(status) && !"running".equals(status)) {
                        throw new BootFailure("the saved state did not load (QEMU's run state is " + status + ")", null);
                    }
                    if ("paused".equals(status)) {
                        qmp.execute("cont", Map.of(), remaining(deadline));
                    }
                    return;
                }
                if (remaining(deadline).isZero()) {
                    throw BootFailure.timeout("the saved state did not load within " + seconds(config.bootTimeout()), null);
                }
                Thread.sleep(10);
            }
        } catch (IOException | TimeoutException e) {
            throw new BootFailure("cannot continue the restored machine: " + e.getMessage(), e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new BootFailure("interrupted while loading the saved machine", e);
        }
    }

    private void restoreState(Template template, CompletableFuture<Void> qmpNegotiated, long deadline) throws BootFailure {
        CompletableFuture<Void> configured;
        try {
            configured = agent.configureFreshAsync(HOSTNAME);
        } catch (IOException e) {
            throw new BootFailure(agentFailure(e), e);
        }
        awaitQmp(qmpNegotiated, deadline);
        try {
            qmp.execute("migrate-set-capabilities", Map.of("capabilities",
                    List.of(Map.of("capability", "x-ignore-shared", "state", true))), remaining(deadline));
            qmp.execute("migrate-incoming", Map.of("uri", "unix:" + dir.stateSocket()), remaining(deadline));
        } catch (IOException | TimeoutException e) {
            throw new BootFailure("QEMU refused the template's state: " + e.getMessage(), e);
        }
        try (SocketChannel s = SocketChannel.open(UnixDomainSocketAddress.of(dir.stateSocket()))) {
            java.nio.ByteBuffer b = java.nio.ByteBuffer.wrap(template.stream());
            while (b.hasRemaining()) {
                s.write(b);
            }
        } catch (IOException e) {
            throw new BootFailure("cannot send the template's state to QEMU: " + e.getMessage(), e);
        }
        phase("state_sent");
        if (Boolean.TRUE.equals(CONTINUE_AFTER_LOAD.get())) {
            continueWhenLoaded(deadline);
        }
        try {
            configured.get(Math.max(1, remaining(deadline).toMillis()), TimeUnit.MILLISECONDS);
        } catch (TimeoutException e) {
            throw BootFailure.timeout("the restored guest agent did not answer within " + seconds(config.bootTimeout())
                    + " (a restore normally takes well under a second; the template may not match this QEMU)", e);
        } catch (ExecutionException e) {
            throw new BootFailure(agentFailure(e.getCause() instanceof IOException io ? io : new IOException(e.getCause())), e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new BootFailure("interrupted while booting", e);
        }
    }

    private void awaitQmp(CompletableFuture<Void> qmpNegotiated, long deadline) throws BootFailure {
        try {
            qmpNegotiated.get(Math.max(1, remaining(deadline).toMillis()), TimeUnit.MILLISECONDS);
        } catch (ExecutionException | TimeoutException e) {
            Throwable cause = e instanceof ExecutionException ? e.getCause().getCause() : e;
            throw new BootFailure("QEMU's monitor (QMP) did not answer: " + (cause == null ? e : cause).getMessage(), e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new BootFailure("interrupted while booting", e);
        }
    }

    private String agentFailure(IOException e) {
        Process p = process;
        if (p != null) {
            try {
                // The agent socket closes when QEMU dies; give the exit a moment to be reaped so we can say how.
                p.waitFor(1, TimeUnit.SECONDS);
            } catch (InterruptedException ie) {
                Thread.currentThread().interrupt();
            }
            if (!p.isAlive()) {
                return "QEMU exited with status " + p.exitValue() + " before the guest agent said hello"
                        + " (a guest kernel panic or poweroff also ends QEMU)";
            }
        }
        return "the guest agent connection failed before hello: " + e.getMessage();
    }

    private static ServerSocketChannel listen(Path path) throws IOException {
        ServerSocketChannel s = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            s.bind(UnixDomainSocketAddress.of(path), 1);
            s.configureBlocking(false);
        } catch (IOException e) {
            s.close();
            throw e;
        }
        return s;
    }

    private ServerSocketChannel track(ServerSocketChannel s) {
        listeners.add(s);
        return s;
    }

    /** Accepts one connection on each listener; fails fast if QEMU exits, or at the deadline. */
    private SocketChannel[] acceptAll(List<ServerSocketChannel> servers, long deadline) throws BootFailure {
        SocketChannel[] out = new SocketChannel[servers.size()];
        try (Selector sel = Selector.open()) {
            for (int i = 0; i < servers.size(); i++) {
                servers.get(i).register(sel, SelectionKey.OP_ACCEPT, i);
            }
            process.onExit().thenRun(sel::wakeup);
            int missing = servers.size();
            while (missing > 0) {
                if (!process.isAlive()) {
                    throw new BootFailure("QEMU exited with status " + process.exitValue()
                            + " before connecting to its sockets (see its stderr below)", null);
                }
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    throw BootFailure.timeout("QEMU did not connect to its sockets within the boot timeout (" + seconds(config.bootTimeout()) + ")", null);
                }
                sel.select(Math.max(1, TimeUnit.NANOSECONDS.toMillis(left)));
                if (Thread.currentThread().isInterrupted()) { // select() returns at once from now on
                    throw new BootFailure("interrupted while booting", null);
                }
                for (SelectionKey k : sel.selectedKeys()) {
                    SocketChannel ch = ((ServerSocketChannel) k.channel()).accept();
                    if (ch != null) {
                        channels.add(ch);
                        out[(Integer) k.attachment()] = ch;
                        k.cancel();
                        missing--;
                    }
                }
                sel.selectedKeys().clear();
            }
        } catch (IOException e) {
            throw new BootFailure("accepting QEMU's connections failed: " + e.getMessage(), e);
        }
        // Nobody else may connect: the sockets' job is done.
        for (ServerSocketChannel s : servers) {
            closeQuietly(s);
        }
        for (Path p : List.of(dir.consoleSocket(), dir.agentSocket(), dir.qmpSocket())) {
            try {
                Files.deleteIfExists(p);
            } catch (IOException ignored) {
                // removed with the directory at teardown
            }
        }
        return out;
    }

    /** "0.3 s", "30 s": boot timeouts may be fractional. */
    static String seconds(Duration d) {
        return java.math.BigDecimal.valueOf(d.toMillis(), 3).stripTrailingZeros().toPlainString() + " s";
    }

    private static Duration remaining(long deadline) {
        return Duration.ofNanos(Math.max(0, deadline - System.nanoTime()));
    }

    private void phase(String name) {
        Phase p = new Phase(name, System.nanoTime());
        phases.add(p);
        try {
            progress.accept(p);
        } catch (RuntimeException e) {
            log.atWarn().setMessage("vm_progress_listener_failed").addKeyValue("vm", id).addKeyValue("phase", name)
                    .addKeyValue("error", e.toString()).log();
        }
    }

    /**
     * Kills QEMU at once (SIGKILL), for a template VM whose state is saved: nothing of QEMU's
     * exit path may touch the guest memory file after the state was taken. {@link #close} still
     * cleans up.
     */
    void kill() {
        Process p = process;
        if (p != null && p.isAlive()) {
            killed = true;
            p.destroyForcibly();
            waitExit(p, KILL_WAIT);
        }
    }

    private void onQemuExit() {
        exited.complete(null);
        if (!closing.get() && !killed) {
            Process p = process;
            log.atWarn().setMessage("vm_exited").addKeyValue("vm", id).addKeyValue("status", p == null ? -1 : p.exitValue())
                    .addKeyValue("uptime_ms", (System.nanoTime() - createdNanos) / 1_000_000)
                    .addKeyValue("note", "unexpected: not closed by vmgate").log();
        }
    }

    @Override
    public String id() {
        return id;
    }

    @Override
    public AgentClient agent() {
        return agent;
    }

    @Override
    public CompletableFuture<Void> exited() {
        return exited.copy(); // callers may not complete ours
    }

    @Override
    public List<Phase> phases() {
        return List.copyOf(phases);
    }

    @Override
    public String diagnostics() {
        String d = finalDiagnostics;
        return d != null ? d : currentDiagnostics();
    }

    private String currentDiagnostics() {
        ConsoleLog c = console;
        String consoleTail = c != null ? c.tail(TAIL_LINES) : Tails.lastLines(dir.consoleLog(), TAIL_LINES);
        return "guest console (last " + TAIL_LINES + " lines):\n" + Tails.indent(consoleTail)
                + "\nQEMU stderr (last " + TAIL_LINES + " lines):\n" + Tails.indent(Tails.lastLines(dir.qemuStderr(), TAIL_LINES));
    }

    /** The QMP connection, for snapshotting and inspection. */
    /** The template (or saved machine) this VM was restored from; null after a cold boot. */
    Template restoredFrom() {
        return restoredFrom;
    }

    public Qmp qmp() {
        return qmp;
    }

    /** The agent's greeting (kernel release, guest boot time). */
    public Message.Hello hello() {
        return hello;
    }

    public RuntimeDir runtimeDir() {
        return dir;
    }

    public VmConfig config() {
        return config;
    }

    /** The command line QEMU was started with; a snapshot restore starts the same plus {@code -incoming}. */
    public QemuCommand command() {
        return command;
    }

    public OptionalLong pid() {
        Process p = process;
        return p == null ? OptionalLong.empty() : OptionalLong.of(p.pid());
    }

    /** QEMU's exit status, once it has exited. */
    public OptionalInt exitStatus() {
        Process p = process;
        return p == null || p.isAlive() ? OptionalInt.empty() : OptionalInt.of(p.exitValue());
    }

    /**
     * Stops QEMU (QMP quit, then SIGTERM, then SIGKILL), closes every connection and deletes the
     * runtime directory. Idempotent and safe from any thread; concurrent callers all return once
     * teardown is complete. Never throws.
     */
    @Override
    public void close() {
        if (!closing.compareAndSet(false, true)) {
            closeDone.join();
            return;
        }
        boolean interrupted = Thread.interrupted(); // teardown must finish even for an interrupted caller
        try {
            stopQemu();
            AgentClient a = agent;
            if (a != null) {
                a.close();
            }
            Qmp q = qmp;
            if (q != null) {
                q.close();
            }
            listeners.forEach(QemuVm::closeQuietly);
            channels.forEach(QemuVm::closeQuietly);
            ConsoleLog c = console;
            if (c != null) {
                joinQuietly(c.finished(), Duration.ofSeconds(1));
            }
            finalDiagnostics = currentDiagnostics();
            RuntimeDirs.deleteQuietly(dir.path());
            log.atInfo().setMessage("vm_destroyed").addKeyValue("vm", id)
                    .addKeyValue("lifetime_ms", (System.nanoTime() - createdNanos) / 1_000_000)
                    .addKeyValue("exit_status", exitStatus().isPresent() ? exitStatus().getAsInt() : "none").log();
        } catch (RuntimeException | Error e) {
            log.atError().setMessage("vm_teardown_failed").addKeyValue("vm", id).setCause(e).log();
        } finally {
            closeDone.complete(null);
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
    }

    private void stopQemu() {
        Process p = process;
        if (p == null || !p.isAlive()) {
            return;
        }
        Qmp q = qmp;
        if (q != null && qmpReady) {
            try {
                q.execute("quit", Map.of(), Duration.ofSeconds(1));
            } catch (IOException | TimeoutException e) {
                // QEMU may exit before answering; either way the waits below decide
            }
            if (waitExit(p, QUIT_GRACE)) {
                return;
            }
        }
        p.destroy(); // SIGTERM
        if (waitExit(p, TERM_GRACE)) {
            return;
        }
        log.atWarn().setMessage("vm_kill").addKeyValue("vm", id).addKeyValue("pid", p.pid())
                .addKeyValue("note", "QEMU ignored quit and SIGTERM").log();
        p.destroyForcibly();
        if (!waitExit(p, KILL_WAIT)) {
            log.atError().setMessage("vm_kill_failed").addKeyValue("vm", id).addKeyValue("pid", p.pid())
                    .addKeyValue("note", "QEMU survived SIGKILL for " + KILL_WAIT.toSeconds() + " s").log();
        }
    }

    /** Waits for exit without being interruptible: teardown must complete. */
    private static boolean waitExit(Process p, Duration d) {
        return joinQuietly(p.onExit(), d).isPresent();
    }

    /** The future's value within the time limit, or empty (timeout, failure); ignores interrupts, restoring the flag. */
    private static <T> Optional<T> joinQuietly(CompletableFuture<T> f, Duration d) {
        long deadline = System.nanoTime() + d.toNanos();
        boolean interrupted = false;
        try {
            while (true) {
                try {
                    return Optional.ofNullable(f.get(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS));
                } catch (InterruptedException e) {
                    interrupted = true;
                } catch (ExecutionException | TimeoutException | java.util.concurrent.CancellationException e) {
                    return Optional.empty();
                }
            }
        } finally {
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
    }

    private static void closeQuietly(java.io.Closeable c) {
        try {
            c.close();
        } catch (IOException ignored) {
            // teardown
        }
    }
}
