package io.vmgate.e2e;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.vmgate.image.TestTar;
import io.vmgate.image.oci.TestImages;
import java.io.IOException;
import java.net.HttpURLConnection;
import java.net.ServerSocket;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * OCI images end to end with the real neighbours: a three-layer image (gzip, gzip, zstd; a
 * whiteout, an opaque directory, a hard link across layers, a file owned by a user; Env,
 * WorkingDir, User, Entrypoint and Cmd in its config) written as an OCI layout, pushed by Debian's
 * skopeo to Debian's docker-registry (CNCF distribution) started on a free loopback port, then
 * {@code vmgate image pull} of it (as OCI and as Docker schema 2), {@code import} of the layout, of
 * an {@code oci-archive:} and of a {@code docker-archive:} that skopeo wrote, each followed by a
 * real VM that must see exactly the expected files, environment, working directory and user.
 * Everything runs in a cache of its own, removed at the end.
 */
class OciIT {
    static Path work, cache, runtimeRoot, layout;
    static Process registry;
    static String reg;

    @BeforeAll
    static void registryWithAnImage() throws Exception {
        for (String tool : List.of("docker-registry", "skopeo", "qemu-system-x86_64")) {
            assumeTrue(Stream.of(System.getenv("PATH").split(":")).anyMatch(d -> Files.isExecutable(Path.of(d, tool))), tool + " not installed");
        }
        work = Files.createTempDirectory("vmgate-oci-it-");
        cache = Files.createDirectories(work.resolve("cache"));
        runtimeRoot = Files.createTempDirectory(Path.of("/tmp"), "vmgate-oci-rt-");
        int port;
        try (ServerSocket s = new ServerSocket(0)) {
            port = s.getLocalPort();
        }
        reg = "127.0.0.1:" + port;
        Path config = Files.writeString(work.resolve("registry.yml"), """
                version: 0.1
                log:
                  level: warn
                storage:
                  filesystem:
                    rootdirectory: %s
                http:
                  addr: %s
                """.formatted(work.resolve("registry-data"), reg));
        registry = new ProcessBuilder("docker-registry", "serve", config.toString()).redirectErrorStream(true)
                .redirectOutput(work.resolve("registry.log").toFile()).start();
        waitForRegistry();

        TestTar base = TestImages.busyboxRoot().dir("srv/").dir("srv/app/").file("srv/app/keep", "kept\n").file("srv/app/gone", "x\n")
                .dir("srv/app/old/").file("srv/app/old/a", "a\n").file("etc/motd", "from the base layer\n");
        TestTar middle = new TestTar().file("srv/app/.wh.gone", "").file("srv/app/old/.wh..wh..opq", "").file("srv/app/old/b", "b\n")
                .hardlink("srv/app/link", "srv/app/keep");
        TestTar top = new TestTar().file("srv/app/new", "new\n").file("srv/app/mine", "secret\n", 0600, 1000, 1000);
        byte[] topTar = top.end();
        List<TestImages.Layer> layers = List.of(TestImages.layer(base.end(), TestImages.Compression.GZIP),
                TestImages.layer(middle.end(), TestImages.Compression.GZIP), TestImages.layer(topTar, TestImages.Compression.ZSTD));
        // Docker's media types have no zstd: the Docker schema 2 copy has the top layer in gzip (the same tar, so the same config)
        List<TestImages.Layer> gzipped = List.of(layers.get(0), layers.get(1), TestImages.layer(topTar, TestImages.Compression.GZIP));
        byte[] imageConfig = TestImages.config("amd64", List.of("PATH=/bin", "GREETING=hello from oci"), "/srv/app", "app",
                List.of("/bin/sh", "-c"), List.of("echo cmd ran as $(id -u):$(id -g) in $(pwd) with $GREETING"), layers);
        layout = TestImages.layout(work.resolve("layout"), "v1", imageConfig, layers);
        Path gzipLayout = TestImages.layout(work.resolve("layout-gzip"), "v1", imageConfig, gzipped);
        skopeo("copy", "--dest-tls-verify=false", "--format", "v2s2", "oci:" + gzipLayout + ":v1", "docker://" + reg + "/test/app:docker");
        skopeo("copy", "--dest-tls-verify=false", "oci:" + layout + ":v1", "docker://" + reg + "/test/app:v1");
        skopeo("copy", "oci:" + layout + ":v1", "oci-archive:" + work.resolve("app-oci.tar") + ":v1");
        skopeo("copy", "oci:" + gzipLayout + ":v1", "docker-archive:" + work.resolve("app-docker.tar") + ":test/app:v1");
    }

