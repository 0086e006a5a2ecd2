package io.vmgate.agent;

import java.io.IOException;

/** The connection to the guest agent ended: the VM stopped, crashed, or sent garbage. */
public final class AgentGoneException extends IOException {
    public AgentGoneException(String message, Throwable cause) {
        super(message, cause);
    }
}
