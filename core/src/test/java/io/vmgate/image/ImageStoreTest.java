package io.vmgate.image;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.stream.Stream;
import java.util.zip.GZIPInputStream;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The cache: keys follow inputs, unchanged inputs reuse the image, builds are atomic. Uses fake kernels. */
class ImageStoreTest {
    static final String RELEASE = "6.1.0-9-cloud-amd64";

    @TempDir
    Path tmp;
    Path boot, modules, agent, cache;
    ImageSources sources;

    @BeforeEach
    void hostTree() throws IOException {
        assumeTrue(Files.isExecutable(Path.of("/bin/busybox")), "busybox-static not installed");
        assumeTrue(Files.isExecutable(Path.of("/usr/lib/openssh/sftp-server")), "openssh-sftp-server not installed");
        boot = Files.createDirectories(tmp.resolve("boot"));
        modules = Files.createDirectories(tmp.resolve("modules"));
        fakeKernel(RELEASE);
        Path bin = Files.createDirectories(tmp.resolve("bin"));
        Files.copy(Path.of("/bin/busybox"), bin.resolve("busybox"));
        Files.copy(Path.of("/usr/lib/openssh/sftp-server"), bin.resolve("sftp-server"));
        agent = bin.resolve("vmgate-agent");
        Files.writeString(agent, "#!/bin/sh\necho fake agent\n");
        cache = tmp.resolve("cache");
        sources = new ImageSources(boot, modules, bin.resolve("busybox"), bin.resolve("sftp-server"), AgentBinary.file(agent));
    }

    private void fakeKernel(String release) throws IOException {
        Files.writeString(boot.resolve("vmlinuz-" + release), "not really a kernel " + release);
        Path dir = Files.createDirectories(modules.resolve(release));
        Files.writeString(dir.resolve("modules.dep"), KernelModulesTest.DEP);
        Files.writeString(dir.resolve("modules.builtin"), "kernel/drivers/block/loop.ko\n");
        for (String ko : List.of("kernel/fs/overlayfs/overlay.ko", "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_ring.ko", "kernel/drivers/virtio/virtio_mmio.ko",
                "kernel/drivers/char/virtio_console.ko", "kernel/drivers/block/virtio_blk.ko", "kernel/drivers/net/virtio_net.ko",
                "kernel/drivers/net/net_failover.ko", "kernel/net/core/failover.ko")) {
            Files.createDirectories(dir.resolve(ko).getParent());
            Files.writeString(dir.resolve(ko), "module " + ko);
        }
    }

    @Test
    void unchangedInputsReuseTheImage() throws Exception {
        ImageStore store = new ImageStore(cache);
        Image first = store.image(sources);
        String builtAt = props(first).getProperty("built_at");
        Image second = new ImageStore(cache).image(sources);
        assertThat(second).isEqualTo(first);
        assertThat(props(second).getProperty("built_at")).isEqualTo(builtAt);
        assertThat(imageDirs()).hasSize(1);
        assertThat(first.kernelRelease()).isEqualTo(RELEASE);
        assertThat(first.cmdline()).isEqualTo(Image.DEFAULT_CMDLINE);
        assertThat(first.contentHash()).matches("[0-9a-f]{64}").isEqualTo(first.directory().getFileName().toString());
        // Not a real bzImage, so it is copied as is rather than unpacked for PVH.
        assertThat(first.kernel().getFileName().toString()).isEqualTo(Image.KERNEL_FILE);
        assertThat(Files.readString(first.kernel())).isEqualTo("not really a kernel " + RELEASE);
    }

    @Test
    void anyInputChangeGivesANewImage() throws Exception {
        ImageStore store = new ImageStore(cache);
        Image base = store.image(sources);

        Path ko = modules.resolve(RELEASE).resolve("kernel/drivers/virtio/virtio.ko");
        Files.setLastModifiedTime(ko, FileTime.from(Instant.now().plusSeconds(5)));
        Image afterModule = store.image(sources);
        assertThat(afterModule.contentHash()).isNotEqualTo(base.contentHash());

        Files.writeString(agent, "#!/bin/sh\necho another agent\n");
        Image afterAgent = store.image(sources);
        assertThat(afterAgent.contentHash()).isNotIn(base.contentHash(), afterModule.contentHash());

        Files.writeString(sources.sftpServer(), "changed", java.nio.file.StandardOpenOption.APPEND);
        Image afterSftp = store.image(sources);
        assertThat(afterSftp.contentHash()).isNotIn(base.contentHash(), afterModule.contentHash(), afterAgent.contentHash());

        fakeKernel("6.1.0-10-cloud-amd64"); // newer than -9 by number, older by text
        Image afterKernel = store.image(sources);
        assertThat(afterKernel.kernelRelease()).isEqualTo("6.1.0-10-cloud-amd64");
        assertThat(imageDirs()).hasSize(5);

        // Going back to the previous inputs finds the previous image again.
        Files.delete(boot.resolve("vmlinuz-6.1.0-10-cloud-amd64"));
        assertThat(store.image(sources)).isEqualTo(afterSftp);
    }

