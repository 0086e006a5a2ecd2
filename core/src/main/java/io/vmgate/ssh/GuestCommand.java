package io.vmgate.ssh;

import io.vmgate.agent.AgentGoneException;
import io.vmgate.agent.ExitStatus;
import io.vmgate.agent.GuestProcess;
import io.vmgate.vm.Vm;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.locks.ReentrantLock;
import org.apache.sshd.server.Environment;
import org.apache.sshd.server.ExitCallback;
import org.apache.sshd.server.channel.ChannelSession;
import org.apache.sshd.server.command.Command;

/**
 * A shell, exec or subsystem request running as a process in the connection's VM. All the
 * work happens on virtual threads: one that gets the VM (launching it if needed), starts the
 * process and waits for its end, and one per stream. Streams are blocking end to end, so a
 * slow SSH reader stops the guest process rather than filling host memory.
 *
 * <p>With a PTY, a VM that is not ready within {@link #PROGRESS_AFTER_MS} gets a progress line on
 * the user's terminal, erased before the first byte from the guest. Without a PTY, stdout carries
 * the guest's bytes and nothing else.
 */
@SuppressWarnings("try") // MDC scopes: try-with-resources for the side effect
final class GuestCommand implements Command {
    enum Kind { SHELL, EXEC, SUBSYSTEM }

    static final int FAILED = 255;
    private static final int CHUNK = 32 * 1024;
    private static final long DRAIN_AFTER_FAILURE_MS = 2_000;
    static final long PROGRESS_AFTER_MS = 1_000;
    static final String PROGRESS = "\rvmgate: starting your VM...";
    static final String ERASE_LINE = "\r\033[K";

    private final VmChannelSession channel;
    private final Kind kind;
    private final List<String> argv;
    private final String request;
    private InputStream in;
    private OutputStream out;
    private OutputStream err;
    private ExitCallback exitCallback;
    private volatile boolean destroyed;
    private volatile GuestProcess process;
    /** Serialises whole writes to stderr: the guest's, our notices and the final message. */
    private final ReentrantLock errLock = new ReentrantLock();
    /** Guards the progress line: NONE, then SHOWN (maybe), then DONE once the guest may write. */
    private final ReentrantLock progressLock = new ReentrantLock();
    private int progressState; // 0 none, 1 shown, 2 done

    GuestCommand(VmChannelSession channel, Kind kind, List<String> argv, String request) {
        this.channel = channel;
        this.kind = kind;
        this.argv = argv;
        this.request = request;
    }

    @Override
    public void setInputStream(InputStream in) {
        this.in = in;
    }

    @Override
    public void setOutputStream(OutputStream out) {
        this.out = out;
    }

    @Override
    public void setErrorStream(OutputStream err) {
        this.err = err;
    }

    @Override
    public void setExitCallback(ExitCallback callback) {
        this.exitCallback = callback;
    }

    @Override
    public void start(ChannelSession ignored, Environment env) {
        // Launching a VM takes seconds: never on MINA's I/O threads.
        Thread.ofVirtual().name(threadName("main")).start(this::run);
    }

    @Override
    public void destroy(ChannelSession ignored) {
        destroyed = true;
        GuestProcess p = process;
        if (p != null && !p.exit().isDone()) {
            // The client went away (channel or connection closed) before the process ended.
            Thread.ofVirtual().name(threadName("kill")).start(p::kill);
        }
    }

    /** The guest process, once started. */
    GuestProcess process() {
        return process;
    }

    /** Writes a line for the user on this command's stderr (the terminal with a PTY), without blocking the caller. */
    void notice(String message) {
        Thread.ofVirtual().name(threadName("notice")).start(() -> {
            if (destroyed) {
                return;
            }
            String text = channel.hasPty() ? "\r\n" + message + "\r\n" : message + "\n";
            writeErr(text);
        });
    }

    private void writeErr(String text) {
        errLock.lock();
        try {
            err.write(text.getBytes(StandardCharsets.UTF_8));
            err.flush();
        } catch (IOException | RuntimeException e) {
            // the client is gone
        } finally {
            errLock.unlock();
        }
    }

    private String threadName(String what) {
        return "vmgate-" + channel.conn.id + "-ch" + channel.number + "-" + what;
    }

