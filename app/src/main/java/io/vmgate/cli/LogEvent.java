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
 * fields. An event logged with SLF4J's key-value API ({@code log.atInfo().setMessage("vm_ready")
 * .addKeyValue("ms", 12).log()}) has its pairs as fields, with their types. An event logged as a
 * formatted line ({@code "vm_ready vm={} ms={}"}) is read back: its first word is the name and the
 * rest, when it is all {@code key=value} fields as {@link KeyValue#quote} writes them, becomes string
 * fields; otherwise it stays text ({@code message}). A line that does not start with an event name
 * (a library's free text) is the event {@value #FREE_TEXT}, with the whole line as its message.
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
        int space = text.indexOf(' ');
        String first = space < 0 ? text : text.substring(0, space);
        String rest = space < 0 ? "" : text.substring(space + 1).strip();
        if (!EVENT_NAME.matcher(first).matches()) {
            return new LogEvent(FREE_TEXT, pairs(e.getKeyValuePairs(), new LinkedHashMap<>()), text.isEmpty() ? null : text);
        }
        Map<String, Object> fields = new LinkedHashMap<>();
        String message = null;
        if (!rest.isEmpty()) {
            Map<String, String> parsed = KeyValue.parse(rest);
            if (parsed != null) {
                fields.putAll(parsed);
            } else {
                message = rest;
            }
        }
        return new LogEvent(first, pairs(e.getKeyValuePairs(), fields), message);
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

    /** The event's key-value pairs (not those read back from text) as {@code  k=v}, quoted like the rest of the line. */
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
