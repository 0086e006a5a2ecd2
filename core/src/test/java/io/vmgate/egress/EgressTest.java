package io.vmgate.egress;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ch.qos.logback.classic.Logger;
import ch.qos.logback.classic.spi.ILoggingEvent;
import ch.qos.logback.core.read.ListAppender;
import io.vmgate.ssh.StdioAgentVm;
import io.vmgate.text.EventText;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ProxySelector;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.stream.Stream;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLHandshakeException;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.slf4j.LoggerFactory;

/**
 * The host end of egress with the real agent and its proxy, run as a host process
 * ({@code vmgate-agent --stdio}: it listens on the host's loopback then), real clients (the JDK's
 * HTTP client, raw sockets) and real servers on loopback. No VM: EgressIT has those.
 */
class EgressTest {
    static TestCa ca;
    static HostServers servers;
    StdioAgentVm vm;
    int proxyPort;
    final ListAppender<ILoggingEvent> logs = new ListAppender<>();
    final Logger logger = (Logger) LoggerFactory.getLogger(Egress.class);

    @BeforeAll
    static void servers() throws Exception {
        ca = new TestCa(Files.createTempDirectory("vmgate-test-ca-"));
        servers = new HostServers(ca);
    }

    @AfterAll
    static void stopServers() throws IOException {
        servers.close();
        try (Stream<Path> s = Files.list(ca.dir)) {
            for (Path p : s.toList()) {
                Files.delete(p);
            }
        }
        Files.delete(ca.dir);
    }

