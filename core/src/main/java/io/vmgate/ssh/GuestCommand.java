package io.vmgate.ssh;

import io.vmgate.exec.Command;
import io.vmgate.exec.ExitStatus;
import io.vmgate.exec.Execution;
import io.vmgate.exec.Guest;
import io.vmgate.exec.GuestGoneException;
import io.vmgate.exec.Pump;
import io.vmgate.exec.Waiting;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.ReentrantLock;
import org.apache.sshd.server.Environment;
import org.apache.sshd.server.ExitCallback;
import org.apache.sshd.server.channel.ChannelSession;
import org.slf4j.spi.LoggingEventBuilder;

/**
 * A shell, exec or subsystem request running as a process in the connection's guest. All the work
 * happens on virtual threads: one that gets the guest (opening it if needed), starts the process
 * and waits for its end, and one {@link Pump} per stream. Streams are blocking end to end, so a
 * slow SSH reader stops the guest process rather than filling host memory.
 *
 * <p>With a PTY, a guest that is not ready within {@link #PROGRESS_AFTER_MS} gets a progress line on
 * the user's terminal, erased before the first byte from the guest. Without a PTY, stdout carries
 * the guest's bytes and nothing else.
 */
@SuppressWarnings("try") // MDC scopes: try-with-resources for the side effect
final class GuestCommand implements org.apache.sshd.server.command.Command {
    enum Kind { SHELL, EXEC, SUBSYSTEM }

    static final int FAILED = 255;
    private static final Duration DRAIN_AFTER_FAILURE = Duration.ofSeconds(2);
    static final long PROGRESS_AFTER_MS = 1_000;
    static final String PROGRESS = "\rvmgate: starting your VM...";
    static final String ERASE_LINE = "\r\033[K";

    private final SessionChannel channel;
    private final Kind kind;
    private final Command command;
    private final String request;
    private final ScheduledExecutorService scheduler;
    private InputStream in;
    private OutputStream out;
    private OutputStream err;
    private ExitCallback exitCallback;
    private volatile boolean destroyed;
    private volatile Execution execution;
    private volatile ChannelRecording recording;
    /** Serialises whole writes to stderr: the guest's, our notices and the final message. */
    private final ReentrantLock errLock = new ReentrantLock();
    /** Guards the progress line: NONE, then SHOWN (maybe), then DONE once the guest may write. */
    private final ReentrantLock progressLock = new ReentrantLock();
    private int progressState; // 0 none, 1 shown, 2 done

    /**
     * @param command what to run; the channel's terminal and environment are added at start
     * @param request the exec line or subsystem name, for logs
     */
    GuestCommand(SessionChannel channel, Kind kind, Command command, String request, ScheduledExecutorService scheduler) {
        this.channel = channel;
        this.kind = kind;
        this.command = command;
        this.request = request;
        this.scheduler = scheduler;
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
        // Opening a guest takes seconds: never on MINA's I/O threads.
        Thread.ofVirtual().name(threadName("main")).start(this::run);
    }

    @Override
    public void destroy(ChannelSession ignored) {
        destroyed = true;
        Execution p = execution;
        if (p != null && !p.exit().isDone()) {
            // The client went away (channel or connection closed) before the process ended.
            Thread.ofVirtual().name(threadName("kill")).start(p::kill);
        }
    }

