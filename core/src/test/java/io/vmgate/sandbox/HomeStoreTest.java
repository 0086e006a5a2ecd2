package io.vmgate.sandbox;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.vmgate.image.HomeImage;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Homes on the host: names, modes, locking, first use, refusals that leave nothing behind (real mke2fs). */
class HomeStoreTest {
    static final long SIZE = 64L << 20;

    @TempDir
    Path dir;

    @Test
    void aHomeIsMadeOnFirstUseInAHashedPrivateDirectory() throws Exception {
        HomeStore store = new HomeStore(dir.resolve("homes"), SIZE);
        store.prepare();
        assertThat(Files.getPosixFilePermissions(store.root())).isEqualTo(PosixFilePermissions.fromString("rwx------"));
        Path image;
        try (HomeStore.Home h = store.open("alice")) {
            assertThat(h.created()).isTrue();
            assertThat(h.directory().getFileName().toString()).matches("[0-9a-f]{32}");
            assertThat(Files.getPosixFilePermissions(h.directory())).isEqualTo(PosixFilePermissions.fromString("rwx------"));
            for (String f : new String[] {HomeStore.IMAGE, HomeStore.USER, HomeStore.LOCK}) {
                assertThat(Files.getPosixFilePermissions(h.directory().resolve(f))).as(f).isEqualTo(PosixFilePermissions.fromString("rw-------"));
            }
            assertThat(Files.readString(h.directory().resolve(HomeStore.USER))).isEqualTo("alice");
            image = h.image();
            assertThat(Files.size(image)).isEqualTo(SIZE);
            HomeImage.check(image, SIZE);
            assertThat(Files.exists(h.directory().resolve(HomeStore.IMAGE + ".tmp"))).isFalse();
        }
        try (HomeStore.Home again = store.open("alice")) {
            assertThat(again.created()).isFalse();
            assertThat(again.image()).isEqualTo(image);
        }
        assertThat(store.directoryOf("bob")).isNotEqualTo(store.directoryOf("alice"));
        assertThat(store.list()).singleElement().satisfies(l -> {
            assertThat(l.user()).isEqualTo("alice");
            assertThat(l.directory()).isEqualTo(store.directoryOf("alice").getFileName().toString());
            assertThat(l.sizeBytes()).isEqualTo(SIZE);
            assertThat(l.usedBytes()).isBetween(1L, SIZE / 4);
        });
        assertThat(new HomeStore(dir.resolve("none"), SIZE).list()).isEmpty();
    }

    @Test
    void hostileNamesNeverBecomePaths() {
        HomeStore store = new HomeStore(dir.resolve("homes"), SIZE);
        for (String name : new String[] {"../../etc", "a/b", "x\ny", ".", "..", "\u0000"}) {
            Path d = store.directoryOf(name);
            assertThat(d.getParent()).isEqualTo(store.root());
            assertThat(d.getFileName().toString()).matches("[0-9a-f]{32}");
        }
    }

    @Test
    void aHomeInUseIsRefusedUntilReleased() throws Exception {
        HomeStore store = new HomeStore(dir.resolve("homes"), SIZE);
        store.prepare();
        HomeStore.Home first = store.open("alice");
        assertThatThrownBy(() -> store.open("alice")).isInstanceOf(SandboxException.class).hasMessageContaining("in use");
        first.close();
        first.close(); // idempotent
        store.open("alice").close();
    }

    @Test
    void aStateDirectoryThatCannotBeMadeIsRefusedNamingIt() throws Exception {
        Path file = Files.writeString(dir.resolve("file"), "x");
        HomeStore store = new HomeStore(file.resolve("homes"), SIZE);
        assertThatThrownBy(store::prepare).isInstanceOf(SandboxException.class)
                .hasMessageContaining("cannot keep persistent homes in " + file.resolve("homes"))
                .hasMessageContaining(file + " is not a directory");
        assertThatThrownBy(() -> store.open("alice")).isInstanceOf(SandboxException.class);
        assertThat(Files.readString(file)).isEqualTo("x");
    }

    @Test
    void aBrokenImageIsRefusedAndKeptAndTheLockReleased() throws Exception {
        HomeStore store = new HomeStore(dir.resolve("homes"), SIZE);
        store.prepare();
        Path image;
        try (HomeStore.Home h = store.open("alice")) {
            image = h.image();
        }
        try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "rw")) {
            f.seek(1024 + 56);
            f.write(new byte[] {0, 0});
        }
        for (int i = 0; i < 2; i++) { // the second time too: a refusal releases the lock
            assertThatThrownBy(() -> store.open("alice")).isInstanceOf(SandboxException.class)
                    .hasMessageContaining("no ext4 filesystem").hasMessageNotContaining(dir.toString());
        }
        assertThat(Files.size(image)).isEqualTo(SIZE);

        HomeStore bigger = new HomeStore(dir.resolve("homes"), 2 * SIZE);
        assertThatThrownBy(() -> bigger.open("alice")).hasMessageContaining("is 64M but homes are 128M");
        assertThat(Files.size(image)).isEqualTo(SIZE);
    }

    @Test
    void aLinkPlantedForTheImageIsNeverFollowed() throws Exception {
        HomeStore store = new HomeStore(dir.resolve("homes"), SIZE);
        store.prepare();
        Path d = store.directoryOf("alice");
        Files.createDirectory(d);
        Files.createSymbolicLink(d.resolve(HomeStore.IMAGE), dir.resolve("elsewhere"));
        assertThatThrownBy(() -> store.open("alice")).isInstanceOf(SandboxException.class).hasMessageContaining("not a regular file");
        assertThat(Files.exists(dir.resolve("elsewhere"))).isFalse();
    }

    @Test
    void aFailedFirstUseLeavesNothingBehind() throws Exception {
        HomeStore store = new HomeStore(dir.resolve("homes"), 32 << 10); // too small for mke2fs
        store.prepare();
        assertThatThrownBy(() -> store.open("bob")).isInstanceOf(SandboxException.class)
                .hasMessageContaining("persistent home of bob").hasMessageContaining("mke2fs");
        try (Stream<Path> left = Files.list(store.root())) {
            assertThat(left).isEmpty();
        }
    }
}
