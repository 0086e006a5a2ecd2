package io.vmgate.image;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.vmgate.sandbox.CachePruner;
import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The named store with real e2fsprogs: names, cache hits, atomic builds that leave nothing on failure, rm and prune. */
class RootfsStoreTest {
    @TempDir
    Path tmp;
    Path cache, tree;
    RootfsStore store;

    @BeforeEach
    void setUp() throws IOException {
        cache = tmp.resolve("cache");
        store = new RootfsStore(cache);
        tree = tinyRootfs(tmp.resolve("tree"));
    }

    static Path tinyRootfs(Path t) throws IOException {
        Files.createDirectories(t.resolve("bin"));
        Files.createDirectories(t.resolve("etc"));
        Files.writeString(t.resolve("bin/sh"), "#!/bin/false\n");
        t.resolve("bin/sh").toFile().setExecutable(true, false);
        Files.writeString(t.resolve("etc/passwd"), "root:x:0:0::/root:/bin/sh\n");
        return t;
    }

    @Test
    void namesMeanImagesAndUnchangedTreesAreNotRebuilt() throws Exception {
        RootfsImage a = store.build("a", new RootfsSource.Directory(tree), l -> { });
        assertThat(store.get("a")).isEqualTo(a);
        assertThat(a.source()).isEqualTo("dir:" + tree);
        assertThat(a.sftpServer()).isEmpty();
        assertThat(a.root().user("root").shell()).isEqualTo("/bin/sh");
        RootfsImage b = store.build("b", new RootfsSource.Directory(tree), l -> { });
        assertThat(b.id()).isEqualTo(a.id());
        assertThat(store.names()).containsOnlyKeys("a", "b");
        assertThat(store.images()).hasSize(1);
        Files.writeString(tree.resolve("etc/motd"), "changed");
        RootfsImage a2 = store.build("a", new RootfsSource.Directory(tree), l -> { });
        assertThat(a2.id()).isNotEqualTo(a.id());
        assertThat(store.get("a").id()).isEqualTo(a2.id());
        assertThat(store.get("b").id()).as("the other name still means the old image").isEqualTo(a.id());
        assertThat(store.remove("b")).contains(a.directory());
        assertThat(a.directory()).doesNotExist();
        assertThatThrownBy(() -> store.get("b")).hasMessageContaining("no image named 'b'");
        assertThat(store.forDirectory(tree, l -> { }).id()).as("--rootfs DIR finds the same image").isEqualTo(a2.id());
    }

    @Test
    void imagesAreSelectedByNameOrDirectory() throws Exception {
        RootfsImage a = store.build("a", new RootfsSource.Directory(tree), l -> { });
        assertThat(ImageSelection.image("a", store).rootfs()).contains(a);
        assertThat(ImageSelection.image(a.directory().toString(), store).rootfs()).contains(a);
        assertThat(ImageSelection.rootfs(tree, store, l -> { }).rootfs()).contains(a);
        Path boot = Files.createDirectories(tmp.resolve("boot"));
        Files.writeString(boot.resolve(Image.KERNEL_FILE), "k");
        Files.writeString(boot.resolve(Image.INITRD_FILE), "i");
        assertThat(ImageSelection.image(boot.toString(), store).boot().orElseThrow().directory()).isEqualTo(boot);
        assertThatThrownBy(() -> ImageSelection.image("nope", store)).hasMessageContaining("no image named 'nope'");
        assertThatThrownBy(() -> ImageSelection.image(tree.toString(), store)).hasMessageContaining("use --rootfs " + tree);
        assertThatThrownBy(() -> ImageSelection.image("/no/such", store)).hasMessageContaining("neither an image name nor a directory");
    }

    @Test
    void namesAreWordsNotPaths() {
        for (String bad : List.of("../x", "Upper", "", "a/b", "-x", ".hidden")) {
            assertThatThrownBy(() -> store.build(bad, new RootfsSource.Directory(tree), l -> { })).hasMessageContaining("is not an image name");
        }
    }

