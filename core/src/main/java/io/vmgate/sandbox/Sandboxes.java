package io.vmgate.sandbox;

import io.vmgate.image.Image;
import io.vmgate.image.ImageException;
import io.vmgate.egress.Egress;
import io.vmgate.egress.EgressLimits;
import io.vmgate.egress.EgressPolicy;
import io.vmgate.image.GuestUser;
import io.vmgate.image.ImageSelection;
import io.vmgate.image.ImageStore;
import io.vmgate.image.RootfsStore;
import io.vmgate.image.ScratchDisk;
import io.vmgate.vm.AbortOnExit;
import io.vmgate.vm.Accel;
import io.vmgate.vm.GuestLogin;
import io.vmgate.vm.HomeDisk;
import io.vmgate.vm.Network;
import io.vmgate.vm.Vm;
import io.vmgate.vm.VmConfig;
import io.vmgate.vm.VmException;
import io.vmgate.vm.VmLauncher;
import io.vmgate.vm.WarmPool;
import io.vmgate.vm.qemu.QemuCommand;
import io.vmgate.vm.qemu.Template;
import io.vmgate.vm.qemu.MachineStates;
import io.vmgate.vm.qemu.QemuVm;
import io.vmgate.vm.qemu.RuntimeDir;
import io.vmgate.vm.qemu.RuntimeDirs;
import io.vmgate.vm.qemu.Snapshots;
import io.vmgate.text.Durations;
import java.io.IOException;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.HexFormat;
import java.util.List;
import java.util.Objects;
import java.util.Optional;
import java.util.function.Consumer;

/**
 * Starts sandboxes of one kind. Made once per {@link SandboxOptions} (like an HTTP client), it
 * resolves the image (building the built-in one on first use), keeps the snapshot template every
 * sandbox is restored from, and optionally a warm pool of started sandboxes, so that
 * {@link #start()} costs a restore, or only a hand-over. Thread-safe; {@link #close()} stops the
 * pool and leaves nothing running (sandboxes already handed out live on until closed).
 *
 * <pre>{@code
 * try (Sandboxes sandboxes = Sandboxes.builder(options).warmPool(4, 16).build()) {
 *     try (Sandbox s = sandboxes.start()) { ... }
 * }
 * }</pre>
 */
public final class Sandboxes implements AutoCloseable {
    private static final org.slf4j.Logger log = org.slf4j.LoggerFactory.getLogger(Sandboxes.class);
    private static final SecureRandom RANDOM = new SecureRandom();
    private static final Duration HOME_SYNC_TIMEOUT = Duration.ofSeconds(10);

    private final SandboxOptions options;
    private final VmConfig config;
    private final GuestLogin login;
    private final Snapshots snapshots; // null without snapshot restores
    private final VmLauncher launcher;
    private final WarmPool pool;       // null without a pool
    private final int poolSize;
    private final boolean abandonOnExit;
    private final boolean rebuildInBackground;
    private final SandboxObserver observer;
    /** Persistent homes: where they live, one sandbox per user at a time, their template (made on first need). */
    private final HomeStore homes;
    private final PerUserSandboxes perUser = new PerUserSandboxes();
    private final Object homeTemplateLock = new Object();
    private Snapshots homeSnapshots; // guarded by homeTemplateLock

    private Sandboxes(Builder b) throws SandboxException {
        this.options = b.options;
        this.abandonOnExit = b.abandonOnExit;
        this.rebuildInBackground = b.rebuildInBackground;
        this.observer = b.observer;
        this.homes = new HomeStore((options.stateDirectory() != null ? options.stateDirectory() : HomeStore.defaultStateRoot())
                .resolve("homes"), (long) options.persistSizeMib() << 20);
        if (b.launcher != null) {
            this.config = null;
            // Nothing to look users up in: root, as sshd would run a command for root.
            this.login = new GuestLogin(GuestUser.ROOT, "/root", List.of("/usr/lib/openssh/sftp-server"));
            this.snapshots = null;
            this.launcher = b.launcher;
        } else {
            this.config = resolve(options, b.progress);
            this.login = login(config);
            this.snapshots = options.snapshot()
                    ? new Snapshots(config, templateRoot(options), b.rebuildInBackground, observer::templateBuilt) : null;
            if (observer != SandboxObserver.NONE) {
                // Reaped here (the launcher would do it too, silently) so that the count can be reported.
                observer.reaped(RuntimeDirs.reapStale(config.runtimeRoot()));
            }
            this.launcher = qemuLauncher(config, snapshots);
        }
        this.poolSize = b.poolSize;
        if (options.persist() != SandboxOptions.Persist.NONE) {
            prepareHomes(); // before the pool starts VMs: a refusal leaves nothing running
        }
        this.pool = b.poolSize > 0 ? new WarmPool(launcher, b.poolSize, b.poolMax, options.memoryMib()) : null;
    }