    private void run() {
        Connection conn = channel.conn;
        CompletableFuture<Void> done = conn.commandStarted(this);
        try (var s = conn.scope()) {
            long t0 = System.nanoTime();
            boolean pty = channel.hasPty();
            Events.log.info("command_started {} channel={} kind={} pty={}{}", conn.tag(), channel.number,
                    kind.name().toLowerCase(), pty, kind == Kind.EXEC ? " bytes=" + request.length()
                            : kind == Kind.SUBSYSTEM ? " subsystem=" + Events.v(request) : "");
            Events.log.debug("command_line {} channel={} command={}", conn.tag(), channel.number, Events.v(request));
            Vm vm;
            ScheduledFuture<?> progress = pty ? scheduleProgress(t0) : null;
            try {
                vm = conn.acquireVm();
            } catch (Refusal r) {
                clearProgress(progress);
                fail(r.getMessage(), t0);
                return;
            }
            clearProgress(progress);
            if (destroyed) {
                return;
            }
            GuestProcess p;
            try {
                p = vm.agent().start(channel.spec(argv));
            } catch (IOException e) {
                // The agent refuses what it cannot carry (e.g. a command over the frame limit): say why.
                fail(conn.terminated().isDone() || e instanceof AgentGoneException ? conn.explain(e)
                        : "vmgate: cannot start the command: " + e.getMessage(), t0);
                return;
            } catch (RuntimeException e) {
                fail("vmgate: cannot start the command: " + e.getMessage(), t0);
                return;
            }
            process = p;
            if (destroyed) {
                p.kill();
                return;
            }
            try {
                channel.attach(p);
            } catch (IOException e) {
                // a resize that could not be sent: the exit path reports what went wrong
            }
            bridge(p, pty, t0);
        } catch (RuntimeException | Error e) {
            Events.log.error("command_crashed {} channel={}", conn.tag(), channel.number, e);
            try {
                fail("vmgate: internal error: " + e, System.nanoTime());
            } catch (RuntimeException ignored) {
                // nothing more we can do; closing the channel below
            }
        } finally {
            done.complete(null);
        }
    }

    // --- the progress line while a PTY user waits for the VM

    private ScheduledFuture<?> scheduleProgress(long t0) {
        try {
            return channel.server.scheduler().schedule(
                    () -> Thread.ofVirtual().name(threadName("progress")).start(() -> showProgress(t0)),
                    PROGRESS_AFTER_MS, TimeUnit.MILLISECONDS);
        } catch (RejectedExecutionException e) {
            return null; // the server is stopping
        }
    }

    private void showProgress(long t0) {
        progressLock.lock();
        try (var s = channel.conn.scope()) {
            if (progressState != 0 || destroyed) {
                return;
            }
            progressState = 1;
            out.write(PROGRESS.getBytes(StandardCharsets.UTF_8));
            out.flush();
            Events.log.info("vm_wait_progress {} channel={} after_ms={}", channel.conn.tag(), channel.number, Events.msSince(t0));
        } catch (IOException | RuntimeException e) {
            // the client is gone
        } finally {
            progressLock.unlock();
        }
    }

    /** No progress line from now on; erases it if it was shown. */
    private void clearProgress(ScheduledFuture<?> scheduled) {
        if (scheduled == null) {
            return;
        }
        scheduled.cancel(false);
        progressLock.lock();
        try {
            if (progressState == 1) {
                out.write(ERASE_LINE.getBytes(StandardCharsets.UTF_8));
                out.flush();
            }
        } catch (IOException | RuntimeException e) {
            // the client is gone
        } finally {
            progressState = 2;
            progressLock.unlock();
        }
    }

