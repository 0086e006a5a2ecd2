package io.vmgate.e2e;

import static org.assertj.core.api.Assertions.assertThat;

import io.vmgate.ssh.SshClientHelper;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The server itself going away under live sessions (issue 5): SIGTERM drains (every client is
 * told and exits non-zero, every VM is destroyed, the server exits 0); SIGKILL takes every QEMU
 * along (parent-death signal) and the next start reaps what was left on disk.
 */
class ServerLifecycleIT {
    static final Duration STARTED = Duration.ofSeconds(120);

    @TempDir
    Path dir;
    private final Cleanup cleanup = new Cleanup();

    @AfterEach
    void cleanUp() throws Exception {
        cleanup.closeAll();
    }

    private ServeProcess start(ServeProcess.Builder b) throws Exception {
        ServeProcess s = b.start();
        cleanup.add(s);
        return s;
    }

    /** n clients running {@code sleep 600}, each past "started" (so each has its VM). */
    private List<LiveSsh> sleepers(SshClientHelper ssh, int n) throws Exception {
        List<LiveSsh> all = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            LiveSsh l = LiveSsh.start(ssh, "echo started; sleep 600");
            cleanup.add(l);
            all.add(l);
        }
        for (LiveSsh l : all) {
            l.awaitLine("started", STARTED);
        }
        return all;
    }

    @Test
    void sigtermWithFiveLiveSessionsTellsEveryClientDestroysEveryVmAndExitsZero() throws Exception {
        ServeProcess server = start(ServeProcess.builder(dir).name("ServerLifecycleIT-sigterm"));
        List<LiveSsh> clients = sleepers(server.ssh(), 5);
        assertThat(Host.qemusUnder(server.runtimeRoot())).hasSize(5);

        long t0 = System.nanoTime();
        server.sigterm();
        for (LiveSsh c : clients) {
            int code = c.awaitExit(Duration.ofSeconds(60));
            assertThat(code).as("client exit status; %s", c).isNotZero();
            assertThat(c.stderr()).as("what the client was told").contains("vmgate: the server is shutting down");
        }
        int exit = server.awaitExit(Duration.ofSeconds(60));
        System.out.printf("SIGTERM with 5 sessions: server exited %d after %d ms%n", exit,
                TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0));
        assertThat(exit).as(server.tail()).isZero();
        Host.assertNothingLeft(server.runtimeRoot(), 5);
        assertThat(server.logLines("vm_released conn=")).hasSize(5);
        assertThat(server.logs()).contains("server_stopped");
    }

    @Test
    void sigtermWhileVmsAreStillStartingLeavesNothingAndExitsZero() throws Exception {
        ServeProcess server = start(ServeProcess.builder(dir).name("ServerLifecycleIT-sigterm-starting"));
        List<LiveSsh> clients = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            LiveSsh l = LiveSsh.start(server.ssh(), "echo started; sleep 600");
            cleanup.add(l);
            clients.add(l);
        }
        // The first VM is on its way (restores take a few hundred ms): stop now.
        server.awaitLog("vm_requested conn=", Duration.ofSeconds(60));
        server.sigterm();
        for (LiveSsh c : clients) {
            assertThat(c.awaitExit(Duration.ofSeconds(60))).as("client exit status; %s", c).isNotZero();
        }
        assertThat(server.awaitExit(Duration.ofSeconds(60))).as(server.tail()).isZero();
        Host.assertNothingLeft(server.runtimeRoot(), 5);
    }

    @Test
    void sigtermWithAClientThatStoppedReadingStillDrainsAndExitsZero() throws Exception {
        ServeProcess server = start(ServeProcess.builder(dir).name("ServerLifecycleIT-sigterm-stuck"));
        // Output nobody reads (this pipe from ssh is never read): the pipe, then the SSH window fill
        // up and the guest is held by flow control.
        Process stuck = server.ssh().startSsh(List.of(), "cat /dev/zero");
        cleanup.add(() -> {
            stuck.destroyForcibly();
            stuck.waitFor(10, TimeUnit.SECONDS);
        });
        server.awaitLog("vm_assigned conn=", STARTED);
        List<LiveSsh> others = sleepers(server.ssh(), 2);
        Thread.sleep(2000);
        server.sigterm();
        for (LiveSsh c : others) {
            assertThat(c.awaitExit(Duration.ofSeconds(60))).as("client exit status; %s", c).isNotZero();
            assertThat(c.stderr()).contains("vmgate: the server is shutting down");
        }
        assertThat(server.awaitExit(Duration.ofSeconds(90))).as(server.tail()).isZero();
        Host.assertNothingLeft(server.runtimeRoot(), 5);
        assertThat(stuck.waitFor(30, TimeUnit.SECONDS)).as("the stuck client is disconnected").isTrue();
        assertThat(stuck.exitValue()).isNotZero();
    }

    @Test
    void sigkillTakesEveryQemuAlongAndTheNextStartReapsWhatIsLeft() throws Exception {
        ServeProcess server = start(ServeProcess.builder(dir).name("ServerLifecycleIT-sigkill"));
        Path root = server.runtimeRoot();
        List<LiveSsh> clients = sleepers(server.ssh(), 3);
        assertThat(Host.qemusUnder(root)).hasSize(3);

        server.sigkill();
        server.awaitExit(Duration.ofSeconds(30));
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
        while (!Host.qemusUnder(root).isEmpty() && System.nanoTime() < deadline) {
            Thread.sleep(50);
        }
        assertThat(Host.qemusUnder(root)).as("QEMU outlived a SIGKILLed server by more than 5 s").isEmpty();
        for (LiveSsh c : clients) {
            assertThat(c.awaitExit(Duration.ofSeconds(30))).as("client of a killed server; %s", c).isEqualTo(255);
        }
        List<Path> left = Host.entries(root);
        System.out.println("runtime directories left by the SIGKILLed server: " + left);
        // Nothing can clean up after SIGKILL: the directories wait for the next start (else this test proves nothing).
        assertThat(left).as("runtime directories a SIGKILLed server leaves").isNotEmpty();

        ServeProcess next = start(ServeProcess.builder(dir).name("ServerLifecycleIT-restart").runtimeRoot(root));
        assertThat(Host.entries(root)).as("the next start reaps what the killed server left").isEmpty();
        assertThat(next.logLines("vm_reaped")).hasSize(left.size());
        SshClientHelper.Result r = next.ssh().ssh("echo served");
        assertThat(r.exitCode()).as(r.toString()).isZero();
        assertThat(r.out()).isEqualTo("served\n");
        Host.assertNothingLeft(root, 5);
    }
}
