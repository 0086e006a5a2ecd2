package io.vmgate.vm;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.vmgate.agent.Credentials;
import io.vmgate.agent.ProcessSpec;
import io.vmgate.agent.PtySpec;
import io.vmgate.image.FsEntry;
import io.vmgate.image.Image;
import io.vmgate.image.ImageDefaults;
import io.vmgate.image.Manifest;
import io.vmgate.image.RootfsImage;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** What a front end sends for a login, a command, a program and sftp, as sshd would run them. */
class GuestLoginTest {
    static final List<String> TOOLS = List.of("/run/vmgate/tools/lib64/ld-linux-x86-64.so.2", "--inhibit-cache", "--library-path",
            "/run/vmgate/tools/lib/x86_64-linux-gnu", "/run/vmgate/tools/usr/lib/openssh/sftp-server");

    @TempDir
    Path tmp;
    Image image;
    VmConfig debian;

    @BeforeEach
    void images() throws Exception {
        Path boot = Files.createDirectories(tmp.resolve("boot"));
        image = new Image(boot, boot.resolve("vmlinux"), boot.resolve("initrd.img"), "6.1", "console=ttyS0", "k", TOOLS);
        Path rootfs = Files.createDirectories(tmp.resolve("rootfs"));
        Manifest.Builder b = new Manifest.Builder();
        b.add("", FsEntry.directory("", 0755, 0, 0, 0));
        for (String d : List.of("usr", "usr/bin", "usr/lib", "usr/lib/openssh", "home", "srv", "root")) {
            b.add(d, FsEntry.directory(d, 0755, 0, 0, 0));
        }
        b.add("bin", FsEntry.symlink("bin", "usr/bin", 0, 0, 0));
        b.add("usr/bin/bash", FsEntry.file("usr/bin/bash", 0755, 0, 0, 1, 0));
        b.add("usr/lib/openssh/sftp-server", FsEntry.file("usr/lib/openssh/sftp-server", 0755, 0, 0, 1, 0));
        b.add("home/alice", FsEntry.directory("home/alice", 0700, 1000, 1000, 0));
        b.build().write(rootfs.resolve(Manifest.FILE));
        Files.writeString(rootfs.resolve("passwd"), "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n"
                + "gone:x:1001:1001::/home/gone:/bin/bash\n");
        Files.writeString(rootfs.resolve("group"), "sudo:x:27:alice\n");
        RootfsImage img = new RootfsImage("f".repeat(64), rootfs, "test", Instant.EPOCH, 1, 1, Optional.of("/usr/lib/openssh/sftp-server"));
        debian = VmConfig.defaults(image).withRootfs(img);
    }

    @Test
    void aLoginShellAsSshdStartsIt() throws VmException {
        GuestLogin alice = GuestLogin.resolve(debian.withGuestUser("alice"));
        PtySpec pty = PtySpec.of("xterm", 24, 80);
        Map<String, String> client = new java.util.LinkedHashMap<>();
        client.put("TERM", "xterm");
        client.put("LANG", "C.UTF-8");
        ProcessSpec shell = alice.shell(pty, client);
        assertThat(shell.executable()).isEqualTo("/bin/bash");
        assertThat(shell.argv()).containsExactly("-bash");
        assertThat(shell.cwd()).isEqualTo("/home/alice");
        assertThat(shell.pty()).isEqualTo(pty);
        assertThat(shell.credentials()).isEqualTo(new Credentials(1000, 1000, List.of(1000, 27)));
        assertThat(shell.env()).containsExactly(Map.entry("USER", "alice"), Map.entry("LOGNAME", "alice"), Map.entry("HOME", "/home/alice"),
                Map.entry("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/games"), Map.entry("MAIL", "/var/mail/alice"),
                Map.entry("SHELL", "/bin/bash"), Map.entry("TERM", "xterm"), Map.entry("LANG", "C.UTF-8"));
        ProcessSpec cmd = alice.command("echo hi", null, Map.of());
        assertThat(cmd.argv()).containsExactly("bash", "-c", "echo hi");
        assertThat(cmd.program()).isEqualTo("/bin/bash");
        ProcessSpec prog = alice.exec(List.of("id", "-u"), null, Map.of());
        assertThat(prog.program()).isEqualTo("id");
        assertThat(prog.credentials().uid()).isEqualTo(1000);
        ProcessSpec sftp = alice.sftp(Map.of());
        assertThat(sftp.argv()).containsExactly("/usr/lib/openssh/sftp-server");
        assertThat(sftp.pty()).isNull();
        assertThat(sftp.cwd()).isEqualTo("/home/alice");
    }

