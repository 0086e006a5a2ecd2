package io.vmgate.image;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** A home image: a sparse, journalled ext4 made by mke2fs, and the host's only checks on it. */
class HomeImageTest {
    @TempDir
    Path dir;

    @Test
    void aNewHomeIsASparseJournalledExt4OfItsSize() throws Exception {
        Path image = dir.resolve("home.ext4");
        HomeImage.create(image, 256L << 20);
        assertThat(Files.size(image)).isEqualTo(256L << 20);
        Process du = new ProcessBuilder("du", "-B1", image.toString()).start();
        long allocated = Long.parseLong(new String(du.getInputStream().readAllBytes()).split("\\s")[0]);
        assertThat(allocated).as("sparse").isLessThan(32L << 20);
        Ext4.Result r = Ext4.run(java.util.List.of(Ext4.tool("dumpe2fs"), "-h", image.toString()));
        assertThat(r.stdout()).contains("has_journal").containsPattern("Filesystem volume name:\\s+vmgate-home")
                .containsPattern("Reserved block count:\\s+0\\b");
        HomeImage.check(image, 256L << 20);
    }

    @Test
    void theChecksNameWhatIsWrongWithoutThePath() throws Exception {
        Path image = dir.resolve("home.ext4");
        HomeImage.create(image, 64L << 20);
        assertThatThrownBy(() -> HomeImage.check(image, 128L << 20)).isInstanceOf(ImageException.class)
                .hasMessageContaining("is 64M but homes are 128M").hasMessageNotContaining(dir.toString());
        try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "rw")) {
            f.seek(1024 + 56);
            f.write(new byte[] {0x53, 0x00});
        }
        assertThatThrownBy(() -> HomeImage.check(image, 64L << 20)).hasMessageContaining("no ext4 filesystem");
        Path link = Files.createSymbolicLink(dir.resolve("link"), image);
        assertThatThrownBy(() -> HomeImage.check(link, 64L << 20)).hasMessageContaining("not a regular file");
        Path empty = Files.createFile(dir.resolve("empty"));
        assertThatThrownBy(() -> HomeImage.check(empty, 0)).hasMessageContaining("no ext4 filesystem");
    }
}
