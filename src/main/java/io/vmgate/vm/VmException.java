package io.vmgate.vm;

/** A VM could not be started; the message says what to do about it. */
public class VmException extends Exception {
    public VmException(String message) {
        super(message);
    }

    public VmException(String message, Throwable cause) {
        super(message, cause);
    }
}
