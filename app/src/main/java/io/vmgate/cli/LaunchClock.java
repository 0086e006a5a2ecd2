package io.vmgate.cli;

/**
 * The origin of {@code --verbose} timings: the moment {@code ./vmgate} started (it exports
 * VMGATE_LAUNCHED_AT from bash's $EPOCHREALTIME), so JVM start-up shows in the numbers;
 * when run without the launcher, the moment {@code main} began.
 */
final class LaunchClock {
    private static final long MAIN_NANOS = System.nanoTime();
    private static final long ORIGIN_NANOS = origin();

    private LaunchClock() {}

    /** Touch from the first line of {@code main} so the fallback origin is as early as possible. */
    static void start() {
        // class initialisation does the work
    }

    static long mainEntered() {
        return MAIN_NANOS;
    }

    static double millisSinceLaunch(long nanoTime) {
        return (nanoTime - ORIGIN_NANOS) / 1e6;
    }

    private static long origin() {
        long now = MAIN_NANOS;
        String at = System.getenv("VMGATE_LAUNCHED_AT");
        if (at == null) {
            return now;
        }
        try {
            // "1732270000.123456"; some locales print a comma
            long micros = Math.round(Double.parseDouble(at.replace(',', '.')) * 1e6);
            java.time.Instant i = java.time.Instant.now();
            long nowMicros = i.getEpochSecond() * 1_000_000L + i.getNano() / 1000;
            long age = nowMicros - micros;
            return age >= 0 && age < 60_000_000L ? now - age * 1000 : now;
        } catch (NumberFormatException e) {
            return now;
        }
    }
}
