package io.vmgate.sandbox;

import io.vmgate.agent.AgentGoneException;
import io.vmgate.agent.GuestProcess;
import io.vmgate.exec.Command;
import io.vmgate.exec.ExecResult;
import io.vmgate.exec.Execution;
import io.vmgate.exec.ExitStatus;
import io.vmgate.exec.GuestGoneException;
import io.vmgate.exec.Pump;
import io.vmgate.egress.Egress;
import io.vmgate.vm.GuestLogin;
import io.vmgate.vm.Vm;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;

/** A {@link Sandbox} on one {@link Vm}: commands go to its agent, files through {@code cat}. */
final class VmSandbox implements Sandbox {
    static final String STOPPED = "the VM stopped unexpectedly: ";

    private final Vm vm;
    private final GuestLogin login;
    private final Egress egress; // null: no network
    private final Runnable onClose;
    private final CompletableFuture<String> lost = new CompletableFuture<>();
    private final AtomicBoolean closing = new AtomicBoolean();
    private final List<SshAccess> endpoints = new CopyOnWriteArrayList<>();

    VmSandbox(Vm vm, GuestLogin login, Egress egress, Runnable onClose) {
        this.vm = vm;
        this.login = login;
        this.egress = egress;
        this.onClose = onClose;
        vm.exited().thenRun(() -> died("the VM exited"));
        vm.agent().disconnected().thenRun(() -> died("lost the connection to the VM's agent"));
    }

    private void died(String why) {
        if (!closing.get()) {
            lost.complete(why);
        }
    }

    @Override
    public String id() {
        return vm.id();
    }

    @Override
    public CompletableFuture<String> lost() {
        return lost.copy(); // callers may not complete ours
    }

    @Override
    public String diagnostics() {
        return vm.diagnostics();
    }

    @Override
    public List<Phase> startup() {
        return vm.phases().stream().map(p -> new Phase(p.name(), p.nanoTime())).toList();
    }

    /** A failure of a guest operation, in the user's words: why the guest is gone, if it is. */
    IOException gone(Throwable failure) {
        Throwable t = failure instanceof CompletionException && failure.getCause() != null ? failure.getCause() : failure;
        if (closing.get()) {
            return new GuestGoneException("the sandbox was closed", t);
        }
        String why = lost.getNow(null);
        if (why != null) {
            return new GuestGoneException(STOPPED + why, t);
        }
        if (t instanceof AgentGoneException) {
            return new GuestGoneException(STOPPED + "lost the connection to the VM's agent", t);
        }
        return t instanceof IOException io ? io : new IOException(String.valueOf(t.getMessage()), t);
    }

    @Override
    public Execution exec(Command command) throws IOException {
        if (closing.get()) {
            throw new GuestGoneException("the sandbox is closed", null);
        }
        GuestProcess p;
        try {
            p = vm.agent().start(Commands.spec(login, command, egress == null ? Map.of() : egress.environment()));
        } catch (AgentGoneException e) {
            throw gone(e);
        } catch (IllegalArgumentException e) {
            throw new IOException(e.getMessage(), e);
        }
        return new VmExecution(p, this);
    }

    @Override
    public ExecResult run(Command command, Duration limit) throws IOException, InterruptedException, TimeoutException {
        Execution e = exec(command);
        e.stdin().close();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        CompletableFuture<Long> outDone = Pump.copy(e.stdout(), out).name(id() + "-run-stdout").start();
        CompletableFuture<Long> errDone = Pump.copy(e.stderr(), err).name(id() + "-run-stderr").start();
        ExitStatus status;
        try {
            status = limit == null ? e.waitFor() : e.waitFor(limit);
        } catch (TimeoutException | InterruptedException t) {
            e.kill();
            throw t;
        }
        // The guest sends all output before the exit: the pumps finish at once.
        CompletableFuture.allOf(outDone, errDone).handle((r, t) -> null).join();
        return new ExecResult(status, out.toByteArray(), err.toByteArray());
    }

