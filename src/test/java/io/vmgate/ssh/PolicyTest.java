package io.vmgate.ssh;

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
        assertThat(VmChannelSession.parseModes(modes)).containsExactly(
                new Message.TermMode(PtyMode.VINTR.toInt(), 3),
                new Message.TermMode(PtyMode.ECHO.toInt(), 1),
                new Message.TermMode(128, 38400));
        // Truncated, reserved opcodes, and garbage never throw.
        assertThat(VmChannelSession.parseModes(new byte[] {1, 0, 0})).isEmpty();
        assertThat(VmChannelSession.parseModes(new byte[] {(byte) 200, 0, 0, 0, 1, 1, 0, 0, 0, 3})).isEmpty();
        assertThat(VmChannelSession.parseModes(new byte[0])).isEmpty();
        byte[] many = new byte[5 * 1000];
        for (int i = 0; i < 1000; i++) {
            many[i * 5] = (byte) (1 + i % 159);
        }
        assertThat(VmChannelSession.parseModes(many)).hasSizeLessThanOrEqualTo(256);
    }

    @Test
    void logValuesCannotForgeLines() {
        assertThat(Events.v("alice")).isEqualTo("alice");
        assertThat(Events.v(null)).isEqualTo("-");
        assertThat(Events.v("")).isEqualTo("\"\"");
        assertThat(Events.v("a b")).isEqualTo("\"a b\"");
        assertThat(Events.v("x\nauth_succeeded user=root")).isEqualTo("\"x\\nauth_succeeded user=root\"");
        assertThat(Events.v("k=v")).isEqualTo("\"k=v\"");
        assertThat(Events.v("q\"\\")).isEqualTo("\"q\\\"\\\\\"");
        assertThat(Events.v("\u0007")).isEqualTo("\"\\x07\"");
        assertThat(Events.v("y".repeat(1000))).hasSizeLessThan(220).endsWith("...\"");
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
    }
}
