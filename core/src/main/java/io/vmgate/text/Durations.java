package io.vmgate.text;

import java.math.BigDecimal;
import java.time.Duration;
import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Durations as operators write them and users read them: {@code 30s}, {@code 10m}, {@code 1h},
 * {@code 1h30m}, {@code 500ms}, {@code 1.5s}, or a plain number of seconds ({@code 90}).
 * {@code 0}, {@code off} and {@code none} mean "disabled" (zero).
 */
public final class Durations {
    private static final Pattern PART = Pattern.compile("(\\d+(?:\\.\\d+)?)(ms|s|m|h|d)");
    private static final Pattern PLAIN = Pattern.compile("\\d+(?:\\.\\d+)?");

    private Durations() {}

    /**
     * Parses {@code 30s}, {@code 10m}, {@code 1h30m}, {@code 500ms}, {@code 90} (seconds), or
     * {@code off}/{@code none} (zero).
     *
     * @throws IllegalArgumentException with a message fit for the user
     */
    public static Duration parse(String text) {
        if (text == null) {
            throw new IllegalArgumentException("missing duration");
        }
        String s = text.strip().toLowerCase(Locale.ROOT);
        if (s.equals("off") || s.equals("none")) {
            return Duration.ZERO;
        }
        try {
            if (PLAIN.matcher(s).matches()) {
                return ofMillis(new BigDecimal(s).multiply(BigDecimal.valueOf(1000)), text);
            }
            Matcher m = PART.matcher(s);
            BigDecimal ms = BigDecimal.ZERO;
            int end = 0;
            while (m.find() && m.start() == end) {
                BigDecimal unit = switch (m.group(2)) {
                    case "ms" -> BigDecimal.ONE;
                    case "s" -> BigDecimal.valueOf(1_000);
                    case "m" -> BigDecimal.valueOf(60_000);
                    case "h" -> BigDecimal.valueOf(3_600_000);
                    default -> BigDecimal.valueOf(86_400_000);
                };
                ms = ms.add(new BigDecimal(m.group(1)).multiply(unit));
                end = m.end();
            }
            if (end == 0 || end != s.length()) {
                throw new IllegalArgumentException(bad(text));
            }
            return ofMillis(ms, text);
        } catch (ArithmeticException | NumberFormatException e) {
            throw new IllegalArgumentException(bad(text), e);
        }
    }

    private static Duration ofMillis(BigDecimal ms, String text) {
        if (ms.compareTo(BigDecimal.valueOf(Long.MAX_VALUE / 1_000_000)) > 0) {
            throw new IllegalArgumentException(bad(text));
        }
        return Duration.ofNanos(ms.multiply(BigDecimal.valueOf(1_000_000)).longValue());
    }

    private static String bad(String text) {
        return "'" + text + "' is not a duration (use e.g. 30s, 10m, 1h, 500ms, or a number of seconds)";
    }

    /** {@code 500ms}, {@code 1.5s}, {@code 45s}, {@code 9m}, {@code 1m30s}, {@code 1h}, {@code 2h5m}. */
    public static String format(Duration d) {
        long ms = Math.max(0, d.toMillis());
        if (ms < 1000) {
            return ms + "ms";
        }
        if (ms < 60_000 && ms % 1000 != 0) {
            return BigDecimal.valueOf(ms, 3).stripTrailingZeros().toPlainString() + "s";
        }
        long s = (ms + 500) / 1000;
        long h = s / 3600;
        long m = (s % 3600) / 60;
        long sec = s % 60;
        StringBuilder b = new StringBuilder();
        if (h > 0) {
            b.append(h).append('h');
        }
        if (m > 0) {
            b.append(m).append('m');
        }
        if (sec > 0) {
            b.append(sec).append('s');
        }
        return b.toString();
    }
}
