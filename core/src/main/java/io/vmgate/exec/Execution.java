package io.vmgate.exec;

import java.io.IOException;
import java.io.InputStream;
import java.io.InterruptedIOException;
import java.io.OutputStream;
import java.time.Duration;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * A process running in a guest. Its streams are flow-controlled end to end: a slow reader of
 * {@link #stdout()} stops the guest from reading the process's pipe, and writes to {@link #stdin()}
 * block until the guest has taken them. Read stdout and stderr concurrently (or let {@link Pump}
 * do it), as with any process. A process with a terminal has all its output on stdout.
 */
public interface Execution {

    /** The process's stdin; {@code close()} is EOF (ignored with a terminal: the user types ^D). */
    OutputStream stdin();

    InputStream stdout();

    InputStream stderr();

    /** Sets the terminal's size (rows x columns); ignored without a terminal or after the exit. */
    void resize(int rows, int cols) throws IOException;

    /** Sends a signal by name without {@code SIG} ({@code TERM}, {@code INT}, ...); ignored after the exit. */
    void signal(String name) throws IOException;

    /** Kills the process and everything it started, and discards its output; {@link #exit()} still completes. */
    void kill();

    /**
     * Completes once the process has exited and all of its output has been received. Completes
     * exceptionally with a {@link GuestGoneException} (saying why) if the guest dies first.
     */
    CompletableFuture<ExitStatus> exit();

    /** Waits for the exit; a non-zero status is a result, not an error. */
    default ExitStatus waitFor() throws IOException, InterruptedException {
        try {
            return exit().get();
        } catch (ExecutionException e) {
            throw asIOException(e.getCause());
        } catch (CancellationException e) {
            throw new InterruptedIOException("the process was abandoned");
        }
    }

    /** Waits at most {@code timeout} for the exit. */
    default ExitStatus waitFor(Duration timeout) throws IOException, InterruptedException, TimeoutException {
        try {
            return exit().get(timeout.toNanos(), TimeUnit.NANOSECONDS);
        } catch (ExecutionException e) {
            throw asIOException(e.getCause());
        } catch (TimeoutException e) {
            throw new TimeoutException("the process did not exit within " + timeout.toMillis() + " ms");
        }
    }

    private static IOException asIOException(Throwable t) {
        return t instanceof IOException io ? io : new IOException(String.valueOf(t.getMessage()), t);
    }
}
