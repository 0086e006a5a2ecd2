package io.vmgate.vm.qemu;

import io.vmgate.vm.Vm;
import io.vmgate.vm.VmConfig;
import io.vmgate.vm.VmException;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.vmgate.agent.GuestProcess;
import io.vmgate.agent.ProcessSpec;
import io.vmgate.image.AgentBinary;
import io.vmgate.image.Image;
import io.vmgate.image.ImageException;
import io.vmgate.image.ImageSources;
import io.vmgate.image.ImageStore;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/** Boots real QEMU VMs with the real agent (skipped when the agent has not been built). */
class QemuVmIT {
    static Image image;
    @RegisterExtension
    final RuntimeRoot runtime = new RuntimeRoot("vmgate-it-");

    /** The agent from the jar's resources (Maven copies it there), else from guest/agent/build. */
    static AgentBinary agent() {
        if (AgentBinary.class.getResource(AgentBinary.RESOURCE) != null) {
            return AgentBinary.classpath();
        }
        Path built = Path.of(System.getProperty("vmgate.home", ".")).resolve("guest/agent/build/vmgate-agent");
        assumeTrue(Files.isExecutable(built), "guest agent not built (make -C guest/agent)");
        return AgentBinary.file(built);
    }

    @BeforeAll
    static void buildImage() throws ImageException {
        assumeTrue(QemuBinary.find(VmConfig.DEFAULT_QEMU).isPresent(), "QEMU not installed");
        Path cache = Path.of(System.getProperty("vmgate.home", ".")).resolve("target/it-image-cache");
        image = new ImageStore(cache).image(ImageSources.debian().withAgent(agent()));
    }


    VmConfig config() {
        return VmConfig.defaults(image).withRuntimeRoot(runtime.path()).withBootTimeout(Duration.ofSeconds(60));
    }

