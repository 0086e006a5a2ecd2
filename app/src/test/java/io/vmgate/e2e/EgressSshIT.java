package io.vmgate.e2e;

import static org.assertj.core.api.Assertions.assertThat;

import io.vmgate.egress.HostServers;
import io.vmgate.egress.TestCa;
import io.vmgate.image.TestRootfs;
import io.vmgate.ssh.SshClientHelper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The egress allowlist as an operator sets it: {@code --egress} on run and serve, per-user rules
 * in serve's config file, {@code --net open}; real HTTP and HTTPS servers on the host's loopback,
 * busybox wget in the default image, and curl and git over HTTPS in the Debian image with a test CA
 * installed into the guest's trust.
 *
 * <p>The servers listen on the host's 127.0.0.1, which inside a guest is the guest's own loopback:
 * the rules allow it as an IP literal, and clients that honour {@code no_proxy} (which names the
 * guest's loopback) are told to use the proxy anyway.
 */
class EgressSshIT {
    @TempDir
    static Path dir;
    static TestCa ca;
    static HostServers servers;
    static final String VMGATE = Host.HOME.resolve("vmgate").toString();

    @BeforeAll
    static void servers() throws Exception {
        ca = new TestCa(Files.createDirectories(dir.resolve("ca")));
        servers = new HostServers(ca);
        // A git repository served over HTTPS with git's dumb HTTP protocol.
        Path work = dir.resolve("work");
        Path bare = dir.resolve("repo.git");
        git(dir, "init", "-q", "-b", "main", work.toString());
        Files.writeString(work.resolve("README"), "cloned through vmgate's egress\n");
        git(work, "add", "README");
        git(work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one");
        git(dir, "clone", "-q", "--bare", work.toString(), bare.toString());
        git(bare, "update-server-info");
        servers.serveFiles("/repo.git", bare);
    }

    @AfterAll
    static void stop() throws Exception {
        if (servers != null) {
            servers.close();
        }
    }

    static void git(Path in, String... args) throws Exception {
        List<String> cmd = new ArrayList<>(List.of("git", "-C", in.toString()));
        cmd.addAll(List.of(args));
        Host.Result r = Host.run(cmd, Map.of(), null, 60);
        assertThat(r.exit()).as(r.stderr()).isZero();
    }

    String hello(int port) {
        return "hello from the host on port " + port + " via /hello\n";
    }

    @Test
    void perUserAllowlistsGiveDifferentAnswersToTheSameRequest() throws Exception {
        int port = servers.httpPort();
        Path config = dir.resolve("serve.conf");
        Files.writeString(config, "egress.alice = 127.0.0.1:" + port + "\negress.bob =\n");
        try (ServeProcess server = ServeProcess.builder(dir).name("EgressSshIT-users").args("--config", config.toString()).start()) {
            String get = "wget -q -O - http://127.0.0.1:" + port + "/hello";
            SshClientHelper.Result alice = server.ssh().withUser("alice").withTimeout(Duration.ofSeconds(120)).ssh(get);
            assertThat(alice.exitCode()).as(alice.toString()).isZero();
            assertThat(alice.out()).isEqualTo(hello(port));

            SshClientHelper.Result bob = server.ssh().withUser("bob").withTimeout(Duration.ofSeconds(120))
                    .ssh("env | grep -ci proxy; " + get);
            assertThat(bob.exitCode()).as("bob has no network: %s", bob).isNotZero();
            assertThat(bob.out()).startsWith("0\n");
            assertThat(bob.err()).containsIgnoringCase("refused");

            SshClientHelper.Result other = server.ssh().withUser("alice").withTimeout(Duration.ofSeconds(120))
                    .ssh("wget -q -O - http://127.0.0.1:" + servers.httpsPort() + "/hello");
            assertThat(other.exitCode()).as("a port alice may not reach: %s", other).isNotZero();
            assertThat(other.err()).contains("403");
            assertThat(server.logLines("egress_denied")).anyMatch(l -> l.contains("user=alice") && l.contains("port=" + servers.httpsPort()));
            assertThat(server.logLines("egress_allowed")).anyMatch(l -> l.contains("user=alice") && l.contains("port=" + port));
            Host.assertNothingLeft(server.runtimeRoot(), 10);
        }
    }

    @Test
    void runWithAnAllowlistNamesAndLiterals() throws Exception {
        int port = servers.httpPort();
        Host.Result ok = Host.run(List.of(VMGATE, "run", "--egress", "127.0.0.1:" + port, "--",
                "wget", "-q", "-O", "-", "http://127.0.0.1:" + port + "/hello"), Map.of(), null, 300);
        assertThat(ok.exit()).as(ok.stderr()).isZero();
        assertThat(ok.out()).isEqualTo(hello(port));

        Host.Result denied = Host.run(List.of(VMGATE, "run", "--egress", "127.0.0.1:" + port, "--",
                "wget", "-q", "-O", "-", "http://127.0.0.1:" + servers.echoPort() + "/"), Map.of(), null, 300);
        assertThat(denied.exit()).isNotZero();
        assertThat(denied.stderr()).contains("403");

        // A name that resolves to loopback on the host is refused unless its address is allowed as a literal.
        Host.Result rebound = Host.run(List.of(VMGATE, "run", "--egress", "localhost:" + port, "--",
                "wget", "-q", "-O", "-", "http://localhost:" + port + "/hello"), Map.of(), null, 300);
        assertThat(rebound.exit()).as("a name resolving to loopback: %s", rebound.stderr()).isNotZero();

        Host.Result none = Host.run(List.of(VMGATE, "run", "--", "sh", "-c",
                "env | grep -ci proxy; wget -q -O - http://127.0.0.1:" + port + "/hello"), Map.of(), null, 300);
        assertThat(none.exit()).as("no rule: no network").isNotZero();
        assertThat(none.out()).isEqualTo("0\n");

        Host.Result both = Host.run(List.of(VMGATE, "run", "--egress", "127.0.0.1", "--net", "open", "--", "true"), Map.of(), null, 300);
        assertThat(both.exit()).isEqualTo(125);
        assertThat(both.stderr()).contains("go around the allowlist");
        Host.Result bad = Host.run(List.of(VMGATE, "run", "--egress", "exa mple.com", "--", "true"), Map.of(), null, 300);
        assertThat(bad.exit()).isEqualTo(125);
        assertThat(bad.stderr()).contains("exa mple.com");
    }

    @Test
    void anOpenNetworkReachesTheHostThroughNat() throws Exception {
        int port = servers.httpPort();
        Host.Result r = Host.run(List.of(VMGATE, "run", "--net", "open", "--",
                "wget", "-q", "-O", "-", "http://10.0.2.2:" + port + "/hello"), Map.of(), null, 300);
        assertThat(r.exit()).as(r.stderr()).isZero();
        assertThat(r.out()).isEqualTo(hello(port));
    }

    @Test
    void curlAndGitOverHttpsInDebian() throws Exception {
        Path debian = TestRootfs.debian().directory();
        int https = servers.httpsPort();
        try (ServeProcess server = ServeProcess.builder(dir).name("EgressSshIT-debian")
                .args("--image", debian.toString(), "--egress", "127.0.0.1:" + https).start()) {
            SshClientHelper ssh = server.ssh().withTimeout(Duration.ofSeconds(180)).withStdin(Files.readAllBytes(ca.caCertificate()));
            // The test CA goes into the guest's trust; no_proxy (the guest's own loopback) is cleared, since
            // this server is on the host's loopback, which the guest reaches only through the proxy.
            SshClientHelper.Result r = ssh.ssh("cat > /usr/local/share/ca-certificates/vmgate-test.crt && update-ca-certificates >/dev/null"
                    + " && export no_proxy= NO_PROXY= && curl -sS https://127.0.0.1:" + https + "/hello"
                    + " && git clone -q https://127.0.0.1:" + https + "/repo.git /tmp/repo && cat /tmp/repo/README");
            assertThat(r.exitCode()).as(r.toString()).isZero();
            assertThat(r.out()).isEqualTo(hello(https) + "cloned through vmgate's egress\n");

            SshClientHelper.Result untrusted = server.ssh().withTimeout(Duration.ofSeconds(180))
                    .ssh("export no_proxy= NO_PROXY=; curl -sS https://127.0.0.1:" + https + "/hello");
            assertThat(untrusted.exitCode()).as("without the CA the guest's curl refuses the certificate: %s", untrusted).isNotZero();
            assertThat(untrusted.err()).containsIgnoringCase("certificate");
            Host.assertNothingLeft(server.runtimeRoot(), 10);
        }
    }
}