    /** Sandboxes with these options: no pool, templates rebuilt on the next start after a failure. */
    public static Sandboxes create(SandboxOptions options) throws SandboxException {
        return builder(options).build();
    }

    public static Builder builder(SandboxOptions options) {
        return new Builder(options);
    }

    /** How to start sandboxes, beyond what they are. */
    public static final class Builder {
        private final SandboxOptions options;
        private int poolSize;
        private int poolMax;
        private boolean rebuildInBackground;
        private boolean abandonOnExit;
        private VmLauncher launcher;
        private Consumer<String> progress = line -> { };
        private SandboxObserver observer = SandboxObserver.NONE;

        private Builder(SandboxOptions options) {
            this.options = Objects.requireNonNull(options, "options");
        }

        /**
         * Keep {@code size} sandboxes started and idle, refilled in the background, so a start costs
         * only the hand-over; never more than {@code max} pooled plus handed-out sandboxes at once.
         */
        public Builder warmPool(int size, int max) {
            if (size < 0 || max < 1) {
                throw new IllegalArgumentException("pool size must be at least 0 and the maximum at least 1");
            }
            this.poolSize = size;
            this.poolMax = max;
            return this;
        }

        /**
         * For long-lived processes (a server): after a failed restore, rebuild the template at once in
         * the background, not at the next start.
         */
        public Builder rebuildTemplatesInBackground() {
            this.rebuildInBackground = true;
            return this;
        }

        /**
         * For one-shot commands: a JVM exit (a signal) abandons starts in progress at once, tearing
         * down what they started; such a start throws a {@link SandboxException} whose
         * {@link SandboxException#abandoned()} is true.
         */
        public Builder abandonStartsOnExit() {
            this.abandonOnExit = true;
            return this;
        }

        /**
         * Start VMs with this launcher instead of QEMU (another VMM, or a test double). Snapshot
         * templates are QEMU's, so they do not apply.
         */
        public Builder launcher(VmLauncher vms) {
            this.launcher = vms;
            return this;
        }

        /** Told what happens while a root filesystem tree is made into an image (the first time only: minutes for a large tree). */
        public Builder buildProgress(Consumer<String> lines) {
            this.progress = Objects.requireNonNull(lines, "lines");
            return this;
        }

        /** Tell {@code o} how sandboxes start (path, latency, failures) and about templates (for metrics). */
        public Builder observer(SandboxObserver o) {
            this.observer = Objects.requireNonNull(o, "observer");
            return this;
        }

        /**
         * Resolves (or builds) the image and checks that the guest user, its shell and the working
         * directory exist in it; throws when anything is missing, saying what.
         */
        public Sandboxes build() throws SandboxException {
            return new Sandboxes(this);
        }
    }

    public SandboxOptions options() {
        return options;
    }

    /** Starts a sandbox named {@code sbx-<random>}. */
    public Sandbox start() throws SandboxException {
        return start("sbx-" + HexFormat.of().formatHex(randomBytes(5)));
    }

    /**
     * Starts a sandbox (restored from the template, cold-booted, or taken from the pool: the
     * caller does not care) and returns it ready for commands.
     *
     * @param id a name for its logs and runtime directory: 1-64 of {@code [A-Za-z0-9._-]},
     *           unique among the running sandboxes of this runtime directory
     */
    public Sandbox start(String id) throws SandboxException {
        return start(id, Session.DEFAULT, phase -> { });
    }

    /** {@link #start(String)}, telling {@code progress} of each start-up phase as it completes. */
    public Sandbox start(String id, Consumer<Sandbox.Phase> progress) throws SandboxException {
        return start(id, Session.DEFAULT, progress);
    }

    /** {@link #start(String)} for one user's session: its own egress allowlist, logs naming the user. */
    public Sandbox start(String id, Session session) throws SandboxException {
        return start(id, session, phase -> { });
    }

    private Sandbox start(String id, Session session, Consumer<Sandbox.Phase> progress) throws SandboxException {
        SandboxOptions.Persist persist = session.persist() != null ? session.persist() : options.persist();
        if (persist != SandboxOptions.Persist.NONE) {
            return startWithHome(id, session, progress, persist == SandboxOptions.Persist.MACHINE);
        }
        return adopt(launch(id, p -> progress.accept(new Sandbox.Phase(p.name(), p.nanoTime()))), session, () -> { });
    }

