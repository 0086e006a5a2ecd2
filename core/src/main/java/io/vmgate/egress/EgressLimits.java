package io.vmgate.egress;

import java.time.Duration;
import java.util.Objects;

/**
 * What one VM's egress may use: connections at once, and bytes each way over its whole life
 * (out: guest to the world, in: the world to the guest). A connection that would go past a
 * byte limit is cut, and later ones are refused; beyond the connection limit new ones are
 * refused until others end.
 *
 * @param connectTimeout how long to wait for a remote end to accept a connection
 */
public record EgressLimits(int maxConnections, long maxBytesOut, long maxBytesIn, Duration connectTimeout) {
    public static final int DEFAULT_MAX_CONNECTIONS = 32;
    public static final Duration DEFAULT_CONNECT_TIMEOUT = Duration.ofSeconds(10);

    public EgressLimits {
        Objects.requireNonNull(connectTimeout, "connectTimeout");
        if (maxConnections < 1 || maxConnections > 64) {
            throw new IllegalArgumentException("egress connections at once must be 1 to 64 (the guest's proxy holds 64), not "
                    + maxConnections);
        }
        if (maxBytesOut < 0 || maxBytesIn < 0) {
            throw new IllegalArgumentException("egress byte limits must not be negative");
        }
        if (connectTimeout.isNegative() || connectTimeout.isZero()) {
            throw new IllegalArgumentException("egress connect timeout must be positive");
        }
    }

    /** 32 connections at once, no byte limits, 10 s to connect. */
    public static EgressLimits defaults() {
        return new EgressLimits(DEFAULT_MAX_CONNECTIONS, Long.MAX_VALUE, Long.MAX_VALUE, DEFAULT_CONNECT_TIMEOUT);
    }

    public EgressLimits withMaxConnections(int v) {
        return new EgressLimits(v, maxBytesOut, maxBytesIn, connectTimeout);
    }

    public EgressLimits withMaxBytes(long out, long in) {
        return new EgressLimits(maxConnections, out, in, connectTimeout);
    }

    public EgressLimits withConnectTimeout(Duration v) {
        return new EgressLimits(maxConnections, maxBytesOut, maxBytesIn, v);
    }
}
