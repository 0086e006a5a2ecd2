package io.vmgate.ssh;

import io.vmgate.text.KeyValue;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.slf4j.MDC;

/**
 * The server's structured events: one line per step, {@code event key=value ...}, with stable
 * event names. Values are quoted and escaped when needed, so a hostile user name cannot forge
 * log lines. The connection id travels in the MDC key {@value #MDC_KEY}.
 */
final class Events {
    static final Logger log = LoggerFactory.getLogger("io.vmgate.ssh");
    static final String MDC_KEY = "sid";

    private Events() {}

    /** A value safe to put after {@code key=}: bare when harmless, else quoted with escapes ({@link KeyValue#quote}). */
    static String v(Object value) {
        return KeyValue.quote(value);
    }

    static long msSince(long startNanos) {
        return (System.nanoTime() - startNanos) / 1_000_000;
    }

    /** Puts {@code sid} in the MDC until closed, restoring what was there before. */
    static Scope scope(String sid) {
        String previous = MDC.get(MDC_KEY);
        MDC.put(MDC_KEY, sid);
        return () -> {
            if (previous == null) {
                MDC.remove(MDC_KEY);
            } else {
                MDC.put(MDC_KEY, previous);
            }
        };
    }

    interface Scope extends AutoCloseable {
        @Override
        void close();
    }
}