    /**
     * A sandbox whose guest user's home is {@code session.user()}'s persistent home. While that
     * user has a sandbox running, this is a view of it (the disk is never attached twice); else a
     * new one, started with the user's disk in its home slot (from the home template: built with an
     * empty slot, see {@link io.vmgate.vm.HomeDisk}), the home mounted before anything runs. The last
     * view to close flushes the home and tears the sandbox down. Never from the warm pool: a pooled
     * VM's slot holds no user's disk.
     */
    private Sandbox startWithHome(String id, Session session, Consumer<Sandbox.Phase> progress, boolean machine)
            throws SandboxException {
        if (config == null) {
            throw new SandboxException("persistent homes need QEMU VMs, not a custom launcher");
        }
        if (machine && snapshots == null) {
            throw new SandboxException("persist machine needs snapshot restores (a machine is saved as what it changed since its template)");
        }
        if (session.user().isEmpty()) {
            throw new IllegalArgumentException("a persistent home needs a user: start(id, Session.of(user))");
        }
        String user = session.user();
        return perUser.acquire(user, () -> {
            io.vmgate.image.GuestUser guest = homeUser();
            HomeStore.Home home = homes.open(user);
            long t0 = System.nanoTime();
            Consumer<Vm.Phase> phases = p -> progress.accept(new Sandbox.Phase(p.name(), p.nanoTime()));
            Vm vm = null;
            boolean resumed = false;
            String notice = "";
            try {
                discardTornSave(home);
                if (MachineStates.exists(home.directory())) {
                    // Resumed, or gone before anything attaches the home: its guest's view of the disk is the save's.
                    if (!machine) {
                        discardMachine(home, "persist_is_not_machine");
                    } else if (session.freshMachine()) {
                        discardMachine(home, "fresh_requested");
                    } else {
                        Resume r = resumeMachine(id, home, phases);
                        vm = r.vm();
                        notice = r.notice();
                        resumed = vm != null;
                    }
                }
                if (vm == null) {
                    vm = launch(id, homeLauncher(home.image()), phases);
                }
            } catch (SandboxException | RuntimeException e) {
                home.close();
                throw e;
            }
            Sandbox sandbox = adopt(vm, session, home::close); // on failure it closes the VM, then the home
            Vm started = vm;
            if (resumed) { // its guest has the home mounted since before it was saved
                return new PerUserSandboxes.Started(sandbox, () -> { saveMachine(started, home); enforceSavedLimits(home); }, notice);
            }
            try {
                vm.agent().mountHome(guest.home(), (int) guest.uid(), (int) guest.gid())
                        .get(config.bootTimeout().toMillis(), java.util.concurrent.TimeUnit.MILLISECONDS);
            } catch (java.util.concurrent.ExecutionException | java.util.concurrent.TimeoutException | IOException e) {
                sandbox.close();
                String why = e instanceof java.util.concurrent.ExecutionException x && x.getCause() != null ? x.getCause().getMessage()
                        : e instanceof java.util.concurrent.TimeoutException ? "no answer within " + config.bootTimeout().toSeconds() + " s"
                        : e.getMessage();
                log.atWarn().setMessage("home_mount_failed").addKeyValue("vm", vm.id()).addKeyValue("user", user)
                        .addKeyValue("dir", home.directory()).addKeyValue("reason", why).log();
                throw new SandboxException("cannot mount the persistent home of " + user + ": " + why, e);
            } catch (InterruptedException e) {
                sandbox.close();
                Thread.currentThread().interrupt();
                throw new SandboxException("interrupted while mounting the persistent home of " + user, e);
            }
            log.atInfo().setMessage("home_mounted").addKeyValue("vm", vm.id()).addKeyValue("user", user)
                    .addKeyValue("dir", home.directory().getFileName()).addKeyValue("path", guest.home())
                    .addKeyValue("created", home.created()).addKeyValue("ms", (System.nanoTime() - t0) / 1_000_000).log();
            return new PerUserSandboxes.Started(sandbox, machine ? () -> {
                saveMachine(started, home);
                enforceSavedLimits(home);
            } : () -> flushHome(started, user), notice);
        });
    }

    /** A resume's outcome: the VM (null: a fresh machine instead) and what to tell the user (empty: nothing). */
    private record Resume(Vm vm, String notice) {}

