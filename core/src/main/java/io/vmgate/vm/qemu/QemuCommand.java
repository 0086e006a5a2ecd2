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
 * The QEMU command line for one VM, in one place, because a VM restored from a template must
 * recreate exactly the devices of the VM that was saved: the three command lines (cold boot,
 * template, clone) differ only in where guest RAM lives ({@link GuestMemory}) and, for a clone,
 * {@code -incoming defer}, plus where a clone's scratch disk comes from ({@link #withScratchTemplate}).
 *
 * <p>Every chardev is a <em>client</em> socket: the host listens first and QEMU connects while it
 * starts, so nobody polls for a socket file. There is no default device, and no network device
 * unless the configuration asks for {@link Network#OPEN}.
 * Disks: the root filesystem image read-only (serial {@code vmgate-root}), the scratch disk
 * (serial {@code vmgate-scratch}), and the persistent home (serial {@code vmgate-home}), in that
 * order; the agent finds them by serial (docs/protocol.md).
 *
 * <p>Idle cost under TCG (measured, see docs/benchmarks.md): every guest timer interrupt wakes
 * QEMU's main loop and its vCPU thread, and under emulation each wakeup costs far more than on
 * hardware. So the guest gets a CPU with ARAT (high-resolution timers, tickless idle), no PIT
 * (QEMU's PIT, left in its reset state, fires 36 times a second into a masked IRQ 0), and a
 * kernel command line without the periodic housekeeping an idle sandbox does not need.
 *
 * @param tscKhz          the host TSC rate, for TCG guests (see {@link HostClock}); ignored under KVM
 * @param memory          where guest RAM lives: anonymous (cold boot), a template's shared file, or a clone's private copy of it
 * @param scratchTemplate a template's saved scratch disk, opened with {@code snapshot=on} (writes go to a
 *                        temporary file QEMU makes in $TMPDIR, the runtime directory, and deletes at once);
 *                        empty: the VM's own {@link ScratchDisk#FILE} in its runtime directory
 */
public record QemuCommand(Path qemu, VmConfig config, RuntimeDir dir, String vmId, boolean sandbox, OptionalLong tscKhz,
        GuestMemory memory, Optional<Path> scratchTemplate) {

    public static final String ROOT_SERIAL = "vmgate-root";
    public static final String SCRATCH_SERIAL = "vmgate-scratch";
    public static final String HOME_SERIAL = "vmgate-home";
    /** A template's empty home disk slot, in its runtime directory (see {@link io.vmgate.vm.HomeDisk}). */
    public static final String HOME_PLACEHOLDER = "home-placeholder.img";
    /**
     * What the agent configures for {@link Network#OPEN} ({@code vmgate.net=}): QEMU's user-mode
     * network, whose gateway is 10.0.2.2 and resolver 10.0.2.3.
     */
    static final String USER_NET = "10.0.2.15/24,10.0.2.2,10.0.2.3";

    public QemuCommand(Path qemu, VmConfig config, RuntimeDir dir, String vmId, boolean sandbox, OptionalLong tscKhz,
            GuestMemory memory) {
        this(qemu, config, dir, vmId, sandbox, tscKhz, memory, Optional.empty());
    }

    /** The virtio-serial port name the agent looks for (its default for {@code vmgate.port=}). */
    public static final String AGENT_PORT = "org.vmgate.agent";
    /** The memory backend's id: it names the RAM block in the saved state, so template and clone must agree. */
    static final String MEMORY_ID = "mem";
    /**
     * Under TCG the kernel looks for the virtio-mmio devices through ACPI (it has no
     * virtio_mmio.device= support), and takes its interrupts through the PIC and IOAPIC.
     */
    private static final String MACHINE_BASE = "microvm,pic=on,rtc=on,acpi=on";
    /**
     * For an idle guest under TCG: {@code tsc=reliable} (under host load the clocksource watchdog
     * sometimes declares the emulated TSC unstable at boot, and the guest falls back to jiffies and a
     * 250 Hz periodic tick for good), no soft-lockup watchdog (a timer every 4 s), no pressure-stall
     * averaging (every 2 s while anything ran), and no proactive compaction (kcompactd wakes every
     * 500 ms otherwise).
     */
    static final String IDLE_CMDLINE = "nowatchdog psi=0 sysctl.vm.compaction_proactiveness=0";

    /**
     * The exact command line vmgate would use to cold-boot a VM in {@code dir} (for benchmarks that
     * measure raw QEMU beside vmgate, and for debugging); {@link #asClone()} gives a restore's.
     */
    public static QemuCommand of(VmConfig config, RuntimeDir dir, String vmId) throws VmException {
        Path qemu = QemuBinary.resolve(config.qemuBinary());
        boolean sandbox = QemuBinary.sandboxSupported(qemu).join();
        OptionalLong tsc = config.accel() == Accel.TCG ? HostClock.tscKhz() : OptionalLong.empty();
        return new QemuCommand(qemu, config, dir, vmId, sandbox, tsc, GuestMemory.ANONYMOUS);
    }

    public QemuCommand withMemory(GuestMemory m) {
        return new QemuCommand(qemu, config, dir, vmId, sandbox, tscKhz, m, scratchTemplate);
    }

    public QemuCommand withScratchTemplate(Path savedScratch) {
        return new QemuCommand(qemu, config, dir, vmId, sandbox, tscKhz, memory, Optional.of(savedScratch));
    }

    /** The VM's own scratch disk (a cold boot's or a template's), in its runtime directory. */
    public Path scratchFile() {
        return dir.path().resolve(ScratchDisk.FILE);
    }

    /** A template's placeholder home disk, in its runtime directory (made by {@link QemuVm}). */
    public Path homePlaceholder() {
        return dir.path().resolve(HOME_PLACEHOLDER);
    }

    /** The command line of a VM restored from a template: the template's file on stdin, state later over QMP. */
    public QemuCommand asClone() {
        return withMemory(GuestMemory.CLONE);
    }

    /**
     * Without the PIT a TCG guest must know its TSC rate ({@code tsc_early_khz=}): then it
     * calibrates its local APIC timer against the TSC, and needs no PIT at all.
     */
    private boolean withoutPit() {
        return config.accel() == Accel.TCG && tscKhz.isPresent();
    }

    /** The {@code -machine} value, without the memory backend. */
    public String machine() {
        return MACHINE_BASE + (withoutPit() ? ",pit=off" : ",pit=on");
    }

    /** The {@code -cpu} value: the host's under KVM; under TCG QEMU's default model plus ARAT (see the class comment). */
    public String cpu() {
        return config.accel() == Accel.KVM ? "host" : "qemu64,+arat";
    }

    /** The kernel command line: the image's, plus clock and idle settings under TCG, plus the agent's settings. */
    public String kernelCmdline() {
        StringBuilder b = new StringBuilder(config.image().cmdline().strip());
        if (config.accel() == Accel.TCG && tscKhz.isPresent()) {
            // Skip the PIT calibration that fails under emulation (HostClock explains).
            b.append(" tsc_early_khz=").append(tscKhz.getAsLong()).append(" tsc=reliable");
        }
        b.append(' ').append(IDLE_CMDLINE);
        config.rwsizeMib().ifPresent(v -> b.append(" vmgate.rwsize=").append(v));
        config.maxProcs().ifPresent(v -> b.append(" vmgate.maxprocs=").append(v));
        config.rootfs().ifPresent(r -> b.append(" vmgate.root=").append(ROOT_SERIAL).append(" vmgate.rootfstype=").append(r.fsType()));
        config.scratchMib().ifPresent(v -> b.append(" vmgate.scratch=").append(SCRATCH_SERIAL));
        config.home().ifPresent(h -> b.append(" vmgate.home=").append(HOME_SERIAL));
        if (config.network() == Network.OPEN) {
            b.append(" vmgate.net=").append(USER_NET);
        }
        return b.toString();
    }

    public List<String> argv() {
        List<String> a = new ArrayList<>();
        a.add(qemu.toString());
        a.addAll(List.of("-name", "vmgate-" + vmId));
        boolean fileBacked = !(memory instanceof GuestMemory.Anonymous);
        a.addAll(List.of("-machine", machine() + (fileBacked ? ",memory-backend=" + MEMORY_ID : "")));
        a.addAll(List.of("-accel", config.accel().qemuName()));
        a.addAll(List.of("-cpu", cpu()));
        a.addAll(List.of("-smp", Integer.toString(config.cpus()), "-m", config.memoryMib() + "M"));
        switch (memory) {
            case GuestMemory.Anonymous m -> { }
            case GuestMemory.TemplateFile t -> a.addAll(List.of("-object", memoryBackend(escape(t.file()), true)));
            case GuestMemory.Clone c -> a.addAll(List.of("-object", memoryBackend("/proc/self/fd/0", false)));
        }
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
        config.home().ifPresent(h -> {
            // Read-write in the template too: a read-only disk is a feature bit the guest negotiated,
            // which a restore must find unchanged. The template's guest never writes its placeholder.
            Path file = h.file().orElse(homePlaceholder());
            a.addAll(List.of("-drive", "file=" + escape(file) + ",format=raw,if=none,id=home,discard=unmap",
                    "-device", "virtio-blk-device,drive=home,serial=" + HOME_SERIAL));
        });
        if (config.network() == Network.OPEN) {
            // NAT through QEMU (slirp): outbound only, nothing is forwarded in.
            a.addAll(List.of("-netdev", "user,id=net0", "-device", "virtio-net-device,netdev=net0"));
        }
        if (sandbox) {
            a.addAll(List.of("-sandbox", QemuBinary.SANDBOX));
        }
        if (memory instanceof GuestMemory.Clone) {
            a.addAll(List.of("-incoming", "defer"));
        }
        return List.copyOf(a);
    }

    private String memoryBackend(String path, boolean shared) {
        return "memory-backend-file,id=" + MEMORY_ID + ",size=" + config.memoryMib() + "M,mem-path=" + path
                + ",share=" + (shared ? "on" : "off");
    }

    /** QEMU option values escape a comma by doubling it. */
    static String escape(Path p) {
        return p.toString().replace(",", ",,");
    }
}