    @Test
    void failedBuildsLeaveNothingBehind() throws Exception {
        Path notRoot = Files.createDirectories(tmp.resolve("empty/usr"));
        assertThatThrownBy(() -> store.build("x", new RootfsSource.Directory(notRoot.getParent()), l -> { }))
                .hasMessageStartingWith("image x: ").hasMessageContaining(notRoot.getParent() + " is not a root filesystem");
        assertThatThrownBy(() -> store.forDirectory(notRoot.getParent(), l -> { }))
                .hasMessageStartingWith("dir:" + notRoot.getParent() + ": ");
        assertThatThrownBy(() -> store.build("y", new RootfsSource.Entries("test archive", sink -> {
            sink.add(FsEntry.file("bin/sh", 0755, 0, 0, 2, 0), new java.io.ByteArrayInputStream("#!".getBytes()));
            throw new IOException("the network went away");
        }), l -> { })).hasMessage("image y: the network went away");
        // a build killed mid-way (its lock released, its directory left) is swept by the next build
        Path killed = Files.createDirectories(store.imagesDir().resolve(RootfsStore.TMP_PREFIX + "killed/content"));
        assertThatThrownBy(() -> store.build("z", new RootfsSource.Entries("truncated", sink ->
                sink.addTar(new java.io.ByteArrayInputStream(new TestTar().file("bin/sh", "x").unterminated()))), l -> { }))
                .hasMessageContaining("image z: truncated archive");
        assertThat(killed).doesNotExist();
        assertEmptyStore();
    }

    @Test
    void aFullDiskFailsTheBuildNamingTheCauseAndLeavesNothing() throws Exception {
        assumeTrue(RootfsBuilder.uidOf() == 0, "needs root to mount a small tmpfs");
        Path small = Files.createDirectories(tmp.resolve("small"));
        RootfsBuilderTest.sh("mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", small.toString());
        try {
            byte[] noise = new byte[12 << 20]; // not zeroes: mke2fs and debugfs leave those as holes
            new java.util.Random(1).nextBytes(noise);
            Files.write(tree.resolve("big"), noise);
            RootfsStore full = new RootfsStore(small);
            assertThatThrownBy(() -> full.build("big", new RootfsSource.Directory(tree), l -> { })).hasMessageContaining("image big")
                    .satisfies(e -> assertThat(e.getMessage()).containsAnyOf("No space left", "Could not allocate"));
            assertThatThrownBy(() -> full.build("big2", new RootfsSource.Entries("archive", sink ->
                    sink.add(FsEntry.file("bin/sh", 0755, 0, 0, 12 << 20, 0), new java.io.ByteArrayInputStream(noise))), l -> { }))
                    .hasMessageContaining("No space left on device").hasMessageContaining("is full");
            try (Stream<Path> s = Files.walk(small)) {
                assertThat(s.filter(Files::isRegularFile).toList()).isEmpty();
            }
        } finally {
            RootfsBuilderTest.sh("umount", small.toString());
        }
    }

    @Test
    void rmRefusesAnImageALiveProcessUsesAndNamesIt() throws Exception {
        RootfsImage a = store.build("a", new RootfsSource.Directory(tree), l -> { });
        Process user = new ProcessBuilder("sleep", "60").start();
        try {
            Path marker = Files.createDirectories(a.directory().resolve(ImageUsers.DIR)).resolve(ImageUsers.marker(user.pid()));
            Files.createFile(marker);
            assertThatThrownBy(() -> store.remove("a")).hasMessageContaining("image a is in use by pid " + user.pid())
                    .hasMessageContaining("sleep 60");
            assertThat(new CachePruner(cache).plan()).isEmpty();
            user.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
            assertThat(ImageUsers.live(a.directory())).as("a dead user is no user").isEmpty();
            assertThat(marker).as("and its marker is cleaned up").doesNotExist();
            assertThat(store.remove("a")).contains(a.directory());
        } finally {
            user.destroyForcibly();
        }
    }