    @Test
    void rootGetsRootsPathAndAMissingHomeFallsBackToTheRoot() throws VmException {
        GuestLogin root = GuestLogin.resolve(debian);
        assertThat(root.environment()).containsEntry("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        assertThat(root.credentials()).isEqualTo(new Credentials(0, 0, List.of(0)));
        assertThat(root.cwd()).isEqualTo("/root");
        assertThat(GuestLogin.resolve(debian.withGuestUser("gone")).cwd()).as("as sshd: no home, start in /").isEqualTo("/");
        assertThat(GuestLogin.resolve(debian.withWorkdir("/srv")).cwd()).isEqualTo("/srv");
    }

    @Test
    void whatIsMissingFromTheImageIsAnErrorAtResolveTime() {
        assertThatThrownBy(() -> GuestLogin.resolve(debian.withGuestUser("mallory"))).isInstanceOf(VmException.class)
                .hasMessageContaining("no user 'mallory'");
        assertThatThrownBy(() -> GuestLogin.resolve(debian.withWorkdir("/nope"))).hasMessageContaining("/nope is not a directory in image ffffffffffff");
        assertThatThrownBy(() -> debian.withWorkdir("relative")).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> debian.withGuestUser("a:b:c")).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> debian.withGuestUser("-o")).isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void anImageWithoutSftpServerGetsVmgatesOwn() throws Exception {
        RootfsImage noSftp = new RootfsImage("f".repeat(64), tmp.resolve("rootfs"), "test", Instant.EPOCH, 1, 1, Optional.empty());
        Path m = tmp.resolve("rootfs").resolve(Manifest.FILE);
        Manifest without = new Manifest.Builder().add("", FsEntry.directory("", 0755, 0, 0, 0))
                .add("bin", FsEntry.directory("bin", 0755, 0, 0, 0)).add("bin/bash", FsEntry.file("bin/bash", 0755, 0, 0, 1, 0)).build();
        without.write(m);
        assertThat(GuestLogin.resolve(debian.withRootfs(noSftp)).sftp(Map.of()).argv()).isEqualTo(TOOLS);
    }

    @Test
    void aHandMadeImageOnlyKnowsRoot() throws VmException {
        VmConfig bare = VmConfig.defaults(image);
        assertThat(GuestLogin.resolve(bare).user().name()).isEqualTo("root");
        assertThatThrownBy(() -> GuestLogin.resolve(bare.withGuestUser("alice"))).hasMessageContaining("only --guest-user root works");
    }

    @Test
    void anImagesOwnEnvironmentAndWorkingDirectoryApplyUnderTheClientsAndTheOperators() throws Exception {
        RootfsImage plain = debian.rootfs().get();
        RootfsImage oci = new RootfsImage(plain.id(), plain.directory(), "oci:x", Instant.EPOCH, 1, 1, plain.sftpServer(),
                new ImageDefaults(List.of("PATH=/opt/bin:/bin", "HOME=/srv", "A=1"), Optional.of("/srv"), Optional.of("alice"),
                        List.of(), List.of("bash")), List.of());
        GuestLogin login = GuestLogin.resolve(debian.withRootfs(oci));
        assertThat(login.cwd()).isEqualTo("/srv");
        ProcessSpec p = login.exec(List.of("env"), null, Map.of("A", "from-client"));
        assertThat(p.env()).containsEntry("PATH", "/opt/bin:/bin").containsEntry("HOME", "/srv").containsEntry("A", "from-client")
                .containsEntry("USER", "root");
        assertThat(p.cwd()).isEqualTo("/srv");
        assertThat(GuestLogin.resolve(debian.withRootfs(oci).withWorkdir("/root")).cwd()).as("--workdir wins").isEqualTo("/root");
        RootfsImage noDir = new RootfsImage(plain.id(), plain.directory(), "oci:x", Instant.EPOCH, 1, 1, plain.sftpServer(),
                new ImageDefaults(List.of(), Optional.of("/nope"), Optional.empty(), List.of(), List.of()), List.of());
        assertThatThrownBy(() -> GuestLogin.resolve(debian.withRootfs(noDir))).hasMessageContaining("/nope (the image's WorkingDir) is not a directory");
        assertThat(GuestLogin.resolve(debian.withRootfs(oci).withGuestUser("1000:27")).credentials())
                .isEqualTo(new Credentials(1000, 27, List.of(27)));
    }
}
