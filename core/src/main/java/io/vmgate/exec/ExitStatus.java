package io.vmgate.exec;

/**
 * How a guest process ended: an exit code, or a signal (code -1) with its name without {@code SIG}
 * ({@code KILL}, {@code RTMIN+2}) and whether it dumped core.
 *
 * @param code       the exit code, or -1 when a signal ended the process
 * @param signal     the signal's number, or 0
 * @param signalName the signal's name without {@code SIG}, or empty
 * @param coreDumped whether the process dumped core
 */
public record ExitStatus(int code, int signal, String signalName, boolean coreDumped) {

    public ExitStatus {
        signalName = signalName == null ? "" : signalName;
    }

    public static ExitStatus code(int code) {
        return new ExitStatus(code, 0, "", false);
    }

    public boolean signaled() {
        return signal != 0;
    }

    /** The shell's convention: the code, or 128 + the signal number. */
    public int shellCode() {
        return signaled() ? 128 + signal : code;
    }

    @Override
    public String toString() {
        return signaled() ? "signal " + signalName + (coreDumped ? " (core dumped)" : "") : "exit " + code;
    }
}