    private void bridge(GuestProcess p, boolean pty, long t0) {
        Connection conn = channel.conn;
        Thread.ofVirtual().name(threadName("stdin")).start(() -> pumpStdin(p));
        CompletableFuture<Void> outDone = pump(p.stdout(), out, "stdout", p, null);
        CompletableFuture<Void> errDone = pty ? CompletableFuture.completedFuture(null) : pump(p.stderr(), err, "stderr", p, errLock);

        CompletableFuture<Object> first = CompletableFuture.anyOf(p.exit(), conn.terminated());
        try {
            first.get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (ExecutionException e) {
            // p.exit() failed: handled below
        }
        ExitStatus status = p.exit().isDone() && !p.exit().isCompletedExceptionally() ? p.exit().join() : null;
        if (status != null) {
            // All output was sent by the guest before EXIT; let it reach the client.
            CompletableFuture.allOf(outDone, errDone).join();
            String ending = conn.ending();
            if (ending != null) {
                // It exited after a timeout's SIGTERM (or during the grace period): the timeout is the news.
                fail(ending, t0);
                return;
            }
            finish(status, t0);
            return;
        }
        String message;
        try {
            p.exit().getNow(null);
            message = conn.terminated().getNow("vmgate: the session ended");
        } catch (RuntimeException e) {
            message = conn.explain(e.getCause() != null ? e.getCause() : e);
        }
        if (!destroyed) {
            p.kill();
        }
        awaitQuietly(CompletableFuture.allOf(outDone, errDone), DRAIN_AFTER_FAILURE_MS);
        fail(message, t0);
    }

    private void pumpStdin(GuestProcess p) {
        try (var s = channel.conn.scope()) {
            OutputStream to = p.stdin();
            try {
                byte[] buf = new byte[CHUNK];
                int n;
                while ((n = in.read(buf)) >= 0) {
                    if (n > 0) {
                        channel.conn.activity();
                        to.write(buf, 0, n);
                    }
                }
            } catch (IOException e) {
                return; // the process exited, the VM went away, or the channel closed
            }
            try {
                to.close(); // EOF: half-close towards the guest
            } catch (IOException e) {
                // the process is gone already
            }
        }
    }

    /** Copies a guest stream to the client; {@code lock}, if any, is held for each write and flush. */
    private CompletableFuture<Void> pump(InputStream from, OutputStream to, String what, GuestProcess p, ReentrantLock lock) {
        CompletableFuture<Void> done = new CompletableFuture<>();
        Thread.ofVirtual().name(threadName(what)).start(() -> {
            try (var s = channel.conn.scope()) {
                byte[] buf = new byte[CHUNK];
                int n;
                while ((n = from.read(buf)) >= 0) {
                    if (n == 0) {
                        continue;
                    }
                    channel.conn.activity();
                    if (lock != null) {
                        lock.lock();
                    }
                    try {
                        to.write(buf, 0, n);
                        to.flush();
                    } catch (IOException e) {
                        // The client is gone: stop the guest process rather than let it block forever.
                        p.kill();
                        return;
                    } finally {
                        if (lock != null) {
                            lock.unlock();
                        }
                    }
                }
            } catch (IOException e) {
                // the guest stream failed (VM gone): the exit path reports it
            } finally {
                done.complete(null);
            }
        });
        return done;
    }

    private void finish(ExitStatus status, long t0) {
        Connection conn = channel.conn;
        if (status.signaled()) {
            String name = status.signalName() == null || status.signalName().isEmpty() ? "SIG@openssh.com" : status.signalName();
            Events.log.info("exit_status {} channel={} signal={} core={} ms={}", conn.tag(), channel.number, Events.v(name),
                    status.coreDumped(), Events.msSince(t0));
            try {
                channel.exitWithSignal(name, status.coreDumped());
            } catch (IOException e) {
                channel.close(true);
            }
        } else {
            Events.log.info("exit_status {} channel={} code={} ms={}", conn.tag(), channel.number, status.code(), Events.msSince(t0));
            exitCallback.onExit(status.code());
        }
    }

    /** Tells the user why (on stderr) and ends with status 255. */
    private void fail(String message, long t0) {
        Connection conn = channel.conn;
        if (destroyed || conn.isClosed()) {
            // Nobody is left to tell: the channel or the whole connection is gone.
            Events.log.info("command_aborted {} channel={} ms={} reason={}", conn.tag(), channel.number,
                    Events.msSince(t0), Events.v(destroyed ? "the client closed the channel" : "the connection closed"));
            exitCallback.onExit(FAILED, message);
            return;
        }
        Events.log.info("exit_status {} channel={} code={} ms={} reason={}", conn.tag(), channel.number, FAILED,
                Events.msSince(t0), Events.v(message));
        writeErr(message + (channel.hasPty() ? "\r\n" : "\n"));
        exitCallback.onExit(FAILED, message);
    }

    private static void awaitQuietly(CompletableFuture<?> f, long ms) {
        try {
            f.get(ms, TimeUnit.MILLISECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (ExecutionException | TimeoutException e) {
            // give up waiting: the streams are being torn down
        }
    }
}
