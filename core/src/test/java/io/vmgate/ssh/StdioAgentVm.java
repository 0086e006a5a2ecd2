package io.vmgate.ssh;

import io.vmgate.agent.AgentClient;
import io.vmgate.exec.Guest;
import io.vmgate.sandbox.SandboxOptions;
import io.vmgate.sandbox.Sandboxes;
import io.vmgate.vm.Vm;
import io.vmgate.vm.VmException;
import io.vmgate.vm.VmLauncher;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.channels.ByteChannel;
import java.nio.channels.Channels;
import java.nio.channels.ReadableByteChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * A test {@link Vm}: the real guest agent run as a host process ({@code vmgate-agent --stdio}),
 * its stdin/stdout wired to an {@link AgentClient}. "Killing the VM" is killing that process.
 */
public final class StdioAgentVm implements Vm {
    private final String id;
    private final Process process;
    private final AgentClient agent;
    private final CompletableFuture<Void> exited = new CompletableFuture<>();
    private final AtomicBoolean closed = new AtomicBoolean();
    private final List<Phase> phases = new ArrayList<>();

    private StdioAgentVm(String id, Process process) {
        this.id = id;
        this.process = process;
        phases.add(new Phase("process_started", System.nanoTime()));
        this.agent = AgentClient.connect(new ProcessChannel(process), id);
        process.onExit().whenComplete((p, e) -> exited.complete(null));
    }

    /** Where the agent binary is: -Dvmgate.agent, Maven's target/classes/guest, or guest/agent/build. */
    public static Path agentBinary() {
        String prop = System.getProperty("vmgate.agent");
        if (prop != null) {
            return Path.of(prop);
        }
        Path home = Path.of(System.getProperty("vmgate.home", ".")).toAbsolutePath().normalize();
        for (Path p : List.of(home.resolve("guest/agent/build/vmgate-agent"), home.resolve("core/target/classes/guest/vmgate-agent"))) {
            if (Files.isExecutable(p)) {
                return p;
            }
        }
        throw new IllegalStateException("the guest agent is not built: run `make -C guest/agent` (looked in "
                + home + "/guest/agent/build and core/target/classes/guest)");
    }

    public static StdioAgentVm start(String id) throws VmException {
        Process p;
        try {
            p = new ProcessBuilder(agentBinary().toString(), "--stdio")
                    .redirectError(ProcessBuilder.Redirect.DISCARD)
                    .start();
        } catch (IOException e) {
            throw new VmException("cannot start the stdio agent: " + e.getMessage(), e);
        }
        StdioAgentVm vm = new StdioAgentVm(id, p);
        try {
            vm.agent.awaitHello(Duration.ofSeconds(20));
        } catch (IOException | TimeoutException e) {
            vm.close();
            throw new VmException("the stdio agent did not say hello: " + e.getMessage(), e);
        }
        vm.phases.add(new Phase("agent_ready", System.nanoTime()));
        return vm;
    }

    /** A launcher that records every VM it made, so tests can kill them or check they were closed. */
    /**
     * Starts stdio agents as VMs, and (as a {@link GuestSource}) hands them to an SSH server as
     * sandboxes, through the real Sandbox API with this launcher in place of QEMU.
     */
    public static final class Launcher implements VmLauncher, GuestSource {
        public final List<StdioAgentVm> launched = new CopyOnWriteArrayList<>();
        private volatile Sandboxes sandboxes;
        /** How long each launch takes before it starts the agent (or fails with {@link #failWith}). */
        public volatile Duration delay = Duration.ZERO;
        public volatile String failWith;

        @Override
        public Vm launch(String vmId, java.util.function.Consumer<Vm.Phase> progress) throws VmException {
            if (!delay.isZero()) {
                try {
                    Thread.sleep(delay);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new VmException("interrupted");
                }
            }
            if (failWith != null) {
                throw new VmException(failWith);
            }
            StdioAgentVm vm = start(vmId);
            launched.add(vm);
            return vm;
        }

        @Override
        public Guest open(String sessionId, String user) throws IOException {
            Sandboxes s = sandboxes;
            if (s == null) {
                synchronized (this) {
                    if (sandboxes == null) {
                        sandboxes = Sandboxes.builder(SandboxOptions.defaults()).launcher(this).build();
                    }
                    s = sandboxes;
                }
            }
            return s.start("ssh-" + sessionId);
        }

        public int alive() {
            return (int) launched.stream().filter(v -> v.process.isAlive()).count();
        }
    }

    /** Simulates the VM dying: SIGKILL to the agent (its children are killed too). */
    public void kill() {
        List<ProcessHandle> children = process.descendants().toList();
        process.destroyForcibly();
        children.forEach(ProcessHandle::destroyForcibly);
    }

    public boolean isClosed() {
        return closed.get();
    }

    public boolean isAlive() {
        return process.isAlive();
    }

    public long pid() {
        return process.pid();
    }

    @Override
    public String id() {
        return id;
    }

    @Override
    public AgentClient agent() {
        return agent;
    }

    @Override
    public CompletableFuture<Void> exited() {
        return exited;
    }

    @Override
    public String diagnostics() {
        return "stdio agent pid " + process.pid() + (process.isAlive() ? " (running)" : " (exit " + process.exitValue() + ")");
    }

    @Override
    public List<Phase> phases() {
        return List.copyOf(phases);
    }

    @Override
    public void close() {
        if (!closed.compareAndSet(false, true)) {
            return;
        }
        List<ProcessHandle> children = process.descendants().toList();
        agent.close();
        process.destroy();
        try {
            if (!process.waitFor(5, TimeUnit.SECONDS)) {
                process.destroyForcibly();
                process.waitFor(5, TimeUnit.SECONDS);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        children.forEach(ProcessHandle::destroyForcibly);
    }

    /** The agent process's stdout/stdin as one ByteChannel; every write is flushed. */
    private static final class ProcessChannel implements ByteChannel {
        private final ReadableByteChannel in;
        private final InputStream rawIn;
        private final OutputStream out;
        private volatile boolean open = true;

        ProcessChannel(Process p) {
            this.rawIn = p.getInputStream();
            this.in = Channels.newChannel(rawIn);
            this.out = p.getOutputStream();
        }

        @Override
        public int read(ByteBuffer dst) throws IOException {
            return in.read(dst);
        }

        @Override
        public int write(ByteBuffer src) throws IOException {
            int n = src.remaining();
            byte[] b = new byte[n];
            src.get(b);
            out.write(b);
            out.flush();
            return n;
        }

        @Override
        public boolean isOpen() {
            return open;
        }

        @Override
        public void close() throws IOException {
            open = false;
            try {
                out.close();
            } finally {
                rawIn.close();
            }
        }
    }
}
