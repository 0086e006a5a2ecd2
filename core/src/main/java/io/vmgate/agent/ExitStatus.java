package io.vmgate.agent;

/** How a guest process ended: an exit code, or a signal (code -1) with its name and core flag. */
public record ExitStatus(int code, int signal, String signalName, boolean coreDumped) {

    public static ExitStatus code(int code) {
        return new ExitStatus(code, 0, "", false);
    }

    public boolean signaled() {
        return signal != 0;
    }

    /** The shell convention: the code, or 128 + the signal number. */
    public int shellCode() {
        return signaled() ? 128 + signal : code;
    }

    @Override
    public String toString() {
        return signaled() ? "signal " + signalName + (coreDumped ? " (core dumped)" : "") : "exit " + code;
    }
}
