package io.vmgate.e2e;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;

/** A private tmux server driving an interactive program in a real terminal, for PTY tests. */
final class Tmux implements AutoCloseable {
    private final String socket;

    Tmux(Path dir, String shellCommand, int cols, int rows) throws Exception {
        this.socket = dir.resolve("tmux.sock").toString();
        tmux("new-session", "-d", "-s", "t", "-x", Integer.toString(cols), "-y", Integer.toString(rows), shellCommand);
        tmux("set-option", "-t", "t", "remain-on-exit", "on");
    }

    String tmux(String... args) throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>(List.of("tmux", "-S", socket));
        cmd.addAll(List.of(args));
        Process p = new ProcessBuilder(cmd).directory(Host.HOME.toFile()).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        if (!p.waitFor(10, TimeUnit.SECONDS) || p.exitValue() != 0) {
            throw new IOException("tmux " + String.join(" ", args) + " failed: " + out);
        }
        return out;
    }

    /** Types text; "Enter", "C-c" and other tmux key names are sent as keys. */
    void keys(String... keys) throws Exception {
        List<String> args = new ArrayList<>(List.of("send-keys", "-t", "t"));
        args.addAll(List.of(keys));
        tmux(args.toArray(String[]::new));
    }

    void type(String line) throws Exception {
        tmux("send-keys", "-t", "t", "-l", line);
        keys("Enter");
    }

    String screen() throws Exception {
        return tmux("capture-pane", "-p", "-t", "t");
    }

    boolean paneDead() throws Exception {
        return tmux("display-message", "-p", "-t", "t", "#{pane_dead}").strip().equals("1");
    }

    void resize(int cols, int rows) throws Exception {
        tmux("resize-window", "-t", "t", "-x", Integer.toString(cols), "-y", Integer.toString(rows));
    }

    /** Waits until the screen satisfies the condition; returns the screen, or fails with it. */
    String await(Predicate<String> condition, int seconds, String what) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        String s = screen();
        while (!condition.test(s)) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("waited " + seconds + " s for " + what + "; screen:\n" + s);
            }
            Thread.sleep(100);
            s = screen();
        }
        return s;
    }

    @Override
    public void close() throws Exception {
        try {
            tmux("kill-server");
        } catch (IOException ignored) {
            // already gone
        }
    }
}
