package io.vmgate.sandbox;

import io.vmgate.egress.EgressPolicy;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Objects;
import java.util.List;
import java.util.OptionalInt;
import java.util.OptionalLong;

/**
 * What a sandbox is: one immutable value that {@code vmgate run}, {@code vmgate serve} and a library
 * user all fill the same way. Build one with {@link #builder()}; every field has a default.
 *
 * @param image            an image: a name from {@code vmgate image build} ({@code debian}), an image's
 *                         directory, or a kernel + initramfs directory; null for the built-in busybox image
 * @param rootfs           a Linux root filesystem tree on this host, used (read-only, never modified) as
 *                         the guest's root: made into an image on first use and reused while unchanged;
 *                         null for none (then {@code image} decides)
 * @param guestUser        the user commands run as: {@code NAME}, {@code UID}, {@code NAME:GROUP} or {@code UID:GID},
 *                         from the image's /etc/passwd and /etc/group; null for the image's own user (an OCI
 *                         image's {@code User}), else root
 * @param workdir          where commands start (an absolute path in the guest), or null for the user's home
 * @param egress           the hosts a sandbox may open TCP connections to, through an HTTP proxy in the
 *                         guest ({@code HOST[:PORT]}, {@code *.DOMAIN[:PORT]}, {@code IP[/BITS][:PORT]};
 *                         no port: 443 and 80); empty: no network at all
 * @param egressMaxConnections connections at once per sandbox through the proxy; empty: the default (32)
 * @param egressMaxBytes   bytes each way per sandbox through the proxy; empty: no limit
 * @param openNetwork      full outbound network through NAT (QEMU user networking): no allowlist, no
 *                         inbound; never together with {@code egress}
 * @param scratchDiskMib   give each sandbox its own sparse disk of this size for the writable layer
 *                         (deleted with it) instead of guest RAM; empty: the writable layer is in RAM
 * @param cpus             virtual CPUs (1-255)
 * @param memoryMib        guest memory in MiB (at least 64)
 * @param writableMib      size of the guest's writable layer in MiB; empty: half the guest memory
 * @param maxProcs         process limit inside the guest; empty: the guest's default
 * @param snapshot         restore each sandbox from the image's snapshot template (built on first
 *                         need); false: cold-boot every sandbox
 * @param bootTimeout      give up on a sandbox whose guest is not ready within this
 * @param accelerator      how QEMU runs the guest
 * @param cacheDirectory   where images and templates are kept, or null for {@code $VMGATE_CACHE},
 *                         {@code $XDG_CACHE_HOME/vmgate} or {@code ~/.cache/vmgate}
 * @param runtimeDirectory where each running VM gets its private directory (sockets, logs), or null
 *                         for {@code $VMGATE_RUNTIME_DIR}, {@code $XDG_RUNTIME_DIR/vmgate},
 *                         {@code /run/vmgate} (root) or {@code /tmp/vmgate-UID}
 * @param persist          what outlives a sandbox of a named user ({@link Sandboxes.Session#user()}):
 *                         {@link Persist#NONE} (nothing, the default) or {@link Persist#HOME}
 * @param persistSizeMib   with {@link Persist#HOME}: the size of each user's home disk (sparse: it takes
 *                         on the host what the user wrote); every home must have this size
 * @param resumeWithin     with {@link Persist#MACHINE}: how long a saved machine may be resumed; later, a
 *                         user gets a fresh machine (with their home)
 * @param stateDirectory   where persistent homes are kept ({@code homes/} in it), or null for
 *                         {@code $XDG_STATE_HOME/vmgate} or {@code ~/.local/state/vmgate}
 * @param maxSaved         with {@link Persist#MACHINE}: at most this many saved machines (empty: no limit); after
 *                         a save, the least recently saved of other users are evicted (logged {@code machine_evicted})
 * @param savedDiskQuotaBytes with {@link Persist#MACHINE}: at most this many bytes of saved machines (empty: no
 *                         limit), evicted likewise; a machine alone larger than this is not kept
 */
