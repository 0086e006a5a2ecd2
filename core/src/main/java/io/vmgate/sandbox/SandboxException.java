package io.vmgate.sandbox;

import java.io.IOException;

/** A sandbox could not be started (or prepared); the message says what to do about it. */
public class SandboxException extends IOException {
    private final boolean abandoned;

    public SandboxException(String message) {
        this(message, null, false);
    }

    public SandboxException(String message, Throwable cause) {
        this(message, cause, false);
    }

    SandboxException(String message, Throwable cause, boolean abandoned) {
        super(message, cause);
        this.abandoned = abandoned;
    }

    /**
     * True when the start was abandoned on purpose because the JVM is exiting (see
     * {@link Sandboxes.Builder#abandonStartsOnExit()}): not news for the user.
     */
    public boolean abandoned() {
        return abandoned;
    }
}
