package io.vmgate.ssh;

import java.security.SecureRandom;
import java.util.EnumMap;
import java.util.HashMap;
import java.util.Iterator;
import java.util.Map;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.IntUnaryOperator;
import java.util.function.LongSupplier;

/**
 * Decides, as each connection is accepted, whether to let it in or drop it at once, by the
 * {@link StartupLimits}: it counts the connections that have not authenticated yet, in total and
 * per address, and each address's recent connections. A connection let in holds a {@link Ticket}
 * until it authenticates or closes.
 *
 * <p>Drops are logged as {@code connection_dropped} (remote, reason, unauthenticated,
 * source_unauthenticated), at most once a second per reason with the number dropped since the
 * last such line ({@code dropped=}), so a flood cannot flood the log too.
 */
final class StartupGate {
    /** Why a connection was dropped; the name is the log's {@code reason=}. */
    enum Drop {
        MAX_STARTUPS("max_startups"), PER_SOURCE_MAX_STARTUPS("per_source_max_startups"), PER_SOURCE_RATE("per_source_rate");

        final String reason;

        Drop(String reason) {
            this.reason = reason;
        }
    }

    /** Addresses remembered at most; beyond it, idle ones are forgotten (the global limit still holds). */
    static final int MAX_SOURCES = 65_536;
    private static final long LOG_EVERY_NANOS = 1_000_000_000L;

    private final StartupLimits limits;
    private final LongSupplier clock;
    private final IntUnaryOperator random;
    private final Map<String, Source> sources = new HashMap<>();
    private final Map<Drop, Long> droppedSinceLog = new EnumMap<>(Drop.class);
    private final Map<Drop, Long> lastLog = new EnumMap<>(Drop.class);
    private int unauthenticated;
    private long dropped;

    StartupGate(StartupLimits limits) {
        this(limits, System::nanoTime, new SecureRandom()::nextInt);
    }

    /** @param random given n, a uniform int in [0, n) */
    StartupGate(StartupLimits limits, LongSupplier clock, IntUnaryOperator random) {
        this.limits = limits;
        this.clock = clock;
        this.random = random;
    }

    private static final class Source {
        int unauthenticated;
        double tokens;
        long refilledAt;
    }

    /** The answer for one connection: a ticket, or why it is dropped. */
    sealed interface Decision permits Admitted, Dropped {}

    record Admitted(Ticket ticket) implements Decision {}

    /**
     * @param logCount when positive, log this drop now, as the last of {@code logCount} with this
     *                 reason since the last line; zero: counted, not logged
     */
    record Dropped(Drop why, int unauthenticated, int sourceUnauthenticated, long logCount) implements Decision {}

    /** Held by a connection that was let in, until it authenticates or closes: {@link #release()} is idempotent. */
    final class Ticket {
        private final String address;
        private final AtomicBoolean released = new AtomicBoolean();

        private Ticket(String address) {
            this.address = address;
        }

        void release() {
            if (released.compareAndSet(false, true)) {
                StartupGate.this.release(address);
            }
        }
    }

    synchronized Decision admit(String address) {
        long now = clock.getAsLong();
        Source s = sources.get(address);
        if (s == null) {
            if (sources.size() >= MAX_SOURCES) {
                forgetIdle(now);
            }
            s = new Source();
            s.tokens = limits.perSourceRate();
            s.refilledAt = now;
            sources.put(address, s);
        }
        refill(s, now);
        Drop why = null;
        if (limits.perSourceMaxStartups() > 0 && s.unauthenticated >= limits.perSourceMaxStartups()) {
            why = Drop.PER_SOURCE_MAX_STARTUPS;
        } else if (limits.perSourceRate() > 0 && s.tokens < 1) {
            why = Drop.PER_SOURCE_RATE;
        } else if (earlyDrop()) {
            why = Drop.MAX_STARTUPS;
        }
        if (why != null) {
            dropped++;
            long n = droppedSinceLog.merge(why, 1L, Long::sum);
            Long last = lastLog.get(why);
            long logCount = 0;
            if (last == null || now - last >= LOG_EVERY_NANOS) {
                lastLog.put(why, now);
                droppedSinceLog.put(why, 0L);
                logCount = n;
            }
            if (s.unauthenticated == 0 && s.tokens >= limits.perSourceRate()) {
                sources.remove(address); // nothing to remember about it
            }
            return new Dropped(why, unauthenticated, s.unauthenticated, logCount);
        }
        s.unauthenticated++;
        if (limits.perSourceRate() > 0) {
            s.tokens -= 1;
        }
        unauthenticated++;
        return new Admitted(new Ticket(address));
    }

    /** OpenSSH's drop_connection(): none below start, all from full, in between a rising chance. */
    private boolean earlyDrop() {
        if (unauthenticated < limits.start()) {
            return false;
        }
        if (unauthenticated >= limits.full() || limits.rate() == 100) {
            return true;
        }
        int p = limits.rate() + (100 - limits.rate()) * (unauthenticated - limits.start()) / (limits.full() - limits.start());
        return random.applyAsInt(100) < p;
    }

    private void refill(Source s, long now) {
        if (limits.perSourceRate() == 0) {
            return;
        }
        double perNano = limits.perSourceRate() / (double) limits.perSourcePeriod().toNanos();
        s.tokens = Math.min(limits.perSourceRate(), s.tokens + (now - s.refilledAt) * perNano);
        s.refilledAt = now;
    }

    private void forgetIdle(long now) {
        for (Iterator<Source> it = sources.values().iterator(); it.hasNext(); ) {
            Source s = it.next();
            refill(s, now);
            if (s.unauthenticated == 0) {
                it.remove();
            }
        }
    }

    private synchronized void release(String address) {
        unauthenticated--;
        Source s = sources.get(address);
        if (s != null) {
            s.unauthenticated--;
            refill(s, clock.getAsLong());
            if (s.unauthenticated == 0 && s.tokens >= limits.perSourceRate()) {
                sources.remove(address);
            }
        }
    }

    /** Connections let in that have neither authenticated nor closed. */
    synchronized int unauthenticated() {
        return unauthenticated;
    }

    /** Connections dropped since the server started. */
    synchronized long dropped() {
        return dropped;
    }

    /** Addresses with state (tests: memory stays bounded). */
    synchronized int sources() {
        return sources.size();
    }
}
