package io.vmgate.ssh;

import io.vmgate.text.Durations;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.vmgate.agent.Message;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import org.apache.sshd.common.channel.PtyMode;
import org.junit.jupiter.api.Test;

/** The small policies on their own: env allowlist, failure delays, terminal modes, log values, config checks. */
class PolicyTest {
    @Test
    void envAllowlistTakesNamesAndGlobs() {
        EnvPolicy p = new EnvPolicy(List.of("TERM", "LANG", "LC_*", "MY_?"));
        assertThat(p.refusal("LANG", "C.UTF-8", 0, 0)).isNull();
        assertThat(p.refusal("LC_ALL", "C", 0, 0)).isNull();
        assertThat(p.refusal("MY_X", "1", 0, 0)).isNull();
        assertThat(p.refusal("MY_XY", "1", 0, 0)).isEqualTo("not_allowed");
        assertThat(p.refusal("LANGUAGE", "en", 0, 0)).isEqualTo("not_allowed");
        assertThat(p.refusal("FOO", "bar", 0, 0)).isEqualTo("not_allowed");
        assertThat(p.refusal("LC_*", "x", 0, 0)).isEqualTo("bad_name");
        assertThat(p.refusal("", "x", 0, 0)).isEqualTo("bad_name");
        assertThat(p.refusal("LANG", "x".repeat(EnvPolicy.MAX_VALUE + 1), 0, 0)).isEqualTo("bad_value");
        assertThat(p.refusal("LANG", "a\0b", 0, 0)).isEqualTo("bad_value");
        assertThat(p.refusal("LANG", "C", EnvPolicy.MAX_VARS, 0)).isEqualTo("too_much");
        assertThat(p.refusal("LANG", "C", 1, EnvPolicy.MAX_TOTAL)).isEqualTo("too_much");
        assertThat(new EnvPolicy(List.of()).refusal("TERM", "xterm", 0, 0)).isEqualTo("not_allowed");
    }

    @Test
    void failureDelayGrowsAndIsCapped() {
        assertThat(FailureTracker.delayFor(1)).isZero();
        assertThat(FailureTracker.delayFor(FailureTracker.FREE_FAILURES)).isZero();
        assertThat(FailureTracker.delayFor(FailureTracker.FREE_FAILURES + 1)).isEqualTo(FailureTracker.BASE_DELAY);
        assertThat(FailureTracker.delayFor(FailureTracker.FREE_FAILURES + 2)).isEqualTo(FailureTracker.BASE_DELAY.multipliedBy(2));
        assertThat(FailureTracker.delayFor(1000)).isEqualTo(FailureTracker.MAX_DELAY);
        assertThat(FailureTracker.delayFor(Integer.MAX_VALUE)).isEqualTo(FailureTracker.MAX_DELAY);

        FailureTracker t = new FailureTracker();
        Duration last = Duration.ZERO;
        for (int i = 0; i < 20; i++) {
            Duration d = t.failed("10.0.0.1");
            assertThat(d).isGreaterThanOrEqualTo(last).isLessThanOrEqualTo(FailureTracker.MAX_DELAY);
            last = d;
        }
        assertThat(last).isEqualTo(FailureTracker.MAX_DELAY);
        assertThat(t.failed("10.0.0.2")).as("per address").isZero();
        t.succeeded("10.0.0.1");
        assertThat(t.failures("10.0.0.1")).isZero();
        assertThat(t.failed("10.0.0.1")).isZero();
    }

    @Test
    void terminalModesAreParsedDefensively() {
        byte[] modes = {
            (byte) PtyMode.VINTR.toInt(), 0, 0, 0, 3,
            (byte) PtyMode.ECHO.toInt(), 0, 0, 0, 1,
            (byte) PtyMode.TTY_OP_ISPEED.toInt(), 0, 0, (byte) 0x96, 0,
            PtyMode.TTY_OP_END,
            (byte) PtyMode.ICANON.toInt(), 0, 0, 0, 1, // after the end: ignored
        };
        assertThat(SessionChannel.parseModes(modes)).containsExactly(
                java.util.Map.entry(PtyMode.VINTR.toInt(), 3),
                java.util.Map.entry(PtyMode.ECHO.toInt(), 1),
                java.util.Map.entry(128, 38400));
        // Truncated, reserved opcodes, and garbage never throw.
        assertThat(SessionChannel.parseModes(new byte[] {1, 0, 0})).isEmpty();
        assertThat(SessionChannel.parseModes(new byte[] {(byte) 200, 0, 0, 0, 1, 1, 0, 0, 0, 3})).isEmpty();
        assertThat(SessionChannel.parseModes(new byte[0])).isEmpty();
        byte[] many = new byte[5 * 1000];
        for (int i = 0; i < 1000; i++) {
            many[i * 5] = (byte) (1 + i % 159);
        }
        assertThat(SessionChannel.parseModes(many)).hasSizeLessThanOrEqualTo(256);
    }

