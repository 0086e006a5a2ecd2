package io.vmgate.vm;

import io.vmgate.image.Image;
import io.vmgate.image.RootfsImage;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.time.Duration;
import java.util.Objects;
import java.util.Optional;
import java.util.OptionalInt;

/**
 * How to run one VM.
 *
 * @param image       the kernel and initramfs (whose busybox userland is the root unless {@code rootfs} is given)
 * @param rwsizeMib   size of the guest's writable layer (tmpfs upper), passed as {@code vmgate.rwsize=}; empty: the agent's default
 * @param maxProcs    process limit in the guest, passed as {@code vmgate.maxprocs=}; empty: the agent's default
 * @param qemuBinary  a name looked up on PATH, or a path
 * @param runtimeRoot where per-VM directories (sockets, logs, pid file) are made, see {@link RuntimeDirs#defaultRoot()}
 * @param rootfs      a root filesystem image attached read-only as the overlay's lower layer ({@code --image NAME},
 *                    {@code --rootfs DIR}); empty: the image's busybox userland
 * @param scratchMib  the writable layer (and /tmp) on a per-VM sparse disk of this size instead of tmpfs
 *                    ({@code --scratch-disk}); the disk lives in the VM's runtime directory and dies with it
 * @param guestUser   who processes run as, from the image's /etc/passwd ({@code --guest-user}, else the image's own
 *                    user, else root): NAME, UID, NAME:GROUP or UID:GID; see {@link GuestLogin}
 * @param workdir     where sessions start ({@code --workdir}); empty: the user's home (or / without one)
 * @param network     {@link Network#NONE} (no network device, the default) or {@link Network#OPEN}
 * @param home        a persistent home disk slot ({@code --persist home}); empty: none
 */