    /**
     * The user's saved machine, resumed; no VM when it is too old (discarded) or does not resume
     * (set aside as {@code machine.failed-<time>}, logged): then the user gets a fresh machine and
     * a one-line notice saying why.
     */
    private Resume resumeMachine(String id, HomeStore.Home home, Consumer<Vm.Phase> progress) throws SandboxException {
        Path dir = home.directory();
        Duration age;
        try {
            age = Duration.between(java.nio.file.Files.getLastModifiedTime(dir.resolve(MachineStates.STATE)).toInstant(),
                    java.time.Instant.now());
        } catch (IOException e) {
            age = Duration.ZERO;
        }
        if (age.compareTo(options.resumeWithin()) > 0) {
            log.atInfo().setMessage("machine_expired").addKeyValue("user", home.user()).addKeyValue("dir", dir.getFileName())
                    .addKeyValue("age_s", age.toSeconds())
                    .addKeyValue("resume_within_s", options.resumeWithin().toSeconds()).log();
            discardMachine(home, "expired");
            return new Resume(null, "vmgate: your saved machine expired (saved " + Durations.format(age) + " ago, kept for "
                    + Durations.format(options.resumeWithin()) + "): this is a fresh machine, with your home");
        }
        VmConfig c = config.withHome(HomeDisk.placeholder(homes.bytes()).with(home.image()));
        String key;
        try {
            key = homeSnapshots().key();
        } catch (VmException e) { // QEMU cannot be identified: nothing starts, and the saved machine is left as it is
            throw new SandboxException(e.getMessage(), e);
        }
        long t0 = System.nanoTime();
        try {
            Vm vm = launch(id, (vmId, p) -> MachineStates.resume(c, key, vmId, dir, p), progress);
            try {
                MachineStates.consumed(dir); // from here on the home moves on without it
            } catch (IOException e) {
                discardMachine(home, "unreadable");
            }
            log.atInfo().setMessage("machine_resumed").addKeyValue("vm", vm.id()).addKeyValue("user", home.user())
                    .addKeyValue("dir", dir.getFileName()).addKeyValue("age_s", age.toSeconds())
                    .addKeyValue("ms", (System.nanoTime() - t0) / 1_000_000).log();
            return new Resume(vm, "");
        } catch (SandboxException e) {
            String kept;
            try {
                kept = MachineStates.setAside(dir, Long.toString(System.currentTimeMillis())).getFileName().toString();
            } catch (IOException moveFailed) {
                kept = "-";
                discardMachine(home, "unreadable");
            }
            String reason = e.getMessage().lines().findFirst().orElse("");
            log.atWarn().setMessage("machine_resume_failed").addKeyValue("user", home.user())
                    .addKeyValue("dir", dir.getFileName()).addKeyValue("kept", kept)
                    .addKeyValue("reason", reason)
                    .addKeyValue("note", "a fresh machine instead").log();
            // The user hears why in words without host paths; the log has the rest.
            String why = e.getCause() instanceof MachineStates.Mismatch ? reason : "it could not be restored";
            return new Resume(null, "vmgate: your saved machine did not resume (" + why + "): this is a fresh machine, with your home;"
                    + (kept.equals("-") ? " the saved one could not be kept" : " the saved one is kept for the operator"));
        }
    }

    /** A save cut short by a crash (its temporary file, never renamed into place): removed, logged. The home was synced before it began. */
    private static void discardTornSave(HomeStore.Home home) {
        try {
            if (MachineStates.discardTemporary(home.directory())) {
                log.atWarn().setMessage("machine_save_incomplete").addKeyValue("user", home.user())
                        .addKeyValue("dir", home.directory().getFileName())
                        .addKeyValue("note", "a save cut short by a crash; its partial state is removed").log();
            }
        } catch (IOException e) {
            log.atWarn().setMessage("machine_discard_failed").addKeyValue("user", home.user())
                    .addKeyValue("dir", home.directory().getFileName()).addKeyValue("error", e.toString()).log();
        }
    }

    private static void discardMachine(HomeStore.Home home, String why) {
        try {
            MachineStates.discard(home.directory());
            if (why != null) {
                log.atInfo().setMessage("machine_discarded").addKeyValue("user", home.user())
                        .addKeyValue("dir", home.directory().getFileName()).addKeyValue("reason", why).log();
            }
        } catch (IOException e) {
            log.atWarn().setMessage("machine_discard_failed").addKeyValue("user", home.user())
                    .addKeyValue("dir", home.directory().getFileName()).addKeyValue("error", e.toString()).log();
        }
    }

