package io.vmgate.vm.qemu;

import io.vmgate.image.ScratchDisk;
import io.vmgate.vm.Accel;
import io.vmgate.vm.Network;
import io.vmgate.vm.VmConfig;
import io.vmgate.vm.VmException;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.OptionalLong;

/**
 * The QEMU command line for one VM, in one place, because a snapshot restore must recreate
 * exactly the devices of the VM that was saved ({@link #withIncoming} adds only {@code -incoming},
 * {@link #withScratchTemplate} only changes where the scratch disk's bytes come from).
 *
 * <p>Every chardev is a <em>client</em> socket: the host listens first and QEMU connects while it
 * starts, so nobody polls for a socket file. There is no default device, and no network device
 * unless the configuration asks for {@link Network#OPEN}.
 * Disks: the root filesystem image read-only (serial {@code vmgate-root}), and the scratch disk
 * (serial {@code vmgate-scratch}); the agent finds them by serial (docs/protocol.md).
 *
 * @param tscKhz          the host TSC rate, for TCG guests (see {@link HostClock}); ignored under KVM
 * @param incoming        a migration source to restore from (e.g. {@code exec:cat state}), or empty for a cold boot
 * @param scratchTemplate a template's saved scratch disk, opened with {@code snapshot=on} (writes go to a
 *                        temporary file QEMU makes in $TMPDIR, the runtime directory, and deletes at once);
 *                        empty: the VM's own {@link ScratchDisk#FILE} in its runtime directory
 */
