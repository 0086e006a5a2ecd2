package io.vmgate.exec;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.Map;
import org.junit.jupiter.api.Test;

class CommandTest {
    @Test
    void commandsAreValuesAndWithersCopy() {
        Command base = Command.shell("make test");
        Command c = base.env("A", "1").env(Map.of("B", "2")).cwd("/src").pty(Pty.of("", 24, 80));
        assertThat(base.env()).isEmpty();
        assertThat(base.pty()).isNull();
        assertThat(c.env()).containsExactly(Map.entry("A", "1"), Map.entry("B", "2"));
        assertThat(c.cwd()).isEqualTo("/src");
        assertThat(c.pty().term()).isEqualTo("xterm");
        assertThat(c).isEqualTo(Command.shell("make test").env("A", "1").env("B", "2").cwd("/src").pty(Pty.of("xterm", 24, 80)));
        assertThat(c.env("A", "3").env()).containsEntry("A", "3");
    }

    @Test
    void badCommandsAreRefusedWhenMade() {
        assertThatThrownBy(() -> Command.of()).hasMessageContaining("program name");
        assertThatThrownBy(() -> Command.of("a\0b")).hasMessageContaining("NUL");
        assertThatThrownBy(() -> Command.shell("x").env("A=B", "1")).hasMessageContaining("A=B");
        assertThatThrownBy(() -> Command.shell("x").env("", "1")).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> Pty.of("xterm", -1, 80)).hasMessageContaining("out of range");
    }

    @Test
    void exitStatusFollowsTheShellConvention() {
        assertThat(ExitStatus.code(3).shellCode()).isEqualTo(3);
        ExitStatus killed = new ExitStatus(-1, 9, "KILL", false);
        assertThat(killed.signaled()).isTrue();
        assertThat(killed.shellCode()).isEqualTo(137);
        assertThat(killed).hasToString("signal KILL");
    }
}
