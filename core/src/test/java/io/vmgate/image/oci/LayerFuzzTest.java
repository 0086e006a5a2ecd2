package io.vmgate.image.oci;

import com.code_intelligence.jazzer.api.FuzzedDataProvider;
import com.code_intelligence.jazzer.junit.FuzzTest;
import io.vmgate.image.ImageException;
import io.vmgate.image.StagedTree;
import io.vmgate.image.TestTar;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.List;
import java.util.Optional;
import java.util.stream.Stream;

/**
 * Coverage-guided fuzzing of the layer applier with Jazzer: layers made of hostile entries
 * (traversal, absolute and looping symlinks used as parents, whiteouts of anything, hard links to
 * anything, devices, names with odd bytes) or of raw bytes, applied on a real staging tree. Whatever
 * comes, the applier yields a tree or an {@link ImageException}, never another exception, and
 * nothing is written anywhere but the staging tree's content directory. ./test.sh runs it for a
 * bounded time (JAZZER_FUZZ=1); a plain {@code mvn test} replays the saved inputs only.
 */
class LayerFuzzTest {
    private static final List<String> NAMES = List.of("a", "b", "etc", "..", ".", "", "/", ".wh.a", ".wh..wh..opq", ".wh..wh.plnk",
            ".wh.", ".wh..", "dev", "x\ny", "ü", "a b", "/tmp/vmgate-fuzz-escape");
    private static final List<String> TARGETS = List.of("/", "/etc", "..", "../../..", "a", "a/b", "/tmp/vmgate-fuzz-escape", "loop",
            "", "b/../../..");

    @FuzzTest(maxDuration = "20s")
    void applierSurvivesHostileLayers(FuzzedDataProvider in) throws IOException {
        Path dir = Files.createTempDirectory("vmgate-layer-fuzz-");
        try {
            StagedTree staged = new StagedTree(dir.resolve("content"));
            LayerApplier.Budget budget = new LayerApplier.Budget(new LayerApplier.Limits(4 << 20, 500, in.consumeBoolean()));
            int layers = in.consumeInt(1, 3);
            for (int i = 0; i < layers && in.remainingBytes() > 0; i++) {
                byte[] blob = in.consumeBoolean() ? in.consumeBytes(in.consumeInt(0, 4096)) : structured(in);
                try {
                    LayerApplier.apply(new ByteArrayInputStream(blob), "fuzz", Optional.empty(), Optional.empty(), staged.sink(), budget);
                } catch (ImageException e) {
                    // refused with a message: the build would end here
                }
            }
            staged.describe();
            try (Stream<Path> s = Files.walk(dir)) {
                for (Path p : s.toList()) {
                    if (!p.equals(dir) && !p.startsWith(staged.contentDir())) {
                        throw new AssertionError("written outside the content directory: " + p);
                    }
                }
            }
            if (Files.exists(Path.of("/tmp/vmgate-fuzz-escape"))) {
                throw new AssertionError("a layer wrote a host path");
            }
        } finally {
            try (Stream<Path> s = Files.walk(dir)) {
                for (Path p : s.sorted(Comparator.reverseOrder()).toList()) {
                    Files.deleteIfExists(p);
                }
            }
        }
    }

    /** A tar of entries chosen by the fuzzer from hostile names and targets. */
    private static byte[] structured(FuzzedDataProvider in) {
        TestTar t = new TestTar();
        int n = in.consumeInt(0, 12);
        for (int i = 0; i < n; i++) {
            String name = path(in);
            switch (in.consumeInt(0, 6)) {
                case 0 -> t.dir(name + "/");
                case 1 -> t.entry(name, '0', in.consumeInt(0, 07777), in.consumeLong(0, 70000), in.consumeLong(0, 70000),
                        in.consumeBytes(in.consumeInt(0, 64)), "");
                case 2 -> t.symlink(name, TARGETS.get(in.consumeInt(0, TARGETS.size() - 1)));
                case 3 -> t.hardlink(name, path(in));
                case 4 -> t.device(name, in.consumeBoolean() ? '3' : '4', in.consumeInt(0, 300), in.consumeInt(0, 300));
                case 5 -> t.entry(name, '6', 0644, 0, 0, new byte[0], "");
                default -> t.entry(name, (char) in.consumeInt(0, 127), 0644, 0, 0, new byte[0], "");
            }
        }
        return in.consumeBoolean() ? t.end() : t.unterminated();
    }

    private static String path(FuzzedDataProvider in) {
        StringBuilder b = new StringBuilder();
        int parts = in.consumeInt(1, 4);
        for (int i = 0; i < parts; i++) {
            b.append(i == 0 ? "" : "/").append(NAMES.get(in.consumeInt(0, NAMES.size() - 1)));
        }
        return b.toString();
    }
}
