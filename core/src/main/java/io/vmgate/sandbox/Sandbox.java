package io.vmgate.sandbox;

import io.vmgate.exec.Command;
import io.vmgate.exec.ExecResult;
import io.vmgate.exec.Execution;
import io.vmgate.exec.Guest;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeoutException;

/**
 * A running, disposable Linux microVM. Everything written in it is gone when it is closed, and
 * closing leaves nothing behind on the host: no QEMU, no socket, no file (also when the JVM is
 * killed: QEMU dies with it, and the next start reaps what is left). Thread-safe.
 *
 * <pre>{@code
 * try (Sandbox s = Sandbox.start(SandboxOptions.defaults())) {
 *     ExecResult r = s.run(Command.shell("echo $((6 * 7))"));     // r.out() is "42\n"
 *     Execution cat = s.exec(Command.of("cat"));                  // streams, resize, signals
 * }
 * }</pre>
 */
public interface Sandbox extends Guest {

    /** Starts a sandbox of its own (no pool); closing it also releases what it needed to start. */
    static Sandbox start(SandboxOptions options) throws SandboxException {
        Sandboxes engine = Sandboxes.create(options);
        try {
            return engine.startOwned();
        } catch (SandboxException | RuntimeException e) {
            engine.close();
            throw e;
        }
    }

    /** Starts a command and returns at once; see {@link Execution} for its streams and exit. */
    @Override
    Execution exec(Command command) throws IOException;

    /** Runs a command to its end with stdin closed, collecting its output. A non-zero exit is a result. */
    default ExecResult run(Command command) throws IOException, InterruptedException {
        try {
            return run(command, null);
        } catch (TimeoutException e) {
            throw new AssertionError("no time limit was set", e);
        }
    }

    /**
     * {@link #run(Command)} with a time limit: when it passes, the process is killed and this
     * throws {@link TimeoutException}. A null limit waits for ever.
     */
    ExecResult run(Command command, Duration limit) throws IOException, InterruptedException, TimeoutException;

    /** A line for the guest user's shell, run to its end: {@code run("ls -l /")}. */
    default ExecResult run(String shellLine) throws IOException, InterruptedException {
        return run(Command.shell(shellLine));
    }

    /** Copies a host file into the guest (created or replaced; parent directories must exist). */
    void upload(Path local, String guestPath) throws IOException, InterruptedException;

    /** Writes everything {@code data} yields to a guest file (created or replaced). */
    void upload(InputStream data, String guestPath) throws IOException, InterruptedException;

    /** Copies a guest file to the host (created or replaced; nothing is left on failure). */
    void download(String guestPath, Path local) throws IOException, InterruptedException;

    /** Writes a guest file's bytes to {@code out} (not closed). */
    void download(String guestPath, OutputStream out) throws IOException, InterruptedException;

    /**
     * Opens an SSH endpoint for this sandbox on the host's loopback: a one-off key pair, a host
     * key pinned in a known-hosts file, and a hardened {@code ssh} command line. Every connection
     * lands in this sandbox; closing the endpoint (or the sandbox) stops it and deletes the keys.
     */
    SshAccess enableSsh() throws IOException;

    /** When each start-up phase completed ({@code qemu_started}, {@code agent_hello}, ...), for timing reports. */
    List<Phase> startup();

    /** A start-up phase and when it completed ({@link System#nanoTime()}). */
    record Phase(String name, long nanoTime) {}
}
