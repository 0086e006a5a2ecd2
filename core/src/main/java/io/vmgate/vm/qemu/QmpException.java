package io.vmgate.vm.qemu;

import java.io.IOException;

/** QEMU answered a QMP command with an error. */
public final class QmpException extends IOException {
    private final String errorClass;

    QmpException(String command, String errorClass, String description) {
        super("QMP " + command + " failed: " + errorClass + ": " + description);
        this.errorClass = errorClass;
    }

    /** QEMU's error class, e.g. {@code GenericError} or {@code CommandNotFound}. */
    public String errorClass() {
        return errorClass;
    }
}
