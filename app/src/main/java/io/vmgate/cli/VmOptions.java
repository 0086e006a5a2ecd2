package io.vmgate.cli;

import io.vmgate.image.Image;
import io.vmgate.image.ImageException;
import io.vmgate.image.ImageStore;
import io.vmgate.vm.Accel;
import io.vmgate.vm.qemu.QemuVm;
import io.vmgate.vm.qemu.Snapshots;
import io.vmgate.vm.VmConfig;
import io.vmgate.vm.VmException;
import io.vmgate.vm.VmLauncher;
import java.nio.file.Path;
import java.time.Duration;
import picocli.CommandLine.Option;

/** The VM options shared by {@code run} and {@code serve}. */
final class VmOptions {
    @Option(names = "--cpus", paramLabel = "N", description = "Virtual CPUs per VM (default: ${DEFAULT-VALUE}).", defaultValue = "1")
    int cpus;

    @Option(names = "--memory", paramLabel = "MIB", description = "Guest memory in MiB (default: ${DEFAULT-VALUE}).", defaultValue = "256")
    int memoryMib;

    @Option(names = "--image", paramLabel = "DIR", description = "Image directory with vmlinuz and initrd.img (default: the built-in image).")
    Path image;

    @Option(names = "--accel", paramLabel = "auto|kvm|tcg", defaultValue = "auto",
            description = "Accelerator; auto uses KVM only when the CPU shows vmx/svm and /dev/kvm is usable (default: ${DEFAULT-VALUE}).")
    String accel;

    @Option(names = "--boot-timeout", paramLabel = "SEC", defaultValue = "30",
            description = "Give up when the guest agent has not greeted within SEC seconds (default: ${DEFAULT-VALUE}).")
    double bootTimeoutSeconds;

    @Option(names = "--writable-size", paramLabel = "MIB",
            description = "Size of the guest's writable layer; writes beyond it fail with ENOSPC (default: half the guest memory).")
    Integer writableMib;

    @Option(names = "--max-procs", paramLabel = "N", description = "Limit on processes/threads inside the guest.")
    Integer maxProcs;

    @Option(names = "--no-snapshot", description = "Cold-boot every VM instead of restoring the image's snapshot template.")
    boolean noSnapshot;

    /** Resolves the image (building the default one if missing); {@link QemuVm#launcher} reaps what crashed runs left. */
    VmConfig config() throws VmException {
        if (bootTimeoutSeconds <= 0) {
            throw new VmException("--boot-timeout must be positive");
        }
        Image img;
        try {
            img = image != null ? Image.load(image) : ImageStore.atDefaultLocation().defaultImage();
        } catch (ImageException e) {
            throw new VmException(e.getMessage(), e);
        }
        Accel a;
        try {
            a = "auto".equalsIgnoreCase(accel) ? Accel.detect() : Accel.parse(accel);
        } catch (IllegalArgumentException e) {
            throw new VmException("--accel must be auto, kvm or tcg, not '" + accel + "'");
        }
        VmConfig c;
        try {
            c = VmConfig.defaults(img).withCpus(cpus).withMemoryMib(memoryMib).withAccel(a)
                    .withBootTimeout(Duration.ofMillis(Math.round(bootTimeoutSeconds * 1000)));
            if (writableMib != null) {
                c = c.withRwsizeMib(writableMib);
            }
            if (maxProcs != null) {
                c = c.withMaxProcs(maxProcs);
            }
        } catch (IllegalArgumentException e) {
            throw new VmException(e.getMessage(), e);
        }
        return c;
    }

    /** Restores from the snapshot template (built on first need) unless --no-snapshot. */
    VmLauncher launcher(boolean longRunning) throws VmException {
        return launcher(config(), noSnapshot, longRunning);
    }

    static VmLauncher launcher(VmConfig c, boolean noSnapshot, boolean longRunning) {
        VmLauncher cold = QemuVm.launcher(c);
        return noSnapshot ? cold : snapshots(c, longRunning);
    }

    static Snapshots snapshots(VmConfig c, boolean longRunning) {
        return new Snapshots(c, ImageStore.defaultRoot().resolve("templates"), longRunning);
    }
}