    @Test
    void configIsValidated() {
        var launcher = new StdioAgentVm.Launcher();
        Path key = Path.of("/tmp/unused");
        ServerConfig c = ServerConfig.builder(launcher, key).build();
        assertThat(c.listenHost()).isEqualTo("127.0.0.1");
        assertThat(c.port()).isEqualTo(2222);
        assertThat(c.envAllowlist()).containsExactly("TERM", "LANG", "LC_*");
        assertThat(c.hasCredentials()).isFalse();
        assertThat(c.toBuilder().maxSessions(3).build().maxSessions()).isEqualTo(3);
        assertThatThrownBy(() -> ServerConfig.builder(launcher, key).maxSessions(0).build())
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("max sessions");
        assertThatThrownBy(() -> ServerConfig.builder(launcher, key).port(70000).build())
                .isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> ServerConfig.builder(launcher, key).envAllowlist(List.of("BAD=NAME")).build())
                .isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> ServerConfig.builder(null, key).build()).isInstanceOf(NullPointerException.class);
        assertThatThrownBy(() -> ServerConfig.builder(launcher, key).maxSessionsPerUser(-1).build())
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("per user");
        assertThatThrownBy(() -> ServerConfig.builder(launcher, key).idleTimeout(Duration.ofSeconds(-1)).build())
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("idle timeout");
        ServerConfig t = ServerConfig.builder(launcher, key).maxSessionsPerUser(2).idleTimeout(Duration.ofMinutes(10))
                .maxSessionTime(Duration.ofHours(1)).timeoutGrace(Duration.ofSeconds(1)).build();
        assertThat(t.toBuilder().build()).isEqualTo(t);
        assertThat(c.maxSessionsPerUser()).as("default: no per-user limit").isZero();
        assertThat(c.idleTimeout()).isZero();
        assertThat(c.maxSessionTime()).isZero();
    }

    @Test
    void timeoutWarningsAreShorterThanTheirTimeout() {
        ServerConfig c = ServerConfig.builder(new StdioAgentVm.Launcher(), Path.of("/tmp/unused")).build();
        assertThat(c.warningBefore(Duration.ofMinutes(10))).isEqualTo(Duration.ofSeconds(60));
        assertThat(c.warningBefore(Duration.ofSeconds(60))).isEqualTo(Duration.ofSeconds(30));
        assertThat(c.warningBefore(Duration.ofSeconds(30))).isEqualTo(Duration.ofSeconds(15));
        assertThat(c.warningBefore(Duration.ZERO)).isZero();
        ServerConfig off = c.toBuilder().timeoutWarning(Duration.ZERO).build();
        assertThat(off.warningBefore(Duration.ofMinutes(10))).isZero();
    }

    @Test
    void durationsParseTheUsualFormsAndFormatForPeople() {
        assertThat(Durations.parse("30s")).isEqualTo(Duration.ofSeconds(30));
        assertThat(Durations.parse("10m")).isEqualTo(Duration.ofMinutes(10));
        assertThat(Durations.parse("1h")).isEqualTo(Duration.ofHours(1));
        assertThat(Durations.parse("1h30m")).isEqualTo(Duration.ofMinutes(90));
        assertThat(Durations.parse("500ms")).isEqualTo(Duration.ofMillis(500));
        assertThat(Durations.parse("1.5s")).isEqualTo(Duration.ofMillis(1500));
        assertThat(Durations.parse("90")).isEqualTo(Duration.ofSeconds(90));
        assertThat(Durations.parse(" 2D ")).isEqualTo(Duration.ofDays(2));
        assertThat(Durations.parse("0")).isZero();
        assertThat(Durations.parse("off")).isZero();
        assertThat(Durations.parse("none")).isZero();
        for (String bad : List.of("", "m", "10 m", "-5s", "1y", "10m30", "s10", "1e3", "99999999999999999h")) {
            assertThatThrownBy(() -> Durations.parse(bad)).as(bad).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("not a duration");
        }
        assertThat(Durations.format(Duration.ofMillis(500))).isEqualTo("500ms");
        assertThat(Durations.format(Duration.ofMillis(1500))).isEqualTo("1.5s");
        assertThat(Durations.format(Duration.ofSeconds(45))).isEqualTo("45s");
        assertThat(Durations.format(Duration.ofMinutes(9))).isEqualTo("9m");
        assertThat(Durations.format(Duration.ofSeconds(90))).isEqualTo("1m30s");
        assertThat(Durations.format(Duration.ofHours(1))).isEqualTo("1h");
        assertThat(Durations.format(Duration.ofMinutes(125))).isEqualTo("2h5m");
        assertThat(Durations.format(Duration.ZERO)).isEqualTo("0ms");
    }
}
