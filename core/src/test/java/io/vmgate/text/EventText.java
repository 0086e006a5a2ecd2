package io.vmgate.text;

import ch.qos.logback.classic.spi.ILoggingEvent;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.slf4j.event.KeyValuePair;

/** For tests that read captured log events: an event's fields, and its line as the text log writes it. */
public final class EventText {
    private EventText() {}

    /** The event's key-value pairs, in order. */
    public static Map<String, Object> fields(ILoggingEvent e) {
        Map<String, Object> out = new LinkedHashMap<>();
        List<KeyValuePair> kvs = e.getKeyValuePairs();
        if (kvs != null) {
            kvs.forEach(kv -> out.put(kv.key, kv.value));
        }
        return out;
    }

    /** {@code event key=value ...}: the message, then each pair quoted by {@link KeyValue#quote}, as the text log writes it. */
    public static String line(ILoggingEvent e) {
        StringBuilder b = new StringBuilder(e.getFormattedMessage());
        fields(e).forEach((k, v) -> b.append(' ').append(k).append('=').append(KeyValue.quote(v)));
        return b.toString();
    }

    /**
     * Whether the event is named {@code name} and has every field of {@code expected} ({@code key=value ...}
     * as the text log writes them, in any order) with that value as the text log writes it.
     */
    public static boolean matches(ILoggingEvent e, String name, String expected) {
        if (!name.equals(e.getMessage())) {
            return false;
        }
        Map<String, String> want = KeyValue.parse(expected);
        if (want == null) {
            throw new IllegalArgumentException("not key=value fields: " + expected);
        }
        Map<String, Object> have = fields(e);
        return want.entrySet().stream().allMatch(w -> have.containsKey(w.getKey())
                && KeyValue.quote(have.get(w.getKey())).equals(KeyValue.quote(w.getValue())));
    }
}
