package io.vmgate.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.vmgate.ssh.ServerConfig;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/** The serve options for limits and timeouts, from flags, VMGATE_* variables and a --config file. */
class ServeOptionsTest {
    @TempDir
    Path dir;

    /** Parses like {@link Main} does and maps the options onto a ServerConfig (no server is started). */
    private static ServerConfig parse(Map<String, String> env, String... args) throws Exception {
        CommandLine cli = Main.commandLine(args);
        cli.setDefaultValueProvider(ConfigDefaults.from(args, env));
        CommandLine.ParseResult parsed = cli.parseArgs(args);
        ServeCommand serve = (ServeCommand) parsed.subcommand().commandSpec().userObject();
        return serve.sessionLimits(ServerConfig.builder((id, progress) -> null, Path.of("unused-host-key"))).build();
    }

    @Test
    void defaultsAreUnlimitedAndOff() throws Exception {
        ServerConfig c = parse(Map.of(), "serve");
        assertThat(c.maxSessionsPerUser()).isZero();
        assertThat(c.idleTimeout()).isZero();
        assertThat(c.maxSessionTime()).isZero();
        assertThat(c.timeoutWarning()).isEqualTo(Duration.ofSeconds(60));
        assertThat(c.timeoutGrace()).isEqualTo(Duration.ofSeconds(5));
    }

    @Test
    void flagsTakeDurationsInEveryUsualForm() throws Exception {
        ServerConfig c = parse(Map.of(), "serve", "--max-sessions-per-user", "2", "--idle-timeout", "10m",
                "--max-session-time=1h30m", "--timeout-warning", "90", "--timeout-grace", "500ms");
        assertThat(c.maxSessionsPerUser()).isEqualTo(2);
        assertThat(c.idleTimeout()).isEqualTo(Duration.ofMinutes(10));
        assertThat(c.maxSessionTime()).isEqualTo(Duration.ofMinutes(90));
        assertThat(c.timeoutWarning()).isEqualTo(Duration.ofSeconds(90));
        assertThat(c.timeoutGrace()).isEqualTo(Duration.ofMillis(500));
    }

    @Test
    void environmentVariablesSetTheNewOptions() throws Exception {
        ServerConfig c = parse(Map.of("VMGATE_MAX_SESSIONS_PER_USER", "3", "VMGATE_IDLE_TIMEOUT", "30s",
                "VMGATE_MAX_SESSION_TIME", "2h", "VMGATE_TIMEOUT_WARNING", "10s", "VMGATE_TIMEOUT_GRACE", "1s"), "serve");
        assertThat(c.maxSessionsPerUser()).isEqualTo(3);
        assertThat(c.idleTimeout()).isEqualTo(Duration.ofSeconds(30));
        assertThat(c.maxSessionTime()).isEqualTo(Duration.ofHours(2));
        assertThat(c.timeoutWarning()).isEqualTo(Duration.ofSeconds(10));
        assertThat(c.timeoutGrace()).isEqualTo(Duration.ofSeconds(1));
    }

    @Test
    void aConfigFileSetsThemAndFlagThenEnvironmentWin() throws Exception {
        Path file = dir.resolve("vmgate.conf");
        Files.writeString(file, """
                # vmgate serve configuration
                max-sessions-per-user = 4
                idle-timeout = 15m
                max-session-time = 8h
                timeout-warning = 2m
                timeout-grace = 10s
                """);
        ServerConfig fromFile = parse(Map.of(), "serve", "--config", file.toString());
        assertThat(fromFile.maxSessionsPerUser()).isEqualTo(4);
        assertThat(fromFile.idleTimeout()).isEqualTo(Duration.ofMinutes(15));
        assertThat(fromFile.maxSessionTime()).isEqualTo(Duration.ofHours(8));
        assertThat(fromFile.timeoutWarning()).isEqualTo(Duration.ofMinutes(2));
        assertThat(fromFile.timeoutGrace()).isEqualTo(Duration.ofSeconds(10));

        // VMGATE_CONFIG finds the file too; the environment beats the file, a flag beats both.
        ServerConfig mixed = parse(Map.of("VMGATE_CONFIG", file.toString(), "VMGATE_IDLE_TIMEOUT", "20m",
                "VMGATE_MAX_SESSIONS_PER_USER", "5"), "serve", "--max-sessions-per-user", "6");
        assertThat(mixed.maxSessionsPerUser()).isEqualTo(6);
        assertThat(mixed.idleTimeout()).isEqualTo(Duration.ofMinutes(20));
        assertThat(mixed.maxSessionTime()).isEqualTo(Duration.ofHours(8));
    }

    @Test
    void aBadDurationIsRejectedWithAHint() {
        assertThatThrownBy(() -> parse(Map.of(), "serve", "--idle-timeout", "ten minutes"))
                .isInstanceOf(CommandLine.ParameterException.class)
                .hasMessageContaining("--idle-timeout").hasMessageContaining("e.g. 30s, 10m, 1h");
        assertThatThrownBy(() -> parse(Map.of("VMGATE_MAX_SESSION_TIME", "1y"), "serve"))
                .isInstanceOf(CommandLine.ParameterException.class).hasMessageContaining("'1y' is not a duration");
        assertThatThrownBy(() -> parse(Map.of(), "serve", "--max-sessions-per-user", "-1"))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("per user");
    }

    @Test
    void persistFromFlagsAndPerUserFromTheConfigFile() throws Exception {
        Path conf = Files.writeString(dir.resolve("serve.conf"), "persist = home\npersist-size = 2G\npersist.alice = home\npersist.bob = none\n");
        String[] args = {"serve", "--config", conf.toString(), "--state-dir", dir.toString()};
        CommandLine cli = Main.commandLine(args);
        cli.setDefaultValueProvider(ConfigDefaults.from(args, Map.of()));
        ServeCommand serve = (ServeCommand) cli.parseArgs(args).subcommand().commandSpec().userObject();
        io.vmgate.sandbox.SandboxOptions o = serve.persistence(io.vmgate.sandbox.SandboxOptions.defaults());
        assertThat(o.persist()).isEqualTo(io.vmgate.sandbox.SandboxOptions.Persist.HOME);
        assertThat(o.persistSizeMib()).isEqualTo(2048);
        assertThat(o.stateDirectory()).isEqualTo(dir);
        assertThat(ServeCommand.perUserPersist(conf)).containsExactlyInAnyOrderEntriesOf(Map.of(
                "alice", io.vmgate.sandbox.SandboxOptions.Persist.HOME, "bob", io.vmgate.sandbox.SandboxOptions.Persist.NONE));

        Path bad = Files.writeString(dir.resolve("bad.conf"), "persist.carol = sometimes\n");
        assertThatThrownBy(() -> ServeCommand.perUserPersist(bad)).hasMessageContaining("persist.carol")
                .hasMessageContaining("none, home or machine");
        Path machine = Files.writeString(dir.resolve("machine.conf"), "persist.carol = machine\n");
        assertThat(ServeCommand.perUserPersist(machine)).containsEntry("carol", io.vmgate.sandbox.SandboxOptions.Persist.MACHINE);
        String[] worse = {"serve", "--persist", "sometimes"};
        CommandLine c2 = Main.commandLine(worse);
        c2.setDefaultValueProvider(ConfigDefaults.from(worse, Map.of()));
        ServeCommand s2 = (ServeCommand) c2.parseArgs(worse).subcommand().commandSpec().userObject();
        assertThatThrownBy(() -> s2.persistence(io.vmgate.sandbox.SandboxOptions.defaults())).hasMessageContaining("none, home or machine");
    }
}
