package io.vmgate.vm.qemu;

import io.vmgate.vm.Accel;
import io.vmgate.vm.VmConfig;
import io.vmgate.vm.VmException;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.vmgate.image.Image;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import java.util.OptionalInt;
import java.util.OptionalLong;
import org.junit.jupiter.api.Test;

class QemuCommandTest {
    static final Image IMAGE = new Image(Path.of("/cache/img"), Path.of("/cache/img/vmlinux"), Path.of("/cache/img/initrd.img"),
            "6.1.0-9-cloud-amd64", "console=ttyS0 quiet panic=-1", "abc");
    static final RuntimeDir DIR = new RuntimeDir(Path.of("/run/vmgate/vm1"));

    static VmConfig config(Accel accel) {
        return new VmConfig(IMAGE, 1, 256, accel, Duration.ofSeconds(30), OptionalInt.empty(), OptionalInt.empty(),
                "qemu-system-x86_64", Path.of("/run/vmgate"));
    }

    static String after(List<String> argv, String option) {
        int i = argv.indexOf(option);
        assertThat(i).as(option).isNotNegative();
        return argv.get(i + 1);
    }

    @Test
    void tcgColdBoot() {
        QemuCommand c = new QemuCommand(Path.of("/usr/bin/qemu-system-x86_64"), config(Accel.TCG), DIR, "vm1", true,
                OptionalLong.of(2_299_998), GuestMemory.ANONYMOUS);
        List<String> a = c.argv();
        assertThat(a.getFirst()).isEqualTo("/usr/bin/qemu-system-x86_64");
        assertThat(after(a, "-machine")).as("no PIT: the guest knows its TSC rate").isEqualTo("microvm,pic=on,rtc=on,acpi=on,pit=off");
        assertThat(after(a, "-accel")).isEqualTo("tcg");
        assertThat(after(a, "-cpu")).as("ARAT: tickless idle").isEqualTo("qemu64,+arat");
        assertThat(after(a, "-smp")).isEqualTo("1");
        assertThat(after(a, "-m")).isEqualTo("256M");
        assertThat(a).contains("-nodefaults", "-no-user-config", "-nographic", "-no-reboot");
        assertThat(after(a, "-kernel")).isEqualTo("/cache/img/vmlinux");
        assertThat(after(a, "-initrd")).isEqualTo("/cache/img/initrd.img");
        assertThat(after(a, "-append")).isEqualTo("console=ttyS0 quiet panic=-1 tsc_early_khz=2299998 tsc=reliable"
                + " nowatchdog psi=0 sysctl.vm.compaction_proactiveness=0");
        assertThat(a).containsSubsequence("-chardev", "socket,id=console,path=/run/vmgate/vm1/console.sock,server=off",
                "-serial", "chardev:console");
        assertThat(a).containsSubsequence("-chardev", "socket,id=agent,path=/run/vmgate/vm1/agent.sock,server=off",
                "-device", "virtio-serial-device", "-device", "virtserialport,chardev=agent,name=org.vmgate.agent");
        assertThat(a).containsSubsequence("-chardev", "socket,id=qmp,path=/run/vmgate/vm1/qmp.sock,server=off",
                "-mon", "chardev=qmp,mode=control");
        assertThat(after(a, "-sandbox")).isEqualTo("on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
        assertThat(String.join(" ", a)).doesNotContain("-netdev", "-nic", "virtio-net", "-incoming", "server=on", "memory-backend");
    }

    @Test
    void kvmUsesTheHostCpuAndNeedsNoClockHint() {
        QemuCommand c = new QemuCommand(Path.of("/q"), config(Accel.KVM).withCpus(2).withMemoryMib(512), DIR, "vm1", false,
                OptionalLong.of(2_299_998), GuestMemory.ANONYMOUS);
        List<String> a = c.argv();
        assertThat(after(a, "-accel")).isEqualTo("kvm");
        assertThat(after(a, "-machine")).isEqualTo("microvm,pic=on,rtc=on,acpi=on,pit=on");
        assertThat(after(a, "-cpu")).isEqualTo("host");
        assertThat(after(a, "-smp")).isEqualTo("2");
        assertThat(after(a, "-m")).isEqualTo("512M");
        assertThat(after(a, "-append")).doesNotContain("tsc_early_khz");
        assertThat(a).doesNotContain("-sandbox");
    }

    @Test
    void anOpenNetworkIsOneUserModeNicThatTheAgentConfigures() {
        VmConfig cfg = config(Accel.TCG).withNetwork(io.vmgate.vm.Network.OPEN);
        QemuCommand c = new QemuCommand(Path.of("/q"), cfg, DIR, "vm1", true, OptionalLong.empty(), GuestMemory.ANONYMOUS);
        assertThat(c.argv()).containsSubsequence("-netdev", "user,id=net0", "-device", "virtio-net-device,netdev=net0");
        assertThat(String.join(" ", c.argv())).doesNotContain("hostfwd", "guestfwd"); // nothing comes in
        assertThat(c.kernelCmdline()).endsWith(" vmgate.net=10.0.2.15/24,10.0.2.2,10.0.2.3");
    }

    @Test
    void agentSettingsGoOnTheKernelCommandLine() {
        VmConfig cfg = config(Accel.TCG).withRwsizeMib(64).withMaxProcs(100);
        QemuCommand c = new QemuCommand(Path.of("/q"), cfg, DIR, "vm1", true, OptionalLong.empty(), GuestMemory.ANONYMOUS);
        assertThat(c.kernelCmdline()).isEqualTo("console=ttyS0 quiet panic=-1 nowatchdog psi=0 sysctl.vm.compaction_proactiveness=0"
                + " vmgate.rwsize=64 vmgate.maxprocs=100");
        assertThat(c.machine()).as("without a known TSC rate the guest calibrates against the PIT").endsWith(",pit=on");
    }

    @Test
    void templateAndCloneDifferFromAColdBootOnlyInWhereGuestRamLives() {
        QemuCommand cold = new QemuCommand(Path.of("/q"), config(Accel.TCG), DIR, "vm1", true, OptionalLong.of(1), GuestMemory.ANONYMOUS);
        QemuCommand template = cold.withMemory(new GuestMemory.TemplateFile(Path.of("/cache/t,1/memory-ab")));
        QemuCommand clone = cold.asClone();
        assertThat(after(template.argv(), "-machine")).isEqualTo(cold.machine() + ",memory-backend=mem");
        assertThat(after(template.argv(), "-object")).isEqualTo("memory-backend-file,id=mem,size=256M,mem-path=/cache/t,,1/memory-ab,share=on");
        assertThat(after(clone.argv(), "-machine")).isEqualTo(cold.machine() + ",memory-backend=mem");
        assertThat(after(clone.argv(), "-object")).as("a private copy-on-write mapping of the file on stdin")
                .isEqualTo("memory-backend-file,id=mem,size=256M,mem-path=/proc/self/fd/0,share=off");
        assertThat(clone.argv().subList(clone.argv().size() - 2, clone.argv().size())).containsExactly("-incoming", "defer");
        assertThat(template.argv()).doesNotContain("-incoming");
        // Everything else is the cold boot's, in the same order.
        List<String> rest = new java.util.ArrayList<>(clone.argv());
        rest.subList(rest.size() - 2, rest.size()).clear();
        int obj = rest.indexOf("-object");
        rest.subList(obj, obj + 2).clear();
        rest.set(rest.indexOf("-machine") + 1, cold.machine());
        assertThat(rest).isEqualTo(cold.argv());
    }

    static final io.vmgate.image.RootfsImage ROOTFS = new io.vmgate.image.RootfsImage("e".repeat(64), Path.of("/cache/rootfs/e,e"),
            "debian:bookworm", java.time.Instant.EPOCH, 1, 1, Optional.empty());

    @Test
    void aRootFilesystemImageIsAReadOnlyDiskTheAgentFindsBySerial() {
        QemuCommand c = new QemuCommand(Path.of("/q"), config(Accel.TCG).withRootfs(ROOTFS), DIR, "vm1", true, OptionalLong.empty(),
                GuestMemory.ANONYMOUS);
        assertThat(c.kernelCmdline()).isEqualTo("console=ttyS0 quiet panic=-1 " + QemuCommand.IDLE_CMDLINE
                + " vmgate.root=vmgate-root vmgate.rootfstype=ext4");
        assertThat(c.argv()).containsSubsequence("-drive", "file=/cache/rootfs/e,,e/rootfs.ext4,format=raw,if=none,id=root,readonly=on",
                "-device", "virtio-blk-device,drive=root,serial=vmgate-root");
        assertThat(c.argv()).doesNotContain("virtio-blk-device,drive=scratch,serial=vmgate-scratch");
    }

    @Test
    void aScratchDiskIsTheVmsOwnFileOrATemplatesThroughAnOverlay() {
        VmConfig cfg = config(Accel.TCG).withRootfs(ROOTFS).withScratchMib(4096);
        QemuCommand cold = new QemuCommand(Path.of("/q"), cfg, DIR, "vm1", true, OptionalLong.empty(), GuestMemory.ANONYMOUS);
        assertThat(cold.kernelCmdline()).endsWith(" vmgate.scratch=vmgate-scratch");
        assertThat(cold.scratchFile()).isEqualTo(Path.of("/run/vmgate/vm1/scratch.ext4"));
        assertThat(cold.argv()).containsSubsequence("-drive", "file=/run/vmgate/vm1/scratch.ext4,format=raw,if=none,id=scratch,discard=unmap",
                "-device", "virtio-blk-device,drive=scratch,serial=vmgate-scratch");
        QemuCommand warm = cold.withScratchTemplate(Path.of("/cache/templates/k/scratch-ab.ext4"));
        assertThat(warm.argv()).contains("file=/cache/templates/k/scratch-ab.ext4,snapshot=on,format=raw,if=none,id=scratch,discard=unmap");
        // the same devices in the same order: only where the scratch bytes come from differs
        List<String> c = new java.util.ArrayList<>(cold.argv()), w = new java.util.ArrayList<>(warm.argv());
        assertThat(w.size()).isEqualTo(c.size());
        for (int i = 0; i < c.size(); i++) {
            if (!c.get(i).startsWith("file=/run/vmgate/vm1/scratch.ext4")) {
                assertThat(w.get(i)).isEqualTo(c.get(i));
            }
        }
        assertThatThrownBy(() -> cfg.withScratchMib(8)).isInstanceOf(IllegalArgumentException.class).hasMessageContaining("between 64 MiB");
    }

    @Test
    void aHomeSlotIsTheLastDiskAndTheSameDeviceWithAPlaceholderOrAUsersFile() {
        io.vmgate.vm.HomeDisk slot = io.vmgate.vm.HomeDisk.placeholder(1L << 30);
        VmConfig template = config(Accel.TCG).withRootfs(ROOTFS).withScratchMib(4096).withHome(slot);
        QemuCommand t = new QemuCommand(Path.of("/q"), template, DIR, "vm1", true, OptionalLong.empty(), GuestMemory.ANONYMOUS);
        assertThat(t.kernelCmdline()).endsWith(" vmgate.scratch=vmgate-scratch vmgate.home=vmgate-home");
        assertThat(t.argv()).containsSubsequence("virtio-blk-device,drive=root,serial=vmgate-root",
                "virtio-blk-device,drive=scratch,serial=vmgate-scratch",
                "-drive", "file=/run/vmgate/vm1/home-placeholder.img,format=raw,if=none,id=home,discard=unmap",
                "-device", "virtio-blk-device,drive=home,serial=vmgate-home");
        QemuCommand clone = new QemuCommand(Path.of("/q"), template.withHome(slot.with(Path.of("/state/homes/ab,c/home.ext4"))), DIR,
                "vm1", true, OptionalLong.empty(), GuestMemory.ANONYMOUS);
        assertThat(clone.kernelCmdline()).isEqualTo(t.kernelCmdline());
        List<String> a = t.argv(), b = clone.argv();
        assertThat(b).hasSameSizeAs(a);
        for (int i = 0; i < a.size(); i++) {
            // read-write both times (read-only is a feature the guest negotiated): only the file differs
            assertThat(b.get(i)).isEqualTo(a.get(i).replace("/run/vmgate/vm1/home-placeholder.img", "/state/homes/ab,,c/home.ext4"));
        }
        QemuCommand none = new QemuCommand(Path.of("/q"), config(Accel.TCG), DIR, "vm1", true, OptionalLong.empty(), GuestMemory.ANONYMOUS);
        assertThat(none.kernelCmdline()).doesNotContain("vmgate.home");
        assertThat(String.join(" ", none.argv())).doesNotContain("vmgate-home");
        assertThatThrownBy(() -> io.vmgate.vm.HomeDisk.placeholder(10L << 20)).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> io.vmgate.vm.HomeDisk.placeholder((64L << 20) + 1)).isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void commasInPathsAreEscapedForQemu() {
        RuntimeDir odd = new RuntimeDir(Path.of("/tmp/a,b/vm1"));
        QemuCommand c = new QemuCommand(Path.of("/q"), config(Accel.TCG), odd, "vm1", false, OptionalLong.empty(), GuestMemory.ANONYMOUS);
        assertThat(c.argv()).contains("socket,id=agent,path=/tmp/a,,b/vm1/agent.sock,server=off");
    }

    @Test
    void configValidatesItsNumbers() {
        assertThatThrownBy(() -> config(Accel.TCG).withCpus(0)).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> config(Accel.TCG).withMemoryMib(16)).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> config(Accel.TCG).withBootTimeout(Duration.ZERO)).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> config(Accel.TCG).withRwsizeMib(0)).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> config(Accel.TCG).withMaxProcs(-1)).isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void missingQemuSaysWhichPackage() {
        assertThatThrownBy(() -> QemuBinary.resolve("qemu-system-nonexistent-arch"))
                .isInstanceOf(VmException.class).hasMessageContaining("apt-get install qemu-system-x86");
        assertThatThrownBy(() -> QemuBinary.resolve("/nonexistent/qemu"))
                .isInstanceOf(VmException.class).hasMessageContaining("/nonexistent/qemu");
    }
}