    @Test
    void pruneTakesWhatNoNameMeansAndNobodyUses() throws Exception {
        RootfsImage named = store.build("keep", new RootfsSource.Directory(tree), l -> { });
        RootfsImage unnamed = store.forDirectory(tinyRootfs(tmp.resolve("other")), l -> { });
        RootfsImage used = store.forDirectory(tinyRootfs(tmp.resolve("third")), l -> { });
        Process user = new ProcessBuilder("sleep", "60").start();
        try {
            Files.createFile(Files.createDirectories(used.directory().resolve(ImageUsers.DIR)).resolve(ImageUsers.marker(user.pid())));
            // templates: of the named image (kept), of the unnamed one (goes), of an older vmgate (goes)
            Path images = Files.createDirectories(cache.resolve("images"));
            Files.createDirectories(images.resolve("a".repeat(64)));
            Files.createDirectories(images.resolve("b".repeat(64)));
            Files.writeString(images.resolve("current"), "a".repeat(64) + "\n");
            Path t1 = template("t1", "a".repeat(64), named.id());
            Path t2 = template("t2", "a".repeat(64), unnamed.id());
            Path t3 = Files.createDirectories(cache.resolve("templates/" + "3".repeat(64)));
            Files.writeString(t3.resolve("state"), "old");
            Path t4 = template("t4", "b".repeat(64), null);
            // a dead build's debris, and a live build's (its lock is held)
            Path dead = Files.createDirectories(store.imagesDir().resolve(RootfsStore.TMP_PREFIX + "dead"));
            Path live = Files.createDirectories(store.imagesDir().resolve(RootfsStore.TMP_PREFIX + "live"));
            try (FileChannel ch = FileChannel.open(live.resolve(".lock"), StandardOpenOption.CREATE, StandardOpenOption.WRITE);
                    FileLock ignored = ch.lock()) {
                List<Path> gone = new CachePruner(cache).prune().stream().map(CachePruner.Removal::path).toList();
                assertThat(gone).containsExactlyInAnyOrder(unnamed.directory(), dead, images.resolve("b".repeat(64)), t2, t3, t4);
            }
            assertThat(named.directory()).isDirectory();
            assertThat(used.directory()).isDirectory();
            assertThat(t1).isDirectory();
            assertThat(images.resolve("a".repeat(64))).isDirectory();
            assertThat(live).isDirectory();
        } finally {
            user.destroyForcibly();
        }
    }

    @Test
    void buildsAtOnceNeverSweepEachOther() throws Exception {
        // Every build first sweeps what killed builds left; a live build (in this JVM or another)
        // must never look abandoned, not even in the instant after its directory is made.
        int n = 6;
        List<Path> trees = new java.util.ArrayList<>();
        for (int i = 0; i < n; i++) {
            Path t = tinyRootfs(tmp.resolve("tree-" + i));
            Files.writeString(t.resolve("etc/which"), "tree " + i + "\n");
            trees.add(t);
        }
        java.util.concurrent.atomic.AtomicBoolean building = new java.util.concurrent.atomic.AtomicBoolean(true);
        Thread sweeper = Thread.ofPlatform().start(() -> { // as a concurrent `image prune` would
            while (building.get()) {
                for (Path debris : store.abandonedBuilds()) {
                    try {
                        ImageStore.deleteTree(debris);
                    } catch (IOException ignored) {
                        // raced with the build's own rename: fine
                    }
                }
            }
        });
        try (var pool = java.util.concurrent.Executors.newFixedThreadPool(n)) {
            List<java.util.concurrent.Future<RootfsImage>> built = new java.util.ArrayList<>();
            for (int round = 0; round < 3; round++) {
                for (int i = 0; i < n; i++) {
                    String name = "img-" + round + "-" + i;
                    Path t = trees.get(i);
                    Files.writeString(t.resolve("etc/round"), name + "\n"); // a new tree each round: a real build
                    built.add(pool.submit(() -> store.build(name, new RootfsSource.Directory(t), l -> { })));
                }
                for (var f : built) {
                    assertThat(Files.isRegularFile(f.get().disk())).isTrue();
                }
                built.clear();
            }
        } finally {
            building.set(false);
            sweeper.join();
        }
        assertThat(store.abandonedBuilds()).isEmpty();
    }

    @Test
    void debrisOfAKilledBuildIsSweptButAYoungUnlockedDirectoryIsNot() throws Exception {
        Files.createDirectories(store.imagesDir());
        Path killed = Files.createDirectories(store.imagesDir().resolve(".tmp-killed"));
        Files.writeString(killed.resolve(".lock"), "");
        Path young = Files.createDirectories(store.imagesDir().resolve(".new-starting"));
        Path old = Files.createDirectories(store.imagesDir().resolve(".new-crashed"));
        Files.setLastModifiedTime(old, java.nio.file.attribute.FileTime.from(java.time.Instant.now().minus(java.time.Duration.ofHours(2))));
        assertThat(store.abandonedBuilds()).containsExactlyInAnyOrder(killed, old).doesNotContain(young);
    }

    private Path template(String name, String image, String rootfs) throws IOException {
        Path d = Files.createDirectories(cache.resolve("templates").resolve(name + "0".repeat(62)));
        Files.writeString(d.resolve("state"), "state");
        Files.writeString(d.resolve("template.properties"), "image=" + image + "\n" + (rootfs == null ? "" : "rootfs=" + rootfs + "\n"),
                StandardCharsets.UTF_8);
        return d;
    }

    private void assertEmptyStore() throws IOException {
        try (Stream<Path> s = Files.list(store.imagesDir())) {
            assertThat(s.toList()).as("nothing half-built in the store").isEmpty();
        }
        assertThat(store.namesDir()).doesNotExist();
    }
}
