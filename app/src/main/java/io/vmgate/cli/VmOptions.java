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

    @Option(names = "--image", paramLabel = "NAME|DIR",
            description = "An image by name (`vmgate image ls`; `vmgate image build debian` makes `debian`) or directory (default: the built-in busybox image).")
    String image;

    @Option(names = "--rootfs", paramLabel = "DIR",
            description = "A root filesystem tree on this host as the guest's root (read-only, never modified; made into an image on first use).")
    Path rootfs;

    @Option(names = "--guest-user", paramLabel = "USER",
            description = "The guest user commands run as (NAME, UID, NAME:GROUP or UID:GID), from the image's /etc/passwd "
                    + "(default: the image's own user, an OCI image's User, else root).")
    String guestUser;

    @Option(names = "--workdir", paramLabel = "DIR", description = "Where commands start in the guest (default: the guest user's home).")
    String workdir;

    @Option(names = "--scratch-disk", paramLabel = "SIZE",
            description = "Give each VM its own sparse disk of SIZE (e.g. 4G, 512M) for its writable layer instead of guest RAM; deleted with the VM.")
    String scratchDisk;

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

    @Option(names = "--egress", paramLabel = "RULE,...", split = ",",
            description = "Hosts the guest may connect to, through an HTTP proxy in the guest (http_proxy is set): HOST[:PORT], "
                    + "*.DOMAIN[:PORT], IP[/BITS][:PORT]; no port means 443 and 80. Default: no network at all.")
    java.util.List<String> egress = new java.util.ArrayList<>();

    @Option(names = "--egress-max-connections", paramLabel = "N", description = "Egress connections at once per VM (default: 32).")
    Integer egressMaxConnections;

    @Option(names = "--egress-max-bytes", paramLabel = "SIZE", description = "Egress bytes each way per VM, e.g. 500M (default: no limit).")
    String egressMaxBytes;

    @Option(names = "--net", paramLabel = "none|open", defaultValue = "none",
            description = "open: full outbound network through NAT (no allowlist; never together with --egress). Default: ${DEFAULT-VALUE}.")
    String net;

    @Option(names = "--no-snapshot", description = "Cold-boot every VM instead of restoring the image's snapshot template.")
    boolean noSnapshot;

    /** A size in MiB from {@code 512M}, {@code 4G}, {@code 1T} or a plain number of MiB. */
    static int mib(String size, String option) {
        var m = java.util.regex.Pattern.compile("(\\d+)\\s*([MmGgTt]?)(i?[Bb])?").matcher(size.strip());
        if (!m.matches()) {
            throw new IllegalArgumentException(option + " wants a size like 512M, 4G or 1T, not '" + size + "'");
        }
        long n = Long.parseLong(m.group(1));
        long mib = switch (m.group(2).toUpperCase(Locale.ROOT)) {
            case "G" -> n << 10;
            case "T" -> n << 20;
            default -> n;
        };
        if (mib > Integer.MAX_VALUE) {
            throw new IllegalArgumentException(option + " " + size + " is too large");
        }
        return (int) mib;
    }

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
        SandboxOptions.Builder b = SandboxOptions.builder().image(image).rootfs(rootfs).guestUser(guestUser).workdir(workdir)
                .cpus(cpus).memoryMib(memoryMib).accelerator(a)
                .bootTimeout(Duration.ofMillis(Math.round(bootTimeoutSeconds * 1000))).snapshot(!noSnapshot);
        if (writableMib != null) {
            b.writableMib(writableMib);
        }
        if (maxProcs != null) {
            b.maxProcs(maxProcs);
        }
        if (scratchDisk != null) {
            b.scratchDiskMib(mib(scratchDisk, "--scratch-disk"));
        }
        b.egress(egress.stream().map(String::strip).filter(r -> !r.isEmpty()).toList());
        if (egressMaxConnections != null) {
            b.egressMaxConnections(egressMaxConnections);
        }
        if (egressMaxBytes != null) {
            b.egressMaxBytes((long) mib(egressMaxBytes, "--egress-max-bytes") << 20);
        }
        switch (net.strip().toLowerCase(Locale.ROOT)) {
            case "none" -> { }
            case "open" -> b.openNetwork(true);
            default -> throw new IllegalArgumentException("--net must be none or open, not '" + net + "'");
        }
        return b.build();
    }
}