public record QemuCommand(Path qemu, VmConfig config, RuntimeDir dir, String vmId, boolean sandbox, OptionalLong tscKhz,
        Optional<String> incoming, Optional<Path> scratchTemplate) {

    public static final String ROOT_SERIAL = "vmgate-root";
    public static final String SCRATCH_SERIAL = "vmgate-scratch";

    public QemuCommand(Path qemu, VmConfig config, RuntimeDir dir, String vmId, boolean sandbox, OptionalLong tscKhz,
            Optional<String> incoming) {
        this(qemu, config, dir, vmId, sandbox, tscKhz, incoming, Optional.empty());
    }

    /** The virtio-serial port name the agent looks for (its default for {@code vmgate.port=}). */
    public static final String AGENT_PORT = "org.vmgate.agent";
    /**
     * Under TCG the microvm machine needs the legacy PIT, PIC and RTC or the kernel cannot
     * calibrate its clock, and ACPI so that the kernel (without virtio_mmio.device= support)
     * finds the virtio-mmio devices.
     */
    static final String MACHINE = "microvm,pit=on,pic=on,rtc=on,acpi=on";
    /**
     * What the agent configures for {@link Network#OPEN} ({@code vmgate.net=}): QEMU's user-mode
     * network, whose gateway is 10.0.2.2 and resolver 10.0.2.3.
     */
    static final String USER_NET = "10.0.2.15/24,10.0.2.2,10.0.2.3";

    /**
     * The exact command line vmgate would use for a VM in {@code dir} (for benchmarks that
     * measure raw QEMU beside vmgate, and for debugging).
     */
    public static QemuCommand of(VmConfig config, RuntimeDir dir, String vmId) throws VmException {
        Path qemu = QemuBinary.resolve(config.qemuBinary());
        boolean sandbox = QemuBinary.sandboxSupported(qemu).join();
        java.util.OptionalLong tsc = config.accel() == Accel.TCG ? HostClock.tscKhz() : java.util.OptionalLong.empty();
        return new QemuCommand(qemu, config, dir, vmId, sandbox, tsc, Optional.empty());
    }

    public QemuCommand withIncoming(String source) {
        return new QemuCommand(qemu, config, dir, vmId, sandbox, tscKhz, Optional.of(source), scratchTemplate);
    }

    public QemuCommand withScratchTemplate(Path savedScratch) {
        return new QemuCommand(qemu, config, dir, vmId, sandbox, tscKhz, incoming, Optional.of(savedScratch));
    }

    /** The VM's own scratch disk (a cold boot's), in its runtime directory. */
    public Path scratchFile() {
        return dir.path().resolve(ScratchDisk.FILE);
    }

    /** The kernel command line: the image's, plus clock hints under TCG, plus the agent's settings. */
    public String kernelCmdline() {
        StringBuilder b = new StringBuilder(config.image().cmdline().strip());
        if (config.accel() == Accel.TCG && tscKhz.isPresent()) {
            // Skip the PIT calibration that fails under emulation (HostClock explains).
            b.append(" tsc_early_khz=").append(tscKhz.getAsLong());
        }
        config.rwsizeMib().ifPresent(v -> b.append(" vmgate.rwsize=").append(v));
        config.maxProcs().ifPresent(v -> b.append(" vmgate.maxprocs=").append(v));
        config.rootfs().ifPresent(r -> b.append(" vmgate.root=").append(ROOT_SERIAL).append(" vmgate.rootfstype=").append(r.fsType()));
        config.scratchMib().ifPresent(v -> b.append(" vmgate.scratch=").append(SCRATCH_SERIAL));
        if (config.network() == Network.OPEN) {
            b.append(" vmgate.net=").append(USER_NET);
        }
        return b.toString();
    }

    public List<String> argv() {
        List<String> a = new ArrayList<>();
        a.add(qemu.toString());
        a.addAll(List.of("-name", "vmgate-" + vmId));
        a.addAll(List.of("-machine", MACHINE));
        a.addAll(List.of("-accel", config.accel().qemuName()));
        if (config.accel() == Accel.KVM) {
            a.addAll(List.of("-cpu", "host"));
        }
        a.addAll(List.of("-smp", Integer.toString(config.cpus()), "-m", config.memoryMib() + "M"));
        a.addAll(List.of("-nodefaults", "-no-user-config", "-nographic", "-no-reboot"));
        a.addAll(List.of("-kernel", config.image().kernel().toString(), "-initrd", config.image().initrd().toString(),
                "-append", kernelCmdline()));
        // Serial console to a host socket (not a file): the host keeps a bounded tail, so a guest
        // writing to /dev/ttyS0 forever cannot fill the host's disk.
        a.addAll(List.of("-chardev", "socket,id=console,path=" + escape(dir.consoleSocket()) + ",server=off",
                "-serial", "chardev:console"));
        a.addAll(List.of("-chardev", "socket,id=agent,path=" + escape(dir.agentSocket()) + ",server=off",
                "-device", "virtio-serial-device",
                "-device", "virtserialport,chardev=agent,name=" + AGENT_PORT));
        a.addAll(List.of("-chardev", "socket,id=qmp,path=" + escape(dir.qmpSocket()) + ",server=off",
                "-mon", "chardev=qmp,mode=control"));
        // The root filesystem: one file shared read-only by every VM of the image, through the host's page cache.
        config.rootfs().ifPresent(r -> a.addAll(List.of(
                "-drive", "file=" + escape(r.disk()) + ",format=raw,if=none,id=root,readonly=on",
                "-device", "virtio-blk-device,drive=root,serial=" + ROOT_SERIAL)));
        if (config.scratchMib().isPresent()) {
            String drive = scratchTemplate.map(t -> "file=" + escape(t) + ",snapshot=on").orElse("file=" + escape(scratchFile()));
            a.addAll(List.of("-drive", drive + ",format=raw,if=none,id=scratch,discard=unmap",
                    "-device", "virtio-blk-device,drive=scratch,serial=" + SCRATCH_SERIAL));
        }
        if (config.network() == Network.OPEN) {
            // NAT through QEMU (slirp): outbound only, nothing is forwarded in.
            a.addAll(List.of("-netdev", "user,id=net0", "-device", "virtio-net-device,netdev=net0"));
        }
        if (sandbox) {
            a.addAll(List.of("-sandbox", QemuBinary.SANDBOX));
        }
        incoming.ifPresent(src -> a.addAll(List.of("-incoming", src)));
        return List.copyOf(a);
    }

    /** QEMU option values escape a comma by doubling it. */
    static String escape(Path p) {
        return p.toString().replace(",", ",,");
    }
}
