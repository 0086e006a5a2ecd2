package io.vmgate.e2e;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A fresh clone's first command behaves like every later one. The first run builds the jar and
 * records the JVM start-up cache; once, a redirection meant for that step silenced the command's
 * own stderr for the rest of the launcher, so the first {@code ./vmgate serve} printed nothing.
 */
class FirstRunIT {
    @TempDir
    Path dir;

    @Test
    void aFreshClonesFirstCommandShowsItsStderr() throws Exception {
        Path clone = dir.resolve("clone");
        Host.Result cloned = Host.run(List.of("git", "clone", "--quiet", "--no-hardlinks", Host.HOME.toString(), clone.toString()),
                Map.of(), null, 120);
        assertThat(cloned.exit()).as(cloned.stderr()).isZero();
        Map<String, String> env = Map.of("VMGATE_RUNTIME_DIR", dir.resolve("rt").toString());

        Host.Result first = Host.run(List.of(clone.resolve("vmgate").toString(), "run", "--no-such-option"), env, null, 900);
        assertThat(first.stderr()).as("the first run's stderr").contains("Unknown option: '--no-such-option'");
        assertThat(first.exit()).isEqualTo(2);
        try (var s = Files.list(clone.resolve("app/target"))) {
            assertThat(s.map(p -> p.getFileName().toString())).as("the first run built the jar and trained the start-up cache")
                    .contains("vmgate.jar").anyMatch(n -> n.endsWith(".trained"));
        }

        Host.Result second = Host.run(List.of(clone.resolve("vmgate").toString(), "run", "--no-such-option"), env, null, 300);
        assertThat(second.stderr()).as("a later run's stderr").contains("Unknown option: '--no-such-option'");
        assertThat(second.exit()).isEqualTo(2);
        Host.assertNothingLeft(dir.resolve("rt"), 10);
    }
}
