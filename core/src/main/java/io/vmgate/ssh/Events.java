package io.vmgate.ssh;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.slf4j.MDC;

/**
 * The server's structured events: one per step, a stable event name as the message and its fields
 * as SLF4J key-value pairs ({@code Events.log.atInfo().setMessage("vm_assigned").addKeyValue("vm", id)
 * ...log()}; {@link Connection#tagged} adds a connection's own). The encoders quote and escape the
 * values, so a hostile user name cannot forge log lines. The connection id travels in the MDC key
 * {@value #MDC_KEY}. Every event is listed in {@code docs/events.md}.
 */
final class Events {
    static final Logger log = LoggerFactory.getLogger("io.vmgate.ssh");
    static final String MDC_KEY = "sid";

    private Events() {}

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
