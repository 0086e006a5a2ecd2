package io.vmgate.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.Map;
import org.junit.jupiter.api.Test;

/** When `vmgate run` may start its VM before the options are parsed: only when nothing can change it. */
class EarlyVmTest {
    private static Boolean guess(Map<String, String> env, String... args) {
        return EarlyVm.guessNoSnapshot(args, env);
    }

    @Test
    void plainRunGuessesTheDefaultLauncher() {
        assertThat(guess(Map.of(), "run", "--", "true")).isFalse();
        assertThat(guess(Map.of(), "run", "-v", "-t", "--", "sh", "--cpus", "4")).isFalse();
        assertThat(guess(Map.of(), "run", "--no-snapshot", "--", "true")).isTrue();
        assertThat(guess(Map.of(), "run")).isFalse(); // interactive shell or piped commands
    }

    @Test
    void anyOptionThatCouldChangeTheVmMeansNoGuess() {
        assertThat(guess(Map.of(), "run", "--cpus", "2", "--", "true")).isNull();
        assertThat(guess(Map.of(), "run", "--memory=512", "--", "true")).isNull();
        assertThat(guess(Map.of(), "run", "--config", "f", "--", "true")).isNull();
        assertThat(guess(Map.of(), "run", "-e", "A=1", "--", "true")).isNull(); // not a VM option, but unknown to the guess
        assertThat(guess(Map.of(), "run", "--help")).isNull();
        assertThat(guess(Map.of(), "run", "true")).isNull(); // a command without --: left to picocli
    }

    @Test
    void onlyRunGuesses() {
        assertThat(guess(Map.of())).isNull();
        assertThat(guess(Map.of(), "serve")).isNull();
        assertThat(guess(Map.of(), "image", "info")).isNull();
    }

    @Test
    void vmSettingsInTheEnvironmentMeanNoGuess() {
        assertThat(guess(Map.of("VMGATE_CPUS", "2"), "run", "--", "true")).isNull();
        assertThat(guess(Map.of("VMGATE_CONFIG", "/etc/vmgate.properties"), "run", "--", "true")).isNull();
        assertThat(guess(Map.of("VMGATE_NO_SNAPSHOT", "true"), "run", "--", "true")).isNull();
        // these reach the configuration the same way on both paths
        assertThat(guess(Map.of("VMGATE_RUNTIME_DIR", "/tmp/x", "VMGATE_CACHE", "/tmp/c", "PATH", "/bin"),
                "run", "--", "true")).isFalse();
    }
}
