package io.vmgate.vm.qemu;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.vmgate.image.RootfsImage;
import io.vmgate.vm.Accel;
import io.vmgate.vm.VmConfig;
import java.nio.file.Path;
import java.time.Instant;
import java.util.Optional;
import org.junit.jupiter.api.Test;

/** A changed image never meets an old template: what goes into the key, and what does not. */
class SnapshotsKeyTest {
    static RootfsImage rootfs(char id) {
        return new RootfsImage(String.valueOf(id).repeat(64), Path.of("/cache/rootfs/" + id), "x", Instant.EPOCH, 1, 1, Optional.empty());
    }

    static String key(VmConfig c) throws Exception {
        return new Snapshots(c, Path.of("/nonexistent"), false).key();
    }

    @Test
    void theRootImageAndTheScratchDiskAreInTheKeyTheUserIsNot() throws Exception {
        assumeTrue(QemuBinary.find(VmConfig.DEFAULT_QEMU).isPresent(), "QEMU not installed");
        VmConfig busybox = QemuCommandTest.config(Accel.TCG);
        VmConfig a = busybox.withRootfs(rootfs('a'));
        assertThat(key(busybox)).isNotEqualTo(key(a));
        assertThat(key(a)).isNotEqualTo(key(busybox.withRootfs(rootfs('b'))));
        assertThat(key(a)).isNotEqualTo(key(a.withScratchMib(1024)));
        assertThat(key(a.withScratchMib(1024))).isNotEqualTo(key(a.withScratchMib(2048)));
        assertThat(key(a)).isEqualTo(key(a.withGuestUser("alice").withWorkdir("/srv")));
        assertThat(key(a)).isEqualTo(key(busybox.withRootfs(rootfs('a'))));
    }
}
