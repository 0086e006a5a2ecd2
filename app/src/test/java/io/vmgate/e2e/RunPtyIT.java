package io.vmgate.e2e;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** `vmgate run` with no command in a real terminal (tmux): an interactive shell with a PTY. */
class RunPtyIT {
    @TempDir
    Path dir;

    @AfterEach
    void nothingLeftBehind() throws Exception {
        Host.assertNothingLeft(dir.resolve("rt"), 10);
    }

    @Test
    void interactiveShellHasAPtyThatFollowsResizeAndCtrlC() throws Exception {
        Path rt = Files.createDirectory(dir.resolve("rt"));
        Path status = dir.resolve("status");
        String cmd = "VMGATE_RUNTIME_DIR=" + rt + " ./vmgate run; echo $? > " + status;
        try (Tmux t = new Tmux(dir, cmd, 100, 30)) {
            t.await(s -> s.contains("~#"), 120, "a shell prompt");
            t.type("tty");
            t.await(s -> s.contains("/dev/pts/"), 10, "tty to name a pty");
            t.type("stty size");
            t.await(s -> s.contains("30 100"), 10, "stty size 30 100");
            t.resize(120, 40);
            t.type("clear; stty size");
            t.await(s -> s.contains("40 120"), 10, "stty size to follow the resize to 40 120");
            t.type("clear; sleep 1000");
            Thread.sleep(500);
            t.keys("C-c");
            t.type("echo after-$((40+2))");
            t.await(s -> s.contains("after-42"), 10, "Ctrl-C to interrupt sleep and the shell to answer");
            t.type("exit 3");
            long deadline = System.nanoTime() + 30_000_000_000L;
            while (!Files.exists(status) || Files.readString(status).isBlank()) {
                assertThat(System.nanoTime()).as("vmgate run to exit after `exit`").isLessThan(deadline);
                Thread.sleep(100);
            }
            assertThat(Files.readString(status).strip()).isEqualTo("3");
        }
    }
}
