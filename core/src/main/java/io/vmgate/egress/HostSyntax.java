package io.vmgate.egress;

import java.net.InetAddress;
import java.net.UnknownHostException;
import java.util.Locale;
import java.util.regex.Pattern;

/** What counts as a host name and as an IP literal, here and in the guest's requests alike. */
final class HostSyntax {
    private HostSyntax() {}

    private static final Pattern LABEL = Pattern.compile("[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?");

    /**
     * A host name in canonical form (lower case, no trailing dot), or null if it is not one:
     * labels of letters, digits, '-' and '_', at most 253 bytes. Never an IP address.
     */
    static String normalizeName(String host) {
        String h = host.toLowerCase(Locale.ROOT);
        if (h.endsWith(".")) {
            h = h.substring(0, h.length() - 1);
        }
        if (h.isEmpty() || h.length() > 253 || literal(h) != null) {
            return null;
        }
        for (String label : h.split("\\.", -1)) {
            if (!LABEL.matcher(label).matches()) {
                return null;
            }
        }
        // All-numeric last label: an IPv4 address in a form we do not accept (10.1, 0x7f.1, 010.0.0.1).
        String last = h.substring(h.lastIndexOf('.') + 1);
        return last.matches("\\d+|0x[0-9a-f]*") ? null : h;
    }

    /**
     * An IP literal without any lookup, or null: dotted-quad IPv4 (no leading zeros, so that
     * nobody wonders about octal) or IPv6 (letters a-f, digits, ':' and '.', with at least one ':').
     */
    static InetAddress literal(String s) {
        try {
            if (s.matches("(0|[1-9]\\d{0,2})(\\.(0|[1-9]\\d{0,2})){3}")) {
                byte[] b = new byte[4];
                String[] parts = s.split("\\.");
                for (int i = 0; i < 4; i++) {
                    int v = Integer.parseInt(parts[i]);
                    if (v > 255) {
                        return null;
                    }
                    b[i] = (byte) v;
                }
                return InetAddress.getByAddress(b);
            }
            if (s.indexOf(':') >= 0 && s.matches("[0-9A-Fa-f:.]{2,45}")) {
                // In brackets, the JDK parses a literal or fails; it never looks the text up in DNS.
                return InetAddress.getByName("[" + s + "]");
            }
        } catch (UnknownHostException e) {
            return null;
        }
        return null;
    }
}
