package io.vmgate.image;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The filesystem image builder with the real e2fsprogs: what the source says about ownership,
 * modes, setuid/setgid, hard links, symlinks, device nodes and capabilities is what the ext4
 * image holds, built from a tar stream or from a directory, as root and as a non-root user
 * (a second JVM under {@code setpriv --reuid=nobody}). The fixture needs root to make (chown,
 * mknod, setcap); checks read the image with debugfs.
 */
class RootfsBuilderTest {
    static final long NOBODY = 65534;
    static final String WEIRD = "we ird \"name\" ő";

    @TempDir
    Path tmp;
    Path tree, readable, tar;

    @BeforeEach
    void fixture() throws Exception {
        assumeTrue(RootfsBuilder.uidOf() == 0, "needs root to make the fixture (chown, mknod, setcap)");
        assumeTrue(Files.isExecutable(Path.of("/bin/busybox")), "busybox-static not installed");
        Files.setPosixFilePermissions(tmp, PosixFilePermissions.fromString("rwxr-xr-x")); // nobody reaches the fixture
        tree = make("tree", false);
        readable = make("readable", true);
        tar = tmp.resolve("tree.tar");
        sh("tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", tree.toString(), "-cf", tar.toString(), ".");
        Files.setPosixFilePermissions(tar, PosixFilePermissions.fromString("rw-r--r--"));
    }

    /** A small root filesystem with every kind of metadata; {@code open}: readable by anyone. */
    private Path make(String name, boolean open) throws Exception {
        Path t = Files.createDirectories(tmp.resolve(name));
        for (String d : List.of("bin", "etc", "data", "usr/bin", "dev", "run", "home/alice")) {
            Files.createDirectories(t.resolve(d));
        }
        Files.copy(Path.of("/bin/busybox"), t.resolve("bin/busybox"));
        Files.createSymbolicLink(t.resolve("bin/sh"), Path.of("busybox"));
        Files.writeString(t.resolve("etc/passwd"), "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n");
        Files.writeString(t.resolve("etc/shadow"), "root:*:1::::::\n");
        sh("chown", "0:42", t.resolve("etc/shadow").toString());
        sh("chmod", open ? "0644" : "0640", t.resolve("etc/shadow").toString());
        Files.writeString(t.resolve("data/owned"), "owned");
        sh("chown", "1234:5678", t.resolve("data/owned").toString());
        sh("chmod", open ? "0644" : "0640", t.resolve("data/owned").toString());
        Files.createLink(t.resolve("data/link"), t.resolve("data/owned"));
        Files.writeString(t.resolve("usr/bin/su"), "suid");
        sh("chmod", "04755", t.resolve("usr/bin/su").toString());
        Files.writeString(t.resolve("usr/bin/wall"), "sgid");
        sh("chown", "0:5", t.resolve("usr/bin/wall").toString());
        sh("chmod", "02755", t.resolve("usr/bin/wall").toString());
        Files.createDirectories(t.resolve("tmp"));
        sh("chmod", "01777", t.resolve("tmp").toString());
        Files.writeString(t.resolve("data/ping"), "ping");
        sh("chmod", "0755", t.resolve("data/ping").toString());
        sh("setcap", "cap_net_raw=ep", t.resolve("data/ping").toString());
        sh("mknod", t.resolve("dev/null").toString(), "c", "1", "3");
        sh("chmod", "0666", t.resolve("dev/null").toString());
        sh("mknod", t.resolve("dev/sda").toString(), "b", "8", "0");
        sh("mkfifo", t.resolve("run/fifo").toString());
        Files.createSymbolicLink(t.resolve("data/sym"), Path.of("../etc/passwd"));
        Files.createSymbolicLink(t.resolve("data/long"), Path.of("/" + "x".repeat(100)));
        Files.writeString(t.resolve("data/" + WEIRD), "weird");
        sh("chown", "1000:1000", t.resolve("home/alice").toString());
        sh("chmod", open ? "0755" : "0700", t.resolve("home/alice").toString());
        return t;
    }