    /**
     * When a machine-persisting user's last session ends: the home written out (not frozen: the
     * guest resumes later), then the VM saved beside the home. A failed save is logged; the user's
     * next session gets a fresh machine with the home.
     */
    private static void saveMachine(Vm vm, HomeStore.Home home) {
        long t0 = System.nanoTime();
        try {
            vm.agent().sync(false).get(HOME_SYNC_TIMEOUT.toMillis(), java.util.concurrent.TimeUnit.MILLISECONDS);
        } catch (java.util.concurrent.ExecutionException | java.util.concurrent.TimeoutException | IOException e) {
            log.atWarn().setMessage("home_sync_failed").addKeyValue("vm", vm.id()).addKeyValue("user", home.user())
                    .addKeyValue("reason", e.toString()).log();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        try {
            long bytes = MachineStates.save(vm, home.directory());
            log.atInfo().setMessage("machine_saved").addKeyValue("vm", vm.id()).addKeyValue("user", home.user())
                    .addKeyValue("dir", home.directory().getFileName()).addKeyValue("bytes", bytes)
                    .addKeyValue("ms", (System.nanoTime() - t0) / 1_000_000).log();
        } catch (VmException e) {
            log.atWarn().setMessage("machine_save_failed").addKeyValue("vm", vm.id()).addKeyValue("user", home.user())
                    .addKeyValue("dir", home.directory().getFileName())
                    .addKeyValue("reason", e.getMessage().lines().findFirst().orElse("")).log();
        }
    }

    /** After a save: the least recently saved machines beyond --max-saved / --saved-disk-quota go (SavedMachines). */
    private void enforceSavedLimits(HomeStore.Home home) {
        SavedMachines.enforce(homes.root(), home.directory(), options.maxSaved(), options.savedDiskQuotaBytes());
    }

    /** Before a home's VM is torn down: what processes wrote goes to the disk (a VM is killed, not shut down). */
    private static void flushHome(Vm vm, String user) {
        long t0 = System.nanoTime();
        try {
            vm.agent().sync(true).get(HOME_SYNC_TIMEOUT.toMillis(), java.util.concurrent.TimeUnit.MILLISECONDS);
            log.atInfo().setMessage("home_released").addKeyValue("vm", vm.id()).addKeyValue("user", user)
                    .addKeyValue("sync_ms", (System.nanoTime() - t0) / 1_000_000).log();
        } catch (java.util.concurrent.ExecutionException | java.util.concurrent.TimeoutException | IOException e) {
            // The VM died, or its disk failed: the journal keeps the home consistent, recent writes may be lost.
            String why = e instanceof java.util.concurrent.ExecutionException x && x.getCause() != null ? x.getCause().getMessage() : e.toString();
            log.atWarn().setMessage("home_sync_failed").addKeyValue("vm", vm.id()).addKeyValue("user", user)
                    .addKeyValue("reason", why).log();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            log.atWarn().setMessage("home_sync_failed").addKeyValue("vm", vm.id()).addKeyValue("user", user)
                    .addKeyValue("reason", "interrupted").log();
        }
    }

    /** The guest user whose home is persisted: one with a real home directory. */
    private io.vmgate.image.GuestUser homeUser() throws SandboxException {
        io.vmgate.image.GuestUser u = login.user();
        String h = u.home();
        if (h == null || !h.startsWith("/") || h.equals("/") || h.contains("/../") || h.endsWith("/..") || h.contains("/./")) {
            throw new SandboxException("the guest user " + u.name() + " has no home directory to persist (its home is '" + h + "')");
        }
        return u;
    }

    /** Starts VMs with {@code image} in the home disk slot: restored from the home template, or cold-booted. */
    private VmLauncher homeLauncher(Path image) {
        if (!options.snapshot()) {
            VmConfig c = config.withHome(HomeDisk.placeholder(homes.bytes()).with(image));
            return (vmId, progress) -> QemuVm.boot(c, vmId, progress);
        }
        return homeSnapshots().withHome(image);
    }

    /** The template of VMs with a home disk slot (another template: one more device, and a guest that knows it). */
    private Snapshots homeSnapshots() {
        synchronized (homeTemplateLock) {
            if (homeSnapshots == null) {
                homeSnapshots = new Snapshots(config.withHome(HomeDisk.placeholder(homes.bytes())), templateRoot(options),
                        rebuildInBackground, observer::templateBuilt);
            }
            return homeSnapshots;
        }
    }

    /**
     * Checks now that persistent homes can be kept (their directory made 0700 and writable, the
     * guest user has a home): a server calls it at start when any user persists a home, so a bad
     * state directory stops the server rather than every login.
     */
    public void prepareHomes() throws SandboxException {
        if (config == null) {
            throw new SandboxException("persistent homes need QEMU VMs, not a custom launcher");
        }
        homeUser();
        homes.prepare();
    }

    /**
     * A persistent home as an operator sees it ({@code vmgate sessions homes}).
     *
     * @param directory the name of its directory under {@link #homesDirectory()} (a hash of the user name)
     * @param user      the user name it belongs to ("?" if its name file is missing)
     * @param sizeBytes the disk's size (every home has {@code --persist-size})
     * @param usedBytes what its sparse image takes on the host, -1 if unknown
     * @param modified  when its image was last written
     * @param inUse     whether a sandbox of this engine has it attached now
     * @param savedBytes the size of the machine saved beside it ({@code --persist machine}), -1 if none
     * @param savedAt   when that machine was saved, null if none
     */
    public record Home(String directory, String user, long sizeBytes, long usedBytes, java.time.Instant modified, boolean inUse,
            long savedBytes, java.time.Instant savedAt) {}

    /** The persistent homes kept in {@link #homesDirectory()}, by directory name, with their saved machines. */
    public List<Home> homes() throws IOException {
        java.util.Map<Path, SavedMachines.Saved> saved = new java.util.HashMap<>();
        for (SavedMachines.Saved s : SavedMachines.scan(homes.root())) {
            saved.put(s.dir().getFileName(), s);
        }
        return homes.list().stream().map(h -> {
            SavedMachines.Saved s = saved.get(Path.of(h.directory()));
            return new Home(h.directory(), h.user(), h.sizeBytes(), h.usedBytes(), h.modified(), perUser.isRunning(h.user()),
                    s == null ? -1 : s.bytes(), s == null ? null : s.savedAt());
        }).toList();
    }

    /** Where persistent homes are kept ({@code <state>/homes}), one directory per user. */
    public Path homesDirectory() {
        return homes.root();
    }

    /**
     * Removes {@code user}'s saved machine ({@code --persist machine}) at the operator's request,
     * under the home's lock (logged {@code machine_discarded reason=operator}); the home stays, and
     * the user's next session starts a fresh machine with it. Nothing changes while a VM holds the
     * home ({@link SavedMachineRemoval#RUNNING}: it is saved again when the user's last session ends).
     */
    public SavedMachineRemoval discardSavedMachine(String user) throws IOException {
        if (user == null || user.isEmpty()) {
            throw new IllegalArgumentException("a saved machine belongs to a user: name one");
        }
        Path dir = homes.directoryOf(user);
        SavedMachineRemoval r = SavedMachines.discardIfIdle(dir);
        if (r == SavedMachineRemoval.REMOVED) {
            log.atInfo().setMessage("machine_discarded").addKeyValue("user", user).addKeyValue("dir", dir.getFileName())
                    .addKeyValue("reason", "operator").log();
        }
        return r;
    }

    /**
     * What may differ between the sandboxes of one engine: who a sandbox is for (named in its
     * logs) and the hosts it may reach, a session at a time (a server's per-user allowlists).
     * The snapshot template and the pool stay the same for all.
     *
     * @param user   who the sandbox is for, for logs; empty when nobody in particular
     * @param egress allowlist rules (see {@link SandboxOptions#egress()}), or null for the options' own
     */
    public record Session(String user, List<String> egress, SandboxOptions.Persist persist, boolean freshMachine) {
        static final Session DEFAULT = new Session("", null, null);

        /**
         * @param persist what this user's sandboxes keep ({@link SandboxOptions.Persist#HOME}: a home that
         *                outlives them, and one sandbox shared by the user's sessions at a time), or
         *                null for the options' own
         * @param freshMachine with {@link SandboxOptions.Persist#MACHINE}: the user's saved machine is
         *                discarded (logged {@code machine_discarded reason=fresh_requested}) and a fresh one
         *                started with their home; ignored while the user has a sandbox running (it is shared)
         */
        public Session {
            user = user == null ? "" : user;
            if (egress != null) {
                egress = List.copyOf(egress);
                EgressPolicy.parse(String.join(",", egress));
            }
        }

        public Session(String user, List<String> egress) {
            this(user, egress, null, false);
        }

        public Session(String user, List<String> egress, SandboxOptions.Persist persist) {
            this(user, egress, persist, false);
        }

        public static Session of(String user) {
            return new Session(user, null, null);
        }

        public Session egress(List<String> rules) {
            return new Session(user, rules, persist, freshMachine);
        }

        public Session persist(SandboxOptions.Persist p) {
            return new Session(user, egress, p, freshMachine);
        }

        /** This session asking ({@code true}) for a fresh machine instead of the user's saved one. */
        public Session freshMachine(boolean fresh) {
            return new Session(user, egress, persist, fresh);
        }
    }

    /** A sandbox that closes this engine with it ({@link Sandbox#start(SandboxOptions)}). */
    Sandbox startOwned() throws SandboxException {
        if (options.persist() != SandboxOptions.Persist.NONE) {
            throw new IllegalArgumentException("a persistent home belongs to a user: start it with "
                    + "Sandboxes.create(options).start(id, Sandboxes.Session.of(user))");
        }
        return adopt(launch("sbx-" + HexFormat.of().formatHex(randomBytes(5)), p -> { }), Session.DEFAULT, this::close);
    }

    /** Makes a started VM a sandbox: its egress set up (if it may reach anything), its commands the guest user's. */
    Sandbox adopt(Vm vm, Session session, Runnable onClose) throws SandboxException {
        EgressPolicy policy = EgressPolicy.parse(String.join(",", session.egress() != null ? session.egress() : options.egress()));
        Egress egress = null;
        if (!policy.isEmpty()) {
            EgressLimits limits = EgressLimits.defaults();
            if (options.egressMaxConnections().isPresent()) {
                limits = limits.withMaxConnections(options.egressMaxConnections().getAsInt());
            }
            if (options.egressMaxBytes().isPresent()) {
                limits = limits.withMaxBytes(options.egressMaxBytes().getAsLong(), options.egressMaxBytes().getAsLong());
            }
            try {
                egress = Egress.start(vm.agent(), policy, limits, session.user());
            } catch (IOException | RuntimeException e) {
                vm.close();
                onClose.run();
                throw new SandboxException("cannot set up egress in VM " + vm.id() + ": " + e.getMessage(), e);
            }
        }
        return new VmSandbox(vm, login, egress, onClose);
    }

    private Vm launch(String id, Consumer<Vm.Phase> progress) throws SandboxException {
        return launch(id, pool != null ? pool : launcher, progress);
    }

    private Vm launch(String id, VmLauncher l, Consumer<Vm.Phase> progress) throws SandboxException {
        boolean pooled = l == pool && pool != null;
        if (abandonOnExit) {
            l = new AbortOnExit(l);
        }
        long t0 = System.nanoTime();
        StartPath path = new StartPath();
        try {
            Vm vm = l.launch(id, phase -> {
                path.heard(phase.name());
                progress.accept(phase);
            });
            observer.started(path.decide(pooled), Duration.ofNanos(System.nanoTime() - t0));
            return vm;
        } catch (VmException e) {
            observer.startFailed();
            throw new SandboxException(e.getMessage(), e, AbortOnExit.exiting());
        } catch (IllegalArgumentException e) {
            observer.startFailed();
            throw new SandboxException(e.getMessage(), e);
        }
    }

    /**
     * Which way a start went, from the phases the launcher reported on the way: the VM that served
     * said {@code agent_restored} (restored) or {@code agent_hello} (booted); a start that reported
     * neither was handed over from the pool (a launcher of another kind, reporting neither, counts as cold).
     */
    private static final class StartPath {
        private volatile String lastAgentPhase;

        void heard(String phase) {
            if (phase.startsWith("agent_")) {
                lastAgentPhase = phase;
            }
        }

        SandboxObserver.StartPath decide(boolean pooled) {
            String p = lastAgentPhase;
            if ("agent_restored".equals(p)) {
                return SandboxObserver.StartPath.RESTORED;
            }
            if (p == null && pooled) {
                return SandboxObserver.StartPath.POOLED;
            }
            return SandboxObserver.StartPath.COLD;
        }
    }

    /**
     * Builds the snapshot template now, if these sandboxes use one and it is missing (it is also
     * built on first need); returns its state file, or empty without snapshot restores.
     */
    public Optional<Path> prepare() throws SandboxException {
        if (snapshots == null) {
            return Optional.empty();
        }
        try {
            if (options.persist() != SandboxOptions.Persist.NONE) {
                return Optional.of(homeSnapshots().ensureTemplate().state()); // what this engine's sessions restore from
            }
            return Optional.of(snapshots.ensureTemplate().state());
        } catch (VmException e) {
            throw new SandboxException(e.getMessage(), e);
        }
    }

    /**
     * Builds the template of sandboxes with a persistent home now, if missing (a server whose
     * default is no persistence, but some users' sessions keep a home); empty without snapshot restores.
     */
    public Optional<Path> prepareHomeTemplate() throws SandboxException {
        if (snapshots == null) {
            return Optional.empty();
        }
        try {
            return Optional.of(homeSnapshots().ensureTemplate().state());
        } catch (VmException e) {
            throw new SandboxException(e.getMessage(), e);
        }
    }

    /**
     * For benchmarks and debugging: the template's files (state, guest memory, and the saved
     * scratch disk when there is one), built first if missing; empty without snapshot restores.
     */
    public List<Path> templateFiles() throws SandboxException {
        if (snapshots == null) {
            return List.of();
        }
        try {
            Template t = snapshots.ensureTemplate();
            return config.scratchMib().isPresent() ? List.of(t.state(), t.memory(), t.scratch()) : List.of(t.state(), t.memory());
        } catch (VmException e) {
            throw new SandboxException(e.getMessage(), e);
        }
    }

    /**
     * What the image says to run when the caller has no command of its own: an OCI image's
     * {@code Entrypoint} followed by its {@code Cmd} ({@code vmgate run --image NAME} with no command
     * runs it); empty for other images, and with a custom launcher. The image's {@code Env},
     * {@code WorkingDir} and {@code User} need nothing from the caller: every command gets them.
     */
    public List<String> imageCommand() {
        return config == null ? List.of() : config.rootfs().map(r -> r.defaults().command()).orElse(List.of());
    }

    /** Whether sandboxes are restored from a snapshot template. */
    public boolean restoresFromTemplate() {
        return snapshots != null;
    }

    /** The warm pool's size: how many idle sandboxes it keeps ready (0 without a pool). */
    public int poolSize() {
        return poolSize;
    }

    /**
     * Whether a start needs no template build first: the template exists, or these sandboxes do
     * not restore from one.
     */
    public boolean templateReady() {
        if (snapshots == null) {
            return true;
        }
        try {
            return java.nio.file.Files.isRegularFile(snapshots.statePath());
        } catch (VmException e) {
            return false;
        }
    }

    /** Sandboxes idle in the warm pool now (0 without a pool). */
    public int idle() {
        return pool == null ? 0 : pool.idle();
    }

    /**
     * For benchmarks and debugging: the exact QEMU command line a sandbox with runtime directory
     * {@code dir} gets; with {@code restore}, the one that restores the template (the template's memory
     * file on stdin, its state fed later over QMP with {@code migrate-incoming}; the template is built
     * first if missing). A scratch disk a cold boot needs is made in {@code dir}.
     */
    public List<String> qemuCommandLine(Path dir, boolean restore) throws SandboxException {
        if (config == null) {
            throw new IllegalStateException("these sandboxes are not started by QEMU");
        }
        try {
            QemuCommand cmd = QemuCommand.of(config, new RuntimeDir(dir), "bench");
            if (restore) {
                if (snapshots == null) {
                    throw new IllegalStateException("these sandboxes are not restored from a template");
                }
                Template t = snapshots.ensureTemplate();
                cmd = cmd.asClone();
                if (config.scratchMib().isPresent()) {
                    cmd = cmd.withScratchTemplate(t.scratch());
                }
            } else if (config.scratchMib().isPresent()) {
                ScratchDisk.create(cmd.scratchFile(), config.scratchMib().getAsInt()); // a cold boot's own disk, as QemuVm makes it
            }
            return cmd.argv();
        } catch (VmException | ImageException e) {
            throw new SandboxException(e.getMessage(), e);
        }
    }

    /** Stops the warm pool (its idle sandboxes are destroyed); sandboxes handed out are not affected. */
    @Override
    public void close() {
        if (pool != null) {
            pool.close();
        }
    }

    // --- from options to a VM configuration (shared with EarlyStart)

    /** The VM configuration for {@code options} with this image. */
    static VmConfig vmConfig(SandboxOptions o, Image image) {
        Accel accel = switch (o.accelerator()) {
            case AUTO -> Accel.detect();
            case KVM -> Accel.KVM;
            case TCG -> Accel.TCG;
        };
        VmConfig c = VmConfig.defaults(image).withCpus(o.cpus()).withMemoryMib(o.memoryMib()).withAccel(accel)
                .withBootTimeout(o.bootTimeout()).withGuestUser(o.guestUser() != null ? o.guestUser() : VmConfig.DEFAULT_GUEST_USER)
                .withRuntimeRoot(o.runtimeDirectory() != null ? o.runtimeDirectory() : VmConfig.defaultRuntimeRoot());
        if (o.workdir() != null) {
            c = c.withWorkdir(o.workdir());
        }
        if (o.scratchDiskMib().isPresent()) {
            c = c.withScratchMib(o.scratchDiskMib().getAsInt());
        }
        if (o.openNetwork()) {
            c = c.withNetwork(Network.OPEN);
        }
        if (o.writableMib().isPresent()) {
            c = c.withRwsizeMib(o.writableMib().getAsInt());
        }
        if (o.maxProcs().isPresent()) {
            c = c.withMaxProcs(o.maxProcs().getAsInt());
        }
        return c;
    }

    static ImageStore imageStore(SandboxOptions o) {
        return new ImageStore(cacheRoot(o));
    }

    static Path cacheRoot(SandboxOptions o) {
        return o.cacheDirectory() != null ? o.cacheDirectory() : ImageStore.defaultRoot();
    }

    /** The VM configuration for {@code o}: its image selected (a root filesystem built on first use), its login settings. */
    static VmConfig resolve(SandboxOptions o, Consumer<String> progress) throws SandboxException {
        try {
            RootfsStore store = new RootfsStore(cacheRoot(o));
            ImageSelection sel = o.rootfs() != null ? ImageSelection.rootfs(o.rootfs(), store, progress)
                    : o.image() != null ? ImageSelection.image(o.image(), store)
                    : new ImageSelection(Optional.empty(), Optional.empty());
            Image boot = sel.boot().isPresent() ? sel.boot().get() : imageStore(o).defaultImage();
            VmConfig c = vmConfig(o, boot);
            if (sel.rootfs().isPresent()) {
                c = c.withRootfs(sel.rootfs().get());
                Optional<String> imageUser = sel.rootfs().get().defaults().user();
                if (o.guestUser() == null && imageUser.isPresent()) {
                    c = c.withGuestUser(imageUser.get()); // an OCI image's User, unless the options name one
                }
            }
            return c;
        } catch (ImageException e) {
            throw new SandboxException(e.getMessage(), e);
        }
    }

    /** The guest user's login, checked against the image now, not at the first command. */
    static GuestLogin login(VmConfig c) throws SandboxException {
        try {
            return GuestLogin.resolve(c);
        } catch (VmException e) {
            throw new SandboxException(e.getMessage(), e);
        }
    }

    static Snapshots snapshots(VmConfig c, SandboxOptions o, boolean rebuildInBackground) {
        return new Snapshots(c, templateRoot(o), rebuildInBackground);
    }

    private static Path templateRoot(SandboxOptions o) {
        return cacheRoot(o).resolve("templates");
    }

    /** Restores from {@code snapshots} when given, else cold boots; making it reaps what crashed runs left. */
    static VmLauncher qemuLauncher(VmConfig c, Snapshots snapshots) {
        VmLauncher cold = QemuVm.launcher(c);
        return snapshots != null ? snapshots : cold;
    }

    /** The configuration sandboxes are started with (null with a custom launcher). */
    VmConfig config() {
        return config;
    }

    private static byte[] randomBytes(int n) {
        byte[] b = new byte[n];
        RANDOM.nextBytes(b);
        return b;
    }
}
