package io.vmgate.vm;

/** A VM could not be started; the message says what to do about it. */
public class VmException extends Exception {
    private final boolean qemuRan;
    private final boolean timedOut;

    public VmException(String message) {
        this(message, null, false);
    }

    public VmException(String message, Throwable cause) {
        this(message, cause, false);
    }

    public VmException(String message, Throwable cause, boolean qemuRan) {
        this(message, cause, qemuRan, false);
    }

    public VmException(String message, Throwable cause, boolean qemuRan, boolean timedOut) {
        super(message, cause);
        this.qemuRan = qemuRan;
        this.timedOut = timedOut;
    }

    /**
     * True when QEMU was running when the start failed, so the guest, its image or its snapshot
     * may be at fault; false for host-side problems before that (runtime directory, sockets,
     * the QEMU binary), which another attempt of any kind would meet again.
     */
    public boolean qemuRan() {
        return qemuRan;
    }

    /**
     * True when the start gave up at its boot timeout with QEMU still running: a hung guest, or
     * only a host too busy to finish in time (nothing QEMU said proves the image or snapshot bad).
     */
    public boolean timedOut() {
        return timedOut;
    }
}