    @BeforeEach
    void agent() throws Exception {
        vm = StdioAgentVm.start("egress-test");
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            proxyPort = s.getLocalPort();
        }
        logs.start();
        logger.addAppender(logs);
    }

    @AfterEach
    void stop() {
        logger.detachAppender(logs);
        vm.close();
    }

    Egress start(String rules, EgressLimits limits) throws IOException {
        return start(rules, limits, Egress.Setup.defaults());
    }

    Egress start(String rules, EgressLimits limits, Egress.Setup setup) throws IOException {
        return Egress.start(vm.agent(), EgressPolicy.parse(rules), limits, "alice", setup.withProxyPort(proxyPort));
    }

    HttpClient client(SSLContext trust) {
        return HttpClient.newBuilder().proxy(ProxySelector.of(new InetSocketAddress("127.0.0.1", proxyPort)))
                .sslContext(trust).version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(10)).build();
    }

    HttpResponse<String> get(HttpClient c, String url) throws Exception {
        return c.send(HttpRequest.newBuilder(URI.create(url)).timeout(Duration.ofSeconds(20)).build(),
                HttpResponse.BodyHandlers.ofString());
    }

    /** Sends a raw request to the proxy and returns all of its answer, up to the end or a reset. */
    String raw(String request) throws IOException {
        try (Socket s = new Socket("127.0.0.1", proxyPort)) {
            s.setSoTimeout(20_000);
            s.getOutputStream().write(request.getBytes(StandardCharsets.US_ASCII));
            java.io.ByteArrayOutputStream got = new java.io.ByteArrayOutputStream();
            byte[] buf = new byte[65536];
            try {
                for (int n; (n = s.getInputStream().read(buf)) > 0; ) {
                    got.write(buf, 0, n);
                }
            } catch (java.net.SocketException e) {
                got.writeBytes(("\n[" + e.getMessage() + "]").getBytes(StandardCharsets.US_ASCII));
            }
            return got.toString(StandardCharsets.UTF_8);
        }
    }

    List<String> events(String name) {
        return logs.list.stream().filter(e -> e.getMessage().equals(name)).map(EventText::line).toList();
    }

    @Test
    void allowedServersAnswerOverPlainHttpAndOverTlsThatOnlyTheClientSees() throws Exception {
        int http = servers.httpPort(), https = servers.httpsPort();
        try (Egress egress = start("127.0.0.1:" + http + ",127.0.0.1:" + https, EgressLimits.defaults())) {
            HttpClient trusting = client(ca.trust());
            HttpResponse<String> r = get(trusting, "http://127.0.0.1:" + http + "/hello");
            assertThat(r.statusCode()).isEqualTo(200);
            assertThat(r.body()).isEqualTo("hello from the host on port " + http + " via /hello\n");
            // CONNECT: the client checks the server's own certificate, so the proxy cannot have touched the stream
            r = get(trusting, "https://127.0.0.1:" + https + "/hello");
            assertThat(r.statusCode()).isEqualTo(200);
            assertThat(r.body()).isEqualTo("hello from the host on port " + https + " via /hello\n");
            assertThatThrownBy(() -> get(client(SSLContext.getDefault()), "https://127.0.0.1:" + https + "/hello"))
                    .isInstanceOf(SSLHandshakeException.class);
            // bulk both ways
            byte[] up = new byte[3_000_000];
            r = trusting.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + http + "/upload"))
                    .POST(HttpRequest.BodyPublishers.ofByteArray(up)).build(), HttpResponse.BodyHandlers.ofString());
            assertThat(r.body()).isEqualTo("received 3000000 bytes\n");
            HttpResponse<byte[]> down = trusting.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + http + "/bytes?n=5000000"))
                    .build(), HttpResponse.BodyHandlers.ofByteArray());
            assertThat(down.body()).hasSize(5_000_000);
            trusting.close(); // it keeps its TLS connection (through CONNECT, end to end) for the next request
            awaitOpen(egress, 0); // a connection is counted when it has ended both ways
            assertThat(egress.stats().allowed()).isEqualTo(5);
            assertThat(egress.stats().bytesOut()).isGreaterThan(3_000_000);
            assertThat(egress.stats().bytesIn()).isGreaterThan(5_000_000);
        }
        assertThat(events("egress_allowed")).hasSize(5).first().asString().matches(
                "egress_allowed vm=egress-test user=alice host=127.0.0.1 port=" + http + " address=127.0.0.1 rule=127.0.0.1:" + http
                        + " bytes_out=\\d+ bytes_in=\\d+ ms=\\d+");
        assertThat(events("egress_closed")).singleElement().asString().contains("allowed=5 denied=0");
    }

    @Test
    void refusalsComeAtOnceAndSayWhy() throws Exception {
        int http = servers.httpPort();
        int closed;
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            closed = s.getLocalPort();
        }
        try (Egress egress = start("127.0.0.1:" + http + ",127.0.0.1:" + closed, EgressLimits.defaults())) {
            long t0 = System.nanoTime();
            String answer = raw("GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n");
            assertThat(Duration.ofNanos(System.nanoTime() - t0)).isLessThan(Duration.ofSeconds(5)); // not a timeout
            assertThat(answer).startsWith("HTTP/1.1 403 Forbidden\r\n").endsWith("\r\n\r\nvmgate egress: example.com:80 is not in "
                    + "the egress allowlist (allowed: 127.0.0.1:" + http + ", 127.0.0.1:" + closed + ")\n");
            assertThat(raw("CONNECT 127.0.0.1:22 HTTP/1.1\r\n\r\n")).startsWith("HTTP/1.1 403 Forbidden\r\n");
            // allowed, but nobody listens: a 502 that says so, not a hang
            assertThat(raw("GET http://127.0.0.1:" + closed + "/ HTTP/1.1\r\n\r\n")).startsWith("HTTP/1.1 502 Bad Gateway\r\n")
                    .contains("vmgate egress: cannot connect to 127.0.0.1:" + closed + " (127.0.0.1): Connection refused");
            assertThat(egress.stats().denied()).isEqualTo(3);
        }
        assertThat(events("egress_denied")).hasSize(2).first().asString().matches(java.util.regex.Pattern.quote(
                "egress_denied vm=egress-test user=alice host=example.com port=80 address=- reason=\"example.com:80 is not in the "
                + "egress allowlist (allowed: 127.0.0.1:" + http + ", 127.0.0.1:" + closed + ")\" kind=denied ms=") + "\\d+");
        assertThat(events("egress_failed")).singleElement().asString().contains("host=127.0.0.1 port=" + closed,
                "reason=\"cannot connect");
    }

    @Test
    void limitsRefuseNewConnectionsAndCutRunningOnes() throws Exception {
        int echo = servers.echoPort(), http = servers.httpPort();
        try (Egress egress = start("127.0.0.1:" + echo + ",127.0.0.1:" + http,
                EgressLimits.defaults().withMaxConnections(1).withMaxBytes(Long.MAX_VALUE, 1_000_000))) {
            try (Socket held = new Socket("127.0.0.1", proxyPort)) {
                held.getOutputStream().write(("CONNECT 127.0.0.1:" + echo + " HTTP/1.1\r\n\r\n").getBytes(StandardCharsets.US_ASCII));
                assertThat(readLine(held.getInputStream())).isEqualTo("HTTP/1.1 200 Connection established");
                assertThat(raw("CONNECT 127.0.0.1:" + echo + " HTTP/1.1\r\n\r\n")).startsWith("HTTP/1.1 503 Service Unavailable\r\n")
                        .endsWith("vmgate egress: 1 connections at once is this VM's egress limit\n");
            }
            awaitOpen(egress, 0);
            // a download that goes past the byte limit is cut, and nothing more comes in after it
            String cut = raw("GET http://127.0.0.1:" + http + "/bytes?n=3000000 HTTP/1.1\r\nHost: x\r\n\r\n");
            assertThat(cut.length()).isLessThan(1_500_000);
            assertThat(cut).endsWith("[Connection reset]"); // a reset, so the client cannot take it for the whole
            awaitOpen(egress, 0);
            assertThat(raw("GET http://127.0.0.1:" + http + "/hello HTTP/1.1\r\nHost: x\r\n\r\n")).startsWith("HTTP/1.1 503 ")
                    .contains("this VM has received its egress limit of 1000000 bytes");
        }
        assertThat(events("egress_allowed")).anyMatch(e -> e.contains("cut=\"this VM has received its egress limit of 1000000 bytes\""));
    }

    @Test
    void closingEgressCutsItsConnectionsAndRefusesNewOnes() throws Exception {
        int echo = servers.echoPort();
        Egress egress = start("127.0.0.1:" + echo, EgressLimits.defaults());
        try (Socket s = new Socket("127.0.0.1", proxyPort)) {
            s.setSoTimeout(20_000);
            s.getOutputStream().write(("CONNECT 127.0.0.1:" + echo + " HTTP/1.1\r\n\r\nping\n").getBytes(StandardCharsets.US_ASCII));
            InputStream in = s.getInputStream();
            assertThat(readLine(in)).isEqualTo("HTTP/1.1 200 Connection established");
            assertThat(readLine(in)).isEmpty();
            assertThat(readLine(in)).isEqualTo("ping");
            egress.close();
            assertThatThrownBy(() -> {
                if (in.read() >= 0) {
                    throw new AssertionError("bytes after the close");
                }
                throw new IOException("end of stream");
            }).isInstanceOf(IOException.class);
        }
        assertThat(raw("CONNECT 127.0.0.1:" + echo + " HTTP/1.1\r\n\r\n")).startsWith("HTTP/1.1 403 ")
                .contains("egress has ended for this VM");
    }

    @Test
    void anEmptyPolicyStartsNoProxyAtAll() throws Exception {
        try (Egress egress = Egress.start(vm.agent(), EgressPolicy.none(), EgressLimits.defaults(), null,
                Egress.Setup.defaults().withProxyPort(proxyPort))) {
            assertThat(egress.environment()).isEmpty();
            assertThatThrownBy(() -> new Socket("127.0.0.1", proxyPort).close()).isInstanceOf(java.net.ConnectException.class);
        }
    }

    @Test
    void theEnvironmentPointsEveryToolAtTheProxy() throws Exception {
        try (Egress egress = start("deb.debian.org", EgressLimits.defaults())) {
            String url = "http://127.0.0.1:" + proxyPort;
            assertThat(egress.environment()).containsOnly(java.util.Map.entry("http_proxy", url), java.util.Map.entry("https_proxy", url),
                    java.util.Map.entry("HTTP_PROXY", url), java.util.Map.entry("HTTPS_PROXY", url),
                    java.util.Map.entry("no_proxy", "localhost,127.0.0.1,::1"), java.util.Map.entry("NO_PROXY", "localhost,127.0.0.1,::1"));
        }
    }

    private static void awaitOpen(Egress egress, int n) throws InterruptedException {
        for (int i = 0; i < 200 && egress.stats().open() != n; i++) {
            Thread.sleep(50);
        }
        assertThat(egress.stats().open()).isEqualTo(n);
    }

    private static String readLine(InputStream in) throws IOException {
        StringBuilder b = new StringBuilder();
        for (int c; (c = in.read()) != '\n'; ) {
            if (c < 0) {
                throw new IOException("end of stream after '" + b + "'");
            }
            b.append((char) c);
        }
        return b.toString().stripTrailing();
    }
}
