package io.vmgate.ssh;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Authentication policy and the host key, with the real OpenSSH client. */
class SshAuthTest {
    @TempDir
    Path dir;

    @Test
    void authorizedKeysAdmitTheirKeysOnlyAndTheServerKeepsServing() throws Exception {
        Path good = SshClientHelper.generateKey(dir, "good");
        Path other = SshClientHelper.generateKey(dir, "other");
        Path authorized = dir.resolve("authorized_keys");
        Files.writeString(authorized, "# a comment\n\n" + Files.readString(Path.of(good + ".pub")));
        try (TestServer ts = TestServer.start(dir, b -> b.authorizedKeys(authorized))) {
            SshClientHelper.Result refused = ts.ssh().withIdentity(other).ssh("echo in");
            assertThat(refused.exitCode()).as(refused.toString()).isEqualTo(255);
            assertThat(refused.err()).contains("Permission denied");
            assertThat(ts.ssh().ssh("echo in").exitCode()).as("no key, no passwordless").isEqualTo(255);
            SshClientHelper.Result ok = ts.ssh().withIdentity(good).ssh("echo in");
            assertThat(ok.exitCode()).as(ok.toString()).isZero();
            assertThat(ok.out()).isEqualTo("in\n");
            assertThat(ts.lines()).anyMatch(m -> m.startsWith("auth_failed ") && m.contains("method=publickey"));
            assertThat(ts.lines()).anyMatch(m -> m.startsWith("auth_succeeded ") && m.contains("method=publickey"));
            assertThat(ts.launcher.launched).as("refused connections cost no VM").hasSize(1);
        }
    }

    @Test
    void passwordFromFileForTheConfiguredUser() throws Exception {
        Path pwFile = dir.resolve("password");
        Files.writeString(pwFile, "s3cret pass\n");
        try (TestServer ts = TestServer.start(dir, b -> b.user("alice").passwordFile(pwFile))) {
            SshClientHelper wrong = ts.ssh().withUser("alice").withPassword("not it", dir);
            SshClientHelper.Result r = wrong.ssh("echo in");
            assertThat(r.exitCode()).as(r.toString()).isEqualTo(255);
            assertThat(r.err()).contains("Permission denied");
            SshClientHelper.Result otherUser = ts.ssh().withUser("bob").withPassword("s3cret pass", dir).ssh("echo in");
            assertThat(otherUser.exitCode()).as(otherUser.toString()).isEqualTo(255);
            SshClientHelper.Result ok = ts.ssh().withUser("alice").withPassword("s3cret pass", dir).ssh("echo in");
            assertThat(ok.exitCode()).as(ok.toString()).isZero();
            assertThat(ok.out()).isEqualTo("in\n");
            // Only the configured methods are offered: no keys (not even the JVM user's ~/.ssh), no passwordless.
            SshClientHelper.Result none = ts.ssh().withUser("alice").sshWithFlags(List.of("-v"), "true");
            assertThat(none.exitCode()).isEqualTo(255);
            assertThat(none.err()).containsPattern("Authentications that can continue: keyboard-interactive,password\\r?\\n")
                    .doesNotContain("continue: publickey").doesNotContain("using \"none\"");
            assertThat(ts.lines()).anyMatch(m -> m.startsWith("auth_failed ") && m.contains("method=password") && m.contains("user=alice"));
        }
    }

    @Test
    void keyboardInteractiveUsesThePasswordToo() throws Exception {
        Path pwFile = dir.resolve("password");
        Files.writeString(pwFile, "kbd-secret");
        try (TestServer ts = TestServer.start(dir, b -> b.passwordFile(pwFile))) {
            SshClientHelper.Result ok = ts.ssh().withPassword("kbd-secret", dir)
                    .withOption("PreferredAuthentications=keyboard-interactive").ssh("echo in");
            assertThat(ok.exitCode()).as(ok.toString()).isZero();
            assertThat(ts.lines()).anyMatch(m -> m.startsWith("auth_succeeded ") && m.contains("user=tester"));
        }
    }