public record SandboxOptions(String image, Path rootfs, String guestUser, String workdir, int cpus, int memoryMib,
        OptionalInt writableMib, OptionalInt scratchDiskMib, OptionalInt maxProcs, List<String> egress,
        OptionalInt egressMaxConnections, OptionalLong egressMaxBytes, boolean openNetwork, boolean snapshot,
        Duration bootTimeout, Accelerator accelerator, Path cacheDirectory, Path runtimeDirectory, Persist persist,
        int persistSizeMib, Duration resumeWithin, Path stateDirectory, OptionalInt maxSaved, OptionalLong savedDiskQuotaBytes) {

    public static final int DEFAULT_CPUS = 1;
    public static final int DEFAULT_MEMORY_MIB = 256;
    public static final Duration DEFAULT_BOOT_TIMEOUT = Duration.ofSeconds(30);
    public static final String DEFAULT_GUEST_USER = "root";
    public static final int DEFAULT_PERSIST_SIZE_MIB = 1024;
    public static final Duration DEFAULT_RESUME_WITHIN = Duration.ofHours(1);

    /** What outlives a user's sandbox. */
    public enum Persist {
        /** Nothing: every sandbox starts fresh and everything it wrote dies with it. */
        NONE,
        /**
         * The guest user's home directory: a disk per user, mounted at the home of every sandbox
         * of that user; everything else is fresh. A user's sandboxes that run at the same time are
         * one sandbox (a disk is never attached to two VMs).
         */
        HOME,
        /**
         * The whole machine, and the home with it: when a user's last session ends, the VM is saved
         * (its processes, memory and writable layer) and the user's next session within
         * {@link SandboxOptions#resumeWithin()} resumes it; later, or when a resume fails, a fresh
         * machine with the same home. Needs snapshot restores.
         */
        MACHINE;

        /** {@code none}, {@code home} or {@code machine}, as the command line and config file write them. */
        public static Persist parse(String s) {
            return switch (s == null ? "" : s.strip().toLowerCase(java.util.Locale.ROOT)) {
                case "none" -> NONE;
                case "home" -> HOME;
                case "machine" -> MACHINE;
                default -> throw new IllegalArgumentException("persist wants none, home or machine, not '" + s + "'");
            };
        }
    }

    /** How QEMU runs guests. */
    public enum Accelerator {
        /** KVM when the CPU shows hardware virtualization (vmx/svm) and /dev/kvm is usable, else TCG. */
        AUTO,
        KVM,
        /** QEMU's emulator: slower, works everywhere. */
        TCG
    }

    public SandboxOptions {
        Objects.requireNonNull(writableMib, "writableMib");
        Objects.requireNonNull(maxProcs, "maxProcs");
        Objects.requireNonNull(scratchDiskMib, "scratchDiskMib");
        Objects.requireNonNull(egressMaxConnections, "egressMaxConnections");
        Objects.requireNonNull(egressMaxBytes, "egressMaxBytes");
        egress = List.copyOf(egress == null ? List.of() : egress);
        EgressPolicy.parse(String.join(",", egress)); // a rule it cannot read: IllegalArgumentException naming it
        require(egress.isEmpty() || !openNetwork,
                "an egress allowlist and an open network together: the open network's NAT would go around the allowlist");
        require(egressMaxConnections.isEmpty() || (egressMaxConnections.getAsInt() >= 1 && egressMaxConnections.getAsInt() <= 64),
                "egress connections at once must be between 1 and 64");
        require(egressMaxBytes.isEmpty() || egressMaxBytes.getAsLong() >= 1, "the egress byte limit must be positive");
        guestUser = guestUser == null || guestUser.isEmpty() ? null : guestUser;
        require(image == null || rootfs == null, "give an image or a root filesystem directory, not both");
        require(workdir == null || workdir.startsWith("/"), "the working directory must be an absolute path, not '" + workdir + "'");
        require(guestUser == null || guestUser.matches(io.vmgate.vm.VmConfig.GUEST_USER),
                "'" + guestUser + "' is not a user: NAME, UID, NAME:GROUP or UID:GID");
        Objects.requireNonNull(bootTimeout, "bootTimeout");
        Objects.requireNonNull(accelerator, "accelerator");
        require(cpus >= 1 && cpus <= 255, "cpus must be between 1 and 255, not " + cpus);
        require(memoryMib >= 64 && memoryMib <= 1 << 20,
                "memory must be at least 64 MiB (the kernel and initramfs need it), not " + memoryMib);
        require(!bootTimeout.isNegative() && !bootTimeout.isZero(), "the boot timeout must be positive");
        require(writableMib.isEmpty() || writableMib.getAsInt() >= 1, "the writable layer must be at least 1 MiB");
        require(maxProcs.isEmpty() || maxProcs.getAsInt() >= 1, "the process limit must be at least 1");
        require(scratchDiskMib.isEmpty() || scratchDiskMib.getAsInt() >= 64, "a scratch disk must be at least 64 MiB");
        Objects.requireNonNull(persist, "persist");
        Objects.requireNonNull(resumeWithin, "resumeWithin");
        require(!resumeWithin.isNegative() && !resumeWithin.isZero(), "resume-within must be positive");
        require(persist != Persist.MACHINE || snapshot, "persist machine needs snapshot restores: a machine is saved as what "
                + "it changed since its template"); 
        Objects.requireNonNull(maxSaved, "maxSaved");
        Objects.requireNonNull(savedDiskQuotaBytes, "savedDiskQuotaBytes");
        require(maxSaved.isEmpty() || maxSaved.getAsInt() >= 1, "max-saved must be at least 1");
        require(savedDiskQuotaBytes.isEmpty() || savedDiskQuotaBytes.getAsLong() >= 1, "the saved-disk quota must be positive");
        require(persistSizeMib >= 64 && persistSizeMib <= 16 << 20, "a persistent home must be between 64 MiB and 16 TiB, not "
                + persistSizeMib + " MiB");
    }

    /** {@code "a.com, b.org:80"} as rules; blank: none. */
    static List<String> splitRules(String rules) {
        if (rules == null || rules.isBlank()) {
            return List.of();
        }
        return java.util.Arrays.stream(rules.split(",")).map(String::strip).filter(r -> !r.isEmpty()).toList();
    }

    private static void require(boolean ok, String message) {
        if (!ok) {
            throw new IllegalArgumentException(message);
        }
    }

    /** The built-in image as its own user (root), 1 CPU, 256 MiB, snapshot restores, 30 s boot timeout, accelerator chosen for this host. */
    public static SandboxOptions defaults() {
        return builder().build();
    }

    public static Builder builder() {
        return new Builder();
    }

    public Builder toBuilder() {
        Builder b = new Builder();
        b.image = image;
        b.rootfs = rootfs;
        b.guestUser = guestUser;
        b.workdir = workdir;
        b.scratchDiskMib = scratchDiskMib;
        b.egress = egress;
        b.egressMaxConnections = egressMaxConnections;
        b.egressMaxBytes = egressMaxBytes;
        b.openNetwork = openNetwork;
        b.cpus = cpus;
        b.memoryMib = memoryMib;
        b.writableMib = writableMib;
        b.maxProcs = maxProcs;
        b.snapshot = snapshot;
        b.bootTimeout = bootTimeout;
        b.accelerator = accelerator;
        b.cacheDirectory = cacheDirectory;
        b.runtimeDirectory = runtimeDirectory;
        b.persist = persist;
        b.persistSizeMib = persistSizeMib;
        b.resumeWithin = resumeWithin;
        b.stateDirectory = stateDirectory;
        b.maxSaved = maxSaved;
        b.savedDiskQuotaBytes = savedDiskQuotaBytes;
        return b;
    }

    /** Mutable builder with the defaults above; {@link #build()} checks every value. */
    public static final class Builder {
        private String image;
        private Path rootfs;
        private String guestUser;
        private String workdir;
        private OptionalInt scratchDiskMib = OptionalInt.empty();
        private List<String> egress = List.of();
        private OptionalInt egressMaxConnections = OptionalInt.empty();
        private OptionalLong egressMaxBytes = OptionalLong.empty();
        private boolean openNetwork;
        private int cpus = DEFAULT_CPUS;
        private int memoryMib = DEFAULT_MEMORY_MIB;
        private OptionalInt writableMib = OptionalInt.empty();
        private OptionalInt maxProcs = OptionalInt.empty();
        private boolean snapshot = true;
        private Duration bootTimeout = DEFAULT_BOOT_TIMEOUT;
        private Accelerator accelerator = Accelerator.AUTO;
        private Path cacheDirectory;
        private Path runtimeDirectory;
        private Persist persist = Persist.NONE;
        private int persistSizeMib = DEFAULT_PERSIST_SIZE_MIB;
        private Duration resumeWithin = DEFAULT_RESUME_WITHIN;
        private Path stateDirectory;
        private OptionalInt maxSaved = OptionalInt.empty();
        private OptionalLong savedDiskQuotaBytes = OptionalLong.empty();

        private Builder() {}

        /** An image by name ({@code debian}) or directory; null for the built-in one. */
        public Builder image(String nameOrDirectory) { image = nameOrDirectory; return this; }
        public Builder image(Path directory) { image = directory == null ? null : directory.toString(); return this; }
        public Builder rootfs(Path directory) { rootfs = directory; return this; }
        /** NAME, UID, NAME:GROUP or UID:GID; null (the default): the image's own user, else root. */
        public Builder guestUser(String user) { guestUser = user; return this; }
        public Builder workdir(String guestDirectory) { workdir = guestDirectory; return this; }
        public Builder scratchDiskMib(int mib) { scratchDiskMib = OptionalInt.of(mib); return this; }
        /** Allowlist rules, e.g. {@code List.of("pypi.org", "*.pythonhosted.org", "10.0.0.0/8:5432")}. */
        public Builder egress(List<String> rules) { egress = rules; return this; }
        /** Comma-separated allowlist rules: {@code "github.com,*.githubusercontent.com:443"}. */
        public Builder egress(String rules) { egress = splitRules(rules); return this; }
        public Builder egressMaxConnections(int n) { egressMaxConnections = OptionalInt.of(n); return this; }
        public Builder egressMaxBytes(long eachWay) { egressMaxBytes = OptionalLong.of(eachWay); return this; }
        public Builder openNetwork(boolean open) { openNetwork = open; return this; }
        public Builder cpus(int n) { cpus = n; return this; }
        public Builder memoryMib(int mib) { memoryMib = mib; return this; }
        public Builder writableMib(int mib) { writableMib = OptionalInt.of(mib); return this; }
        public Builder maxProcs(int n) { maxProcs = OptionalInt.of(n); return this; }
        public Builder snapshot(boolean restoreFromTemplate) { snapshot = restoreFromTemplate; return this; }
        public Builder bootTimeout(Duration d) { bootTimeout = d; return this; }
        public Builder accelerator(Accelerator a) { accelerator = a; return this; }
        public Builder cacheDirectory(Path dir) { cacheDirectory = dir; return this; }
        public Builder runtimeDirectory(Path dir) { runtimeDirectory = dir; return this; }
        /** What a named user's sandboxes keep ({@link Persist#HOME}: their home directory). */
        public Builder persist(Persist p) { persist = p; return this; }
        public Builder persistSizeMib(int mib) { persistSizeMib = mib; return this; }
        public Builder resumeWithin(Duration d) { resumeWithin = d; return this; }
        public Builder stateDirectory(Path dir) { stateDirectory = dir; return this; }
        public Builder maxSaved(int n) { maxSaved = OptionalInt.of(n); return this; }
        public Builder savedDiskQuotaBytes(long bytes) { savedDiskQuotaBytes = OptionalLong.of(bytes); return this; }

        /** @throws IllegalArgumentException naming the first value out of range */
        public SandboxOptions build() {
            return new SandboxOptions(image, rootfs, guestUser, workdir, cpus, memoryMib, writableMib, scratchDiskMib, maxProcs,
                    egress, egressMaxConnections, egressMaxBytes, openNetwork, snapshot, bootTimeout, accelerator, cacheDirectory,
                    runtimeDirectory, persist, persistSizeMib, resumeWithin, stateDirectory, maxSaved, savedDiskQuotaBytes);
        }
    }
}
