package io.vmgate.ssh;

/**
 * Hears what happens at the SSH front door, for metrics: set one with
 * {@link ServerConfig.Builder#observer}. Every method has an empty default, is called on a
 * session's own thread (an I/O thread or a channel's pump) and must return at once: count, never
 * block or log. State (sessions and connections open now) is read from the server instead:
 * {@link VmgateSshServer#liveSessions()}, {@link VmgateSshServer#connections()}.
 */
public interface SshObserver {
    /** Observes nothing. */
    SshObserver NONE = new SshObserver() { };

    /** A TCP connection was accepted. */
    default void connectionOpened() { }

    /** A connection's key exchange finished ({@code ok}), or the connection ended before it did. */
    default void handshake(boolean ok) { }

    /**
     * An authentication attempt was decided.
     *
     * @param method {@code publickey}, {@code password} (keyboard-interactive too) or {@code none}
     */
    default void authentication(String method, boolean ok) { }

    /** A connection ended (whatever the reason, authenticated or not). */
    default void connectionClosed() { }

    /**
     * A session or channel was refused, or a session ended by a limit.
     *
     * @param reason {@code capacity}, {@code per_user_limit}, {@code too_many_channels},
     *               {@code idle_timeout}, {@code time_limit}, {@code killed}; and for a connection
     *               dropped before authentication ({@code --max-startups} and friends):
     *               {@code max_startups}, {@code per_source_max_startups}, {@code per_source_rate}
     */
    default void refused(String reason) { }

    /** Bytes from a client to its guest (stdin of a command). */
    default void bytesIn(int n) { }

    /** Bytes from a guest to its client (stdout and stderr, or the terminal). */
    default void bytesOut(int n) { }
}