    @Test
    void anAddressThatKeepsFailingIsSlowedDownButStillServed() throws Exception {
        Path pwFile = dir.resolve("password");
        Files.writeString(pwFile, "right");
        try (TestServer ts = TestServer.start(dir, b -> b.passwordFile(pwFile))) {
            // Each refused client makes one or two attempts (keyboard-interactive, password).
            for (int i = 0; i <= FailureTracker.FREE_FAILURES
                    && ts.lines().stream().noneMatch(m -> m.startsWith("auth_failed ") && !m.endsWith("delay_ms=0")); i++) {
                assertThat(ts.ssh().withPassword("wrong", dir).ssh("true").exitCode()).isEqualTo(255);
            }
            assertThat(ts.lines()).anyMatch(m -> m.startsWith("auth_failed ") && m.endsWith("delay_ms="
                    + FailureTracker.BASE_DELAY.toMillis()));
            assertThat(ts.ssh().withPassword("right", dir).ssh("echo in").out()).isEqualTo("in\n");
            assertThat(ts.server.failuresFor("127.0.0.1")).as("a success forgets the failures").isZero();
        }
    }

    @Test
    void authAttemptsPerConnectionAreBounded() throws Exception {
        Path authorized = dir.resolve("authorized_keys");
        Files.writeString(authorized, Files.readString(Path.of(SshClientHelper.generateKey(dir, "known") + ".pub")));
        List<String> identities = new java.util.ArrayList<>();
        for (int i = 1; i < 6; i++) {
            identities.add("-i");
            identities.add(SshClientHelper.generateKey(dir, "unknown" + i).toString());
        }
        Path first = SshClientHelper.generateKey(dir, "unknown0");
        try (TestServer ts = TestServer.start(dir, b -> b.authorizedKeys(authorized).maxAuthAttempts(2))) {
            SshClientHelper.Result r = ts.ssh().withIdentity(first).sshWithFlags(identities, "true");
            assertThat(r.exitCode()).isEqualTo(255);
            long failures = ts.lines().stream().filter(m -> m.startsWith("auth_failed ")).count();
            assertThat(failures).as("keys were tried, and the connection was dropped before all six were")
                    .isBetween(1L, 3L);
        }
        try (TestServer ts = TestServer.start(dir, b -> b.authorizedKeys(authorized).maxAuthAttempts(20))) {
            SshClientHelper.Result r = ts.ssh().withIdentity(first).sshWithFlags(identities, "true");
            assertThat(r.exitCode()).isEqualTo(255);
            assertThat(ts.lines().stream().filter(m -> m.startsWith("auth_failed ")).count())
                    .as("with a higher bound all six keys are tried").isEqualTo(6);
        }
    }

    @Test
    void aConfiguredUserNameAppliesToPasswordlessLoginToo() throws Exception {
        try (TestServer ts = TestServer.start(dir, b -> b.user("alice"))) {
            assertThat(ts.ssh().withUser("bob").ssh("true").exitCode()).isEqualTo(255);
            SshClientHelper.Result ok = ts.ssh().withUser("alice").ssh("echo in");
            assertThat(ok.out()).as(ok.toString()).isEqualTo("in\n");
            assertThat(ts.lines()).anyMatch(m -> m.startsWith("auth_failed ") && m.contains("user=bob"));
        }
    }

    @Test
    void aConnectionThatNeverAuthenticatesIsDropped() throws Exception {
        try (TestServer ts = TestServer.start(dir, b -> b.authTimeout(Duration.ofMillis(500)));
                java.net.Socket idle = new java.net.Socket("127.0.0.1", ts.port())) {
            idle.setSoTimeout(20_000);
            java.io.InputStream in = idle.getInputStream();
            int r;
            do {
                r = in.read(); // the server's banner, then end of stream once the auth timeout strikes
            } while (r >= 0);
            assertThat(r).isEqualTo(-1);
            assertThat(ts.launcher.launched).isEmpty();
        }
    }