    @Test
    void aTarStreamKeepsEveryKindOfMetadata() throws Exception {
        RootfsBuilder.Built b = new RootfsBuilder(line -> { }).fromEntries(sink -> {
            try (InputStream in = Files.newInputStream(tar)) {
                sink.addTar(in);
            }
        }, Files.createDirectories(tmp.resolve("work")));
        check(b.disk(), false);
        assertThat(b.manifest().lookup("/data/link").orElseThrow().inode()).isEqualTo(b.manifest().lookup("/data/owned").orElseThrow().inode());
        assertThat(b.manifest().resolve("/bin/sh")).contains("bin/busybox");
        assertThat(new String(b.passwd().orElseThrow(), StandardCharsets.UTF_8)).contains("alice:x:1000");
        try (Stream<Path> s = Files.list(tmp.resolve("work"))) {
            assertThat(s.map(p -> p.getFileName().toString()).toList()).as("only the disk is left").containsExactly(RootfsBuilder.DISK_FILE);
        }
    }

    @Test
    void aDirectoryKeepsEveryKindOfMetadata() throws Exception {
        RootfsBuilder.Scan scan = RootfsBuilder.scan(tree);
        RootfsBuilder.Built b = new RootfsBuilder(line -> { }).fromDirectory(scan, Files.createDirectories(tmp.resolve("work")));
        check(b.disk(), false);
        assertThat(scan.key()).isEqualTo(RootfsBuilder.scan(tree).key());
        sh("touch", tree.resolve("data/owned").toString());
        assertThat(RootfsBuilder.scan(tree).key()).as("a changed file changes the key").isNotEqualTo(scan.key());
        sh("chmod", "0600", tree.resolve("data/owned").toString());
        assertThat(RootfsBuilder.scan(tree).key()).as("so does a chmod (ctime)").isNotEqualTo(scan.key());
    }

    @Test
    void nonRootBuildsKeepOwnershipToo() throws Exception {
        Path fromTar = nonRoot("tar", tar);
        check(fromTar, false);
        Path fromDir = nonRoot("dir", readable);
        check(fromDir, true);
    }

    @Test
    void aFileTheBuilderCannotReadIsAnErrorNamingIt() throws Exception {
        assertThat(nonRootResult("dir", tree)).startsWith("ERROR ").contains(tree + "/").contains("cannot be read by this user (uid 65534)");
    }

    @Test
    void notARootFilesystem() throws Exception {
        Path empty = Files.createDirectories(tmp.resolve("not-a-rootfs/usr"));
        assertThatThrownBy(() -> new RootfsBuilder(l -> { }).fromDirectory(RootfsBuilder.scan(empty.getParent()), tmp))
                .hasMessageContaining("is not a root filesystem: it has no executable /bin/sh");
        Files.createDirectories(empty.resolveSibling("bin"));
        Files.writeString(empty.resolveSibling("bin/sh"), "not executable");
        assertThatThrownBy(() -> new RootfsBuilder(l -> { }).fromDirectory(RootfsBuilder.scan(empty.getParent()), tmp))
                .hasMessageContaining("no executable /bin/sh (it leads to a f of mode 644)");
        assertThatThrownBy(() -> RootfsBuilder.scan(tmp.resolve("missing"))).hasMessageContaining("is not a directory");
    }

