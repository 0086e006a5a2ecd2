package io.vmgate.ssh;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The idle timeout, the maximum session time and the progress line while a VM starts, through
 * the real OpenSSH client. Timeouts are a few seconds; timing is only checked with generous bounds.
 */
class SshTimeoutTest {
    @TempDir
    Path dir;

    @Test
    void anIdleSessionIsWarnedThenClosedWithAMessageAnd255() throws Exception {
        try (TestServer ts = TestServer.start(dir, b -> b.idleTimeout(Duration.ofSeconds(2))
                .timeoutWarning(Duration.ofSeconds(1)).timeoutGrace(Duration.ofSeconds(2)))) {
            int mark = ts.mark();
            long t0 = System.nanoTime();
            // (exec: SIGTERM ends the process and its output at once, so the grace period is cut short)
            SshClientHelper.Result r = ts.ssh().ssh("echo started; exec sleep 60");
            long ms = (System.nanoTime() - t0) / 1_000_000;
            assertThat(r.exitCode()).as(r.toString()).isEqualTo(255);
            assertThat(r.out()).isEqualTo("started\n");
            assertThat(r.err()).startsWith(
                    "vmgate: this session has been idle for 1s; it will be closed in 1s unless there is activity\n");
            assertThat(r.err()).endsWith("vmgate: session closed: idle for 2s\n");
            assertThat(ms).as("the session lasted the idle timeout, not the grace period too").isBetween(1_900L, 20_000L);
            ts.awaitEvent(mark, "session_idle_warning", "closes_in_ms=1000");
            ts.awaitEvent(mark, "session_idle_timeout", "timeout_ms=2000 processes=1");
            ts.awaitEvent(mark, "session_terminated", "reason=idle_timeout exited_in_grace=true");
            ts.awaitEvent(mark, "vm_released", "");
            ts.awaitAllVmsDestroyed();
            assertThat(ts.launcher.launched).hasSize(1);
            assertThat(ts.launcher.launched.get(0).isClosed()).isTrue();
            // Every timer event carries the connection id in the MDC, like the rest of the package.
            ts.eventsSince(mark).stream().filter(e -> e.getMessage().startsWith("session_"))
                    .forEach(e -> assertThat(e.getMDCPropertyMap()).containsKey(Events.MDC_KEY));
        }
    }