    @Override
    public void upload(Path local, String guestPath) throws IOException, InterruptedException {
        try (InputStream in = Files.newInputStream(local)) {
            upload(in, guestPath);
        }
    }

    /**
     * Written to a temporary name beside the target and renamed at the end, so a failed upload
     * (the host's input failing, the guest's disk full) never leaves a half-written file under the name.
     */
    @Override
    public void upload(InputStream data, String guestPath) throws IOException, InterruptedException {
        Execution e = exec(Command.of("/bin/sh", "-c", "cat > \"$1.vmgate-part\" && mv -f \"$1.vmgate-part\" \"$1\""
                + " || { rm -f \"$1.vmgate-part\"; exit 1; }", "vmgate-upload", guestPath));
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        CompletableFuture<Long> errDone = Pump.copy(e.stderr(), err).name(id() + "-upload-stderr").start();
        OutputStream to = e.stdin();
        byte[] buf = new byte[Pump.CHUNK];
        IOException guestFailure = null;
        try {
            for (int n; (n = data.read(buf)) >= 0; ) {
                try {
                    to.write(buf, 0, n);
                } catch (IOException writeFailed) {
                    guestFailure = writeFailed; // the process ended early: its status and stderr say why
                    break;
                }
            }
        } catch (IOException readFailed) {
            e.kill(); // before EOF: the partial file is never renamed into place
            e.exit().handle((r, t) -> null).join();
            throw new IOException("upload to " + guestPath + " failed reading the source: " + readFailed.getMessage(), readFailed);
        }
        try {
            to.close();
        } catch (IOException closeFailed) {
            guestFailure = guestFailure != null ? guestFailure : closeFailed;
        }
        ExitStatus status = e.waitFor();
        errDone.handle((r, t) -> null).join();
        if (status.shellCode() != 0 || guestFailure != null) {
            String why = err.toString(java.nio.charset.StandardCharsets.UTF_8).strip();
            throw new IOException("cannot write " + guestPath + " in the sandbox: "
                    + (why.isEmpty() ? (guestFailure != null ? guestFailure.getMessage() : status.toString()) : why), guestFailure);
        }
    }

    @Override
    public void download(String guestPath, Path local) throws IOException, InterruptedException {
        Path dir = local.toAbsolutePath().getParent();
        Path tmp = Files.createTempFile(dir, "." + local.getFileName(), ".part");
        try {
            try (OutputStream out = Files.newOutputStream(tmp)) {
                download(guestPath, out);
            }
            Files.move(tmp, local, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    @Override
    public void download(String guestPath, OutputStream out) throws IOException, InterruptedException {
        Execution e = exec(Command.of("cat", "--", guestPath));
        e.stdin().close();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        CompletableFuture<Long> errDone = Pump.copy(e.stderr(), err).name(id() + "-download-stderr").start();
        try {
            e.stdout().transferTo(out);
        } catch (IOException copyFailed) {
            e.kill();
            e.waitFor();
            throw copyFailed;
        }
        ExitStatus status = e.waitFor();
        errDone.handle((r, t) -> null).join();
        if (status.shellCode() != 0) {
            throw new IOException("cannot read " + guestPath + " in the sandbox: "
                    + err.toString(java.nio.charset.StandardCharsets.UTF_8).strip());
        }
    }

    @Override
    public SshAccess enableSsh() throws IOException {
        if (closing.get()) {
            throw new GuestGoneException("the sandbox is closed", null);
        }
        SshAccess access = SshAccess.open(this, endpoints::remove);
        endpoints.add(access);
        if (closing.get()) {
            access.close();
            throw new GuestGoneException("the sandbox is closed", null);
        }
        return access;
    }

    @Override
    public void close() {
        if (!closing.compareAndSet(false, true)) {
            vm.close(); // waits for a concurrent close to finish
            return;
        }
        endpoints.forEach(SshAccess::close);
        if (egress != null) {
            egress.close();
        }
        vm.close();
        onClose.run();
    }
}