    @Test
    void passwordlessIsTheDefaultOnlyOnLoopback() throws Exception {
        StdioAgentVm.Launcher launcher = new StdioAgentVm.Launcher();
        Path key = dir.resolve("hk");
        for (String host : List.of("0.0.0.0", "::")) {
            VmgateSshServer s = new VmgateSshServer(ServerConfig.builder(launcher, key).listenHost(host).port(0).build());
            assertThatThrownBy(s::start).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("--authorized-keys").hasMessageContaining("--password-file")
                    .hasMessageContaining("--allow-passwordless");
        }
        // Explicitly allowed, or with credentials, a non-loopback address is fine.
        VmgateSshServer allowed = new VmgateSshServer(ServerConfig.builder(launcher, key).listenHost("0.0.0.0").port(0)
                .allowPasswordless(true).build());
        allowed.start();
        try {
            SshClientHelper.Result r = SshClientHelper.forPort(allowed.port()).ssh("echo open");
            assertThat(r.out()).as(r.toString()).isEqualTo("open\n");
        } finally {
            allowed.stop();
        }
        Path pw = dir.resolve("pw");
        Files.writeString(pw, "x");
        VmgateSshServer withPassword = new VmgateSshServer(ServerConfig.builder(launcher, key).listenHost("0.0.0.0").port(0)
                .passwordFile(pw).build());
        withPassword.start();
        try {
            assertThat(SshClientHelper.forPort(withPassword.port()).ssh("true").exitCode()).as("no passwordless").isEqualTo(255);
        } finally {
            withPassword.stop();
        }
        assertThat(VmgateSshServer.isLoopback("localhost")).isTrue();
        assertThat(VmgateSshServer.isLoopback("::1")).isTrue();
        assertThat(VmgateSshServer.isLoopback("0.0.0.0")).isFalse();
    }

    @Test
    void hostKeyIsGeneratedPrivateAndStableAcrossRestarts() throws Exception {
        Path key = dir.resolve("state/nested/host_ed25519_key");
        String first;
        try (TestServer ts = TestServer.start(dir, b -> b.hostKeyPath(key))) {
            first = ts.server.hostKeyFingerprint();
            assertThat(Files.getPosixFilePermissions(key)).isEqualTo(PosixFilePermissions.fromString("rw-------"));
            assertThat(scannedFingerprint(ts.port())).isEqualTo(first);
        }
        // OpenSSH reads the same key from the file.
        SshClientHelper.Result keygen = SshClientHelper.run(List.of("ssh-keygen", "-l", "-f", key.toString()), null, Map.of(),
                Duration.ofSeconds(30));
        assertThat(keygen.out()).contains(first).contains("ED25519");
        try (TestServer ts = TestServer.start(dir, b -> b.hostKeyPath(key))) {
            assertThat(ts.server.hostKeyFingerprint()).isEqualTo(first);
            assertThat(scannedFingerprint(ts.port())).isEqualTo(first);
        }
    }

    @Test
    void anUnreadableHostKeyIsNeverReplaced() throws Exception {
        Path key = dir.resolve("broken_key");
        Files.writeString(key, "not a key\n");
        VmgateSshServer s = new VmgateSshServer(ServerConfig.builder(new StdioAgentVm.Launcher(), key).port(0).build());
        assertThatThrownBy(s::start).hasMessageContaining("cannot read host key");
        assertThat(Files.readString(key)).isEqualTo("not a key\n");
    }

    @Test
    void aMissingAuthorizedKeysFileIsAConfigurationError() {
        VmgateSshServer s = new VmgateSshServer(ServerConfig.builder(new StdioAgentVm.Launcher(), dir.resolve("hk")).port(0)
                .authorizedKeys(dir.resolve("nope")).build());
        assertThatThrownBy(s::start).isInstanceOf(IllegalArgumentException.class).hasMessageContaining("nope");
    }

    /** The server's host key as a client sees it (ssh-keyscan piped into ssh-keygen -l). */
    private String scannedFingerprint(int port) throws Exception {
        SshClientHelper.Result scan = SshClientHelper.run(List.of("ssh-keyscan", "-t", "ed25519", "-p", String.valueOf(port), "127.0.0.1"),
                null, Map.of(), Duration.ofSeconds(30));
        Path scanned = Files.writeString(dir.resolve("scanned-" + port), scan.out());
        SshClientHelper.Result fp = SshClientHelper.run(List.of("ssh-keygen", "-l", "-f", scanned.toString()), null, Map.of(),
                Duration.ofSeconds(30));
        return fp.out().split(" ")[1];
    }
}