public record VmConfig(Image image, int cpus, int memoryMib, Accel accel, Duration bootTimeout, OptionalInt rwsizeMib,
        OptionalInt maxProcs, String qemuBinary, Path runtimeRoot, Optional<RootfsImage> rootfs, OptionalInt scratchMib,
        String guestUser, Optional<String> workdir, Network network, Optional<HomeDisk> home) {

    public static final int DEFAULT_CPUS = 1;
    public static final int DEFAULT_MEMORY_MIB = 256;
    public static final Duration DEFAULT_BOOT_TIMEOUT = Duration.ofSeconds(30);
    public static final String DEFAULT_QEMU = "qemu-system-x86_64";
    public static final String DEFAULT_GUEST_USER = "root";
    /** A user as {@code --guest-user} and an OCI image's {@code User} give it: NAME, UID, NAME:GROUP or UID:GID. */
    public static final String GUEST_USER = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}[$]?(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63})?";
    /** ext4 needs a few MiB for itself; below this a scratch disk would hold nothing. */
    public static final int MIN_SCRATCH_MIB = 64;

    public VmConfig {
        Objects.requireNonNull(image, "image");
        Objects.requireNonNull(accel, "accel");
        Objects.requireNonNull(bootTimeout, "bootTimeout");
        Objects.requireNonNull(rwsizeMib, "rwsizeMib");
        Objects.requireNonNull(maxProcs, "maxProcs");
        Objects.requireNonNull(qemuBinary, "qemuBinary");
        Objects.requireNonNull(runtimeRoot, "runtimeRoot");
        Objects.requireNonNull(rootfs, "rootfs");
        Objects.requireNonNull(scratchMib, "scratchMib");
        Objects.requireNonNull(guestUser, "guestUser");
        Objects.requireNonNull(workdir, "workdir");
        Objects.requireNonNull(network, "network");
        Objects.requireNonNull(home, "home");
        if (cpus < 1 || cpus > 255) {
            throw new IllegalArgumentException("cpus must be between 1 and 255, not " + cpus);
        }
        if (memoryMib < 64 || memoryMib > 1 << 20) {
            throw new IllegalArgumentException("memory must be at least 64 MiB (the kernel and initramfs need it), not " + memoryMib);
        }
        if (bootTimeout.isNegative() || bootTimeout.isZero()) {
            throw new IllegalArgumentException("boot timeout must be positive");
        }
        if (rwsizeMib.isPresent() && rwsizeMib.getAsInt() < 1) {
            throw new IllegalArgumentException("writable layer size must be at least 1 MiB");
        }
        if (maxProcs.isPresent() && maxProcs.getAsInt() < 1) {
            throw new IllegalArgumentException("process limit must be at least 1");
        }
        if (scratchMib.isPresent() && (scratchMib.getAsInt() < MIN_SCRATCH_MIB || scratchMib.getAsInt() > 16 << 20)) {
            throw new IllegalArgumentException("scratch disk size must be between " + MIN_SCRATCH_MIB + " MiB and 16 TiB, not "
                    + scratchMib.getAsInt() + " MiB");
        }
        if (!guestUser.matches(GUEST_USER)) {
            throw new IllegalArgumentException("'" + guestUser + "' is not a user: NAME, UID, NAME:GROUP or UID:GID");
        }
        if (workdir.isPresent() && !workdir.get().startsWith("/")) {
            throw new IllegalArgumentException("working directory must be an absolute path, not '" + workdir.get() + "'");
        }
    }

    /** The busybox userland as root, on tmpfs: what a VM was before root filesystem images. */
    public VmConfig(Image image, int cpus, int memoryMib, Accel accel, Duration bootTimeout, OptionalInt rwsizeMib,
            OptionalInt maxProcs, String qemuBinary, Path runtimeRoot) {
        this(image, cpus, memoryMib, accel, bootTimeout, rwsizeMib, maxProcs, qemuBinary, runtimeRoot, Optional.empty(),
                OptionalInt.empty(), DEFAULT_GUEST_USER, Optional.empty(), Network.NONE, Optional.empty());
    }

    /** Defaults: 1 CPU, 256 MiB, detected accelerator, 30 s boot timeout, QEMU from PATH, default runtime root, busybox root, root, no network. */
    public static VmConfig defaults(Image image) {
        return new VmConfig(image, DEFAULT_CPUS, DEFAULT_MEMORY_MIB, Accel.detect(), DEFAULT_BOOT_TIMEOUT,
                OptionalInt.empty(), OptionalInt.empty(), DEFAULT_QEMU, defaultRuntimeRoot(), Optional.empty(), OptionalInt.empty(),
                DEFAULT_GUEST_USER, Optional.empty(), Network.NONE, Optional.empty());
    }

    public VmConfig withImage(Image v) {
        return new VmConfig(v, cpus, memoryMib, accel, bootTimeout, rwsizeMib, maxProcs, qemuBinary, runtimeRoot, rootfs, scratchMib, guestUser, workdir, network, home);
    }

    public VmConfig withCpus(int v) {
        return new VmConfig(image, v, memoryMib, accel, bootTimeout, rwsizeMib, maxProcs, qemuBinary, runtimeRoot, rootfs, scratchMib, guestUser, workdir, network, home);
    }

    public VmConfig withMemoryMib(int v) {
        return new VmConfig(image, cpus, v, accel, bootTimeout, rwsizeMib, maxProcs, qemuBinary, runtimeRoot, rootfs, scratchMib, guestUser, workdir, network, home);
    }

    public VmConfig withAccel(Accel v) {
        return new VmConfig(image, cpus, memoryMib, v, bootTimeout, rwsizeMib, maxProcs, qemuBinary, runtimeRoot, rootfs, scratchMib, guestUser, workdir, network, home);
    }

    public VmConfig withBootTimeout(Duration v) {
        return new VmConfig(image, cpus, memoryMib, accel, v, rwsizeMib, maxProcs, qemuBinary, runtimeRoot, rootfs, scratchMib, guestUser, workdir, network, home);
    }

    public VmConfig withRwsizeMib(int v) {
        return new VmConfig(image, cpus, memoryMib, accel, bootTimeout, OptionalInt.of(v), maxProcs, qemuBinary, runtimeRoot, rootfs,
                scratchMib, guestUser, workdir, network, home);
    }

    public VmConfig withMaxProcs(int v) {
        return new VmConfig(image, cpus, memoryMib, accel, bootTimeout, rwsizeMib, OptionalInt.of(v), qemuBinary, runtimeRoot, rootfs,
                scratchMib, guestUser, workdir, network, home);
    }

    public VmConfig withQemuBinary(String v) {
        return new VmConfig(image, cpus, memoryMib, accel, bootTimeout, rwsizeMib, maxProcs, v, runtimeRoot, rootfs, scratchMib, guestUser, workdir, network, home);
    }

    public VmConfig withRuntimeRoot(Path v) {
        return new VmConfig(image, cpus, memoryMib, accel, bootTimeout, rwsizeMib, maxProcs, qemuBinary, v, rootfs, scratchMib, guestUser, workdir, network, home);
    }

    /** The root filesystem image ({@code --image NAME}, {@code --rootfs DIR}); null: the busybox userland. */
    public VmConfig withRootfs(RootfsImage v) {
        return new VmConfig(image, cpus, memoryMib, accel, bootTimeout, rwsizeMib, maxProcs, qemuBinary, runtimeRoot, Optional.ofNullable(v),
                scratchMib, guestUser, workdir, network, home);
    }

    /** A per-VM scratch disk of this size for the writable layer ({@code --scratch-disk}). */
    public VmConfig withScratchMib(int v) {
        return new VmConfig(image, cpus, memoryMib, accel, bootTimeout, rwsizeMib, maxProcs, qemuBinary, runtimeRoot, rootfs,
                OptionalInt.of(v), guestUser, workdir, network, home);
    }

    /** Who sessions run as ({@code --guest-user}); checked against the image by {@link GuestLogin#resolve}. */
    public VmConfig withGuestUser(String v) {
        return new VmConfig(image, cpus, memoryMib, accel, bootTimeout, rwsizeMib, maxProcs, qemuBinary, runtimeRoot, rootfs, scratchMib, v, workdir, network, home);
    }

    /** Where sessions start ({@code --workdir}); null: the user's home. */
    public VmConfig withWorkdir(String v) {
        return new VmConfig(image, cpus, memoryMib, accel, bootTimeout, rwsizeMib, maxProcs, qemuBinary, runtimeRoot, rootfs, scratchMib,
                guestUser, Optional.ofNullable(v), network, home);
    }

    /** A network device ({@link Network#OPEN}: NAT through QEMU's user networking) or none. */
    public VmConfig withNetwork(Network v) {
        return new VmConfig(image, cpus, memoryMib, accel, bootTimeout, rwsizeMib, maxProcs, qemuBinary, runtimeRoot, rootfs, scratchMib,
                guestUser, workdir, v, home);
    }

    /** A home disk slot ({@code --persist home}): a template's placeholder, or a user's file; null: none. */
    public VmConfig withHome(HomeDisk v) {
        return new VmConfig(image, cpus, memoryMib, accel, bootTimeout, rwsizeMib, maxProcs, qemuBinary, runtimeRoot, rootfs, scratchMib,
                guestUser, workdir, network, Optional.ofNullable(v));
    }

    /**
     * {@code $VMGATE_RUNTIME_DIR}, else {@code $XDG_RUNTIME_DIR/vmgate}, else {@code /run/vmgate} for
     * root, else {@code /tmp/vmgate-<uid>}.
     */
    public static Path defaultRuntimeRoot() {
        return defaultRuntimeRoot(System.getenv(), uid());
    }

    public static Path defaultRuntimeRoot(Map<String, String> env, long uid) {
        String v = env.get("VMGATE_RUNTIME_DIR");
        if (v != null && !v.isBlank()) {
            return Path.of(v);
        }
        String xdg = env.get("XDG_RUNTIME_DIR");
        if (xdg != null && xdg.startsWith("/")) {
            return Path.of(xdg, "vmgate");
        }
        return uid == 0 ? Path.of("/run/vmgate") : Path.of("/tmp/vmgate-" + uid);
    }

    /** This process's uid, or -1 when /proc does not say. */
    public static long uid() {
        try {
            return ((Number) Files.getAttribute(Path.of("/proc/self"), "unix:uid")).longValue();
        } catch (IOException | UnsupportedOperationException | IllegalArgumentException e) {
            return -1;
        }
    }
}
