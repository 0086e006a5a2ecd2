package io.vmgate.sandbox;

import io.vmgate.agent.GuestProcess;
import io.vmgate.exec.Execution;
import io.vmgate.exec.ExitStatus;
import io.vmgate.exec.GuestGoneException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.util.concurrent.CompletableFuture;

/**
 * A guest process of a {@link VmSandbox}. Its exit races the sandbox's death in exactly one place:
 * whichever comes first completes {@link #exit()}, a death as a {@link GuestGoneException} that says why.
 */
final class VmExecution implements Execution {
    private final GuestProcess process;
    private final CompletableFuture<ExitStatus> exit = new CompletableFuture<>();

    VmExecution(GuestProcess process, VmSandbox sandbox) {
        this.process = process;
        process.exit().whenComplete((status, e) -> {
            if (e == null) {
                exit.complete(status);
            } else {
                exit.completeExceptionally(sandbox.gone(e));
            }
        });
        sandbox.lost().thenAccept(why -> exit.completeExceptionally(new GuestGoneException(VmSandbox.STOPPED + why, null)));
    }

    @Override
    public OutputStream stdin() {
        return process.stdin();
    }

    @Override
    public InputStream stdout() {
        return process.stdout();
    }

    @Override
    public InputStream stderr() {
        return process.stderr();
    }

    @Override
    public void resize(int rows, int cols) throws IOException {
        process.resize(rows, cols);
    }

    @Override
    public void signal(String name) throws IOException {
        process.signal(name);
    }

    @Override
    public void kill() {
        process.kill();
    }

    @Override
    public CompletableFuture<ExitStatus> exit() {
        return exit.copy(); // callers may not complete ours
    }
}