    /** The guest process, once started. */
    Execution execution() {
        return execution;
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

    /** One line for the user on stderr, ended as the terminal wants it (CR LF with a PTY). */
    private void writeLine(String message) {
        writeErr(message + (channel.hasPty() ? "\r\n" : "\n"));
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
        // Before the command is registered: from then on, notices may write to err from other threads.
        try (var s = conn.scope()) {
            startRecording();
        }
        CompletableFuture<Void> done = conn.commandStarted(this);
        try (var s = conn.scope()) {
            long t0 = System.nanoTime();
            boolean pty = channel.hasPty();
            LoggingEventBuilder started = conn.tagged(Events.log.atInfo()).setMessage("command_started")
                    .addKeyValue("channel", channel.number).addKeyValue("kind", kind.name().toLowerCase()).addKeyValue("pty", pty);
            if (kind == Kind.EXEC) {
                started.addKeyValue("bytes", request.length());
            } else if (kind == Kind.SUBSYSTEM) {
                started.addKeyValue("subsystem", request);
            }
            started.log();
            conn.tagged(Events.log.atDebug()).setMessage("command_line").addKeyValue("channel", channel.number)
                    .addKeyValue("command", request).log();
            Guest guest;
            ScheduledFuture<?> progress = pty ? scheduleProgress(t0) : null;
            try {
                guest = conn.acquireGuest(channel.freshMachine());
            } catch (Refusal r) {
                clearProgress(progress);
                fail(r.getMessage(), t0);
                return;
            }
            clearProgress(progress);
            if (destroyed) {
                return;
            }
            String told = conn.takeNotice();
            if (told != null) { // before anything of the command's, so it reads as the session's first line
                writeLine(told);
            }
            Execution p;
            try {
                p = guest.exec(channel.complete(command));
            } catch (IOException e) {
                // The guest refuses what it cannot carry (e.g. a command over the frame limit): say why.
                fail(conn.terminated().isDone() || e instanceof GuestGoneException ? conn.explain(e)
                        : "vmgate: cannot start the command: " + e.getMessage(), t0);
                return;
            } catch (RuntimeException e) {
                fail("vmgate: cannot start the command: " + e.getMessage(), t0);
                return;
            }
            execution = p;
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
            conn.tagged(Events.log.atError()).setMessage("command_crashed").addKeyValue("channel", channel.number).setCause(e).log();
            try {
                fail("vmgate: internal error: " + e, System.nanoTime());
            } catch (RuntimeException ignored) {
                // nothing more we can do; closing the channel below
            }
        } finally {
            done.complete(null);
            ChannelRecording rec = recording;
            if (rec != null) {
                channel.recording = null;
                rec.close();
            }
        }
    }

    /** With recording on: everything the user sees from now on (progress, output, messages) is recorded. */
    private void startRecording() {
        recording = ChannelRecording.start(channel, switch (kind) {
            case SHELL -> null;
            case EXEC -> request;
            case SUBSYSTEM -> request;
        });
        if (recording != null) {
            out = recording.output(out);
            err = recording.errorOutput(err);
            channel.recording = recording;
        }
    }

    // --- the progress line while a PTY user waits for the guest

    private ScheduledFuture<?> scheduleProgress(long t0) {
        try {
            return scheduler.schedule(() -> Thread.ofVirtual().name(threadName("progress")).start(() -> showProgress(t0)),
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
            channel.conn.tagged(Events.log.atInfo()).setMessage("vm_wait_progress").addKeyValue("channel", channel.number)
                    .addKeyValue("after_ms", Events.msSince(t0)).log();
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

    private void bridge(Execution p, boolean pty, long t0) {
        Connection conn = channel.conn;
        ChannelRecording rec = recording;
        Pump.copy(in, rec != null ? rec.input(p.stdin()) : p.stdin()).name(threadName("stdin")).closeTargetAtEnd()
                .onData(conn::bytesIn).start();
        CompletableFuture<Long> outDone = Pump.copy(p.stdout(), out).name(threadName("stdout"))
                .onData(conn::bytesOut).onTargetFailure(p::kill).start();
        CompletableFuture<Long> errDone = pty ? CompletableFuture.completedFuture(0L)
                : Pump.copy(p.stderr(), err).name(threadName("stderr")).lock(errLock)
                        .onData(conn::bytesOut).onTargetFailure(p::kill).start();
        CompletableFuture<?> delivered = CompletableFuture.allOf(outDone.handle((r, e) -> null), errDone.handle((r, e) -> null));

        // The process's end (or the guest's loss: exit() then fails), or the session's end, whichever comes first.
        try {
            CompletableFuture.anyOf(p.exit(), conn.terminated()).get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (ExecutionException e) {
            // exit() failed: handled below
        }
        ExitStatus status = p.exit().isDone() && !p.exit().isCompletedExceptionally() ? p.exit().join() : null;
        if (status != null) {
            // All output was sent by the guest before the exit; let it reach the client.
            delivered.join();
            Ending ending = conn.ending();
            if (ending != null) {
                // It exited after a timeout's SIGTERM (or during the grace period): the timeout is the news.
                fail(ending.message(), t0);
                return;
            }
            finish(status, t0);
            return;
        }
        String message;
        try {
            p.exit().getNow(null);
            Ending known = conn.terminated().getNow(null);
            message = known != null ? known.message() : "vmgate: the session ended";
        } catch (RuntimeException e) {
            message = conn.explain(e.getCause() != null ? e.getCause() : e);
        }
        if (!destroyed) {
            p.kill();
        }
        Waiting.await(delivered, DRAIN_AFTER_FAILURE);
        fail(message, t0);
    }

    private void finish(ExitStatus status, long t0) {
        Connection conn = channel.conn;
        if (status.signaled()) {
            String name = status.signalName().isEmpty() ? "SIG@openssh.com" : status.signalName();
            conn.tagged(Events.log.atInfo()).setMessage("exit_status").addKeyValue("channel", channel.number)
                    .addKeyValue("signal", name).addKeyValue("core", status.coreDumped()).addKeyValue("ms", Events.msSince(t0)).log();
            recordExit("exit-signal " + name + (status.coreDumped() ? " (core dumped)" : ""));
            try {
                channel.exitWithSignal(name, status.coreDumped());
            } catch (IOException e) {
                channel.close(true);
            }
        } else {
            conn.tagged(Events.log.atInfo()).setMessage("exit_status").addKeyValue("channel", channel.number)
                    .addKeyValue("code", status.code()).addKeyValue("ms", Events.msSince(t0)).log();
            recordExit("exit-status " + status.code());
            exitCallback.onExit(status.code());
        }
    }

    private void recordExit(String marker) {
        ChannelRecording rec = recording;
        if (rec != null) {
            rec.exit(marker);
        }
    }

    /** Tells the user why (on stderr) and ends with status 255. */
    private void fail(String message, long t0) {
        Connection conn = channel.conn;
        if (destroyed || conn.isClosed()) {
            // Nobody is left to tell: the channel or the whole connection is gone.
            conn.tagged(Events.log.atInfo()).setMessage("command_aborted").addKeyValue("channel", channel.number)
                    .addKeyValue("ms", Events.msSince(t0))
                    .addKeyValue("reason", destroyed ? "the client closed the channel" : "the connection closed").log();
            exitCallback.onExit(FAILED, message);
            return;
        }
        conn.tagged(Events.log.atInfo()).setMessage("exit_status").addKeyValue("channel", channel.number)
                .addKeyValue("code", FAILED).addKeyValue("ms", Events.msSince(t0)).addKeyValue("reason", message).log();
        writeLine(message);
        recordExit("exit-status " + FAILED);
        exitCallback.onExit(FAILED, message);
    }
}
