package io.vmgate.egress;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.vmgate.exec.ExitStatus;
import io.vmgate.agent.GuestProcess;
import io.vmgate.agent.ProcessSpec;
import io.vmgate.image.AgentBinary;
import io.vmgate.image.Image;
import io.vmgate.image.ImageSources;
import io.vmgate.image.ImageStore;
import io.vmgate.vm.Network;
import io.vmgate.vm.Vm;
import io.vmgate.vm.VmConfig;
import io.vmgate.vm.qemu.Snapshots;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import io.vmgate.vm.qemu.RuntimeRoot;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/**
 * Egress with real QEMU VMs (restored from a snapshot template, as sessions are), the real agent
 * and its proxy, busybox's wget and nc in the guest, and real servers on the host's loopback.
 */
class EgressIT {
    static Image image;
    static HostServers servers;
    static TestCa ca;
    static Path templates;
    @RegisterExtension
    final RuntimeRoot runtime = new RuntimeRoot("vmgate-egress-it-");

    @BeforeAll
    static void setUp() throws Exception {
        assumeTrue(Stream.of(System.getenv("PATH").split(":")).anyMatch(d -> Files.isExecutable(Path.of(d, VmConfig.DEFAULT_QEMU))),
                "QEMU not installed");
        Path home = Path.of(System.getProperty("vmgate.home", "."));
        image = new ImageStore(home.resolve("target/it-image-cache")).image(ImageSources.debian().withAgent(agent(home)));
        templates = Files.createDirectories(home.resolve("target/it-templates"));
        ca = new TestCa(Files.createTempDirectory("vmgate-test-ca-"));
        servers = new HostServers(ca);
    }

    static AgentBinary agent(Path home) {
        if (AgentBinary.class.getResource(AgentBinary.RESOURCE) != null) {
            return AgentBinary.classpath();
        }
        Path built = home.resolve("guest/agent/build/vmgate-agent");
        assumeTrue(Files.isExecutable(built), "guest agent not built (make -C guest/agent)");
        return AgentBinary.file(built);
    }

    @AfterAll
    static void tearDown() throws IOException {
        if (servers != null) {
            servers.close();
        }
        if (ca != null) {
            try (Stream<Path> s = Files.list(ca.dir)) {
                for (Path p : s.toList()) {
                    Files.delete(p);
                }
            }
            Files.delete(ca.dir);
        }
    }


    VmConfig config() {
        return VmConfig.defaults(image).withRuntimeRoot(runtime.path()).withBootTimeout(Duration.ofSeconds(90));
    }

    Vm launch(String id, VmConfig cfg) throws Exception {
        return new Snapshots(cfg, templates, false).launch(id);
    }

    record Run(int code, String out, String err, long millis) {}

    static Run run(Vm vm, Map<String, String> env, String script) throws Exception {
        long t0 = System.nanoTime();
        GuestProcess p = vm.agent().start(ProcessSpec.shellCommand(script).withEnv(env));
        p.stdin().close();
        CompletableFuture<byte[]> err = CompletableFuture.supplyAsync(() -> readAll(p.stderr()));
        byte[] out = p.stdout().readAllBytes();
        ExitStatus x = p.exit().get(120, TimeUnit.SECONDS);
        return new Run(x.shellCode(), new String(out, StandardCharsets.UTF_8), new String(err.get(), StandardCharsets.UTF_8),
                (System.nanoTime() - t0) / 1_000_000);
    }

