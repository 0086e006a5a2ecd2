package io.vmgate.cli;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

/** The local terminal, driven through stty(1): raw mode for an interactive guest shell, and its size. */
final class Terminal {
    private Terminal() {}

    static boolean isTerminal(int fd) {
        try {
            String target = Files.readSymbolicLink(Path.of("/proc/self/fd/" + fd)).toString();
            return target.startsWith("/dev/pts/") || target.startsWith("/dev/tty") || target.equals("/dev/console");
        } catch (IOException | UnsupportedOperationException e) {
            return false;
        }
    }

    /** rows, cols; or null if unknown. */
    static int[] size() {
        String out = stty("size");
        if (out == null) {
            return null;
        }
        String[] parts = out.trim().split("\\s+");
        try {
            return parts.length == 2 ? new int[] {Integer.parseInt(parts[0]), Integer.parseInt(parts[1])} : null;
        } catch (NumberFormatException e) {
            return null;
        }
    }

    /** Puts the terminal in raw mode; returns the settings to restore, or null. */
    static String enterRaw() {
        String saved = stty("-g");
        if (saved == null) {
            return null;
        }
        stty("raw", "-echo");
        return saved.trim();
    }

    static void restore(String saved) {
        if (saved != null) {
            stty(saved);
        }
    }

    private static String stty(String... args) {
        try {
            var cmd = new java.util.ArrayList<>(List.of("stty"));
            cmd.addAll(List.of(args));
            Process p = new ProcessBuilder(cmd)
                    .redirectInput(new java.io.File("/dev/tty"))
                    .redirectError(ProcessBuilder.Redirect.DISCARD)
                    .start();
            String out = new String(p.getInputStream().readAllBytes());
            return p.waitFor(5, TimeUnit.SECONDS) && p.exitValue() == 0 ? out : null;
        } catch (IOException e) {
            return null;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return null;
        }
    }
}
