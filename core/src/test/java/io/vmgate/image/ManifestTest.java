package io.vmgate.image;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ManifestTest {
    @TempDir
    Path tmp;

    /** A merged-/usr tree: /bin -> usr/bin, a shell behind two symlinks, a loop, a dangling link. */
    static Manifest tree() {
        Manifest.Builder b = new Manifest.Builder();
        b.add("", FsEntry.directory("", 0755, 0, 0, 0));
        b.add("usr", FsEntry.directory("usr", 0755, 0, 0, 0));
        b.add("usr/bin", FsEntry.directory("usr/bin", 0755, 0, 0, 0));
        b.add("bin", FsEntry.symlink("bin", "usr/bin", 0, 0, 0));
        b.add("usr/bin/dash", FsEntry.file("usr/bin/dash", 0755, 0, 0, 100, 0));
        b.add("usr/bin/sh", FsEntry.symlink("usr/bin/sh", "dash", 0, 0, 0));
        b.add("usr/bin/abs", FsEntry.symlink("usr/bin/abs", "/bin/../bin/sh", 0, 0, 0));
        b.add("usr/bin/data", FsEntry.file("usr/bin/data", 0644, 7, 8, 5, 0));
        b.add("loop1", FsEntry.symlink("loop1", "loop2", 0, 0, 0));
        b.add("loop2", FsEntry.symlink("loop2", "/loop1", 0, 0, 0));
        b.add("dangling", FsEntry.symlink("dangling", "nowhere", 0, 0, 0));
        b.add("up", FsEntry.symlink("up", "../../../usr", 0, 0, 0));
        FsEntry file = FsEntry.file("a\tb\nc\\d", 0600, 1, 2, 3, 4);
        b.add("a\tb\nc\\d", file);
        b.add("hardlink", file);
        return b.build();
    }

    @Test
    void resolvesLikeTheKernel() {
        Manifest m = tree();
        assertThat(m.resolve("/bin/sh")).contains("usr/bin/dash");
        assertThat(m.resolve("/usr/bin/abs")).contains("usr/bin/dash");
        assertThat(m.resolve("/up/bin/sh")).as(".. never above the root").contains("usr/bin/dash");
        assertThat(m.resolve("/bin/")).contains("usr/bin");
        assertThat(m.resolve("/loop1")).isEmpty();
        assertThat(m.resolve("/dangling")).isEmpty();
        assertThat(m.resolve("/usr/bin/data/x")).as("through a file").isEmpty();
        assertThat(m.lookup("/bin/sh").orElseThrow().isExecutableFile()).isTrue();
        assertThat(m.lookup("/usr/bin/data").orElseThrow().isExecutableFile()).isFalse();
        assertThat(m.lookup("/usr/bin/data").orElseThrow().uid()).isEqualTo(7);
        assertThat(m.entry("hardlink").orElseThrow().inode()).isEqualTo(m.entry("a\tb\nc\\d").orElseThrow().inode());
    }

    @Test
    void roundTripsThroughItsFileWithAnyName() throws Exception {
        Manifest m = tree();
        Path f = tmp.resolve(Manifest.FILE);
        m.write(f);
        Manifest back = Manifest.read(f);
        assertThat(back.entries()).isEqualTo(m.entries());
        assertThat(back.resolve("/bin/sh")).contains("usr/bin/dash");
        assertThat(back.entries()).containsKey("a\tb\nc\\d");
        assertThat(Map.copyOf(back.entries())).hasSize(m.entries().size());
    }
}
