package io.vmgate.image.oci;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.vmgate.image.StagedTree;
import io.vmgate.image.TestTar;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Random;
import java.util.TreeMap;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The layer applier on a real staging tree: OCI whiteouts in any order, hard links across layers,
 * ownership from the headers, symlinked parents followed inside the image only, and hostile layers
 * (traversal, devices, zip bombs, too many entries, truncation, digests that do not match)
 * refused with the layer named. A property test compares random layer stacks with a model of the
 * OCI rules written the obvious way.
 */
class LayerApplierTest {
    @TempDir
    Path tmp;
    StagedTree staged;
    LayerApplier.Budget budget;

    @BeforeEach
    void setUp() throws IOException {
        staged = new StagedTree(tmp.resolve("content"));
        budget = new LayerApplier.Budget(LayerApplier.Limits.defaults());
    }

    void apply(byte[] tar) throws Exception {
        apply(tar, TestImages.Compression.NONE);
    }

    void apply(byte[] tar, TestImages.Compression c) throws Exception {
        TestImages.Layer l = TestImages.layer(tar, c);
        LayerApplier.apply(new ByteArrayInputStream(l.blob()), "image t: layer 1/1", Optional.of(Digest.parse(l.digest())),
                Optional.of(Digest.parse(l.diffId())), staged.sink(), budget);
    }

    @Test
    void whiteoutsHideWhatLowerLayersMadeInAnyOrder() throws Exception {
        apply(new TestTar().dir("etc/").file("etc/a", "a").file("etc/b", "b").dir("opt/").dir("opt/x/").file("opt/x/old", "old")
                .file("opt/keep", "k").file("gone", "g").end(), TestImages.Compression.GZIP);
        // whiteouts after the layer's own entries in the same directories: they still hide only the lower ones
        apply(new TestTar().file("opt/new", "n").file("opt/x/old", "mine").file("etc/.wh.a", "").file(".wh.gone", "")
                .file("opt/.wh..wh..opq", "").end(), TestImages.Compression.ZSTD);
        assertThat(staged.shape()).containsExactlyEntriesOf(new TreeMap<>(Map.of("", "d", "etc", "d", "etc/b", "f=b", "opt", "d", "opt/new", "f=n",
                "opt/x", "d", "opt/x/old", "f=mine")));
    }

    @Test
    void ownersModesAndHardLinksAcrossLayersAreKept() throws Exception {
        apply(new TestTar().dir("srv/").file("srv/data", "payload", 04750, 1234, 5678).end());
        apply(new TestTar().hardlink("srv/link", "srv/data").symlink("srv/sym", "/srv/data").end());
        Map<String, String> d = staged.describe();
        assertThat(d.get("srv/data")).startsWith("f 4750 1234:5678 =payload #");
        assertThat(d.get("srv/link")).isEqualTo(d.get("srv/data"));
        assertThat(d.get("srv/sym")).isEqualTo("l -> /srv/data");
    }

    @Test
    void aSymlinkedParentIsFollowedInsideTheImageNeverOnTheHost() throws Exception {
        Path host = tmp.resolve("host-target");
        Files.createDirectories(host);
        apply(new TestTar().dir("etc/").symlink("evil", "/etc").symlink("up", "../../../../../..")
                .symlink("hostdir", host.toString()).end());
        apply(new TestTar().file("evil/passwd", "root::0:0::/:/bin/sh\n").file("up/tmp/x", "x").file("hostdir/escaped", "no").end());
        assertThat(staged.shape()).containsEntry("etc/passwd", "f=root::0:0::/:/bin/sh\n").containsEntry("tmp/x", "f=x")
                .containsEntry(FsEntryPaths.rel(host.resolve("escaped")), "f=no");
        assertThat(host.resolve("escaped")).doesNotExist();
        try (Stream<Path> s = Files.walk(tmp)) {
            assertThat(s.filter(Files::isRegularFile).map(p -> p.getParent()).distinct().toList())
                    .as("nothing written but numbered content files").containsOnly(staged.contentDir());
        }
    }

    @Test
    void hostileEntriesAreRefusedNamingTheLayer() throws Exception {
        assertThatThrownBy(() -> apply(new TestTar().file("a/../../etc/shadow", "x").end())).isInstanceOf(OciException.class)
                .hasMessageContaining("image t: layer 1/1").hasMessageContaining("leaves the root");
        assertThatThrownBy(() -> apply(new TestTar().dir("dev/").device("dev/sda", '4', 8, 0).end()))
                .hasMessageContaining("/dev/sda is a block device node (8:0)").hasMessageContaining("--allow-device-nodes");
        budget = new LayerApplier.Budget(new LayerApplier.Limits(1 << 30, 1000, true));
        apply(new TestTar().dir("dev/").device("dev/null", '3', 1, 3).end());
        assertThat(staged.describe()).containsEntry("dev/null", "c 1:3");
        assertThatThrownBy(() -> apply(new TestTar().file("x/.wh...", "").end())).hasMessageContaining("malformed whiteout");
        assertThatThrownBy(() -> apply(new TestTar().file("f", "file").file("f/child", "x").end())).hasMessageContaining("not a directory");
        apply(new TestTar().symlink("loop", "loop").end());
        assertThatThrownBy(() -> apply(new TestTar().file("loop/x", "x").end())).hasMessageContaining("too many levels of symbolic links");
    }

