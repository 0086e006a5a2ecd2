package io.vmgate.ssh;

import io.vmgate.text.Durations;
import java.time.Duration;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.List;
import java.util.function.UnaryOperator;
import org.slf4j.event.KeyValuePair;
import org.slf4j.spi.LoggingEventBuilder;

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

        /** Ends the session; {@code details} are fields for its log event, in order. */
        void end(Ending ending, List<KeyValuePair> details);
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
    /** Adds the session's conn, user and remote to an event. */
    private final UnaryOperator<LoggingEventBuilder> tagged;
    /** Last input or output on any channel (System.nanoTime). */
    private volatile long lastActivityNanos = System.nanoTime();

    // guarded by this
    private boolean stopped;
    private ScheduledFuture<?> idleTimer;
    private ScheduledFuture<?> timeTimer;
    private boolean idleWarned;
    private long idleWarnedAt;
    private long activityAtWarning;

    SessionClock(ScheduledExecutorService scheduler, Settings settings, Listener listener, String sid,
            UnaryOperator<LoggingEventBuilder> tagged) {
        this.scheduler = scheduler;
        this.settings = settings;
        this.listener = listener;
        this.sid = sid;
        this.tagged = tagged;
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
                    tagged.apply(Events.log.atError()).setMessage("timer_failed").setCause(e).log();
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
            tagged.apply(Events.log.atInfo()).setMessage("session_idle_warning").addKeyValue("idle_ms", idleMs)
                    .addKeyValue("closes_in_ms", warning.toMillis()).addKeyValue("channels", n).log();
            return;
        }
        stop();
        listener.end(Ending.idleTimeout(timeout), List.of(new KeyValuePair("idle_ms", idle / 1_000_000),
                new KeyValuePair("timeout_ms", timeout.toMillis())));
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
        tagged.apply(Events.log.atInfo()).setMessage("session_time_warning").addKeyValue("max_ms", max.toMillis())
                .addKeyValue("closes_in_ms", warning.toMillis()).addKeyValue("channels", n).log();
    }

    private void timeLimit() {
        synchronized (this) {
            if (stopped) {
                return;
            }
        }
        stop();
        Duration max = settings.maxSessionTime();
        listener.end(Ending.timeLimit(max), List.of(new KeyValuePair("max_ms", max.toMillis())));
    }
}
