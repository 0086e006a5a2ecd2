package io.vmgate.e2e;

import static org.assertj.core.api.Assertions.assertThat;

import io.vmgate.image.RootfsImage;
import io.vmgate.image.TestRootfs;
import io.vmgate.ssh.SshClientHelper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Your own userland over real SSH: {@code serve --image} with a Debian build and
 * {@code serve --rootfs} with a host tree, driven by the real {@code ssh} and {@code sftp}.
 */
class UserlandIT {
    @TempDir
    static Path dir;
    static RootfsImage debian;

    @BeforeAll
    static void debianImage() throws Exception {
        debian = TestRootfs.debian(); // built once (a few minutes), reused while its recipe holds
    }

    @Test
    void debianOverSshAndSftp() throws Exception {
        try (ServeProcess server = ServeProcess.builder(dir).name("UserlandIT-debian")
                .args("--image", debian.directory().toString()).start()) {
            SshClientHelper ssh = server.ssh().withTimeout(Duration.ofSeconds(120));
            SshClientHelper.Result r = ssh.ssh("bash --version | head -1; python3 -c 'print(6*7)'; apt-get --version | head -1; "
                    + "stat -c %U:%G:%a /etc/shadow; stat -c %a /usr/bin/passwd; echo \"$0 $HOME $USER $SHELL\"; pwd");
            assertThat(r.exitCode()).as(r.toString()).isZero();
            List<String> lines = r.out().lines().toList();
            assertThat(lines.get(0)).startsWith("GNU bash, version 5.");
            assertThat(lines.get(1)).isEqualTo("42");
            assertThat(lines.get(2)).startsWith("apt ");
            assertThat(lines.get(3)).isEqualTo("root:shadow:640");
            assertThat(lines.get(4)).isEqualTo("4755");
            assertThat(lines.get(5)).isEqualTo("bash /root root /bin/bash");
            assertThat(lines.get(6)).isEqualTo("/root");

            byte[] data = new byte[3 << 20];
            new Random(12).nextBytes(data);
            Path up = dir.resolve("up.bin");
            Path down = dir.resolve("down.bin");
            Files.write(up, data);
            SshClientHelper.Result sftp = ssh.sftp("put " + up + " /root/up.bin\nget /root/up.bin " + down + "\n");
            assertThat(sftp.exitCode()).as(sftp.toString()).isZero();
            assertThat(Files.readAllBytes(down)).isEqualTo(data);

            assertThat(ssh.ssh("echo written > /etc/mine; cat /etc/mine").out()).isEqualTo("written\n");
            assertThat(ssh.ssh("test -e /etc/mine && echo still || echo gone").out()).as("a write dies with its VM").isEqualTo("gone\n");
            Host.assertNothingLeft(server.runtimeRoot(), 10);
        }
    }

    @Test
    void aHostTreeAsRootWithItsOwnersAndAGuestUser() throws Exception {
        Path tree = TestRootfs.busyboxTree(Files.createDirectories(dir.resolve("tree")));
        try (ServeProcess server = ServeProcess.builder(dir).name("UserlandIT-rootfs")
                .args("--rootfs", tree.toString(), "--guest-user", "alice").start()) {
            SshClientHelper ssh = server.ssh().withTimeout(Duration.ofSeconds(120));
            SshClientHelper.Result r = ssh.ssh("stat -c '%u %g %h' /data/owned /data/link; id -u; echo $HOME; pwd");
            assertThat(r.exitCode()).as(r.toString()).isZero();
            assertThat(r.out()).isEqualTo("1234 5678 2\n1234 5678 2\n1000\n/home/alice\n/home/alice\n");

            // The image made from the tree is in use: prune leaves it, rm refuses it.
            Host.Result prune = Host.run(List.of(Host.HOME.resolve("vmgate").toString(), "image", "prune"), Map.of(), null, 120);
            assertThat(prune.exit()).as(prune.stderr()).isZero();
            assertThat(ssh.ssh("cat /data/owned").out()).as("the image survives prune while in use").isEqualTo("owned");
        }
        Host.Result wrong = Host.run(List.of(Host.HOME.resolve("vmgate").toString(), "run", "--rootfs", tree.toString(),
                "--guest-user", "bob", "--", "true"), Map.of(), null, 300);
        assertThat(wrong.exit()).isEqualTo(125);
        assertThat(wrong.stderr()).contains("no user 'bob'");
        Host.Result notRoot = Host.run(List.of(Host.HOME.resolve("vmgate").toString(), "run", "--rootfs", dir.resolve("nothing").toString(),
                "--", "true"), Map.of(), null, 300);
        assertThat(notRoot.exit()).isEqualTo(125);
        assertThat(notRoot.stderr()).contains(dir.resolve("nothing").toString());
    }

    @Test
    void aScratchDiskHoldsTwiceTheGuestsRam() throws Exception {
        try (ServeProcess server = ServeProcess.builder(dir).name("UserlandIT-scratch")
                .args("--image", debian.directory().toString(), "--memory", "256", "--scratch-disk", "1G").start()) {
            SshClientHelper ssh = server.ssh().withTimeout(Duration.ofSeconds(300));
            SshClientHelper.Result r = ssh.ssh("dd if=/dev/zero of=/var/big bs=1M count=512 status=none && sync && stat -c %s /var/big");
            assertThat(r.exitCode()).as(r.toString()).isZero();
            assertThat(r.out().strip()).isEqualTo(Long.toString(512L << 20));
            Host.assertNothingLeft(server.runtimeRoot(), 10);
        }
    }
}
