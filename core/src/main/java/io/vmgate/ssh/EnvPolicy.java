package io.vmgate.ssh;

import java.util.List;
import java.util.regex.Pattern;

/**
 * Which {@code env} requests reach the guest: names on the allowlist (exact, or globs with
 * {@code *} and {@code ?}), with bounded sizes so a client cannot push megabytes of environment.
 */
final class EnvPolicy {
    static final int MAX_NAME = 256;
    static final int MAX_VALUE = 16 * 1024;
    static final int MAX_VARS = 64;
    static final int MAX_TOTAL = 64 * 1024;
    private static final Pattern NAME = Pattern.compile("[A-Za-z_][A-Za-z0-9_]*");

    private final List<Pattern> allowed;

    EnvPolicy(List<String> allowlist) {
        this.allowed = allowlist.stream().map(EnvPolicy::glob).toList();
    }

    private static Pattern glob(String g) {
        StringBuilder re = new StringBuilder();
        for (char c : g.toCharArray()) {
            switch (c) {
                case '*' -> re.append(".*");
                case '?' -> re.append('.');
                default -> re.append(Pattern.quote(String.valueOf(c)));
            }
        }
        return Pattern.compile(re.toString());
    }

    /** Null if the variable may be passed, else why not (for the log). */
    String refusal(String name, String value, int varsSoFar, int bytesSoFar) {
        if (name == null || name.length() > MAX_NAME || !NAME.matcher(name).matches()) {
            return "bad_name";
        }
        if (allowed.stream().noneMatch(p -> p.matcher(name).matches())) {
            return "not_allowed";
        }
        if (value == null || value.length() > MAX_VALUE || value.indexOf('\0') >= 0) {
            return "bad_value";
        }
        if (varsSoFar >= MAX_VARS || bytesSoFar + name.length() + value.length() + 1 > MAX_TOTAL) {
            return "too_much";
        }
        return null;
    }
}
