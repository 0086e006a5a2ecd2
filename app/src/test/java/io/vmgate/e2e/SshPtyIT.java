package io.vmgate.e2e;

import static org.assertj.core.api.Assertions.assertThat;

import io.vmgate.ssh.SshClientHelper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code ssh -t} into {@code vmgate serve} from a real terminal (tmux), for a VM restored from
 * the snapshot template and for a cold-booted one (issues 3 and 4: a restored VM keeps PTY
 * behaviour exactly): a prompt, a pty, the pane's size and its resize, Ctrl-C stopping a
 * foreground command, and {@code exit} closing the connection with its status.
 */
class SshPtyIT {
    @TempDir
    Path dir;

    /** Single-quotes an argument for the shell tmux runs. */
    static String q(String s) {
        return "'" + s.replace("'", "'\\''") + "'";
    }

    @ParameterizedTest(name = "snapshot={0}")
    @ValueSource(booleans = {true, false})
    void interactiveShellHasAPtyThatFollowsResizeCtrlCAndExit(boolean snapshot) throws Exception {
        ServeProcess.Builder b = ServeProcess.builder(dir).name("SshPtyIT-" + (snapshot ? "restored" : "cold"));
        if (!snapshot) {
            b.args("--no-snapshot");
        }
        try (ServeProcess server = b.start()) {
            SshClientHelper ssh = server.ssh().withUser("root");
            List<String> cmd = new ArrayList<>(List.of("ssh"));
            cmd.addAll(ssh.commonOptions());
            cmd.addAll(List.of("-t", ssh.destination()));
            Path status = dir.resolve("status");
            String line = cmd.stream().map(SshPtyIT::q).collect(Collectors.joining(" ")) + "; echo $? > " + q(status.toString());
            try (Tmux t = new Tmux(dir, line, 100, 30)) {
                t.await(s -> s.contains("root@vmgate:~#"), 120, "a shell prompt");
                assertThat(Host.qemusUnder(server.runtimeRoot())).hasSize(1);
                t.type("tty");
                t.await(s -> s.contains("/dev/pts/"), 10, "tty to name a pty");
                t.type("stty size; echo term=$TERM");
                t.await(s -> s.contains("30 100") && (s.contains("term=tmux") || s.contains("term=screen")), 10,
                        "stty size 30 100 and the terminal's TERM passed on");
                t.resize(120, 40);
                t.type("clear; stty size");
                t.await(s -> s.contains("40 120"), 10, "stty size to follow the resize to 40 120");
                t.type("clear; sleep 1000");
                Thread.sleep(1000);
                t.keys("C-c");
                t.type("echo after-$((40+2)) status-$?");
                t.await(s -> s.contains("after-42"), 10, "Ctrl-C to interrupt sleep and the shell to answer");
                t.type("sh -c 'exit 5'; echo code-$?");
                t.await(s -> s.contains("code-5"), 10, "an exit code inside the shell");
                t.type("exit 3");
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                while (!Files.exists(status) || Files.readString(status).isBlank()) {
                    assertThat(System.nanoTime()).as("ssh to exit after `exit`; screen:\n%s", t.screen()).isLessThan(deadline);
                    Thread.sleep(100);
                }
                assertThat(Files.readString(status).strip()).as("ssh's exit status is the shell's").isEqualTo("3");
                Host.assertNothingLeft(server.runtimeRoot(), 5);
            }
            List<String> ready = server.logLines("vm_ready vm=ssh-");
            assertThat(ready).hasSize(1);
            if (snapshot) {
                assertThat(ready.getFirst()).contains("restored=true");
            } else {
                assertThat(ready.getFirst()).doesNotContain("restored=true").contains("guest_boot_ms=");
            }
        }
    }

    @org.junit.jupiter.api.Test
    void aVmThatDiesUnderAPtySessionEndsItWithAMessageAnd255() throws Exception {
        try (ServeProcess server = ServeProcess.builder(dir).name("SshPtyIT-panic").start()) {
            SshClientHelper ssh = server.ssh().withUser("root");
            List<String> cmd = new ArrayList<>(List.of("ssh"));
            cmd.addAll(ssh.commonOptions());
            cmd.addAll(List.of("-t", ssh.destination()));
            Path status = dir.resolve("status");
            String line = cmd.stream().map(SshPtyIT::q).collect(Collectors.joining(" ")) + "; echo $? > " + q(status.toString());
            try (Tmux t = new Tmux(dir, line, 100, 30)) {
                t.await(s -> s.contains("root@vmgate:~#"), 120, "a shell prompt");
                t.type("echo c > /proc/sysrq-trigger");
                t.await(s -> s.contains("vmgate: the VM stopped unexpectedly"), 30, "the message that the VM died");
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                while (!Files.exists(status) || Files.readString(status).isBlank()) {
                    assertThat(System.nanoTime()).as("ssh to exit; screen:\n%s", t.screen()).isLessThan(deadline);
                    Thread.sleep(100);
                }
                assertThat(Files.readString(status).strip()).isEqualTo("255");
                Host.assertNothingLeft(server.runtimeRoot(), 5);
            }
        }
    }
}