    @Test
    void aZipBombStopsAtTheSizeCap() throws Exception {
        byte[] zeros = new byte[64 << 20];
        byte[] bomb = new TestTar().entry("zeros", '0', 0644, 0, 0, zeros, "").end();
        TestImages.Layer l = TestImages.layer(bomb, TestImages.Compression.GZIP);
        assertThat(l.size()).as("a small blob").isLessThan(1 << 20);
        budget = new LayerApplier.Budget(new LayerApplier.Limits(16 << 20, 1000, false));
        assertThatThrownBy(() -> LayerApplier.apply(new ByteArrayInputStream(l.blob()), "image bomb: layer 1/1", Optional.empty(),
                Optional.empty(), staged.sink(), budget)).isInstanceOf(OciException.class)
                .hasMessageContaining("image bomb: layer 1/1: the image is larger than 16.0 MiB uncompressed (--max-size)");
        assertThat(budget.bytes).isLessThanOrEqualTo((16 << 20) + (1 << 20));
    }

    @Test
    void tooManyEntriesAreRefused() throws Exception {
        TestTar t = new TestTar();
        for (int i = 0; i < 50; i++) {
            t.file("f" + i, "");
        }
        budget = new LayerApplier.Budget(new LayerApplier.Limits(1 << 30, 20, false));
        assertThatThrownBy(() -> apply(t.end())).hasMessageContaining("more than 20 entries in the image (--max-entries)");
    }

    @Test
    void truncatedLayersAndWrongDigestsAreRefused() throws Exception {
        TestImages.Layer l = TestImages.layer(new TestTar().file("a", "hello".repeat(1000)).end(), TestImages.Compression.GZIP);
        byte[] cut = java.util.Arrays.copyOf(l.blob(), l.blob().length / 2);
        assertThatThrownBy(() -> LayerApplier.apply(new ByteArrayInputStream(cut), "image t: layer 1/1", Optional.empty(), Optional.empty(),
                staged.sink(), budget)).isInstanceOf(OciException.class).hasMessageContaining("image t: layer 1/1");
        byte[] tarCut = java.util.Arrays.copyOf(new TestTar().file("a", "x".repeat(5000)).end(), 2048);
        assertThatThrownBy(() -> apply(tarCut)).hasMessageContaining("truncated");
        assertThatThrownBy(() -> LayerApplier.apply(new ByteArrayInputStream(l.blob()), "image t: layer 1/1", Optional.of(Digest.parse(l.digest())),
                Optional.of(Digest.sha256("other".getBytes(StandardCharsets.UTF_8))), staged.sink(), budget))
                .hasMessageContaining("digest mismatch: the uncompressed layer is " + l.diffId());
        assertThatThrownBy(() -> LayerApplier.apply(new ByteArrayInputStream(l.blob()), "image t: layer 1/1",
                Optional.of(Digest.sha256("other".getBytes(StandardCharsets.UTF_8))), Optional.empty(), staged.sink(), budget))
                .hasMessageContaining("digest mismatch: the layer is " + l.digest());
    }

    @Test
    void xzLayersAreRefusedByName() {
        byte[] xz = {(byte) 0xfd, '7', 'z', 'X', 'Z', 0, 0, 0};
        assertThatThrownBy(() -> LayerApplier.apply(new ByteArrayInputStream(xz), "image t: layer 1/1", Optional.empty(), Optional.empty(),
                staged.sink(), budget)).hasMessageContaining("xz-compressed layers are not supported");
    }

    // ---- property: random layer stacks against a model of the OCI rules

    @Test
    void randomLayerStacksMatchTheModelOfTheOciRules() throws Exception {
        for (long seed = 1; seed <= 300; seed++) {
            Random rnd = new Random(seed);
            StagedTree s = new StagedTree(tmp.resolve("p" + seed));
            Model model = new Model();
            int layers = 1 + rnd.nextInt(4);
            List<String> log = new ArrayList<>();
            for (int i = 0; i < layers; i++) {
                List<Op> ops = randomLayer(rnd, model);
                log.add(ops.toString());
                TestTar t = new TestTar();
                ops.forEach(op -> op.write(t));
                byte[] tar = t.end();
                LayerApplier.apply(new ByteArrayInputStream(tar), "seed " + seed, Optional.empty(), Optional.empty(), s.sink(),
                        new LayerApplier.Budget(LayerApplier.Limits.defaults()));
                model.apply(ops);
            }
            assertThat(s.shape()).as("seed %d, layers %s", seed, log).isEqualTo(model.shape());
        }
    }