    static List<Long> qemuPids(String vmId) throws Exception {
        Process p = new ProcessBuilder("pgrep", "-f", "qemu-system.*-name vmgate-" + vmId + " ").start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.US_ASCII);
        p.waitFor();
        return out.lines().map(String::strip).filter(l -> !l.isEmpty()).map(Long::parseLong).toList();
    }

    @Test
    void bootsToHelloRunsACommandAndLeavesNothingBehind() throws Exception {
        QemuVm vm = QemuVm.boot(config(), "it-boot");
        try {
            assertThat(vm.hello().kernelRelease()).isEqualTo(image.kernelRelease());
            assertThat(vm.phases()).extracting(Vm.Phase::name).containsSubsequence("qemu_started", "agent_hello");
            assertThat(vm.exited()).isNotDone();
            long pid = vm.pid().orElseThrow();
            assertThat(qemuPids("it-boot")).containsExactly(pid);
            RuntimeDir dir = vm.runtimeDir();
            assertThat(dir.path()).isDirectory();
            assertThat(dir.readOwners().qemuPid()).isEqualTo(pid);
            assertThat(dir.readOwners().ownerPid()).isEqualTo(ProcessHandle.current().pid());
            assertThat(vm.qmp().execute("query-status", java.util.Map.of(), Duration.ofSeconds(5)))
                    .containsEntry("status", "running");

            GuestProcess p = vm.agent().start(ProcessSpec.shellCommand("echo hello from $(uname -r); exit 3"));
            p.stdin().close();
            assertThat(new String(p.stdout().readAllBytes(), StandardCharsets.UTF_8).strip())
                    .isEqualTo("hello from " + image.kernelRelease());
            assertThat(p.exit().get(30, TimeUnit.SECONDS).code()).isEqualTo(3);
        } finally {
            vm.close();
        }
        assertThat(vm.exited()).isDone();
        assertThat(vm.runtimeDir().path()).doesNotExist();
        assertThat(qemuPids("it-boot")).isEmpty();
        vm.close(); // idempotent
        assertThat(vm.diagnostics()).contains("guest console");
    }

    @Test
    void aBootTimeoutQuotesTheConsoleAndCleansUp() {
        // A chatty kernel, so the console has something to quote, and an agent told to look for a port
        // that does not exist, so no hello comes however fast the machine is (even under KVM).
        Image chatty = new Image(image.directory(), image.kernel(), image.initrd(), image.kernelRelease(),
                "console=ttyS0 panic=-1 vmgate.port=org.vmgate.nonexistent", image.contentHash());
        VmConfig cfg = config().withImage(chatty).withBootTimeout(Duration.ofSeconds(3));
        assertThatThrownBy(() -> QemuVm.boot(cfg, "it-timeout"))
                .isInstanceOf(VmException.class)
                .hasMessageContaining("did not say hello within")
                .hasMessageContaining("guest console (last 20 lines)")
                .hasMessageContaining("QEMU stderr")
                .hasMessageMatching("(?s).*\\[ *\\d+\\.\\d+\\].*"); // printk lines from the console
        assertThat(runtime.path().resolve("it-timeout")).doesNotExist();
        try {
            assertThat(qemuPids("it-timeout")).isEmpty();
        } catch (Exception e) {
            throw new AssertionError(e);
        }
    }

    @Test
    void aQemuThatCannotStartIsReportedWithItsStderr() {
        Image broken = new Image(image.directory(), runtime.path().resolve("no-such-kernel"), image.initrd(), image.kernelRelease(),
                image.cmdline(), image.contentHash());
        long t0 = System.nanoTime();
        assertThatThrownBy(() -> QemuVm.boot(config().withImage(broken), "it-broken"))
                .isInstanceOf(VmException.class)
                .hasMessageContaining("QEMU exited with status")
                .hasMessageContaining("no-such-kernel");
        assertThat(Duration.ofNanos(System.nanoTime() - t0)).isLessThan(Duration.ofSeconds(10));
    }

    @Test
    void aKilledQemuCompletesExitedAtOnce() throws Exception {
        QemuVm vm = QemuVm.boot(config(), "it-kill");
        try {
            ProcessHandle.of(vm.pid().orElseThrow()).orElseThrow().destroyForcibly();
            vm.exited().get(5, TimeUnit.SECONDS);
            vm.agent().disconnected().get(5, TimeUnit.SECONDS);
            assertThat(vm.exitStatus()).isPresent();
        } finally {
            vm.close();
        }
        assertThat(vm.runtimeDir().path()).doesNotExist();
    }

    @Test
    void qemuDiesWithItsServerEvenOnSigkillAndTheNextStartReapsTheDirectory() throws Exception {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process server = new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"),
                "-Dvmgate.home=" + System.getProperty("vmgate.home", "."), CrashingServer.class.getName(), runtime.path().toString(),
                image.directory().toString()).redirectErrorStream(true).start();
        long qemuPid;
        try (BufferedReader r = new BufferedReader(new InputStreamReader(server.getInputStream(), StandardCharsets.UTF_8))) {
            String line;
            while ((line = r.readLine()) != null && !line.startsWith("READY ")) {
                // log output
            }
            assertThat(line).as("the child server booted a VM").isNotNull();
            qemuPid = Long.parseLong(line.substring("READY ".length()).strip());
            server.destroyForcibly(); // SIGKILL: no shutdown hooks, no close()
            server.waitFor(10, TimeUnit.SECONDS);
        }
        ProcessHandle qemu = ProcessHandle.of(qemuPid).orElse(null);
        if (qemu != null) {
            qemu.onExit().get(10, TimeUnit.SECONDS); // the parent-death signal must have killed it
        }
        assertThat(runtime.path().resolve("it-crash")).isDirectory(); // the dead server could not clean up
        assertThat(RuntimeDirs.reapStale(runtime.path())).isEqualTo(1);
    }

    /** A "server" in its own JVM: boots a VM, reports QEMU's pid, then waits to be killed. */
    public static final class CrashingServer {
        public static void main(String[] args) throws Exception {
            Image img = Image.load(Path.of(args[1]));
            VmConfig cfg = VmConfig.defaults(img).withRuntimeRoot(Path.of(args[0])).withBootTimeout(Duration.ofSeconds(60));
            QemuVm vm = QemuVm.boot(cfg, "it-crash");
            System.out.println("READY " + vm.pid().orElseThrow());
            System.out.flush();
            Thread.sleep(Duration.ofMinutes(5));
        }
    }
}
