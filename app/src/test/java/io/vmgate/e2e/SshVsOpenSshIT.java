package io.vmgate.e2e;

import static org.assertj.core.api.Assertions.assertThat;

import io.vmgate.ssh.SshClientHelper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.stream.Collectors;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.api.io.TempDir;

/**
 * The same OpenSSH client command against vmgate and against OpenSSH's own sshd (a throw-away
 * one on another port): the exit status, stdout and stderr must be the same (issue 3: "reports
 * the signal the way OpenSSH does for a local sshd"). LogLevel=INFO, so any message the client
 * prints (like "Connection to ... closed.") counts.
 */
class SshVsOpenSshIT {
    @TempDir
    static Path dir;
    static ServeProcess vmgate;
    static LocalSshd sshd;
    static Path key;

    @BeforeAll
    static void start() throws Exception {
        key = SshClientHelper.generateKey(dir, "id_client");
        Path authorized = dir.resolve("authorized_keys");
        Files.copy(Path.of(key + ".pub"), authorized);
        sshd = LocalSshd.start(dir.resolve("sshd"), key);
        vmgate = ServeProcess.builder(dir).name("SshVsOpenSshIT").args("--authorized-keys", authorized.toString()).start();
    }

    @AfterEach
    void nothingLeftBehind() throws Exception {
        Host.assertNothingLeft(vmgate.runtimeRoot(), 5);
    }

    @AfterAll
    static void stop() {
        try {
            if (vmgate != null) {
                vmgate.close();
            }
        } finally {
            if (sshd != null) {
                sshd.close();
            }
        }
    }

    record Seen(int exit, String out, String err) {}

    static Seen run(int port, boolean tty, String command, String stdin) throws Exception {
        SshClientHelper c = SshClientHelper.forPort(port).withUser("root").withIdentity(key).withOption("LogLevel=INFO")
                .withTimeout(Duration.ofSeconds(120));
        if (stdin != null) {
            c = c.withStdin(stdin.getBytes());
        }
        SshClientHelper.Result r = c.sshWithFlags(tty ? List.of("-tt") : List.of(), command);
        assertThat(r.timedOut()).as("%s", r).isFalse();
        // The known-hosts warning names the port; everything else must match exactly.
        String err = r.err().lines().filter(l -> !l.startsWith("Warning: Permanently added"))
                .map(l -> l + "\n").collect(Collectors.joining());
        return new Seen(r.exitCode(), r.out(), err);
    }

    @ParameterizedTest(name = "[{0}] tty={1}")
    @CsvSource(delimiter = '|', value = {
            "exit 7|false",
            "exit 7|true",
            "kill -TERM $$|false",
            "kill -TERM $$|true",
            "kill -KILL $$|false",
            "kill -KILL $$|true",
            "kill -HUP $$|false",
            "echo out; echo err >&2; exit 3|false",
            "echo out; exit 0|true",
    })
    void sameAsOpenSsh(String command, boolean tty) throws Exception {
        Seen expected = run(sshd.port(), tty, command, null);
        Seen actual = run(vmgate.port(), tty, command, null);
        // On a busy machine a terminal user waiting over a second for the VM is told so, and the line
        // is erased before the guest's first byte: the one difference by design.
        String progress = "\rvmgate: starting your VM...\r\033[K";
        Seen seen = new Seen(actual.exit(), actual.out().replace(progress, ""), actual.err());
        assertThat(seen).as("vmgate vs OpenSSH's sshd for %s", command).isEqualTo(expected);
    }

    @ParameterizedTest(name = "[{0}] with stdin")
    @CsvSource(delimiter = '|', value = {"cat", "wc -c", "read x; echo got-$x; exit 4"})
    void sameAsOpenSshWithStdin(String command) throws Exception {
        Seen expected = run(sshd.port(), false, command, "hi\n");
        Seen actual = run(vmgate.port(), false, command, "hi\n");
        assertThat(actual).as("vmgate vs OpenSSH's sshd for %s", command).isEqualTo(expected);
    }
}
