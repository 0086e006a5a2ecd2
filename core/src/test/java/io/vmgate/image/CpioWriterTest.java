package io.vmgate.image;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class CpioWriterTest {
    static final Path BUSYBOX = Path.of("/bin/busybox");

    @TempDir
    Path tmp;

    private byte[] sample(Path hostFile) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try (CpioWriter w = new CpioWriter(out)) {
            w.directory("etc", 0755);
            w.file("etc/hostname", 0644, "vmgate\n".getBytes(StandardCharsets.UTF_8));
            w.file("/usr/lib/deep/file.bin", 0600, hostFile); // parents created automatically
            w.file("empty", 0644, new byte[0]);
            w.file("bin/tool", 0755, new byte[] {1, 2, 3}); // odd size: padding must follow
            w.symlink("bin/sh", "tool");
            w.directory("tmp", 01777);
        }
        return out.toByteArray();
    }

    private Path hostFile() throws IOException {
        byte[] data = new byte[100_003];
        for (int i = 0; i < data.length; i++) {
            data[i] = (byte) (i * 31 + 7);
        }
        Path p = tmp.resolve("host.bin");
        Files.write(p, data);
        return p;
    }

    @Test
    void headersFollowNewcAndAreDeterministic() throws IOException {
        Path host = hostFile();
        byte[] a = sample(host), b = sample(host);
        assertThat(a).isEqualTo(b);
        assertThat(a.length % 4).isZero();

        List<Entry> entries = parse(a);
        assertThat(entries).extracting(Entry::name).containsExactly("etc", "etc/hostname", "usr", "usr/lib",
                "usr/lib/deep", "usr/lib/deep/file.bin", "empty", "bin", "bin/tool", "bin/sh", "tmp", "TRAILER!!!");
        for (int i = 0; i < entries.size() - 1; i++) {
            Entry e = entries.get(i);
            assertThat(e.ino).isEqualTo(i + 1);
            assertThat(e.uid).isZero();
            assertThat(e.gid).isZero();
            assertThat(e.mtime).isZero();
        }
        assertThat(entries.get(0).mode).isEqualTo(0040755);
        assertThat(entries.get(5).mode).isEqualTo(0100600);
        assertThat(entries.get(5).size).isEqualTo(100_003);
        assertThat(entries.get(9).mode).isEqualTo(0120777);
        assertThat(entries.get(10).mode).isEqualTo(0041777);
    }

    @Test
    void busyboxListsAndExtractsWhatWasWritten() throws Exception {
        assumeTrue(Files.isExecutable(BUSYBOX), "busybox-static not installed");
        Path host = hostFile();
        Path archive = tmp.resolve("a.cpio");
        Files.write(archive, sample(host));

        String listing = run(tmp, "sh", "-c", BUSYBOX + " cpio -t < " + archive + " 2>/dev/null");
        assertThat(listing.lines()).containsExactly("etc", "etc/hostname", "usr", "usr/lib", "usr/lib/deep",
                "usr/lib/deep/file.bin", "empty", "bin", "bin/tool", "bin/sh", "tmp");

        Path out = Files.createDirectory(tmp.resolve("out"));
        run(out, "sh", "-c", BUSYBOX + " cpio -i -d < " + archive);
        assertThat(Files.readString(out.resolve("etc/hostname"))).isEqualTo("vmgate\n");
        assertThat(Files.readAllBytes(out.resolve("usr/lib/deep/file.bin"))).isEqualTo(Files.readAllBytes(host));
        assertThat(Files.size(out.resolve("empty"))).isZero();
        assertThat(Files.readAllBytes(out.resolve("bin/tool"))).containsExactly(1, 2, 3);
        assertThat(Files.readSymbolicLink(out.resolve("bin/sh"))).isEqualTo(Path.of("tool"));
        assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(out.resolve("bin/tool"))))
                .isEqualTo("rwxr-xr-x");
        assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(out.resolve("usr/lib/deep/file.bin"))))
                .isEqualTo("rw-------");
        assertThat(Files.isDirectory(out.resolve("tmp"), LinkOption.NOFOLLOW_LINKS)).isTrue();
    }

    @Test
    void deviceNodesAreHeadersOnly() throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try (CpioWriter w = new CpioWriter(out)) {
            w.charDevice("dev/console", 0600, 5, 1);
        }
        Entry e = parse(out.toByteArray()).get(1);
        assertThat(e.name).isEqualTo("dev/console");
        assertThat(e.mode).isEqualTo(0020600);
        assertThat(e.size).isZero();
        assertThat(e.rdevMajor).isEqualTo(5);
        assertThat(e.rdevMinor).isEqualTo(1);
    }

    @Test
    void rejectsBadPathsAndDuplicates() throws IOException {
        CpioWriter w = new CpioWriter(new ByteArrayOutputStream());
        for (String bad : List.of("", "/", "a/../b", "./a", "a//b", "a\0b")) {
            assertThatThrownBy(() -> w.file(bad, 0644, new byte[0])).as(bad).isInstanceOf(IllegalArgumentException.class);
        }
        w.file("x", 0644, new byte[0]);
        assertThatThrownBy(() -> w.file("/x", 0644, new byte[0])).isInstanceOf(IllegalArgumentException.class);
        w.directory("d", 0755).directory("d", 0755); // directories are idempotent
        w.finish();
        assertThatThrownBy(() -> w.file("y", 0644, new byte[0])).isInstanceOf(IllegalStateException.class);
    }

    record Entry(String name, long ino, long mode, long uid, long gid, long mtime, long size, long rdevMajor, long rdevMinor) {}

    /** An independent newc reader, to check the fields busybox does not show. */
    static List<Entry> parse(byte[] a) {
        List<Entry> out = new ArrayList<>();
        int p = 0;
        while (true) {
            String h = new String(a, p, 110, StandardCharsets.US_ASCII);
            assertThat(h).startsWith("070701");
            long[] f = new long[13];
            for (int i = 0; i < 13; i++) {
                f[i] = Long.parseLong(h.substring(6 + 8 * i, 14 + 8 * i), 16);
            }
            int namesize = (int) f[11];
            String name = new String(a, p + 110, namesize - 1, StandardCharsets.UTF_8);
            assertThat(a[p + 110 + namesize - 1]).isZero();
            p = align(p + 110 + namesize);
            out.add(new Entry(name, f[0], f[1], f[2], f[3], f[5], f[6], f[9], f[10]));
            if (name.equals("TRAILER!!!")) {
                for (byte pad : Arrays.copyOfRange(a, p, a.length)) {
                    assertThat(pad).isZero();
                }
                return out;
            }
            p = align(p + (int) f[6]);
        }
    }

    private static int align(int v) {
        return (v + 3) & ~3;
    }

    static String run(Path dir, String... cmd) throws Exception {
        Process p = new ProcessBuilder(cmd).directory(dir.toFile()).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.waitFor(30, TimeUnit.SECONDS)).isTrue();
        assertThat(p.exitValue()).as(out).isZero();
        return out;
    }
}
