package io.vmgate.image.oci;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import io.vmgate.image.RootfsImage;
import io.vmgate.image.RootfsStore;
import io.vmgate.image.TestTar;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code image pull} against registries on loopback that misbehave on purpose (the real registry
 * is in the end-to-end tests): bearer tokens with credentials from an auth file, redirects that
 * must not carry them, 401/404/429/500, a connection dropped mid-blob, a blob that is not what
 * its digest says, an index without amd64, schema 1, and two pulls of one image at once. Each
 * failure names the image and the cause and leaves nothing in the store.
 */
class RegistryPullTest {
    @TempDir
    Path tmp;
    Path cache;
    HttpServer server, cdn;
    String host;
    final Map<String, byte[]> blobs = new ConcurrentHashMap<>();
    final Map<String, byte[]> manifests = new ConcurrentHashMap<>();
    final Map<String, Integer> failWith = new ConcurrentHashMap<>();
    final List<String> cdnAuthorization = new CopyOnWriteArrayList<>();
    final List<String> requests = new CopyOnWriteArrayList<>();
    volatile boolean needToken = true;
    volatile boolean redirectBlobs;
    TestImages.Layer base, top;
    byte[] config, manifest;

    @BeforeEach
    void start() throws Exception {
        cache = tmp.resolve("cache");
        base = TestImages.layer(new TestTar().dir("bin/").entry("bin/sh", '0', 0755, 0, 0, "x".getBytes(StandardCharsets.UTF_8), "")
                .file("big", "0123456789".repeat(300_000)).end(), TestImages.Compression.NONE);
        top = TestImages.layer(new TestTar().file(".wh.big", "").file("hello", "hi").end(), TestImages.Compression.GZIP);
        config = TestImages.config("amd64", List.of("A=1"), "/", null, null, List.of("/bin/sh"), List.of(base, top));
        manifest = TestImages.manifest(config, List.of(base, top));
        for (byte[] b : List.of(config, base.blob(), top.blob())) {
            blobs.put(TestImages.sha256(b), b);
        }
        manifests.put("app/v1", manifest);
        manifests.put("app/" + TestImages.sha256(manifest), manifest);

        cdn = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
        cdn.createContext("/", ex -> {
            cdnAuthorization.add(String.valueOf(ex.getRequestHeaders().getFirst("Authorization")));
            byte[] b = blobs.get(ex.getRequestURI().getPath().substring(1));
            send(ex, b == null ? 404 : 200, b == null ? new byte[0] : b, Map.of());
        });
        cdn.start();
        server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
        server.setExecutor(Executors.newFixedThreadPool(8));
        host = "127.0.0.1:" + server.getAddress().getPort();
        server.createContext("/token", ex -> {
            String auth = ex.getRequestHeaders().getFirst("Authorization");
            boolean ok = ("Basic " + Base64.getEncoder().encodeToString("alice:s3cret".getBytes(StandardCharsets.UTF_8))).equals(auth);
            send(ex, ok ? 200 : 401, (ok ? "{\"token\":\"t0k\"}" : "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"bad login\"}]}")
                    .getBytes(StandardCharsets.UTF_8), Map.of());
        });
        server.createContext("/v2/", ex -> {
            String path = ex.getRequestURI().getPath().substring("/v2/".length());
            requests.add(path);
            if (needToken && !"Bearer t0k".equals(ex.getRequestHeaders().getFirst("Authorization"))) {
                send(ex, 401, "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"}]}".getBytes(StandardCharsets.UTF_8),
                        Map.of("WWW-Authenticate", "Bearer realm=\"http://" + host + "/token\",service=\"test\",scope=\"repository:app:pull\""));
                return;
            }
            for (Map.Entry<String, Integer> f : failWith.entrySet()) {
                if (path.contains(f.getKey())) {
                    send(ex, f.getValue(), ("{\"errors\":[{\"code\":\"" + (f.getValue() == 404 ? "MANIFEST_UNKNOWN" : "TOOMANYREQUESTS")
                            + "\",\"message\":\"said the registry\"}]}").getBytes(StandardCharsets.UTF_8),
                            f.getValue() == 429 ? Map.of("Retry-After", "42") : Map.of());
                    return;
                }
            }
            if (path.contains("/manifests/")) {
                String key = path.replace("/manifests/", "/");
                byte[] m = manifests.get(key);
                send(ex, m == null ? 404 : 200, m == null ? new byte[0] : m, Map.of("Content-Type", MediaTypes.OCI_MANIFEST));
            } else {
                String digest = path.substring(path.lastIndexOf('/') + 1);
                if (redirectBlobs) {
                    send(ex, 307, new byte[0], Map.of("Location", "http://127.0.0.1:" + cdn.getAddress().getPort() + "/" + digest));
                    return;
                }
                byte[] b = blobs.get(digest);
                send(ex, b == null ? 404 : 200, b == null ? new byte[0] : b, Map.of());
            }
        });
        server.start();
        Files.writeString(tmp.resolve("auth.json"), "{\"auths\":{\"" + host + "\":{\"auth\":\""
                + Base64.getEncoder().encodeToString("alice:s3cret".getBytes(StandardCharsets.UTF_8)) + "\"}}}");
    }

    @AfterEach
    void stop() {
        server.stop(0);
        cdn.stop(0);
    }

    static void send(HttpExchange ex, int status, byte[] body, Map<String, String> headers) throws IOException {
        headers.forEach((k, v) -> ex.getResponseHeaders().add(k, v));
        ex.sendResponseHeaders(status, body.length == 0 ? -1 : body.length);
        if (body.length > 0) {
            try (OutputStream o = ex.getResponseBody()) {
                o.write(body);
            }
        }
        ex.close();
    }

    OciImages oci(Map<String, String> env) {
        return new OciImages(cache, OciImages.Options.defaults().withEnvironment(env), l -> { });
    }

    Map<String, String> auth() {
        return Map.of("REGISTRY_AUTH_FILE", tmp.resolve("auth.json").toString());
    }

    @Test
    void aTokenFromTheRealmWithTheAuthFilesCredentialsAndOnlyMissingBlobsAreFetched() throws Exception {
        List<String> lines = new ArrayList<>();
        RootfsImage img = new OciImages(cache, OciImages.Options.defaults().withEnvironment(auth()), lines::add).pull(host + "/app:v1",
                Optional.empty());
        assertThat(img.root().manifest().entries().keySet()).contains("hello", "bin/sh").doesNotContain("big");
        assertThat(new RootfsStore(cache).get("app-v1").id()).isEqualTo(img.id());
        assertThat(img.source()).isEqualTo(host + "/app:v1@" + TestImages.sha256(manifest));
        assertThat(lines).anyMatch(l -> l.matches("layer 1/2 sha256:[0-9a-f]{12}: fetched 2\\.9 MiB in .*"));
        requests.clear();
        lines.clear();
        new RootfsStore(cache).remove("app-v1");
        RootfsImage again = new OciImages(cache, OciImages.Options.defaults().withEnvironment(auth()), lines::add).pull(host + "/app:v1",
                Optional.of("again"));
        assertThat(again.id()).isEqualTo(img.id());
        assertThat(requests).as("a blob already in the store is not fetched again").noneMatch(r -> r.contains("/blobs/"));
        assertThat(lines).anyMatch(l -> l.contains("layer 1/2") && l.contains("already in the blob store"));
    }

    @Test
    void redirectsDoNotCarryTheTokenToAnotherHost() throws Exception {
        redirectBlobs = true;
        oci(auth()).pull(host + "/app@" + TestImages.sha256(manifest), Optional.of("pinned"));
        assertThat(cdnAuthorization).hasSize(3).containsOnly("null");
    }

    @Test
    void whatTheRegistryRefusesIsSaidWithTheImageAndTheCause() throws Exception {
        assertFails(Map.of(), host + "/app:v1", host + "/app:v1: the token service 127.0.0.1 answered 401 Unauthorized: UNAUTHORIZED bad login"
                + " (no credentials for " + host);
        Files.writeString(tmp.resolve("wrong.json"), "{\"auths\":{\"" + host + "\":{\"auth\":\""
                + Base64.getEncoder().encodeToString("alice:wrong".getBytes(StandardCharsets.UTF_8)) + "\"}}}");
        assertFails(Map.of("REGISTRY_AUTH_FILE", tmp.resolve("wrong.json").toString()), host + "/app:v1",
                "answered 401 Unauthorized: UNAUTHORIZED bad login (with the credentials for " + host);
        assertFails(auth(), host + "/app:v2", host + "/app:v2: the manifest v2 not found (404 Not Found)");
        failWith.put("/blobs/" + top.digest(), 404);
        assertFails(auth(), host + "/app:v1", "layer 2/2 " + Digest.parse(top.digest()).shortForm() + " not found (404 Not Found): MANIFEST_UNKNOWN");
        failWith.clear();
        failWith.put("/manifests/", 429);
        assertFails(auth(), host + "/app:v1", "the registry is rate-limiting this host (429 Too Many Requests): TOOMANYREQUESTS said the registry;"
                + " it asks to retry after 42 s");
        failWith.put("/manifests/", 500);
        assertFails(auth(), host + "/app:v1", "the registry answered 500 Internal Server Error for the manifest v1");
        failWith.clear();
        assertFails(auth(), "127.0.0.1:1/app:v1", "cannot connect to 127.0.0.1:1");
        assertFails(auth(), "registry.invalid:5000/App", "is not a repository name component");
    }

    @Test
    void lyingRegistriesAreCaught() throws Exception {
        needToken = false;
        blobs.put(top.digest(), "not the layer".getBytes(StandardCharsets.UTF_8));
        assertFails(Map.of(), host + "/app:v1", "layer 2/2 " + Digest.parse(top.digest()).shortForm() + ": blob "
                + Digest.parse(top.digest()).shortForm() + " ended after 13 of its " + top.size() + " bytes");
        byte[] wrong = new byte[(int) top.size()];
        blobs.put(top.digest(), wrong);
        assertFails(Map.of(), host + "/app:v1", "digest mismatch: blob " + top.digest() + " has the digest " + TestImages.sha256(wrong));
        blobs.put(top.digest(), top.blob());

        byte[] arm = TestImages.index(List.of(manifest), List.of("linux/arm64"), java.util.Arrays.asList((String) null));
        manifests.put("app/arm", new String(arm, StandardCharsets.UTF_8).getBytes(StandardCharsets.UTF_8));
        assertFails(Map.of(), host + "/app:arm", host + "/app:arm: no linux/amd64 image in it (it has linux/arm64)");
        manifests.put("app/old", "{\"schemaVersion\":1,\"name\":\"app\",\"tag\":\"old\"}".getBytes(StandardCharsets.UTF_8));
        assertFails(Map.of(), host + "/app:old", "Docker image manifest schema 1 is not supported");
        manifests.put("app/" + TestImages.sha256(manifest), config); // a manifest by digest that is something else
        assertFails(Map.of(), host + "/app@" + TestImages.sha256(manifest), "digest mismatch: the manifest " + TestImages.sha256(manifest));
    }

    @Test
    void aConnectionDroppedMidBlobLeavesNothingAndThePullResumesLater() throws Exception {
        needToken = false;
        byte[] big = base.blob();
        try (ServerSocket dropper = new ServerSocket(0, 10, java.net.InetAddress.getLoopbackAddress())) {
            Thread t = Thread.ofPlatform().daemon().start(() -> {
                while (!dropper.isClosed()) {
                    try (Socket s = dropper.accept()) {
                        InputStream in = s.getInputStream();
                        byte[] req = new byte[8192];
                        in.read(req);
                        OutputStream o = s.getOutputStream();
                        o.write(("HTTP/1.1 200 OK\r\nContent-Length: " + big.length + "\r\n\r\n").getBytes(StandardCharsets.US_ASCII));
                        o.write(big, 0, big.length / 3);
                        o.flush();
                    } catch (IOException closed) {
                        return;
                    }
                }
            });
            redirectBlobs = false;
            // the registry hands blob requests for the base layer over to the dropping server
            server.removeContext("/v2/");
            server.createContext("/v2/", ex -> {
                String path = ex.getRequestURI().getPath().substring(4);
                if (path.contains("/blobs/" + base.digest())) {
                    send(ex, 307, new byte[0], Map.of("Location", "http://127.0.0.1:" + dropper.getLocalPort() + "/blob"));
                } else if (path.contains("/manifests/")) {
                    send(ex, 200, manifest, Map.of("Content-Type", MediaTypes.OCI_MANIFEST));
                } else {
                    byte[] b = blobs.get(path.substring(path.lastIndexOf('/') + 1));
                    send(ex, b == null ? 404 : 200, b == null ? new byte[0] : b, Map.of());
                }
            });
            assertFails(Map.of(), host + "/app:v1", "the connection dropped while fetching layer 1/2 " + Digest.parse(base.digest()).shortForm());
            assertThat(Files.exists(new BlobStore(cache).path(Digest.parse(base.digest())))).isFalse();
            t.interrupt();
        }
    }

    @Test
    void aRegistryThatStallsMidBlobIsAbandoned() throws Exception {
        needToken = false;
        try (ServerSocket staller = new ServerSocket(0, 10, java.net.InetAddress.getLoopbackAddress())) {
            List<Socket> held = new CopyOnWriteArrayList<>();
            Thread.ofPlatform().daemon().start(() -> {
                while (!staller.isClosed()) {
                    try {
                        Socket s = staller.accept();
                        held.add(s);
                        s.getInputStream().read(new byte[8192]);
                        s.getOutputStream().write(("HTTP/1.1 200 OK\r\nContent-Length: " + base.size() + "\r\n\r\n").getBytes(StandardCharsets.US_ASCII));
                        s.getOutputStream().write(base.blob(), 0, 1000);
                        s.getOutputStream().flush(); // and then nothing, for ever
                    } catch (IOException closed) {
                        return;
                    }
                }
            });
            server.removeContext("/v2/");
            server.createContext("/v2/", ex -> {
                String path = ex.getRequestURI().getPath().substring(4);
                if (path.contains("/blobs/" + base.digest())) {
                    send(ex, 307, new byte[0], Map.of("Location", "http://127.0.0.1:" + staller.getLocalPort() + "/blob"));
                } else if (path.contains("/manifests/")) {
                    send(ex, 200, manifest, Map.of("Content-Type", MediaTypes.OCI_MANIFEST));
                } else {
                    byte[] b = blobs.get(path.substring(path.lastIndexOf('/') + 1));
                    send(ex, b == null ? 404 : 200, b == null ? new byte[0] : b, Map.of());
                }
            });
            OciImages impatient = oci(Map.of()).stallTimeout(java.time.Duration.ofSeconds(1));
            assertThatThrownBy(() -> impatient.pull(host + "/app:v1", Optional.of("bad"))).isInstanceOf(OciException.class)
                    .hasMessageContaining("the connection stalled (no data for 1 s) while fetching layer 1/2");
            assertNoDebris();
            for (Socket s : held) {
                s.close();
            }
        }
    }

    @Test
    void twoPullsOfOneImageAtOnceBothSucceed() throws Exception {
        var pool = Executors.newFixedThreadPool(2);
        List<Future<RootfsImage>> pulls = new ArrayList<>();
        for (String name : List.of("one", "two")) {
            pulls.add(pool.submit(() -> oci(auth()).pull(host + "/app:v1", Optional.of(name))));
        }
        RootfsImage a = pulls.get(0).get(), b = pulls.get(1).get();
        pool.shutdown();
        assertThat(a.id()).isEqualTo(b.id());
        assertThat(new RootfsStore(cache).names()).containsKeys("one", "two");
        for (String d : a.blobs()) {
            byte[] stored = Files.readAllBytes(new BlobStore(cache).path(Digest.parse(d)));
            assertThat(TestImages.sha256(stored)).isEqualTo(d);
        }
        assertNoDebris();
    }

    void assertFails(Map<String, String> env, String ref, String message) throws Exception {
        assertThatThrownBy(() -> oci(env).pull(ref, Optional.of("bad"))).isInstanceOf(OciException.class).hasMessageContaining(message);
        assertThat(new RootfsStore(cache).names()).doesNotContainKey("bad");
        assertNoDebris();
    }

    void assertNoDebris() throws IOException {
        if (!Files.exists(cache)) {
            return;
        }
        try (Stream<Path> s = Files.walk(cache)) {
            assertThat(s.filter(p -> p.getFileName().toString().startsWith(".tmp-")).toList()).as("partial downloads or builds").isEmpty();
        }
    }
}
