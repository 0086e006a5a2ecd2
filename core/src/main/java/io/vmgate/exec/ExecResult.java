package io.vmgate.exec;

import java.nio.charset.StandardCharsets;

/**
 * A finished command: how it exited and everything it wrote. A non-zero exit is a result, not an error.
 *
 * @param status how the process ended
 * @param stdout everything it wrote to stdout
 * @param stderr everything it wrote to stderr (empty with a terminal)
 */
public record ExecResult(ExitStatus status, byte[] stdout, byte[] stderr) {

    /** The shell's exit code: the process's code, or 128 + the signal that killed it. */
    public int exitCode() {
        return status.shellCode();
    }

    public boolean ok() {
        return exitCode() == 0;
    }

    /** Stdout as UTF-8 text. */
    public String out() {
        return new String(stdout, StandardCharsets.UTF_8);
    }

    /** Stderr as UTF-8 text. */
    public String err() {
        return new String(stderr, StandardCharsets.UTF_8);
    }

    @Override
    public String toString() {
        return status + ", stdout " + stdout.length + " bytes, stderr " + stderr.length + " bytes";
    }
}
