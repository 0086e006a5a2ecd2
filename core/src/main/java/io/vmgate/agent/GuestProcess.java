package io.vmgate.agent;

import io.vmgate.exec.ExitStatus;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.util.concurrent.CompletableFuture;

/**
 * A process running in the guest. Its streams are flow-controlled end to end: reading
 * slowly from {@link #stdout()} stops the guest from reading the process's pipe.
 * For a PTY process all output arrives on stdout and stderr is empty.
 */
public final class GuestProcess {
    private final int id;
    private final AgentClient agent;
    private final boolean pty;
    final InboundStream stdout;
    final InboundStream stderr;
    final OutboundStream stdin;
    final CompletableFuture<Integer> started = new CompletableFuture<>();
    final CompletableFuture<ExitStatus> exit = new CompletableFuture<>();

    GuestProcess(int id, AgentClient agent, boolean pty) {
        this.id = id;
        this.agent = agent;
        this.pty = pty;
        this.stdout = new InboundStream(n -> agent.sendQuietly(new Message.Window(id, Protocol.FD_STDOUT, n)));
        this.stderr = new InboundStream(n -> agent.sendQuietly(new Message.Window(id, Protocol.FD_STDERR, n)));
        this.stdin = new OutboundStream(new OutboundStream.Sink() {
            public void data(byte[] b, int off, int len) throws IOException {
                agent.sendData(id, Protocol.FD_STDIN, b, off, len);
            }

            public void eof() throws IOException {
                agent.send(new Message.Eof(id, Protocol.FD_STDIN));
            }
        });
        if (pty) {
            stderr.finish();
        }
    }

    public int id() {
        return id;
    }

    public boolean hasPty() {
        return pty;
    }

    /** Writes block until the guest grants credit; close() sends EOF. */
    public OutputStream stdin() {
        return stdin;
    }

    public InputStream stdout() {
        return stdout;
    }

    public InputStream stderr() {
        return stderr;
    }

    /** The guest pid, once the guest has confirmed the start. */
    public CompletableFuture<Integer> started() {
        return started;
    }

    /**
     * Completes when the guest reports the exit, which it does only after sending all
     * output; fails if the agent connection is lost first.
     */
    public CompletableFuture<ExitStatus> exit() {
        return exit;
    }

    public void resize(int rows, int cols) throws IOException {
        if (pty && !exit.isDone()) {
            agent.send(new Message.Resize(id, clamp(rows), clamp(cols)));
        }
    }

    private static int clamp(int v) {
        return Math.max(0, Math.min(v, 0xffff));
    }

    /** Sends a signal by name ({@code TERM}, {@code INT}, ...); ignored after exit. */
    public void signal(String name) throws IOException {
        if (!exit.isDone()) {
            agent.send(new Message.Signal(id, name));
        }
    }

    /** Kills the process group and stops caring about output; the exit still completes. */
    public void kill() {
        if (!exit.isDone()) {
            agent.sendQuietly(new Message.Close(id));
        }
        stdout.finish();
        stderr.finish();
    }

    void fail(IOException cause) {
        started.completeExceptionally(cause);
        stdout.fail(cause);
        stderr.fail(cause);
        stdin.fail(cause);
        exit.completeExceptionally(cause);
    }
}
