package io.vmgate.image.oci;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.vmgate.image.ImageDefaults;
import io.vmgate.image.Manifest;
import io.vmgate.image.RootfsImage;
import io.vmgate.image.RootfsStore;
import io.vmgate.image.TestTar;
import io.vmgate.sandbox.CachePruner;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code image import} from hand-written OCI layouts, OCI archives and docker archives into a real
 * store (ext4 by debugfs): the files the layers leave, the config's run defaults, blobs shared and
 * pruned; and every kind of bad image refused with its name and cause, leaving nothing in the store.
 */
class OciImportTest {
    @TempDir
    Path tmp;
    Path cache;
    OciImages oci;
    List<String> progress = new ArrayList<>();
    List<TestImages.Layer> layers;
    byte[] config;

    @BeforeEach
    void setUp() throws Exception {
        cache = tmp.resolve("cache");
        oci = new OciImages(cache, OciImages.Options.defaults().withEnvironment(Map.of()), progress::add);
        byte[] base = new TestTar().dir("bin/").entry("bin/sh", '0', 0755, 0, 0, "#!/bin/false\n".getBytes(StandardCharsets.UTF_8), "")
                .dir("etc/").file("etc/passwd", "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
                .file("etc/group", "root:x:0:\napp:x:1000:\n").dir("srv/").dir("srv/old/").file("srv/old/a", "a").file("srv/gone", "g")
                .file("srv/data", "data", 0640, 1000, 1000).end();
        byte[] top = new TestTar().file("srv/.wh.gone", "").file("srv/old/.wh..wh..opq", "").file("srv/old/b", "b")
                .hardlink("srv/link", "srv/data").end();
        layers = List.of(TestImages.layer(base, TestImages.Compression.GZIP), TestImages.layer(top, TestImages.Compression.ZSTD));
        config = TestImages.config("amd64", List.of("PATH=/bin", "GREETING=hello world"), "/work/dir", "app:1000",
                List.of("/bin/sh", "-c"), List.of("echo $GREETING"), layers);
    }

    void assertTheImage(RootfsImage img) throws Exception {
        Manifest m = img.root().manifest();
        assertThat(m.entries().keySet()).contains("srv/old/b", "srv/link", "work/dir").doesNotContain("srv/gone", "srv/old/a",
                "srv/.wh.gone", "srv/old/.wh..wh..opq");
        assertThat(m.entry("srv/link").get().inode()).as("a hard link across layers").isEqualTo(m.entry("srv/data").get().inode());
        assertThat(m.entry("srv/data").get().uid()).isEqualTo(1000);
        assertThat(m.entry("srv/data").get().mode()).isEqualTo(0640);
        ImageDefaults d = img.defaults();
        assertThat(d.environment()).containsEntry("GREETING", "hello world").containsEntry("PATH", "/bin");
        assertThat(d.workdir()).contains("/work/dir");
        assertThat(d.user()).contains("app:1000");
        assertThat(d.command()).containsExactly("/bin/sh", "-c", "echo $GREETING");
        assertThat(img.root().user("app:1000").uid()).isEqualTo(1000);
        assertThat(RootfsImage.load(img.directory()).defaults()).as("kept with the image").isEqualTo(d);
    }

    @Test
    void aLayoutAnOciArchiveAndADockerArchiveOfOneImageGiveTheSameTree() throws Exception {
        Path layout = TestImages.layout(tmp.resolve("layout"), "v1", config, layers);
        RootfsImage a = oci.importImage("oci:" + layout + ":v1", "from-layout");
        assertTheImage(a);
        assertThat(new RootfsStore(cache).get("from-layout").id()).isEqualTo(a.id());
        assertThat(a.blobs()).hasSize(4).allMatch(b -> oci.blobStore().has(Digest.parse(b), -1));
        assertThat(oci.importImage("oci:" + layout, "again").id()).as("the same image: found again, not rebuilt").isEqualTo(a.id());

        RootfsImage b = oci.importImage("oci-archive:" + TestImages.ociArchive(layout, tmp.resolve("oci.tar")) + ":v1", "from-archive");
        assertTheImage(b);
        assertThat(b.id()).isEqualTo(a.id());

        byte[] dockerConfig = config; // a docker config is the same document
        List<byte[]> tars = List.of(uncompressed(layers.get(0)), uncompressed(layers.get(1)));
        Path docker = TestImages.dockerArchive(tmp.resolve("docker.tar"), "example/app:v1", dockerConfig, tars);
        RootfsImage c = oci.importImage("docker-archive:" + docker, "from-docker");
        assertTheImage(c);
        assertThat(oci.importImage("docker-archive:" + docker + ":example/app:v1", "tagged").id()).isEqualTo(c.id());
    }

    static byte[] uncompressed(TestImages.Layer l) throws Exception {
        if (l.mediaType().endsWith("gzip")) {
            return new java.util.zip.GZIPInputStream(new java.io.ByteArrayInputStream(l.blob())).readAllBytes();
        }
        return com.github.luben.zstd.Zstd.decompress(l.blob(), 1 << 20);
    }

    @Test
    void pruneDropsBlobsNoImageUsesAndKeepsTheRest() throws Exception {
        Path layout = TestImages.layout(tmp.resolve("layout"), "v1", config, layers);
        RootfsImage a = oci.importImage("oci:" + layout, "keep");
        Path stray = cache.resolve("oci/blobs/sha256/" + "0".repeat(64));
        Files.writeString(stray, "nobody's");
        List<CachePruner.Removal> removed = new CachePruner(cache).prune();
        assertThat(removed).extracting(CachePruner.Removal::path).containsExactly(stray);
        assertThat(a.blobs()).allMatch(b -> oci.blobStore().has(Digest.parse(b), -1));
        try (BlobStore.Lease lease = oci.blobStore().lease()) {
            Files.writeString(stray, "again");
            assertThat(new CachePruner(cache).prune()).as("a pull or import is running").isEmpty();
        }
        new RootfsStore(cache).remove("keep");
        new CachePruner(cache).prune();
        assertThat(oci.blobStore().all()).isEmpty();
    }

    @Test
    void badImagesAreRefusedByNameAndLeaveNothing() throws Exception {
        byte[] arm = TestImages.config("arm64", List.of(), null, null, null, List.of("sh"), layers);
        assertRefused("oci:" + TestImages.layout(tmp.resolve("arm"), "v1", arm, layers), "is for linux/arm64; vmgate's guests run linux/amd64");

        byte[] m = TestImages.manifest(config, layers);
        byte[] armIndex = TestImages.index(List.of(m, m), List.of("linux/arm64", "linux/s390x"), Arrays.asList(null, null));
        byte[] outer = new String(TestImages.index(List.of(armIndex, armIndex), Arrays.asList(null, null), Arrays.asList("v1", null)),
                StandardCharsets.UTF_8).replace(MediaTypes.OCI_MANIFEST, MediaTypes.OCI_INDEX).getBytes(StandardCharsets.UTF_8);
        List<byte[]> blobs = new ArrayList<>(List.of(config, m, armIndex, layers.get(0).blob(), layers.get(1).blob()));
        Path multi = TestImages.layout(tmp.resolve("multi"), outer, blobs);
        assertRefused("oci:" + multi + ":v1", "no linux/amd64 image in it (it has linux/arm64, linux/s390x)");
        byte[] armTagged = TestImages.index(List.of(m), List.of("linux/arm64"), List.of("v1"));
        assertRefused("oci:" + TestImages.layout(tmp.resolve("armtag"), armTagged, blobs), "the image tagged v1 is for linux/arm64");
        assertRefused("oci:" + multi, "it holds 2 images: name one");
        assertRefused("oci:" + multi + ":v2", "no image tagged 'v2' in it (tags: v1)");

        byte[] schema1 = "{\"schemaVersion\":1,\"name\":\"x\",\"tag\":\"v1\",\"fsLayers\":[]}".getBytes(StandardCharsets.UTF_8);
        assertRefused("oci:" + TestImages.layout(tmp.resolve("s1"), TestImages.index(List.of(schema1), Arrays.asList((String) null),
                List.of("v1")), List.of(schema1)), "Docker image manifest schema 1 is not supported");
        byte[] helm = new String(m, StandardCharsets.UTF_8).replace(MediaTypes.OCI_CONFIG, "application/vnd.cncf.helm.config.v1+json")
                .getBytes(StandardCharsets.UTF_8);
        assertRefused("oci:" + TestImages.layout(tmp.resolve("helm"), TestImages.index(List.of(helm), Arrays.asList((String) null),
                List.of("v1")), List.of(helm, config)), "not a container image: its config is of type 'application/vnd.cncf.helm.config.v1+json'");

        Path tampered = TestImages.layout(tmp.resolve("tampered"), "v1", config, layers);
        Path blob = tampered.resolve("blobs/sha256/" + layers.get(1).digest().substring(7));
        byte[] bytes = Files.readAllBytes(blob);
        bytes[bytes.length / 2] ^= 1;
        Files.write(blob, bytes);
        assertRefused("oci:" + tampered, "digest mismatch: blob " + layers.get(1).digest());

        List<TestImages.Layer> lying = List.of(layers.get(0), new TestImages.Layer(layers.get(1).blob(), layers.get(1).mediaType(),
                layers.get(1).digest(), layers.get(0).diffId()));
        byte[] lyingConfig = TestImages.config("amd64", List.of(), null, null, null, null, lying);
        assertRefused("oci:" + TestImages.layout(tmp.resolve("lying"), "v1", lyingConfig, lying), "layer 2/2")
                .hasMessageContaining("digest mismatch: the uncompressed layer is " + layers.get(1).diffId());

        TestImages.Layer traversal = TestImages.layer(new TestTar().file("../../../tmp/owned", "x").end(), TestImages.Compression.GZIP);
        List<TestImages.Layer> evil = List.of(layers.get(0), traversal);
        assertRefused("oci:" + TestImages.layout(tmp.resolve("evil"), "v1", TestImages.config("amd64", List.of(), null, null, null, null, evil),
                evil), "leaves the root");

        TestImages.Layer device = TestImages.layer(new TestTar().dir("dev/").device("dev/mem", '3', 1, 1).end(), TestImages.Compression.NONE);
        List<TestImages.Layer> dev = List.of(layers.get(0), device);
        Path devLayout = TestImages.layout(tmp.resolve("dev"), "v1", TestImages.config("amd64", List.of(), null, null, null, null, dev), dev);
        assertRefused("oci:" + devLayout, "/dev/mem is a character device node (1:1)");
        RootfsImage allowed = new OciImages(cache, OciImages.Options.defaults().withAllowDeviceNodes(true), l -> { })
                .importImage("oci:" + devLayout, "devices");
        assertThat(allowed.root().manifest().entry("dev/mem").get().type()).isEqualTo('c');
        new RootfsStore(cache).remove("devices");

        byte[] zeros = new TestTar().entry("zeros", '0', 0644, 0, 0, new byte[32 << 20], "").end();
        List<TestImages.Layer> bomb = List.of(layers.get(0), TestImages.layer(zeros, TestImages.Compression.ZSTD));
        Path bombLayout = TestImages.layout(tmp.resolve("bomb"), "v1", TestImages.config("amd64", List.of(), null, null, null, null, bomb), bomb);
        OciImages capped = new OciImages(cache, OciImages.Options.defaults().withMaxBytes(8 << 20), l -> { });
        assertThatThrownBy(() -> capped.importImage("oci:" + bombLayout, "bomb")).hasMessageContaining("image bomb: ")
                .hasMessageContaining("larger than 8.0 MiB uncompressed (--max-size)");
        assertNothingInTheStore();

        assertRefused("docker-archive:" + tmp.resolve("missing.tar"), "does not exist");
        assertRefused("oci-archive:" + Files.writeString(tmp.resolve("not.tar"), "not a tar"), "not a readable tar archive");
        assertRefused("http://example.com/x", "is not an import source");
        assertThatThrownBy(() -> oci.importImage("oci:" + multi, "Bad Name")).hasMessageContaining("is not an image name");
    }

    org.assertj.core.api.AbstractThrowableAssert<?, ? extends Throwable> assertRefused(String source, String message) throws Exception {
        var a = assertThatThrownBy(() -> oci.importImage(source, "bad")).isInstanceOf(io.vmgate.image.ImageException.class)
                .hasMessageContaining(message);
        assertNothingInTheStore();
        return a;
    }

    void assertNothingInTheStore() throws Exception {
        RootfsStore store = new RootfsStore(cache);
        assertThat(store.names()).as("names").doesNotContainKey("bad").doesNotContainKey("bomb");
        assertThat(store.images()).as("images").isEmpty();
        if (Files.isDirectory(store.imagesDir())) {
            try (Stream<Path> s = Files.list(store.imagesDir())) {
                assertThat(s.toList()).as("build directories left").isEmpty();
            }
        }
        try (Stream<Path> s = Files.walk(cache)) {
            assertThat(s.filter(p -> p.getFileName().toString().startsWith(BlobStore.TMP_PREFIX)).toList()).as("partial blobs").isEmpty();
        }
    }

}