    static void waitForRegistry() throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (true) {
            try {
                HttpURLConnection c = (HttpURLConnection) URI.create("http://" + reg + "/v2/").toURL().openConnection();
                if (c.getResponseCode() == 200) {
                    return;
                }
            } catch (IOException notYet) {
                // starting
            }
            if (!registry.isAlive() || System.nanoTime() > deadline) {
                throw new AssertionError("docker-registry did not start: " + Files.readString(work.resolve("registry.log")));
            }
            Thread.sleep(100);
        }
    }

    static void skopeo(String... args) throws Exception {
        List<String> cmd = new ArrayList<>(List.of("skopeo", "--insecure-policy"));
        cmd.addAll(List.of(args));
        // a HOME of its own: skopeo's blob-info cache would otherwise offer the zstd blob of an earlier run for the Docker copy
        Host.Result r = Host.run(cmd, Map.of("HOME", work.resolve("skopeo-home").toString()), null, 120);
        assertThat(r.exit()).as("skopeo %s: %s", List.of(args), r.stderr()).isZero();
    }

    @AfterAll
    static void stopRegistry() throws Exception {
        if (registry != null) {
            registry.destroy();
            registry.waitFor(10, TimeUnit.SECONDS);
            registry.destroyForcibly();
        }
        for (Path p : new Path[] {work, runtimeRoot}) {
            if (p != null) {
                try (Stream<Path> s = Files.walk(p)) {
                    for (Path q : s.sorted(Comparator.reverseOrder()).toList()) {
                        Files.deleteIfExists(q);
                    }
                }
            }
        }
    }

    @AfterEach
    void nothingLeftBehind() throws Exception {
        Host.assertNothingLeft(runtimeRoot, 10);
    }

    static Host.Result vmgate(String... args) throws Exception {
        List<String> cmd = new ArrayList<>(List.of("./vmgate"));
        cmd.addAll(List.of(args));
        return Host.run(cmd, Map.of("VMGATE_CACHE", cache.toString(), "VMGATE_RUNTIME_DIR", runtimeRoot.toString()), null, 300);
    }

    static final String CHECK = "ls -A | sort | tr '\\n' ' '; echo; cat old/b; [ -e old/a ] && echo old-a-is-back; "
            + "stat -c '%h %u:%g %a' link mine; cat /etc/motd; echo \"$GREETING|$PATH|$(pwd)|$(id -u):$(id -G)\"";
    static final String EXPECTED = "keep link mine new old \nb\n2 0:0 644\n1 1000:1000 600\nfrom the base layer\n"
            + "hello from oci|/bin|/srv/app|1000:1000 50\n"; // app is also in staff (50) by /etc/group

    /** A VM of the image sees exactly the layers' tree, the config's environment, working directory and user, and runs its command. */
    static void assertSessionsOf(String name) throws Exception {
        Host.Result files = vmgate("run", "--no-snapshot", "--image", name, "--", "sh", "-c", CHECK);
        assertThat(files.exit()).as(files.stderr()).isZero();
        assertThat(files.out()).isEqualTo(EXPECTED);
        Host.Result cmd = vmgate("run", "--no-snapshot", "--image", name);
        assertThat(cmd.exit()).as(cmd.stderr()).isZero();
        assertThat(cmd.out()).isEqualTo("cmd ran as 1000:1000 in /srv/app with hello from oci\n");
    }

    @Test
    void pulledFromARealRegistryTheImageRunsAsItsConfigSays() throws Exception {
        Host.Result pull = vmgate("image", "pull", reg + "/test/app:v1", "--name", "it-pulled");
        assertThat(pull.exit()).as(pull.stderr()).isZero();
        assertThat(pull.stderr()).contains("pulling " + reg + "/test/app:v1").containsPattern("layer 3/3 sha256:[0-9a-f]{12}: (fetched|already in the blob store)")
                .doesNotContain("WARNING"); // zstd-jni's native library loads without the JDK's warning
        assertSessionsOf("it-pulled");
        Host.Result asRoot = vmgate("run", "--no-snapshot", "--image", "it-pulled", "--guest-user", "root", "--workdir", "/", "--",
                "sh", "-c", "id -u; pwd; cat /srv/app/mine");
        assertThat(asRoot.out()).as("--guest-user and --workdir over the config's").isEqualTo("0\n/\nsecret\n");

        // The SSH front door over the Sandbox API: the same login, so the same env, working directory and user
        var options = io.vmgate.sandbox.SandboxOptions.builder().image("it-pulled").cacheDirectory(cache).runtimeDirectory(runtimeRoot)
                .snapshot(false).bootTimeout(java.time.Duration.ofSeconds(120)).build();
        try (var sandbox = io.vmgate.sandbox.Sandbox.start(options); var ssh = sandbox.enableSsh()) {
            Host.Result viaSsh = Host.run(ssh.command("echo \"$GREETING|$(pwd)|$(id -un)\""), Map.of(), null, 120);
            assertThat(viaSsh.out()).as(viaSsh.stderr()).isEqualTo("hello from oci|/srv/app|app\n");
        }

        Host.Result docker = vmgate("image", "pull", reg + "/test/app:docker", "--name", "it-docker-v2s2");
        assertThat(docker.exit()).as(docker.stderr()).isZero();
        Host.Result ls = vmgate("image", "ls");
        assertThat(ls.out()).contains("it-pulled").contains("it-docker-v2s2").contains("/bin/sh -c 'echo cmd ran as");
        Host.Result info = vmgate("image", "info", "it-docker-v2s2");
        assertThat(info.out()).contains("user:           app").contains("workdir:        /srv/app").contains("env:            GREETING=hello from oci")
                .contains("entrypoint:     /bin/sh -c");
        Host.Result v2s2 = vmgate("run", "--no-snapshot", "--image", "it-docker-v2s2", "--", "sh", "-c", CHECK);
        assertThat(v2s2.out()).as(v2s2.stderr()).isEqualTo(EXPECTED);
    }

    @Test
    void importedFromALayoutAnOciArchiveAndADockerArchiveTheImageIsTheSame() throws Exception {
        for (String[] source : new String[][] {{"oci:" + layout + ":v1", "it-layout"}, {"oci-archive:" + work.resolve("app-oci.tar"), "it-ociarc"},
                {"docker-archive:" + work.resolve("app-docker.tar"), "it-dockerarc"}}) {
            Host.Result imp = vmgate("image", "import", source[0], "--name", source[1]);
            assertThat(imp.exit()).as(imp.stderr()).isZero();
            assertThat(imp.out()).isEqualTo(source[1] + "\n");
            Host.Result files = vmgate("run", "--no-snapshot", "--image", source[1], "--", "sh", "-c", CHECK);
            assertThat(files.out()).as(source[0] + ": " + files.stderr()).isEqualTo(EXPECTED);
        }
        assertSessionsOf("it-dockerarc");
    }

    @Test
    void badPullsSayWhyExitNonZeroAndLeaveNothing() throws Exception {
        Host.Result missing = vmgate("image", "pull", reg + "/test/app:nope", "--name", "it-missing");
        assertThat(missing.exit()).isEqualTo(125);
        assertThat(missing.stderr()).contains("vmgate: " + reg + "/test/app:nope: the manifest nope not found (404 Not Found): MANIFEST_UNKNOWN");
        Host.Result tooBig = vmgate("image", "pull", reg + "/test/app:v1", "--name", "it-capped", "--max-size", "2M");
        assertThat(tooBig.exit()).isEqualTo(125);
        assertThat(tooBig.stderr()).contains("uncompressed (--max-size)");
        Host.Result noRegistry = vmgate("image", "pull", "127.0.0.1:1/test/app:v1", "--name", "it-nothing");
        assertThat(noRegistry.exit()).isEqualTo(125);
        assertThat(noRegistry.stderr()).contains("cannot connect to 127.0.0.1:1");
        Host.Result ls = vmgate("image", "ls");
        assertThat(ls.out()).doesNotContain("it-missing").doesNotContain("it-capped").doesNotContain("it-nothing");
        try (Stream<Path> s = Files.walk(cache)) {
            assertThat(s.filter(p -> p.getFileName().toString().startsWith(".tmp-")).toList()).as("half-made images or blobs").isEmpty();
        }
    }
}
