package io.vmgate.ssh;

import io.vmgate.exec.Guest;
import java.io.IOException;

/**
 * Gives an SSH connection its guest, at the connection's first shell, exec or subsystem request.
 * The connection closes the guest when it ends; a source that shares one guest between
 * connections hands out views whose {@code close()} does nothing.
 */
@FunctionalInterface
public interface GuestSource {
    /**
     * Starts (or hands over) a guest. Blocks for as long as that takes; runs on a virtual thread of
     * the connection, never on an I/O thread.
     *
     * @param sessionId the connection's id, for the guest's name and logs
     * @param user      the authenticated user name
     * @throws IOException when no guest can be had; the message is shown to the user
     */
    Guest open(String sessionId, String user) throws IOException;

    /**
     * {@link #open(String, String)}, the client having asked ({@code VMGATE_FRESH=1} in the
     * environment of the request that opens the guest) for a fresh machine rather than the user's
     * saved one. A source that saves no machines ignores it (the default).
     */
    default Guest open(String sessionId, String user, boolean freshMachine) throws IOException {
        return open(sessionId, user);
    }
}
