package io.vmgate.exec;

import java.io.IOException;

/** The guest stopped (crashed, was killed, powered off) while something still needed it. The message says why. */
public class GuestGoneException extends IOException {
    public GuestGoneException(String message, Throwable cause) {
        super(message, cause);
    }
}