    @Test
    void outputOrInputKeepsASessionAlivePastTheIdleTimeout() throws Exception {
        try (TestServer ts = TestServer.start(dir, b -> b.idleTimeout(Duration.ofSeconds(2))
                .timeoutWarning(Duration.ofSeconds(1)).timeoutGrace(Duration.ofSeconds(1)))) {
            // Output from the guest every 0.5 s for 4 s.
            SshClientHelper.Result r = ts.ssh().ssh("for i in 1 2 3 4 5 6 7 8; do echo $i; sleep 0.5; done");
            assertThat(r.exitCode()).as(r.toString()).isZero();
            assertThat(r.out()).isEqualTo("1\n2\n3\n4\n5\n6\n7\n8\n");
            assertThat(r.err()).isEmpty();

            // Input from the client every 0.5 s for 4 s, nothing printed until the end.
            Process p = ts.ssh().startSsh(List.of(), "cat >/dev/null; echo done");
            try (OutputStream in = p.getOutputStream()) {
                for (int i = 0; i < 8; i++) {
                    in.write('x');
                    in.flush();
                    Thread.sleep(500);
                }
            }
            assertThat(p.waitFor(30, TimeUnit.SECONDS)).isTrue();
            String err = new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
            assertThat(p.exitValue()).as(err).isZero();
            assertThat(err).isEmpty();
            assertThat(new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8)).isEqualTo("done\n");
            assertThat(ts.lines()).noneMatch(m -> m.startsWith("session_idle"));
        }
    }

    @Test
    void activityAfterTheWarningStartsTheIdleClockOver() throws Exception {
        // Warned at ~1 s; output at ~2 s; without the reset the session would be closed at ~4 s; it ends on its own at ~5 s.
        try (TestServer ts = TestServer.start(dir, b -> b.idleTimeout(Duration.ofSeconds(4))
                .timeoutWarning(Duration.ofSeconds(3)).timeoutGrace(Duration.ofSeconds(1)))) {
            SshClientHelper.Result r = ts.ssh().ssh("sleep 2; echo hi; sleep 3; echo bye");
            assertThat(r.exitCode()).as(r.toString()).isZero();
            assertThat(r.out()).isEqualTo("hi\nbye\n");
            assertThat(r.err()).contains("vmgate: this session has been idle for 1s; it will be closed in 3s unless there is activity");
            assertThat(ts.lines()).anyMatch(m -> m.startsWith("session_idle_warning "))
                    .noneMatch(m -> m.startsWith("session_idle_timeout "));
        }
    }

    @Test
    void theMaximumSessionTimeWarnsSignalsAndEndsEvenABusySession() throws Exception {
        try (TestServer ts = TestServer.start(dir, b -> b.maxSessionTime(Duration.ofSeconds(3))
                .timeoutWarning(Duration.ofSeconds(1)).timeoutGrace(Duration.ofSeconds(1)))) {
            int mark = ts.mark();
            long t0 = System.nanoTime();
            // Busy (output every 0.2 s) and deaf to SIGTERM: only destroying the VM ends it.
            SshClientHelper.Result r = ts.ssh().ssh(
                    "trap 'echo got-term' TERM; echo started; while :; do echo tick; sleep 0.2; done");
            long ms = (System.nanoTime() - t0) / 1_000_000;
            assertThat(r.exitCode()).as(r.toString()).isEqualTo(255);
            assertThat(r.out()).startsWith("started\ntick\n").contains("got-term\n");
            assertThat(r.err()).isEqualTo("vmgate: this session will end in 1s (maximum session time 3s)\n"
                    + "vmgate: session closed: maximum session time 3s reached\n");
            assertThat(ms).as("the session lasted the maximum time plus the grace period").isBetween(3_900L, 30_000L);
            ts.awaitEvent(mark, "session_time_warning", "max_ms=3000 closes_in_ms=1000 channels=1");
            ts.awaitEvent(mark, "session_time_limit", "max_ms=3000 processes=1 grace_ms=1000");
            ts.awaitEvent(mark, "session_terminated", "reason=time_limit exited_in_grace=false");
            ts.awaitAllVmsDestroyed();
            assertThat(ts.launcher.launched.get(0).isClosed()).isTrue();
            assertThat(ts.launcher.alive()).isZero();
        }
    }

    @Test
    void timeoutWarningsReachATerminalSessionToo() throws Exception {
        try (TestServer ts = TestServer.start(dir, b -> b.maxSessionTime(Duration.ofSeconds(2))
                .timeoutWarning(Duration.ofSeconds(1)).timeoutGrace(Duration.ofMillis(500)))) {
            SshClientHelper.Result r = ts.ssh().sshWithFlags(List.of("-tt"), "echo started; sleep 60");
            assertThat(r.exitCode()).as(r.toString()).isEqualTo(255);
            assertThat(r.out()).isEqualTo("started\r\n");
            assertThat(r.err()).isEqualTo("\r\nvmgate: this session will end in 1s (maximum session time 2s)\r\n"
                    + "vmgate: session closed: maximum session time 2s reached\r\n");
            ts.awaitAllVmsDestroyed();
        }
    }

    @Test
    void aSlowVmShowsAPtyUserAProgressLineButLeavesExecOutputExact() throws Exception {
        try (TestServer ts = TestServer.start(dir)) {
            ts.launcher.delay = Duration.ofSeconds(2);
            int mark = ts.mark();
            SshClientHelper.Result tty = ts.ssh().sshWithFlags(List.of("-tt"), "echo hi");
            assertThat(tty.exitCode()).as(tty.toString()).isZero();
            assertThat(tty.out()).isEqualTo(GuestCommand.PROGRESS + GuestCommand.ERASE_LINE + "hi\r\n");
            ts.awaitEvent(mark, "vm_wait_progress", "channel=1");

            int mark2 = ts.mark();
            SshClientHelper.Result exec = ts.ssh().ssh("echo hi");
            assertThat(exec.exitCode()).as(exec.toString()).isZero();
            assertThat(exec.stdout()).isEqualTo("hi\n".getBytes(StandardCharsets.US_ASCII));
            assertThat(exec.err()).isEmpty();
            ts.awaitEvent(mark2, "vm_released", "");
            assertThat(ts.eventsSince(mark2)).noneMatch(e -> e.getMessage().equals("vm_wait_progress"));

            // A VM that cannot start: the progress line is erased before the message.
            ts.launcher.failWith = "no kernel image";
            SshClientHelper.Result failed = ts.ssh().sshWithFlags(List.of("-tt"), "echo hi");
            assertThat(failed.exitCode()).as(failed.toString()).isEqualTo(255);
            assertThat(failed.out()).isEqualTo(GuestCommand.PROGRESS + GuestCommand.ERASE_LINE);
            assertThat(failed.err()).isEqualTo("vmgate: no kernel image\r\n");
        }
    }

    @Test
    void aFastVmShowsNoProgressLine() throws Exception {
        try (TestServer ts = TestServer.start(dir)) {
            SshClientHelper.Result tty = ts.ssh().sshWithFlags(List.of("-tt"), "echo hi");
            assertThat(tty.exitCode()).as(tty.toString()).isZero();
            assertThat(tty.out()).isEqualTo("hi\r\n");
            assertThat(ts.lines()).noneMatch(m -> m.startsWith("vm_wait_progress "));
        }
    }
}
