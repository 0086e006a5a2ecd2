package io.vmgate.image;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;

class KernelModulesTest {
    static final String DEP = """
            kernel/fs/overlayfs/overlay.ko:
            kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
            kernel/drivers/virtio/virtio_ring.ko:
            kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
            kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
            kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
            kernel/drivers/char/hw_random/virtio-rng.ko.xz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
            kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
            kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
            kernel/net/core/failover.ko:
            kernel/a.ko: kernel/b.ko
            kernel/b.ko: kernel/a.ko
            kernel/orphan.ko: kernel/missing.ko
            """;

    @Test
    void dependenciesComeFirstAndEachModuleOnce() throws ImageException {
        assertThat(KernelModules.resolve(DEP, "", ImagePlan.MODULES, "fixture")).containsExactly(
                "kernel/drivers/virtio/virtio_ring.ko", "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_mmio.ko", "kernel/drivers/char/virtio_console.ko",
                "kernel/fs/overlayfs/overlay.ko");
    }

    @Test
    void builtinModulesAreSkippedWhetherWantedOrDependedOn() throws ImageException {
        String builtin = "kernel/drivers/virtio/virtio_ring.ko\nkernel/fs/overlayfs/overlay.ko\n";
        assertThat(KernelModules.resolve(DEP, builtin, ImagePlan.MODULES, "fixture")).containsExactly(
                "kernel/drivers/virtio/virtio.ko", "kernel/drivers/virtio/virtio_mmio.ko",
                "kernel/drivers/char/virtio_console.ko");
    }

    @Test
    void dashesAndUnderscoresAreTheSameAndCompressedNamesResolve() throws ImageException {
        assertThat(KernelModules.resolve(DEP, "", List.of("virtio_rng"), "fixture"))
                .endsWith("kernel/drivers/char/hw_random/virtio-rng.ko.xz");
    }

    @Test
    void errorsNameTheProblem() {
        assertThatThrownBy(() -> KernelModules.resolve(DEP, "", List.of("nosuch"), "/lib/modules/x"))
                .isInstanceOf(ImageException.class).hasMessageContaining("nosuch")
                .hasMessageContaining("apt-get install --reinstall linux-image-cloud-amd64");
        assertThatThrownBy(() -> KernelModules.resolve(DEP, "", List.of("a"), "fixture"))
                .isInstanceOf(ImageException.class).hasMessageContaining("cycle");
        assertThatThrownBy(() -> KernelModules.resolve(DEP, "", List.of("orphan"), "fixture"))
                .isInstanceOf(ImageException.class).hasMessageContaining("kernel/missing.ko");
    }

    @Test
    void missingModulesDirSaysWhichPackage(@org.junit.jupiter.api.io.TempDir Path tmp) {
        assertThatThrownBy(() -> KernelModules.resolve(tmp.resolve("6.1.0-1-cloud-amd64"), ImagePlan.MODULES))
                .isInstanceOf(ImageException.class).hasMessageContaining("apt-get install linux-image-cloud-amd64");
    }

    @Test
    void resolvesOnThisHostsKernel() throws Exception {
        Path modules = Path.of("/lib/modules");
        assumeTrue(Files.isDirectory(modules), "no /lib/modules");
        ImageSources.Kernel k;
        try {
            k = ImageSources.debian().newestKernel();
        } catch (ImageException e) {
            assumeTrue(false, "no cloud kernel installed");
            return;
        }
        Path dir = modules.resolve(k.release());
        List<String> order = KernelModules.resolve(dir, ImagePlan.MODULES);
        List<String> names = order.stream().map(KernelModules::moduleName).toList();
        assertThat(names).contains("virtio_mmio", "virtio_console", "overlay");
        assertThat(names.indexOf("virtio_ring")).isLessThan(names.indexOf("virtio"));
        assertThat(names.indexOf("virtio")).isLessThan(names.indexOf("virtio_mmio"));
        assertThat(names.indexOf("virtio")).isLessThan(names.indexOf("virtio_console"));
        for (String m : order) {
            assertThat(dir.resolve(m)).isRegularFile();
        }
    }
}
