package io.vmgate.ssh;

import java.time.Duration;
import java.util.Iterator;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Failed authentication attempts per client address, for a growing delay before a failed
 * attempt is answered: free for the first few, then doubling up to a cap. An address is
 * forgotten after a quiet spell or a successful login; the map is bounded.
 */
final class FailureTracker {
    static final int FREE_FAILURES = 3;
    static final Duration BASE_DELAY = Duration.ofMillis(250);
    static final Duration MAX_DELAY = Duration.ofSeconds(8);
    static final Duration FORGET_AFTER = Duration.ofMinutes(15);
    static final int MAX_ADDRESSES = 10_000;

    private record Entry(int failures, long lastNanos) {}

    private final Map<String, Entry> byAddress = new ConcurrentHashMap<>();

    /** Records one failure and returns how long to wait before answering it. */
    Duration failed(String address) {
        long now = System.nanoTime();
        if (byAddress.size() >= MAX_ADDRESSES) {
            prune(now);
        }
        Entry e = byAddress.compute(address, (k, old) ->
                old == null || expired(old, now) ? new Entry(1, now) : new Entry(old.failures + 1, now));
        return delayFor(e.failures);
    }

    void succeeded(String address) {
        byAddress.remove(address);
    }

    int failures(String address) {
        Entry e = byAddress.get(address);
        return e == null || expired(e, System.nanoTime()) ? 0 : e.failures;
    }

    static Duration delayFor(int failures) {
        if (failures <= FREE_FAILURES) {
            return Duration.ZERO;
        }
        int doublings = Math.min(failures - FREE_FAILURES - 1, 30);
        long ms = BASE_DELAY.toMillis() << doublings;
        return ms >= MAX_DELAY.toMillis() || ms <= 0 ? MAX_DELAY : Duration.ofMillis(ms);
    }

    private static boolean expired(Entry e, long now) {
        return now - e.lastNanos > FORGET_AFTER.toNanos();
    }

    private void prune(long now) {
        for (Iterator<Entry> it = byAddress.values().iterator(); it.hasNext();) {
            if (expired(it.next(), now)) {
                it.remove();
            }
        }
        if (byAddress.size() >= MAX_ADDRESSES) {
            byAddress.clear(); // under a flood from many addresses: forget rather than grow
        }
    }
}
