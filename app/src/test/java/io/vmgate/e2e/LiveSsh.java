package io.vmgate.e2e;

import io.vmgate.ssh.SshClientHelper;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

/**
 * A real {@code ssh} client running in the background: its stdout lines and stderr are
 * collected as they come, its stdin stays open for {@link #writeLine}. For tests that kill the
 * client, the server or the VM under a live session. {@link #close()} SIGKILLs it if alive.
 */
final class LiveSsh implements AutoCloseable {
    private final Process process;
    private final String what;
    private final List<String> lines = new ArrayList<>();
    private final ByteArrayOutputStream err = new ByteArrayOutputStream();
    private final CompletableFuture<Void> outDone = new CompletableFuture<>();
    private final CompletableFuture<Void> errDone = new CompletableFuture<>();

    private LiveSsh(Process process, String what) {
        this.process = process;
        this.what = what;
        Thread.ofVirtual().start(() -> {
            try (var r = new java.io.BufferedReader(new java.io.InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8))) {
                String l;
                while ((l = r.readLine()) != null) {
                    synchronized (lines) {
                        lines.add(l);
                    }
                }
            } catch (IOException e) {
                // killed
            } finally {
                outDone.complete(null);
            }
        });
        Thread.ofVirtual().start(() -> {
            try (InputStream in = process.getErrorStream()) {
                byte[] b = new byte[4096];
                int n;
                while ((n = in.read(b)) >= 0) {
                    synchronized (err) {
                        err.write(b, 0, n);
                    }
                }
            } catch (IOException e) {
                // killed
            } finally {
                errDone.complete(null);
            }
        });
    }

    /** Starts {@code ssh [flags] dest command} with the helper's options. */
    static LiveSsh start(SshClientHelper ssh, List<String> flags, String command) throws IOException {
        return new LiveSsh(ssh.startSsh(flags, command), command);
    }

    /** Starts {@code ssh [flags] dest} with no command: a shell request, reading commands from {@link #writeLine}. */
    static LiveSsh startShell(SshClientHelper ssh, List<String> flags) throws IOException {
        return new LiveSsh(ssh.startSsh(flags), "(shell)");
    }

    static LiveSsh start(SshClientHelper ssh, String command) throws IOException {
        return start(ssh, List.of(), command);
    }

    Process process() {
        return process;
    }

    List<String> lines() {
        synchronized (lines) {
            return List.copyOf(lines);
        }
    }

    String stderr() {
        synchronized (err) {
            return err.toString(StandardCharsets.UTF_8);
        }
    }

    /** Waits for a stdout line equal to {@code line}; fails with what the client said so far. */
    void awaitLine(String line, Duration timeout) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!lines().contains(line)) {
            if (!process.isAlive() && outDone.isDone() && !lines().contains(line)) {
                throw new AssertionError("ssh '" + what + "' exited (" + process.exitValue() + ") before printing '" + line
                        + "'; " + this);
            }
            if (System.nanoTime() > deadline) {
                throw new AssertionError("waited " + timeout.toSeconds() + " s for '" + line + "' from ssh '" + what + "'; " + this);
            }
            Thread.sleep(50);
        }
    }

    void writeLine(String s) throws IOException {
        OutputStream o = process.getOutputStream();
        o.write((s + "\n").getBytes(StandardCharsets.UTF_8));
        o.flush();
    }

    void closeStdin() throws IOException {
        process.getOutputStream().close();
    }

    /** The exit code once ssh has ended and its output is read, or fails if it did not end in time. */
    int awaitExit(Duration timeout) throws InterruptedException {
        if (!process.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
            throw new AssertionError("ssh '" + what + "' still running after " + timeout.toSeconds() + " s; " + this);
        }
        try {
            CompletableFuture.allOf(outDone, errDone).get(10, TimeUnit.SECONDS);
        } catch (Exception e) {
            // report what we have
        }
        return process.exitValue();
    }

    boolean isAlive() {
        return process.isAlive();
    }

    /** SIGKILL, as {@code kill -9} of the client: the kernel closes its TCP connection. */
    void kill9() throws InterruptedException {
        process.destroyForcibly();
        process.waitFor(10, TimeUnit.SECONDS);
    }

    @Override
    public void close() throws InterruptedException {
        if (process.isAlive()) {
            kill9();
        }
    }

    @Override
    public String toString() {
        return "stdout: " + lines() + ", stderr: '" + stderr().strip() + "'";
    }
}
