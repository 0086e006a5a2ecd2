package io.vmgate.ssh;

import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Semaphore;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * Sessions with a live guest, counted against the server's limit and each user's. A connection takes
 * a {@link Slot} before it asks for a guest and gives it back when the guest is gone.
 */
final class SessionSlots {
    private final int max;
    private final int maxPerUser;
    private final Semaphore slots;
    private final ConcurrentHashMap<String, Integer> perUser = new ConcurrentHashMap<>();

    /** @param maxPerUser 0 for no per-user limit */
    SessionSlots(int max, int maxPerUser) {
        this.max = max;
        this.maxPerUser = maxPerUser;
        this.slots = new Semaphore(max);
    }

    /** A held slot; closing it (once, from any thread) gives it back. */
    final class Slot implements AutoCloseable {
        private final String user;
        private final AtomicBoolean released = new AtomicBoolean();

        private Slot(String user) {
            this.user = user;
        }

        @Override
        public void close() {
            if (released.compareAndSet(false, true)) {
                slots.release();
                releaseUser(user);
            }
        }
    }

    /** Takes a slot for {@code user}, or refuses: the user's limit first, then the server's. */
    Slot acquire(String user) throws Refusal {
        if (!tryAcquireUser(user)) {
            throw new Refusal(Ending.perUserLimit(maxPerUser));
        }
        if (!slots.tryAcquire()) {
            releaseUser(user);
            throw new Refusal(Ending.capacity(max));
        }
        return new Slot(user);
    }

    int max() {
        return max;
    }

    int maxPerUser() {
        return maxPerUser;
    }

    /** Slots held now. */
    int live() {
        return max - slots.availablePermits();
    }

    /** Slots {@code user} holds now. */
    int live(String user) {
        return perUser.getOrDefault(user, 0);
    }

    private boolean tryAcquireUser(String user) {
        boolean[] acquired = {false};
        perUser.compute(user, (k, n) -> {
            int have = n == null ? 0 : n;
            if (maxPerUser != 0 && have >= maxPerUser) {
                return n;
            }
            acquired[0] = true;
            return have + 1;
        });
        return acquired[0];
    }

    private void releaseUser(String user) {
        perUser.computeIfPresent(user, (k, n) -> n <= 1 ? null : n - 1);
    }
}
