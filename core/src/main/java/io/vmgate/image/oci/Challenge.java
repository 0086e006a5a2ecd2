package io.vmgate.image.oci;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;

/**
 * One {@code WWW-Authenticate} challenge (RFC 7235): a scheme and its parameters, e.g.
 * {@code Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull"}.
 * The header comes from the registry and is parsed strictly; what cannot be read is no challenge.
 */
record Challenge(String scheme, Map<String, String> params) {
    Challenge {
        params = Map.copyOf(params);
    }

    /** The challenge to answer among a response's headers: Bearer before Basic; empty if none can be read. */
    static Optional<Challenge> pick(List<String> headers) {
        Optional<Challenge> basic = Optional.empty();
        for (String h : headers) {
            Optional<Challenge> c = parse(h);
            if (c.isPresent() && c.get().scheme().equals("bearer")) {
                return c;
            }
            if (c.isPresent() && c.get().scheme().equals("basic") && basic.isEmpty()) {
                basic = c;
            }
        }
        return basic;
    }

    /** Parses the first challenge of a header value; the scheme is lowercased, parameter names too. */
    static Optional<Challenge> parse(String header) {
        if (header == null || header.length() > 8192) {
            return Optional.empty();
        }
        int i = 0, n = header.length();
        while (i < n && header.charAt(i) == ' ') {
            i++;
        }
        int start = i;
        while (i < n && isToken(header.charAt(i))) {
            i++;
        }
        if (i == start) {
            return Optional.empty();
        }
        String scheme = header.substring(start, i).toLowerCase(Locale.ROOT);
        Map<String, String> params = new LinkedHashMap<>();
        while (i < n) {
            while (i < n && (header.charAt(i) == ' ' || header.charAt(i) == ',')) {
                i++;
            }
            int ks = i;
            while (i < n && isToken(header.charAt(i))) {
                i++;
            }
            if (i == ks) {
                break;
            }
            String key = header.substring(ks, i).toLowerCase(Locale.ROOT);
            while (i < n && header.charAt(i) == ' ') {
                i++;
            }
            if (i >= n || header.charAt(i) != '=') {
                break; // the next challenge's scheme: only the first is read
            }
            i++;
            while (i < n && header.charAt(i) == ' ') {
                i++;
            }
            StringBuilder v = new StringBuilder();
            if (i < n && header.charAt(i) == '"') {
                i++;
                boolean closed = false;
                while (i < n) {
                    char c = header.charAt(i++);
                    if (c == '\\' && i < n) {
                        v.append(header.charAt(i++));
                    } else if (c == '"') {
                        closed = true;
                        break;
                    } else {
                        v.append(c);
                    }
                }
                if (!closed) {
                    return Optional.empty();
                }
            } else {
                while (i < n && isToken(header.charAt(i))) {
                    v.append(header.charAt(i++));
                }
            }
            params.put(key, v.toString());
        }
        return Optional.of(new Challenge(scheme, params));
    }

    private static boolean isToken(char c) {
        return c > 0x20 && c < 0x7f && "()<>@,;:\\\"/[]?={} ".indexOf(c) < 0;
    }
}
