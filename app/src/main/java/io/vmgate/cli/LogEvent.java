package io.vmgate.cli;

import ch.qos.logback.classic.spi.ILoggingEvent;
import io.vmgate.text.KeyValue;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import org.slf4j.event.KeyValuePair;

/**
 * A log event as vmgate's encoders see it: its name, its fields in order, and any text that is not
 * fields. vmgate logs every event with SLF4J's key-value API ({@code log.atInfo().setMessage("vm_ready")
 * .addKeyValue("ms", 12).log()}): the message is the event name and the pairs are its fields, with
 * their types. Any other message (a library's free text) is the event {@value #FREE_TEXT}, with the
 * text as its message.
 *
 * @param name    the event name ({@code snake_case})
 * @param fields  key to value ({@code String}, or the pair's own {@code Number}/{@code Boolean})
 * @param message text that is not fields, or null
 */
record LogEvent(String name, Map<String, Object> fields, String message) {
    /** The name of an event that is free text, not one of ours. */
    static final String FREE_TEXT = "log";
    private static final Pattern EVENT_NAME = Pattern.compile("[a-z][a-z0-9_]*");

    static LogEvent of(ILoggingEvent e) {
        String text = e.getFormattedMessage() == null ? "" : e.getFormattedMessage().strip();
        Map<String, Object> fields = pairs(e.getKeyValuePairs(), new LinkedHashMap<>());
        if (EVENT_NAME.matcher(text).matches()) {
            return new LogEvent(text, fields, null);
        }
        return new LogEvent(FREE_TEXT, fields, text.isEmpty() ? null : text);
    }

    private static Map<String, Object> pairs(List<KeyValuePair> kvs, Map<String, Object> into) {
        if (kvs != null) {
            for (KeyValuePair kv : kvs) {
                Object v = kv.value;
                into.put(kv.key, v instanceof Number || v instanceof Boolean || v == null ? v : String.valueOf(v));
            }
        }
        return into;
    }

    /** The event's key-value pairs as {@code  k=v ...} ({@link KeyValue#quote}), for the text log. */
    static String pairsAsText(ILoggingEvent e) {
        List<KeyValuePair> kvs = e.getKeyValuePairs();
        if (kvs == null || kvs.isEmpty()) {
            return "";
        }
        StringBuilder b = new StringBuilder();
        for (KeyValuePair kv : kvs) {
            b.append(' ').append(kv.key).append('=').append(KeyValue.quote(kv.value));
        }
        return b.toString();
    }
}