    @Test
    void gzipIsPartOfTheKeyAndTheInitramfsHasTheLayoutTheAgentExpects() throws Exception {
        Image plain = new ImageStore(cache).image(sources);
        Image gz = new ImageStore(cache, true).image(sources);
        assertThat(gz.contentHash()).isNotEqualTo(plain.contentHash());
        byte[] cpio;
        try (InputStream in = new GZIPInputStream(Files.newInputStream(gz.initrd()))) {
            cpio = in.readAllBytes();
        }
        assertThat(cpio).isEqualTo(Files.readAllBytes(plain.initrd()));

        List<CpioWriterTest.Entry> entries = CpioWriterTest.parse(cpio);
        List<String> names = entries.stream().map(CpioWriterTest.Entry::name).toList();
        assertThat(names).contains("init", "dev/console", "etc/vmgate/modules",
                "lib/modules/" + RELEASE + "/kernel/drivers/virtio/virtio_mmio.ko",
                "rootfs/bin/busybox", "rootfs/bin/sh", "rootfs/usr/bin/wc", "rootfs/etc/passwd", "rootfs/etc/profile",
                "rootfs/etc/os-release", "rootfs/etc/hostname", "rootfs/etc/group", "rootfs/root", "rootfs/tmp",
                "rootfs/var/tmp", "rootfs/proc", "rootfs/sys", "rootfs/dev", "rootfs/run", "rootfs/home", "rootfs/mnt",
                "rootfs/usr/sbin", "rootfs/sbin", "rootfs/usr/lib/openssh/sftp-server", "TRAILER!!!");
        assertThat(names).anyMatch(n -> n.startsWith("rootfs/lib") && n.contains("ld-linux"));
        assertThat(names).doesNotContain("rootfs/linuxrc");
        assertThat(entries.stream().filter(e -> e.name().equals("init")).findFirst().orElseThrow().mode()).isEqualTo(0100755);
        assertThat(entries.stream().filter(e -> e.name().equals("rootfs/tmp")).findFirst().orElseThrow().mode()).isEqualTo(041777);

        Path out = Files.createDirectory(tmp.resolve("x"));
        CpioWriterTest.run(out, "sh", "-c", "/bin/busybox cpio -i -d etc/vmgate/modules etc/vmgate/modules.disk etc/vmgate/modules.net rootfs/bin/sh < "
                + plain.initrd());
        // only a VM with disks loads virtio_blk (its dependencies are loaded by then)
        assertThat(Files.readString(out.resolve("etc/vmgate/modules.disk")))
                .isEqualTo("/lib/modules/%s/kernel/drivers/block/virtio_blk.ko\n".formatted(RELEASE));
        // what the busybox userland holds, saved beside the image for logins resolved on the host
        GuestRoot root = plain.root().orElseThrow();
        assertThat(root.user("root")).isEqualTo(new GuestUser("root", 0, 0, List.of(0L), "/root", "/bin/sh"));
        assertThat(root.sftpServer()).contains(ImageBuilder.SFTP_SERVER);
        assertThat(root.manifest().lookup("/usr/bin/wc").orElseThrow().isExecutableFile()).isTrue();
        assertThat(plain.toolsSftpServer().getFirst()).startsWith(Image.TOOLS_DIR + "/lib").contains("ld-linux");
        assertThat(plain.toolsSftpServer()).endsWith(Image.TOOLS_DIR + ImageBuilder.SFTP_SERVER);
        assertThat(Files.readString(out.resolve("etc/vmgate/modules"))).isEqualTo("""
                /lib/modules/%1$s/kernel/drivers/virtio/virtio_ring.ko
                /lib/modules/%1$s/kernel/drivers/virtio/virtio.ko
                /lib/modules/%1$s/kernel/drivers/virtio/virtio_mmio.ko
                /lib/modules/%1$s/kernel/drivers/char/virtio_console.ko
                /lib/modules/%1$s/kernel/fs/overlayfs/overlay.ko
                """.formatted(RELEASE));
        // The network driver's own modules, not those already loaded: only a VM with a NIC loads them.
        assertThat(Files.readString(out.resolve("etc/vmgate/modules.net"))).isEqualTo("""
                /lib/modules/%1$s/kernel/net/core/failover.ko
                /lib/modules/%1$s/kernel/drivers/net/net_failover.ko
                /lib/modules/%1$s/kernel/drivers/net/virtio_net.ko
                """.formatted(RELEASE));
        assertThat(Files.readSymbolicLink(out.resolve("rootfs/bin/sh"))).isEqualTo(Path.of("busybox"));
    }

