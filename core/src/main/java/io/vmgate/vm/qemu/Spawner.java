package io.vmgate.vm.qemu;

import java.io.IOException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * Starts QEMU processes from one dedicated, never-ending platform thread.
 *
 * <p>QEMU is launched under {@code setpriv --pdeathsig KILL}, so it dies with the server even on
 * SIGKILL. But PR_SET_PDEATHSIG fires when the <em>thread</em> that forked the child exits, not
 * the process: spawning from a virtual thread's carrier or a pool thread that is later retired
 * would kill a healthy VM. Hence exactly one long-lived spawning thread.
 */
final class Spawner {
    private static final ExecutorService THREAD = Executors.newSingleThreadExecutor(
            r -> Thread.ofPlatform().name("vmgate-qemu-spawner").daemon(true).unstarted(r));

    private Spawner() {}

    static Process start(ProcessBuilder pb) throws IOException {
        // submit(), not execute(): an exception is captured in the future and the thread lives on.
        Future<Process> f = THREAD.submit(pb::start);
        boolean interrupted = false;
        try {
            while (true) {
                try {
                    return f.get();
                } catch (InterruptedException e) {
                    // Keep waiting: giving up here could leak a process nobody knows about.
                    interrupted = true;
                }
            }
        } catch (ExecutionException e) {
            if (e.getCause() instanceof IOException io) {
                throw io;
            }
            throw new IOException("cannot start " + pb.command().getFirst(), e.getCause());
        } finally {
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
    }
}