    /** One tar entry of a generated layer. */
    record Op(String kind, String path, String arg) {
        void write(TestTar t) {
            switch (kind) {
                case "dir" -> t.dir(path + "/");
                case "file" -> t.file(path, arg);
                case "link" -> t.hardlink(path, arg);
                case "sym" -> t.symlink(path, arg);
                case "wh" -> t.file(parent(path).isEmpty() ? ".wh." + name(path) : parent(path) + "/.wh." + name(path), "");
                case "opq" -> t.file(path.isEmpty() ? ".wh..wh..opq" : path + "/.wh..wh..opq", "");
                default -> throw new IllegalStateException(kind);
            }
        }

        @Override
        public String toString() {
            return kind + ":" + path + (arg == null ? "" : "=" + arg);
        }
    }

    static String parent(String p) {
        return p.contains("/") ? p.substring(0, p.lastIndexOf('/')) : "";
    }

    static String name(String p) {
        return p.substring(p.lastIndexOf('/') + 1);
    }

    /**
     * Directories d1, d2 (two deep at most), files f1, f2, symlinks s1 (leaves only: nothing is
     * ever put under a name a symlink may have), hard links h1 to files of the same layer.
     */
    static List<Op> randomLayer(Random rnd, Model model) {
        List<Op> ops = new ArrayList<>();
        List<String> dirs = new ArrayList<>(List.of("", "d1", "d2", "d1/d2", "d2/d1"));
        List<String> layerFiles = new ArrayList<>();
        int n = 1 + rnd.nextInt(8);
        for (int i = 0; i < n; i++) {
            String dir = dirs.get(rnd.nextInt(dirs.size()));
            String pre = dir.isEmpty() ? "" : dir + "/";
            switch (rnd.nextInt(7)) {
                case 0 -> {
                    if (!dir.isEmpty()) {
                        ops.add(new Op("dir", dir, null));
                    }
                }
                case 1, 2 -> {
                    String f = pre + "f" + (1 + rnd.nextInt(2));
                    ops.add(new Op("file", f, "c" + rnd.nextInt(100)));
                    layerFiles.add(f);
                }
                case 3 -> {
                    if (!layerFiles.isEmpty()) {
                        ops.add(new Op("link", pre + "h1", layerFiles.get(rnd.nextInt(layerFiles.size()))));
                    }
                }
                case 4 -> ops.add(new Op("sym", pre + "s1", "t" + rnd.nextInt(3)));
                case 5 -> {
                    List<String> lower = new ArrayList<>(model.paths());
                    lower.remove("");
                    if (!lower.isEmpty()) {
                        ops.add(new Op("wh", lower.get(rnd.nextInt(lower.size())), null));
                    }
                }
                default -> ops.add(new Op("opq", dir, null));
            }
        }
        // a hard link whose target this layer replaced later, or whose name is whited out, is not generated:
        // OCI leaves those undefined
        ops.removeIf(op -> op.kind().equals("link") && ops.stream().anyMatch(o -> o.path().equals(op.path()) && o != op));
        return ops;
    }

    /** The OCI rules as the spec says them: remove what the whiteouts name from the lower tree, then put the layer's entries on top. */
    static final class Model {
        final TreeMap<String, String> tree = new TreeMap<>(Map.of("", "d"));

        List<String> paths() {
            return List.copyOf(tree.keySet());
        }

        void apply(List<Op> ops) {
            for (Op op : ops) {
                if (op.kind().equals("wh")) {
                    tree.keySet().removeIf(p -> p.equals(op.path()) || p.startsWith(op.path() + "/"));
                } else if (op.kind().equals("opq")) {
                    String pre = op.path().isEmpty() ? "" : op.path() + "/";
                    tree.keySet().removeIf(p -> !p.isEmpty() && p.startsWith(pre) && !p.equals(op.path()));
                }
            }
            for (Op op : ops) {
                switch (op.kind()) {
                    case "dir" -> put(op.path(), "d");
                    case "file" -> put(op.path(), "f=" + op.arg());
                    case "sym" -> put(op.path(), "l -> " + op.arg());
                    case "link" -> put(op.path(), tree.get(op.arg()));
                    default -> { }
                }
            }
        }

        private void put(String path, String what) {
            for (String p = parent(path); !p.isEmpty(); p = parent(p)) {
                tree.putIfAbsent(p, "d"); // names of directories and of the rest never meet, so a parent is a directory
            }
            String old = tree.get(path);
            if (old != null && old.equals("d") && !what.equals("d")) {
                tree.keySet().removeIf(q -> q.startsWith(path + "/"));
            }
            if (!(what.equals("d") && "d".equals(old))) {
                tree.put(path, what);
            }
        }

        Map<String, String> shape() {
            return tree;
        }
    }

    /** A host path as the staging tree names it (relative, no leading slash). */
    static final class FsEntryPaths {
        static String rel(Path p) {
            return p.toString().substring(1);
        }
    }
}