    @Test
    void concurrentStartersShareOneBuild() throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(4);
        try {
            List<Future<Image>> results = new ArrayList<>();
            for (int i = 0; i < 4; i++) {
                Callable<Image> c = () -> new ImageStore(cache).image(sources);
                results.add(pool.submit(c));
            }
            Image first = results.get(0).get();
            for (Future<Image> f : results) {
                assertThat(f.get()).isEqualTo(first);
            }
        } finally {
            pool.shutdownNow();
        }
        assertThat(imageDirs()).hasSize(1);
        try (Stream<Path> s = Files.list(cache.resolve("images"))) {
            assertThat(s.map(p -> p.getFileName().toString())).noneMatch(n -> n.startsWith(".tmp-"));
        }
    }

    @Test
    void leftoversOfACrashedBuildAreCleanedUp() throws Exception {
        Path stale = Files.createDirectories(cache.resolve("images/.tmp-deadbeef/sub"));
        Files.writeString(stale.resolve("half"), "x");
        new ImageStore(cache).image(sources);
        assertThat(cache.resolve("images/.tmp-deadbeef")).doesNotExist();
    }

    @Test
    void aDamagedImageIsRebuilt() throws Exception {
        Image first = new ImageStore(cache).image(sources);
        Files.delete(first.initrd());
        Image again = new ImageStore(cache).image(sources);
        assertThat(again).isEqualTo(first);
        assertThat(again.initrd()).isRegularFile();
    }

    @Test
    void aGarbledCurrentPointerFallsBackToTheSlowPath() throws Exception {
        Image first = new ImageStore(cache).image(sources);
        Files.writeString(cache.resolve("images/current"), "../../etc/passwd\n");
        assertThat(new ImageStore(cache).image(sources)).isEqualTo(first);
    }

    /** The unchecked guess the early VM boots from: the last image found current, stale or not. */
    @Test
    void lastResolvedIsTheRememberedImageUncheckedAndNothingWhenGarbled() throws Exception {
        ImageStore store = new ImageStore(cache);
        assertThat(store.lastResolved()).isEmpty();
        Image first = store.image(sources);
        assertThat(new ImageStore(cache).lastResolved()).contains(first);

        Files.writeString(agent, "#!/bin/sh\necho another agent\n");
        assertThat(store.lastResolved()).as("not checked: still the old one").contains(first);
        Image second = store.image(sources);
        assertThat(second).isNotEqualTo(first);
        assertThat(store.lastResolved()).contains(second);

        Files.writeString(cache.resolve("images/current"), "../../etc/passwd\n");
        assertThat(store.lastResolved()).isEmpty();
        Files.writeString(cache.resolve("images/current"), "a".repeat(64) + "\n");
        assertThat(store.lastResolved()).isEmpty();
    }

    @Test
    void missingInputsNameTheirPackage() throws IOException {
        try (Stream<Path> s = Files.list(boot)) {
            for (Path p : s.toList()) {
                Files.delete(p);
            }
        }
        assertThatThrownBy(() -> new ImageStore(cache).image(sources)).isInstanceOf(ImageException.class)
                .hasMessageContaining("kernel not found").hasMessageContaining("apt-get install linux-image-cloud-amd64");

        fakeKernel(RELEASE);
        ImageSources noBusybox = new ImageSources(boot, modules, tmp.resolve("nope/busybox"), sources.sftpServer(), sources.agent());
        assertThatThrownBy(() -> new ImageStore(cache).image(noBusybox)).isInstanceOf(ImageException.class)
                .hasMessageContaining("apt-get install busybox-static");

        ImageSources noSftp = new ImageSources(boot, modules, sources.busybox(), tmp.resolve("nope/sftp-server"), sources.agent());
        assertThatThrownBy(() -> new ImageStore(cache).image(noSftp)).isInstanceOf(ImageException.class)
                .hasMessageContaining("apt-get install openssh-sftp-server");

        ImageSources noAgent = sources.withAgent(AgentBinary.file(tmp.resolve("nope/agent")));
        assertThatThrownBy(() -> new ImageStore(cache).image(noAgent)).isInstanceOf(ImageException.class)
                .hasMessageContaining("make -C guest/agent");

        ImageSources dynamicBusybox = new ImageSources(boot, modules, sources.sftpServer(), sources.sftpServer(), sources.agent());
        assertThatThrownBy(() -> new ImageStore(cache).image(dynamicBusybox)).isInstanceOf(ImageException.class)
                .hasMessageContaining("busybox-static");
    }

    @Test
    void newestKernelComparesVersionsByNumber() {
        assertThat(ImageSources.compareVersions("6.1.0-10-cloud-amd64", "6.1.0-9-cloud-amd64")).isPositive();
        assertThat(ImageSources.compareVersions("6.10.0-1-cloud-amd64", "6.9.0-30-cloud-amd64")).isPositive();
        assertThat(ImageSources.compareVersions("6.1.0-9-cloud-amd64", "6.1.0-9-cloud-amd64")).isZero();
    }

    @Test
    void loadReadsAHandMadeImageDirectory() throws Exception {
        Path dir = Files.createDirectories(tmp.resolve("img"));
        assertThatThrownBy(() -> Image.load(dir)).isInstanceOf(ImageException.class).hasMessageContaining("vmlinuz");
        Files.writeString(dir.resolve("vmlinuz"), "k");
        assertThatThrownBy(() -> Image.load(dir)).isInstanceOf(ImageException.class).hasMessageContaining("initrd.img");
        Files.writeString(dir.resolve("initrd.img"), "i");
        Image plain = Image.load(dir);
        assertThat(plain.cmdline()).isEqualTo(Image.DEFAULT_CMDLINE);
        assertThat(plain.contentHash()).matches("[0-9a-f]{64}");
        Files.writeString(dir.resolve("image.properties"), "cmdline=console=ttyS0 quiet\nkernel_release=6.1.0-9-cloud-amd64\n");
        Image withProps = Image.load(dir);
        assertThat(withProps.cmdline()).isEqualTo("console=ttyS0 quiet");
        assertThat(withProps.kernelRelease()).isEqualTo("6.1.0-9-cloud-amd64");
        assertThatThrownBy(() -> Image.load(tmp.resolve("nope"))).isInstanceOf(ImageException.class)
                .hasMessageContaining("does not exist");
    }

    @Test
    void cacheRootFollowsTheEnvironment() {
        assertThat(ImageStore.defaultRoot(Map.of("VMGATE_CACHE", "/c", "XDG_CACHE_HOME", "/x"), "/home/u")).isEqualTo(Path.of("/c"));
        assertThat(ImageStore.defaultRoot(Map.of("XDG_CACHE_HOME", "/x"), "/home/u")).isEqualTo(Path.of("/x/vmgate"));
        assertThat(ImageStore.defaultRoot(Map.of("XDG_CACHE_HOME", "relative"), "/home/u"))
                .isEqualTo(Path.of("/home/u/.cache/vmgate"));
        assertThat(ImageStore.defaultRoot(Map.of(), "/home/u")).isEqualTo(Path.of("/home/u/.cache/vmgate"));
    }

    private List<Path> imageDirs() throws IOException {
        try (Stream<Path> s = Files.list(cache.resolve("images"))) {
            return s.filter(Files::isDirectory).filter(p -> p.getFileName().toString().matches("[0-9a-f]{64}")).toList();
        }
    }

    private static Properties props(Image img) throws IOException {
        Properties p = new Properties();
        try (var r = Files.newBufferedReader(img.directory().resolve(Image.PROPERTIES_FILE), StandardCharsets.UTF_8)) {
            p.load(r);
        }
        return p;
    }
}
