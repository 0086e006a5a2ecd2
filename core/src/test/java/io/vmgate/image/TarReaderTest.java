package io.vmgate.image;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The tar reader and the staging tree: real GNU tar output, and archives written to be hostile. */
class TarReaderTest {
    @TempDir
    Path tmp;

    static List<FsEntry> read(byte[] tar) throws IOException {
        List<FsEntry> out = new ArrayList<>();
        TarReader r = new TarReader(new ByteArrayInputStream(tar));
        for (FsEntry e; (e = r.next()) != null;) {
            out.add(e);
        }
        return out;
    }

    @Test
    void readsWhatGnuTarWrites() throws Exception {
        Path tree = Files.createDirectories(tmp.resolve("t/sub/" + "deep/".repeat(30)));
        Files.writeString(tree.resolve("file with \"quotes\" ő.txt"), "content");
        Path t = tmp.resolve("t");
        Files.writeString(t.resolve("a"), "x".repeat(1000));
        Files.createLink(t.resolve("b"), t.resolve("a"));
        Files.createSymbolicLink(t.resolve("l"), Path.of("sub"));
        for (String format : List.of("gnu", "pax", "ustar")) {
            Path tar = tmp.resolve(format + ".tar");
            Process p = new ProcessBuilder("tar", "--format=" + format, "--owner=1234", "--group=5678", "--numeric-owner", "-C", t.toString(),
                    "-cf", tar.toString(), ".").redirectErrorStream(true).start();
            String err = new String(p.getInputStream().readAllBytes());
            p.waitFor(30, TimeUnit.SECONDS);
            if (format.equals("ustar") && p.exitValue() != 0) {
                assertThat(err).contains("too long"); // ustar cannot hold the deep path: fine, the others can
                continue;
            }
            assertThat(p.exitValue()).as(err).isZero();
            List<FsEntry> es = read(Files.readAllBytes(tar));
            assertThat(es).extracting(FsEntry::path).contains("", "a", "b", "l", "sub/" + "deep/".repeat(29) + "deep/file with \"quotes\" ő.txt");
            // whichever of the two names tar meets first is the file, the other a link to it
            FsEntry first = es.stream().filter(e -> e.path().equals("a") || e.path().equals("b")).findFirst().orElseThrow();
            FsEntry second = es.stream().filter(e -> (e.path().equals("a") || e.path().equals("b")) && e != first).findFirst().orElseThrow();
            assertThat(first.type()).isEqualTo(FsEntry.Type.FILE);
            assertThat(first.size()).isEqualTo(1000);
            assertThat(first.uid()).isEqualTo(1234);
            assertThat(first.gid()).isEqualTo(5678);
            assertThat(second.type()).isEqualTo(FsEntry.Type.HARDLINK);
            assertThat(second.linkTarget()).isEqualTo(first.path());
            assertThat(es.stream().filter(e -> e.path().equals("l")).findFirst().orElseThrow().linkTarget()).isEqualTo("sub");
        }
    }

    @Test
    void largeIdsInBase256AndXattrsFromPax() throws Exception {
        byte[] big = TestTar.header("f", '0', 0644, 0, 0, 0, "");
        // GNU base-256 uid 3000000 (does not fit 7 octal digits)
        big[108] = (byte) 0x80;
        for (int i = 1; i < 8; i++) {
            big[108 + i] = (byte) (3_000_000L >> (8 * (7 - i)));
        }
        fixChecksum(big);
        byte[] tar = new TestTar().raw(big).pax("SCHILY.xattr.security.capability=\u0001\u0000\u0000\u0002", "path=renamed/by pax")
                .file("ignored-name", "hi").end();
        List<FsEntry> es = read(tar);
        assertThat(es.get(0).uid()).isEqualTo(3_000_000L);
        assertThat(es.get(1).path()).isEqualTo("renamed/by pax");
        assertThat(es.get(1).xattrs().get("security.capability")).containsExactly(1, 0, 0, 2);
    }

    @Test
    void hostileArchivesAreRefusedByName() {
        assertThatThrownBy(() -> read(new TestTar().file("../escape", "x").end())).hasMessageContaining("leaves the root");
        assertThatThrownBy(() -> read(new TestTar().file("a/../../escape", "x").end())).hasMessageContaining("leaves the root");
        assertThatThrownBy(() -> read(new TestTar().hardlink("h", "../../etc/passwd").end())).hasMessageContaining("leaves the root");
        assertThatThrownBy(() -> read(new TestTar().pax("path=a\nb").file("x", "").end())).hasMessageContaining("line break");
        assertThatThrownBy(() -> read(new TestTar().entry("s", 'S', 0644, 0, 0, new byte[0], "").end()))
                .hasMessageContaining("unsupported tar entry type 'S'");
        byte[] bad = new TestTar().file("a", "x").end();
        bad[0] ^= 1;
        assertThatThrownBy(() -> read(bad)).hasMessageContaining("checksum mismatch");
        byte[] cut = new TestTar().file("a", "x".repeat(2000)).end();
        assertThatThrownBy(() -> read(java.util.Arrays.copyOf(cut, 1024))).isInstanceOf(TarReader.TarException.class)
                .hasMessageContaining("truncated");
        assertThatThrownBy(() -> read(new TestTar().file("a", "x").unterminated())).hasMessageContaining("no end-of-archive marker");
        byte[] hugePax = TestTar.header("PaxHeaders/x", 'x', 0644, 0, 0, 100L << 20, "");
        assertThatThrownBy(() -> read(new TestTar().raw(hugePax).end())).hasMessageContaining("extended header 'x' of 104857600 bytes");
        assertThatThrownBy(() -> read(new TestTar().pax("no-equals-sign").file("x", "").end())).hasMessageContaining("malformed pax");
    }

