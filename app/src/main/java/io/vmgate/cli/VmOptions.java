package io.vmgate.cli;

import io.vmgate.sandbox.SandboxOptions;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Locale;
import picocli.CommandLine.Option;

/** The sandbox options shared by {@code run}, {@code serve} and {@code image warm}. */
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

    /**
     * The options as the Sandbox API takes them.
     *
     * @throws IllegalArgumentException naming the option that is out of range
     */
    SandboxOptions options() {
        if (!(bootTimeoutSeconds > 0)) {
            throw new IllegalArgumentException("--boot-timeout must be positive");
        }
        SandboxOptions.Accelerator a;
        try {
            a = SandboxOptions.Accelerator.valueOf(accel.strip().toUpperCase(Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("--accel must be auto, kvm or tcg, not '" + accel + "'");
        }
        SandboxOptions.Builder b = SandboxOptions.builder().image(image).cpus(cpus).memoryMib(memoryMib).accelerator(a)
                .bootTimeout(Duration.ofMillis(Math.round(bootTimeoutSeconds * 1000))).snapshot(!noSnapshot);
        if (writableMib != null) {
            b.writableMib(writableMib);
        }
        if (maxProcs != null) {
            b.maxProcs(maxProcs);
        }
        return b.build();
    }
}
