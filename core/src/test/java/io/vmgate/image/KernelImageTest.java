package io.vmgate.image;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class KernelImageTest {
    @TempDir
    Path tmp;

    @Test
    void decodesWhatTheLz4ToolWritesInLegacyFormat() throws Exception {
        Path lz4 = Path.of("/usr/bin/lz4");
        assumeTrue(Files.isExecutable(lz4), "lz4 not installed");
        byte[] data = new byte[3 << 20];
        Random r = new Random(42);
        for (int i = 0; i < data.length; i++) {
            // compressible but not trivial: runs, repeats and noise
            data[i] = (byte) (i % 4096 < 2048 ? (i / 7) : r.nextInt(4));
        }
        Path in = tmp.resolve("in"), out = tmp.resolve("in.lz4");
        Files.write(in, data);
        Process p = new ProcessBuilder(lz4.toString(), "-l", "-q", "-f", in.toString(), out.toString()).inheritIO().start();
        assertThat(p.waitFor()).isZero();
        byte[] c = Files.readAllBytes(out);
        ByteArrayOutputStream decoded = new ByteArrayOutputStream();
        KernelImage.lz4Legacy(c, 0, c.length, decoded);
        assertThat(decoded.toByteArray()).isEqualTo(data);
    }

    @Test
    void corruptBlocksAreErrorsNotCrashes() {
        byte[] dst = new byte[1024];
        Random r = new Random(7);
        for (int i = 0; i < 2000; i++) {
            byte[] junk = new byte[r.nextInt(64) + 1];
            r.nextBytes(junk);
            try {
                int n = KernelImage.lz4Block(junk, 0, junk.length, dst);
                assertThat(n).isBetween(0, dst.length);
            } catch (IOException expected) {
                // fine: rejected
            }
        }
        // a match reaching before the start of the output
        assertThatThrownBy(() -> KernelImage.lz4Block(new byte[] {0x10, 'a', 5, 0}, 0, 4, dst)).isInstanceOf(IOException.class);
    }

    @Test
    void nonKernelsAreLeftAlone() throws IOException {
        Path f = tmp.resolve("vmlinuz");
        Files.writeString(f, "not a kernel");
        assertThat(KernelImage.extractPvhKernel(f, tmp.resolve("vmlinux"))).isFalse();
        assertThat(tmp.resolve("vmlinux")).doesNotExist();
        assertThat(KernelImage.hasPvhNote(f)).isFalse();
    }

    @Test
    void theHostsCloudKernelUnpacksToAPvhElf() throws Exception {
        ImageSources.Kernel k;
        try {
            k = ImageSources.debian().newestKernel();
        } catch (ImageException e) {
            assumeTrue(false, "no cloud kernel");
            return;
        }
        assumeTrue(Files.isReadable(k.path()), "kernel not readable");
        Path out = tmp.resolve("vmlinux");
        assertThat(KernelImage.extractPvhKernel(k.path(), out)).isTrue();
        assertThat(Files.size(out)).isGreaterThan(Files.size(k.path()));
        assertThat(KernelImage.hasPvhNote(out)).isTrue();
    }
}
