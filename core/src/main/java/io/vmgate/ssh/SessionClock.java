package io.vmgate.ssh;

import java.time.Duration;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;

/**
 * A session's two clocks, started when its guest is ready: the idle timeout (no input or output on
 * any channel) and the maximum session time. Each warns the user first, then ends the session.
 *
 * <p>Nothing polls: a check is scheduled on the server's timer thread for the next moment
 * something could happen (a warning, the end), and channels mark activity by writing a volatile
 * timestamp, cheap enough for every read.
 */
@SuppressWarnings("try") // MDC scopes: try-with-resources for the side effect
final class SessionClock {
    /** What the clock needs from its session. */
    interface Listener {
        /** Shows {@code message} to the user on every running command; returns how many were told. */
        int warn(String message);

        /** Ends the session; {@code details} are {@code key=value} fields for its log event. */
        void end(Ending ending, String details);
    }

    /** The server's settings for every session's clock. */
    record Settings(Duration idleTimeout, Duration maxSessionTime, Duration idleWarning, Duration timeWarning) {
        static Settings of(ServerConfig c) {
            return new Settings(c.idleTimeout(), c.maxSessionTime(), c.warningBefore(c.idleTimeout()),
                    c.warningBefore(c.maxSessionTime()));
        }
    }

    private final ScheduledExecutorService scheduler;
    private final Settings settings;
    private final Listener listener;
    private final String sid;
    private final Supplier<String> tag;
    /** Last input or output on any channel (System.nanoTime). */
    private volatile long lastActivityNanos = System.nanoTime();

    // guarded by this
    private boolean stopped;
    private ScheduledFuture<?> idleTimer;
    private ScheduledFuture<?> timeTimer;
    private boolean idleWarned;
    private long idleWarnedAt;
    private long activityAtWarning;

    SessionClock(ScheduledExecutorService scheduler, Settings settings, Listener listener, String sid, Supplier<String> tag) {
        this.scheduler = scheduler;
        this.settings = settings;
        this.listener = listener;
        this.sid = sid;
        this.tag = tag;
    }

    /** Input from the client or output from the guest: resets the idle clock. */
    void activity() {
        lastActivityNanos = System.nanoTime();
    }

    /** Time since the last input or output. */
    java.time.Duration idle() {
        return java.time.Duration.ofNanos(System.nanoTime() - lastActivityNanos);
    }

    /** The guest is ready: both clocks start now. */
    synchronized void start() {
        activity();
        if (stopped) {
            return;
        }
        Duration idle = settings.idleTimeout();
        if (!idle.isZero()) {
            idleTimer = schedule(this::idleCheck, idle.minus(settings.idleWarning()).toNanos());
        }
        Duration max = settings.maxSessionTime();
        if (!max.isZero()) {
            Duration warn = settings.timeWarning();
            timeTimer = warn.isZero() ? schedule(this::timeLimit, max.toNanos()) : schedule(this::timeWarning, max.minus(warn).toNanos());
        }
    }

    /** No more warnings or endings from this clock. */
    synchronized void stop() {
        stopped = true;
        if (idleTimer != null) {
            idleTimer.cancel(false);
        }
        if (timeTimer != null) {
            timeTimer.cancel(false);
        }
    }

    /** Runs {@code task} on the timer thread in the session's MDC scope; null once the server stopped. */
    private ScheduledFuture<?> schedule(Runnable task, long delayNanos) {
        try {
            return scheduler.schedule(() -> {
                try (var s = Events.scope(sid)) {
                    task.run();
                } catch (RuntimeException e) {
                    Events.log.error("timer_failed {}", tag.get(), e);
                }
            }, Math.max(0, delayNanos), TimeUnit.NANOSECONDS);
        } catch (RejectedExecutionException e) {
            return null; // the server is stopping
        }
    }

    /**
     * On the timer thread: warn once the session has been idle for the timeout minus the warning,
     * end it if nothing happened during the warning, else start over. Always reschedules itself for
     * the next moment something could happen; never blocks.
     */
    private void idleCheck() {
        Duration timeout = settings.idleTimeout();
        Duration warning = settings.idleWarning();
        long now = System.nanoTime();
        long last = lastActivityNanos;
        long idle = now - last;
        boolean warn = false;
        synchronized (this) {
            if (stopped) {
                return;
            }
            if (idleWarned && last != activityAtWarning) {
                idleWarned = false; // there was activity after the warning: start over
            }
            if (idleWarned) {
                long left = idleWarnedAt + warning.toNanos() - now;
                if (left > 0) {
                    idleTimer = schedule(this::idleCheck, left);
                    return;
                }
            } else if (!warning.isZero()) {
                long untilWarning = timeout.minus(warning).toNanos() - idle;
                if (untilWarning > 0) {
                    idleTimer = schedule(this::idleCheck, untilWarning);
                    return;
                }
                idleWarned = true;
                idleWarnedAt = now;
                activityAtWarning = last;
                idleTimer = schedule(this::idleCheck, warning.toNanos());
                warn = true;
            } else if (idle < timeout.toNanos()) {
                idleTimer = schedule(this::idleCheck, timeout.toNanos() - idle);
                return;
            }
        }
        if (warn) {
            // (the idle time as it is: after activity that followed an earlier warning it can exceed timeout - warning)
            long idleMs = idle / 1_000_000;
            Duration idleFor = idleMs >= 1000 ? Duration.ofSeconds((idleMs + 500) / 1000) : Duration.ofMillis(idleMs);
            int n = listener.warn("vmgate: this session has been idle for " + Durations.format(idleFor)
                    + "; it will be closed in " + Durations.format(warning) + " unless there is activity");
            Events.log.info("session_idle_warning {} idle_ms={} closes_in_ms={} channels={}", tag.get(), idleMs,
                    warning.toMillis(), n);
            return;
        }
        stop();
        listener.end(Ending.idleTimeout(timeout), "idle_ms=" + idle / 1_000_000 + " timeout_ms=" + timeout.toMillis());
    }

    private void timeWarning() {
        Duration max = settings.maxSessionTime();
        Duration warning = settings.timeWarning();
        synchronized (this) {
            if (stopped) {
                return;
            }
            timeTimer = schedule(this::timeLimit, warning.toNanos());
        }
        int n = listener.warn("vmgate: this session will end in " + Durations.format(warning) + " (maximum session time "
                + Durations.format(max) + ")");
        Events.log.info("session_time_warning {} max_ms={} closes_in_ms={} channels={}", tag.get(), max.toMillis(),
                warning.toMillis(), n);
    }

    private void timeLimit() {
        synchronized (this) {
            if (stopped) {
                return;
            }
        }
        stop();
        Duration max = settings.maxSessionTime();
        listener.end(Ending.timeLimit(max), "max_ms=" + max.toMillis());
    }
}
