package io.vmgate.agent;

import io.vmgate.exec.GuestGoneException;

/** The connection to the guest agent ended: the VM stopped, crashed, or sent garbage. */
public final class AgentGoneException extends GuestGoneException {
    public AgentGoneException(String message, Throwable cause) {
        super(message, cause);
    }
}