    static byte[] readAll(InputStream in) {
        try {
            return in.readAllBytes();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** A plain request through the proxy with nc, so that the whole answer (status line and body) is seen. */
    static String viaProxy(Vm vm, String url) throws Exception {
        String host = url.replaceFirst("^https?://([^/]+).*$", "$1");
        return run(vm, Map.of(), "printf 'GET " + url + " HTTP/1.1\\r\\nHost: " + host + "\\r\\n\\r\\n' | nc 127.0.0.1 "
                + Egress.DEFAULT_PROXY_PORT).out();
    }

    @Test
    void anAllowedDestinationAnswersAndOthersAreRefusedAtOnceWithTheReason() throws Exception {
        int port = servers.httpPort();
        try (Vm vm = launch("eg-allow", config());
                Egress egress = Egress.start(vm.agent(), EgressPolicy.parse("127.0.0.1:" + port), EgressLimits.defaults(), "alice")) {
            Map<String, String> env = egress.environment();
            assertThat(env).containsEntry("http_proxy", "http://127.0.0.1:3128").containsEntry("https_proxy", "http://127.0.0.1:3128")
                    .containsKeys("HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY");

            Run ok = run(vm, env, "wget -q -O- http://127.0.0.1:" + port + "/hello");
            assertThat(ok.code()).as(ok.err()).isZero();
            assertThat(ok.out()).isEqualTo("hello from the host on port " + port + " via /hello\n");

            // Another port of the same host: refused by the proxy at once, and wget says so.
            int other = servers.echoPort();
            Run no = run(vm, env, "wget -q -O- http://127.0.0.1:" + other + "/");
            assertThat(no.code()).isNotZero();
            assertThat(no.err()).contains("403");
            assertThat(no.millis()).as("a refusal takes no timeout").isLessThan(1000);
            assertThat(viaProxy(vm, "http://127.0.0.1:" + other + "/")).startsWith("HTTP/1.1 403 Forbidden\r\n").endsWith(
                    "\r\n\r\nvmgate egress: 127.0.0.1:" + other + " is not in the egress allowlist (allowed: 127.0.0.1:" + port + ")\n");
            assertThat(viaProxy(vm, "http://example.com/")).endsWith(
                    "vmgate egress: example.com:80 is not in the egress allowlist (allowed: 127.0.0.1:" + port + ")\n");
            assertThat(egress.stats().allowed()).isEqualTo(1);
            assertThat(egress.stats().denied()).isEqualTo(3);
        }
    }

    @Test
    void aNameThatResolvesToLoopbackIsRefusedUnlessTheAddressIsAllowed() throws Exception {
        int port = servers.httpPort();
        // no_proxy names localhost: send it through the proxy anyway, as a DNS-rebinding name would go
        String wget = "no_proxy= NO_PROXY= wget -q -O- http://localhost:" + port + "/hello";
        try (Vm vm = launch("eg-rebind", config());
                Egress egress = Egress.start(vm.agent(), EgressPolicy.parse("localhost:" + port), EgressLimits.defaults(), null)) {
            Run no = run(vm, egress.environment(), wget);
            assertThat(no.code()).isNotZero();
            assertThat(no.err()).contains("403");
            assertThat(viaProxy(vm, "http://localhost:" + port + "/hello")).contains(
                    "vmgate egress: localhost resolves to 127.0.0.1, a loopback 127.0.0.0/8 address; a name may not lead there");
        }
        try (Vm vm = launch("eg-rebind2", config());
                Egress egress = Egress.start(vm.agent(), EgressPolicy.parse("localhost:" + port + ",127.0.0.1:" + port),
                        EgressLimits.defaults(), null)) {
            Run ok = run(vm, egress.environment(), wget);
            assertThat(ok.code()).as(ok.err()).isZero();
            assertThat(ok.out()).startsWith("hello from the host");
        }
    }

    @Test
    void nothingGetsAroundTheProxyAndNoRulesMeansNoNetwork() throws Exception {
        int port = servers.httpPort();
        try (Vm vm = launch("eg-direct", config());
                Egress egress = Egress.start(vm.agent(), EgressPolicy.parse("127.0.0.1:" + port), EgressLimits.defaults(), null)) {
            assertThat(egress.environment()).isNotEmpty(); // the proxy is there, for those who use it
            assertThat(run(vm, Map.of(), "ls /sys/class/net").out().split("\\s+")).containsExactly("lo");
            // Direct connections, with the proxy variables or without: nowhere to go, and at once.
            for (String cmd : new String[] {"wget -q -O- http://10.0.2.2:" + port + "/hello",
                    "wget -q -O- http://93.184.216.34/", "echo x | nc 127.0.0.1 " + port, "echo x | nc 10.0.2.2 " + port}) {
                Run r = run(vm, Map.of(), cmd);
                assertThat(r.code()).as(cmd).isNotZero();
                assertThat(r.err()).as(cmd).containsAnyOf("unreachable", "refused");
                assertThat(r.millis()).as(cmd + " fails at once").isLessThan(1000);
            }
            // UDP has no way out either: a DNS lookup fails at once, it does not wait for a timeout
            Run dns = run(vm, Map.of(), "nslookup example.com");
            assertThat(dns.code()).isNotZero();
            assertThat(dns.millis()).as("nslookup fails at once: " + dns.out() + dns.err()).isLessThan(1000);
        }
        try (Vm vm = launch("eg-none", config());
                Egress egress = Egress.start(vm.agent(), EgressPolicy.none(), EgressLimits.defaults(), null)) {
            assertThat(egress.environment()).isEmpty();
            Map<String, String> proxy = Map.of("http_proxy", "http://127.0.0.1:3128");
            Run r = run(vm, proxy, "wget -q -O- http://127.0.0.1:" + port + "/hello");
            assertThat(r.code()).isNotZero();
            assertThat(r.err()).contains("refused"); // nobody listens: no proxy without rules
        }
    }

    @Test
    void twoVmsWithDifferentPoliciesGetDifferentAnswersToTheSameRequest() throws Exception {
        int port = servers.httpPort();
        try (Vm a = launch("eg-two-a", config()); Vm b = launch("eg-two-b", config());
                Egress ea = Egress.start(a.agent(), EgressPolicy.parse("127.0.0.1:" + port), EgressLimits.defaults(), "alice");
                Egress eb = Egress.start(b.agent(), EgressPolicy.parse("127.0.0.1:" + servers.echoPort()), EgressLimits.defaults(), "bob")) {
            String cmd = "wget -q -O- http://127.0.0.1:" + port + "/hello";
            Run ra = run(a, ea.environment(), cmd);
            Run rb = run(b, eb.environment(), cmd);
            assertThat(ra.code()).as(ra.err()).isZero();
            assertThat(rb.code()).isNotZero();
            assertThat(rb.err()).contains("403");
        }
    }

    @Test
    void connectCarriesBytesUntouchedBothWays() throws Exception {
        int echo = servers.echoPort();
        try (Vm vm = launch("eg-connect", config());
                Egress egress = Egress.start(vm.agent(), EgressPolicy.parse("127.0.0.1:" + echo), EgressLimits.defaults(), null)) {
            Run r = run(vm, Map.of(), "{ printf 'CONNECT 127.0.0.1:" + echo + " HTTP/1.1\\r\\n\\r\\n'; sleep 1; "
                    + "head -c 300000 /dev/urandom > /tmp/sent; cat /tmp/sent; sleep 2; } | nc 127.0.0.1 3128 > /tmp/got; "
                    + "head -c 39 /tmp/got; tail -c +40 /tmp/got | cmp - /tmp/sent && echo same");
            assertThat(r.out()).as(r.err()).isEqualTo("HTTP/1.1 200 Connection established\r\n\r\nsame\n");
            assertThat(egress.stats().bytesOut()).isEqualTo(300000);
        }
    }

    /**
     * busybox wget has no CONNECT: it sends {@code GET https://...} to the proxy and leaves TLS to
     * it. The host then speaks TLS to the server and verifies its certificate (here against the
     * test CA; by default against the JDK's CAs, which do not know it).
     */
    @Test
    void httpsForAClientWithoutTlsIsDoneAndVerifiedByTheHost() throws Exception {
        int port = servers.httpsPort();
        String wget = "wget -q -O- https://127.0.0.1:" + port + "/hello";
        EgressPolicy policy = EgressPolicy.parse("127.0.0.1:" + port);
        try (Vm vm = launch("eg-tls", config());
                Egress egress = Egress.start(vm.agent(), policy, EgressLimits.defaults(), null,
                        Egress.Setup.defaults().withTls(ca.trust()))) {
            Run ok = run(vm, egress.environment(), wget);
            assertThat(ok.code()).as(ok.err()).isZero();
            assertThat(ok.out()).isEqualTo("hello from the host on port " + port + " via /hello\n");
        }
        try (Vm vm = launch("eg-tls-untrusted", config());
                Egress egress = Egress.start(vm.agent(), policy, EgressLimits.defaults(), null)) {
            Run no = run(vm, egress.environment(), wget);
            assertThat(no.code()).isNotZero();
            assertThat(no.err()).contains("502");
            assertThat(viaProxy(vm, "https://127.0.0.1:" + port + "/hello")).startsWith("HTTP/1.1 502 Bad Gateway\r\n")
                    .contains("vmgate egress: TLS with 127.0.0.1:" + port + " failed: ").contains("PKIX");
        }
    }

    @Test
    void openNetworkReachesTheHostLoopbackThroughNat() throws Exception {
        int port = servers.httpPort();
        try (Vm vm = launch("eg-open", config().withNetwork(Network.OPEN))) {
            assertThat(run(vm, Map.of(), "cat /etc/resolv.conf").out()).isEqualTo("nameserver 10.0.2.3\n");
            Run r = run(vm, Map.of(), "wget -q -O- http://10.0.2.2:" + port + "/hello");
            assertThat(r.code()).as(r.err()).isZero();
            assertThat(r.out()).startsWith("hello from the host on port " + port);
        }
    }

    static Map<String, String> with(Map<String, String> a, Map<String, String> b) {
        Map<String, String> m = new HashMap<>(a);
        m.putAll(b);
        return m;
    }
}