    @Test
    void stagingNeverWritesOutsideItsDirectory() throws Exception {
        Path outside = Files.createDirectories(tmp.resolve("outside"));
        Files.writeString(outside.resolve("canary"), "untouched");
        // a symlink to outside, then entries through it: refused, never followed
        assertThatThrownBy(() -> stage(new TestTar().symlink("evil", outside.toString()).file("evil/canary", "owned").end()))
                .hasMessageContaining("evil/canary: its parent evil is a SYMLINK");
        assertThatThrownBy(() -> stage(new TestTar().symlink("up", "..").dir("up/x").end())).hasMessageContaining("parent up is a SYMLINK");
        assertThatThrownBy(() -> stage(new TestTar().file("f", "x").file("f/g", "y").end())).hasMessageContaining("parent f is a FILE");
        assertThatThrownBy(() -> stage(new TestTar().hardlink("h", "missing").end())).hasMessageContaining("not (or no longer) in the tree");
        assertThatThrownBy(() -> stage(new TestTar().symlink("s", "/etc/passwd").hardlink("h", "s").end()))
                .hasMessageContaining("hard link to the SYMLINK");
        assertThat(Files.readString(outside.resolve("canary"))).isEqualTo("untouched");
        try (Stream<Path> s = Files.list(outside)) {
            assertThat(s.count()).isEqualTo(1);
        }
    }

    @Test
    void laterEntriesReplaceEarlierOnesAndRemovalsTakeSubtrees() throws Exception {
        Staging st = stage(new TestTar().dir("d").file("d/f", "one").file("x", "file").dir("x").file("x/in", "in")
                .file("d/f", "two").dir("y").file("y/z", "z").end());
        assertThat(text(st, "/d/f")).isEqualTo("two");
        assertThat(st.tree().get("x").entry.type()).isEqualTo(FsEntry.Type.DIRECTORY);
        try (Stream<Path> s = Files.list(st.dir())) {
            assertThat(s.count()).as("replaced contents are deleted").isEqualTo(3); // d/f, x/in, y/z
        }
        st.remove("y");
        assertThat(st.tree()).doesNotContainKeys("y", "y/z");
        try (Stream<Path> s = Files.list(st.dir())) {
            assertThat(s.count()).isEqualTo(2);
        }
        Staging o = stage(new TestTar().dir("d").file("d/a", "a").dir("d/sub").file("d/sub/b", "b").file("e", "e").end());
        o.clearDirectory("d");
        assertThat(o.tree()).containsKeys("", "d", "e").doesNotContainKeys("d/a", "d/sub", "d/sub/b");
        // a hard link survives the removal of its other name
        Staging h = stage(new TestTar().file("a", "data").hardlink("b", "a").end());
        h.remove("a");
        assertThat(text(h, "/b")).isEqualTo("data");
        assertThat(h.tree().get("b").names).isEqualTo(1);
    }

    /** Random damage to valid archives: only TarException/IOException/ImageException, never a crash, a hang or a write outside. */
    @Test
    void mutatedArchivesFailCleanly() throws Exception {
        byte[] good = new TestTar().dir("d").file("d/f", "hello").symlink("d/l", "f").hardlink("d/h", "d/f")
                .pax("SCHILY.xattr.user.x=1", "path=d/p").file("p", "pp").entry("dev", '3', 0600, 0, 0, new byte[0], "").end();
        Random rnd = new Random(42);
        Path outside = Files.createDirectories(tmp.resolve("fuzz-outside"));
        for (int i = 0; i < 3000; i++) {
            byte[] t = good.clone();
            for (int k = rnd.nextInt(6) + 1; k > 0; k--) {
                t[rnd.nextInt(t.length)] = (byte) rnd.nextInt(256);
            }
            if (rnd.nextInt(4) == 0) {
                t = java.util.Arrays.copyOf(t, rnd.nextInt(t.length));
            }
            Path dir = tmp.resolve("fuzz-" + i);
            try {
                Staging st = new Staging(dir, 0);
                TarReader r = new TarReader(new ByteArrayInputStream(t));
                for (FsEntry e; (e = r.next()) != null;) {
                    st.add(e, r.content());
                }
            } catch (IOException | ImageException | IllegalArgumentException e) {
                // refused: fine
            }
            ImageStore.deleteTree(dir);
        }
        try (Stream<Path> s = Files.list(outside)) {
            assertThat(s.count()).isZero();
        }
    }

    private Staging stage(byte[] tar) throws IOException, ImageException {
        Staging st = new Staging(tmp.resolve("staging-" + System.nanoTime()), 0);
        TarReader r = new TarReader(new ByteArrayInputStream(tar));
        for (FsEntry e; (e = r.next()) != null;) {
            st.add(e, r.content());
        }
        return st;
    }

    private static String text(Staging st, String path) throws IOException {
        return new String(st.read(st.manifest(), path).orElseThrow(), StandardCharsets.UTF_8);
    }

    private static void fixChecksum(byte[] h) {
        java.util.Arrays.fill(h, 148, 156, (byte) ' ');
        long sum = 0;
        for (byte b : h) {
            sum += b & 0xff;
        }
        byte[] s = String.format("%06o\0 ", sum).getBytes(StandardCharsets.US_ASCII);
        System.arraycopy(s, 0, h, 148, 8);
    }

    static InputStream in(byte[] b) {
        return new ByteArrayInputStream(b);
    }

    static void assumeRoot() {
        assumeTrue(RootfsBuilder.uidOf() == 0, "needs root to make the fixture (chown, mknod, setcap)");
    }
}
