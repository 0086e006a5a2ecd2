package io.vmgate.ssh;

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
    private static final int MAX_VALUE = 200;

    private Events() {}

    /** A value safe to put after {@code key=}: bare when harmless, else quoted with escapes. */
    static String v(Object value) {
        if (value == null) {
            return "-";
        }
        String s = value.toString();
        boolean bare = !s.isEmpty() && s.length() <= MAX_VALUE;
        for (int i = 0; bare && i < s.length(); i++) {
            char c = s.charAt(i);
            bare = c > ' ' && c < 0x7f && c != '"' && c != '\\' && c != '=';
        }
        if (bare) {
            return s;
        }
        StringBuilder b = new StringBuilder(Math.min(s.length(), MAX_VALUE) + 8).append('"');
        for (int i = 0; i < s.length() && i < MAX_VALUE; i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                case '\n' -> b.append("\\n");
                case '\r' -> b.append("\\r");
                case '\t' -> b.append("\\t");
                default -> {
                    if (c < ' ' || c == 0x7f) {
                        b.append(String.format("\\x%02x", (int) c));
                    } else {
                        b.append(c);
                    }
                }
            }
        }
        if (s.length() > MAX_VALUE) {
            b.append("...");
        }
        return b.append('"').toString();
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
