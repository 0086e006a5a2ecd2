package io.vmgate.vm;

/** A VM could not be started; the message says what to do about it. */
public class VmException extends Exception {
    private final boolean qemuRan;

    public VmException(String message) {
        this(message, null, false);
    }

    public VmException(String message, Throwable cause) {
        this(message, cause, false);
    }

    public VmException(String message, Throwable cause, boolean qemuRan) {
        super(message, cause);
        this.qemuRan = qemuRan;
    }

    /**
     * True when QEMU was running when the start failed, so the guest, its image or its snapshot
     * may be at fault; false for host-side problems before that (runtime directory, sockets,
     * the QEMU binary), which another attempt of any kind would meet again.
     */
    public boolean qemuRan() {
        return qemuRan;
    }
}