    /** What the fixture says, read back from the image. */
    static void check(Path disk, boolean open) throws Exception {
        Ext4Inspector img = new Ext4Inspector(disk);
        assertThat(img.fsck()).as("e2fsck -fn").isZero();
        assertThat(img.features()).contains("read-only").doesNotContain("has_journal");
        Ext4Inspector.Inode owned = img.stat("/data/owned"), link = img.stat("/data/link");
        assertThat(List.of(owned.uid(), owned.gid(), (long) owned.mode(), (long) owned.links())).containsExactly(1234L, 5678L,
                open ? 0644L : 0640L, 2L);
        assertThat(link.number()).isEqualTo(owned.number());
        Ext4Inspector.Inode shadow = img.stat("/etc/shadow");
        assertThat(List.of(shadow.uid(), shadow.gid(), (long) shadow.mode())).containsExactly(0L, 42L, open ? 0644L : 0640L);
        assertThat(img.stat("/usr/bin/su").mode()).isEqualTo(04755);
        Ext4Inspector.Inode wall = img.stat("/usr/bin/wall");
        assertThat(wall.mode()).isEqualTo(02755);
        assertThat(wall.gid()).isEqualTo(5);
        assertThat(img.stat("/tmp").mode()).isEqualTo(01777);
        assertThat(img.stat("/data/ping").xattrs().get("security.capability")).startsWith("01000002").contains("2000");
        Ext4Inspector.Inode nul = img.stat("/dev/null");
        assertThat(List.of(nul.type(), nul.device(), Integer.toOctalString(nul.mode()))).containsExactly("character special", "01:03", "666");
        Ext4Inspector.Inode sda = img.stat("/dev/sda");
        assertThat(List.of(sda.type(), sda.device())).containsExactly("block special", "08:00");
        assertThat(img.stat("/run/fifo").type()).isEqualTo("FIFO");
        assertThat(img.stat("/data/sym").fastLink()).isEqualTo("../etc/passwd");
        assertThat(img.stat("/data/long").size()).isEqualTo(101);
        assertThat(img.ls("/data")).contains(WEIRD);
        assertThat(img.cat("/data/" + WEIRD)).isEqualTo("weird");
        assertThat(img.cat("/bin/busybox").length()).isGreaterThan(100_000);
        Ext4Inspector.Inode alice = img.stat("/home/alice");
        assertThat(List.of(alice.uid(), alice.gid(), (long) alice.mode())).containsExactly(1000L, 1000L, open ? 0755L : 0700L);
        assertThat(img.stat("/").uid()).isZero();
    }

    /** Builds in a second JVM as nobody; returns the disk it made. */
    private Path nonRoot(String mode, Path input) throws Exception {
        String out = nonRootResult(mode, input);
        assertThat(out).startsWith("OK ").endsWith("uid=" + NOBODY);
        return Path.of(out.split(" ")[1]);
    }

    private String nonRootResult(String mode, Path input) throws Exception {
        Path work = Files.createDirectories(tmp.resolve("nobody-" + mode));
        sh("chown", NOBODY + ":" + NOBODY, work.toString());
        Path cp = Files.createDirectories(tmp.resolve("cp"));
        Files.setPosixFilePermissions(cp, PosixFilePermissions.fromString("rwxr-xr-x"));
        Path slf4j = Path.of(org.slf4j.Logger.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        Files.copy(slf4j, cp.resolve("slf4j.jar"), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        Files.setPosixFilePermissions(cp.resolve("slf4j.jar"), PosixFilePermissions.fromString("rw-r--r--"));
        String classes = Path.of(RootfsBuilder.class.getProtectionDomain().getCodeSource().getLocation().toURI()).toString();
        String testClasses = Path.of(NonRootBuild.class.getProtectionDomain().getCodeSource().getLocation().toURI()).toString();
        List<String> argv = new ArrayList<>(List.of("setpriv", "--reuid=" + NOBODY, "--regid=" + NOBODY, "--clear-groups", "--reset-env",
                Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-Dslf4j.internal.verbosity=ERROR", "-cp",
                classes + ":" + testClasses + ":" + cp.resolve("slf4j.jar"), NonRootBuild.class.getName(), mode, input.toString(),
                work.toString()));
        Process p = new ProcessBuilder(argv).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.waitFor(120, TimeUnit.SECONDS)).isTrue();
        return out.lines().filter(l -> l.startsWith("OK ") || l.startsWith("ERROR ")).findFirst().orElse("no result: " + out);
    }

    static void sh(String... argv) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(argv).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (!p.waitFor(60, TimeUnit.SECONDS) || p.exitValue() != 0) {
            throw new IOException(String.join(" ", argv) + ": " + out);
        }
    }
}
