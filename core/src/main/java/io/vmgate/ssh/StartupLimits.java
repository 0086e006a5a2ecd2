package io.vmgate.ssh;

import io.vmgate.text.Durations;
import java.time.Duration;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Limits on connections that have not authenticated yet, enforced by {@link StartupGate} as soon
 * as a connection is accepted, before any SSH work is done for it.
 *
 * <ul>
 * <li>{@code maxStartups} as OpenSSH's {@code MaxStartups start:rate:full}: with {@code start} or
 *     more unauthenticated connections open, a new one is dropped with probability {@code rate}
 *     percent, rising linearly to 100 % at {@code full}. A single number {@code N} means
 *     {@code N:100:N} (drop everything beyond N).</li>
 * <li>{@code perSourceMaxStartups}: unauthenticated connections open at once from one address;
 *     beyond it the address's new connections are dropped (0: no limit). Below the global
 *     {@code start} by default, so one flooding address never makes the server drop anyone
 *     else's connections.</li>
 * <li>{@code perSourceRate} connections accepted per {@code perSourcePeriod} from one address (a
 *     token bucket: bursts up to the rate, refilled evenly over the period; 0: no limit). Each
 *     accepted connection may cost a key exchange, so this bounds what connect-and-hang-up churn
 *     from one address costs.</li>
 * </ul>
 * An address is the remote IP address exactly (an IPv6 address is not grouped by prefix).
 */
public record StartupLimits(int start, int rate, int full, int perSourceMaxStartups, int perSourceRate, Duration perSourcePeriod) {
    public static final StartupLimits DEFAULT = new StartupLimits(10, 30, 100, 8, 300, Duration.ofMinutes(1));

    public StartupLimits {
        if (start < 1 || full < start || rate < 0 || rate > 100) {
            throw new IllegalArgumentException("max startups wants start:rate:full with 1 <= start <= full and rate 0-100, not "
                    + start + ":" + rate + ":" + full);
        }
        if (perSourceMaxStartups < 0) {
            throw new IllegalArgumentException("per-source max startups must be 0 (no limit) or more, not " + perSourceMaxStartups);
        }
        if (perSourceRate < 0 || perSourcePeriod == null || perSourcePeriod.isNegative() || perSourcePeriod.isZero()) {
            throw new IllegalArgumentException("per-source rate wants N/DURATION with N >= 0 and a positive duration");
        }
    }

    private static final Pattern MAX_STARTUPS = Pattern.compile("(\\d{1,9})(?::(\\d{1,3}):(\\d{1,9}))?");
    private static final Pattern RATE = Pattern.compile("(\\d{1,9})/(.+)");

    /** These limits with {@code start:rate:full} or {@code N} from {@code text}. */
    public StartupLimits withMaxStartups(String text) {
        Matcher m = MAX_STARTUPS.matcher(text.strip());
        if (!m.matches()) {
            throw new IllegalArgumentException("max startups wants N or START:RATE:FULL (e.g. 10:30:100), not '" + text + "'");
        }
        int s = Integer.parseInt(m.group(1));
        return m.group(2) == null ? new StartupLimits(s, 100, s, perSourceMaxStartups, perSourceRate, perSourcePeriod)
                : new StartupLimits(s, Integer.parseInt(m.group(2)), Integer.parseInt(m.group(3)), perSourceMaxStartups,
                        perSourceRate, perSourcePeriod);
    }

    public StartupLimits withPerSourceMaxStartups(int n) {
        return new StartupLimits(start, rate, full, n, perSourceRate, perSourcePeriod);
    }

    /** These limits with a per-address rate from {@code N/DURATION} (e.g. {@code 300/1m}; {@code 0/1s}: no limit). */
    public StartupLimits withPerSourceRate(String text) {
        Matcher m = RATE.matcher(text.strip());
        if (!m.matches()) {
            throw new IllegalArgumentException("per-source rate wants N/DURATION (e.g. 300/1m), not '" + text + "'");
        }
        return new StartupLimits(start, rate, full, perSourceMaxStartups, Integer.parseInt(m.group(1)), Durations.parse(m.group(2)));
    }

    /** {@code start:rate:full}, as OpenSSH writes it. */
    public String maxStartups() {
        return start + ":" + rate + ":" + full;
    }

    @Override
    public String toString() {
        return "max_startups=" + maxStartups() + " per_source_max_startups=" + perSourceMaxStartups + " per_source_rate="
                + perSourceRate + "/" + Durations.format(perSourcePeriod);
    }
}
