package io.vmgate.ssh;

import java.time.Duration;
import java.time.Instant;

/**
 * A live SSH session as {@link VmgateSshServer#sessions()} shows it to an operator.
 *
 * @param id       the connection id (the {@code conn=} of its log events, {@code sid} in the MDC)
 * @param user     the authenticated user name
 * @param remote   the client's address and port
 * @param vm       its guest's id, or null while it has none (before its first command, or after it died)
 * @param started  when the connection was accepted
 * @param idle     time since the last input or output on any of its channels
 * @param bytesIn  bytes from the client to the guest so far
 * @param bytesOut bytes from the guest to the client so far
 * @param channels session channels open now
 */
public record SessionInfo(String id, String user, String remote, String vm, Instant started, Duration idle, long bytesIn,
        long bytesOut, int channels) {}
