package io.vmgate.text;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The {@code key=value} fields of vmgate's text log lines ({@code event key=value ...}). A value is
 * written bare when that is unambiguous, else in double quotes with escapes, so a hostile value (a
 * user name with a newline or {@code " user=root"}) cannot forge a field or a line; values are cut
 * at {@value #MAX_VALUE} characters ({@code ...} marks the cut).
 *
 * <p>{@link #parse} reads such a line back into fields: for log readers, and for JSON logs of
 * events that were logged as formatted text rather than as key-value pairs.
 */
public final class KeyValue {
    /** Longer values are cut (with {@code ...} inside the quotes). */
    public static final int MAX_VALUE = 200;

    private KeyValue() {}

    /** A value safe to put after {@code key=}: bare when harmless, else quoted with escapes; null is {@code -}. */
    public static String quote(Object value) {
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

    /**
     * The fields of {@code key=value key="quoted value" ...} (as {@link #quote} writes values; keys are
     * {@code [A-Za-z0-9_.-]+}), in order; null when the text is not entirely such fields (free text,
     * an unterminated quote), so a caller can keep it as text instead. Empty text is no fields.
     */
    public static Map<String, String> parse(String text) {
        Map<String, String> fields = new LinkedHashMap<>();
        int i = 0;
        int n = text.length();
        while (true) {
            while (i < n && text.charAt(i) == ' ') {
                i++;
            }
            if (i >= n) {
                return fields;
            }
            int keyStart = i;
            while (i < n && isKeyChar(text.charAt(i))) {
                i++;
            }
            if (i == keyStart || i >= n || text.charAt(i) != '=') {
                return null;
            }
            String key = text.substring(keyStart, i++);
            if (i < n && text.charAt(i) == '"') {
                StringBuilder v = new StringBuilder();
                i++;
                while (true) {
                    if (i >= n) {
                        return null; // unterminated
                    }
                    char c = text.charAt(i++);
                    if (c == '"') {
                        break;
                    }
                    if (c != '\\') {
                        v.append(c);
                        continue;
                    }
                    if (i >= n) {
                        return null;
                    }
                    char e = text.charAt(i++);
                    switch (e) {
                        case 'n' -> v.append('\n');
                        case 'r' -> v.append('\r');
                        case 't' -> v.append('\t');
                        case 'x' -> {
                            if (i + 2 > n) {
                                return null;
                            }
                            int hi = Character.digit(text.charAt(i), 16);
                            int lo = Character.digit(text.charAt(i + 1), 16);
                            if (hi < 0 || lo < 0) {
                                return null;
                            }
                            v.append((char) (hi * 16 + lo));
                            i += 2;
                        }
                        default -> v.append(e); // \" and \\ (and anything else, literally)
                    }
                }
                if (i < n && text.charAt(i) != ' ') {
                    return null; // "a"b: not one of ours
                }
                fields.put(key, v.toString());
            } else {
                int valueStart = i;
                while (i < n && text.charAt(i) != ' ') {
                    i++;
                }
                String v = text.substring(valueStart, i);
                if (v.indexOf('"') >= 0) {
                    return null;
                }
                fields.put(key, v);
            }
        }
    }

    private static boolean isKeyChar(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
    }
}
