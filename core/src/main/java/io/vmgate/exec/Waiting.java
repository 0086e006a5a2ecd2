package io.vmgate.exec;

import java.time.Duration;
import java.util.Optional;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/** Waiting for a future with a time limit, the two ways the code needs it: the one timeout helper. */
public final class Waiting {
    private Waiting() {}

    /**
     * Waits at most {@code limit} for {@code f}; true if it completed (normally or not) in time. An
     * interrupt ends the wait early and stays set.
     */
    public static boolean await(CompletableFuture<?> f, Duration limit) {
        try {
            f.get(limit.toNanos(), TimeUnit.NANOSECONDS);
            return true;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        } catch (ExecutionException | CancellationException e) {
            return true;
        } catch (TimeoutException e) {
            return false;
        }
    }

    /**
     * The value of {@code f} if it completes normally within {@code limit}, else empty. Not
     * interruptible (for teardown, which must finish): an interrupt is remembered and restored.
     */
    public static <T> Optional<T> joinUninterruptibly(CompletableFuture<T> f, Duration limit) {
        long deadline = System.nanoTime() + limit.toNanos();
        boolean interrupted = false;
        try {
            while (true) {
                try {
                    return Optional.ofNullable(f.get(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS));
                } catch (InterruptedException e) {
                    interrupted = true;
                } catch (ExecutionException | TimeoutException | CancellationException e) {
                    return Optional.empty();
                }
            }
        } finally {
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
    }
}
