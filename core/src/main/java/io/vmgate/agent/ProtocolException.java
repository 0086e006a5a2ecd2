package io.vmgate.agent;

import java.io.IOException;

/**
 * Bytes that break docs/protocol.md. {@code framing} errors leave the stream unreadable
 * (the connection must be dropped); the others spoil one message only.
 */
public final class ProtocolException extends IOException {
    private final boolean framing;

    private ProtocolException(String message, boolean framing) {
        super(message);
        this.framing = framing;
    }

    public static ProtocolException framing(String message) {
        return new ProtocolException(message, true);
    }

    public static ProtocolException message(String message) {
        return new ProtocolException(message, false);
    }

    public boolean isFraming() {
        return framing;
    }
}
