package io.vmgate.egress;

import java.net.Inet6Address;
import java.net.InetAddress;
import java.net.UnknownHostException;
import java.util.Set;

/**
 * One entry of an egress allowlist, as an operator writes it:
 * <ul>
 * <li>{@code HOST[:PORT]} — exactly that name ({@code deb.debian.org}, {@code api.example.com:8443});</li>
 * <li>{@code *.DOMAIN[:PORT]} — any name below the domain, not the domain itself ({@code *.github.com});</li>
 * <li>{@code IP[:PORT]}, {@code CIDR[:PORT]} — addresses as written ({@code 127.0.0.1:8080},
 *     {@code 10.1.0.0/16}, {@code [2001:db8::/32]:443}; an IPv6 address with a port goes in brackets).</li>
 * </ul>
 * Without a port a rule allows 443 and 80. Names are compared without case and without a
 * trailing dot. An IP or CIDR rule allows exactly what it says, private ranges included: that
 * is how an operator allows a service on the host's loopback.
 */
public sealed interface EgressRule {
    Set<Integer> DEFAULT_PORTS = Set.of(443, 80);

    Set<Integer> ports();

    /** The rule in the form it is written, for messages and logs. */
    @Override
    String toString();

    /** A host name: one exact name. */
    record Name(String name, Set<Integer> ports) implements EgressRule {
        public Name {
            ports = Set.copyOf(ports);
        }

        boolean matches(String host, int port) {
            return ports.contains(port) && name.equals(host);
        }

        @Override
        public String toString() {
            return name + portSuffix(ports);
        }
    }

    /** {@code *.suffix}: every name that ends in {@code .suffix}. */
    record Domain(String suffix, Set<Integer> ports) implements EgressRule {
        public Domain {
            ports = Set.copyOf(ports);
        }

        boolean matches(String host, int port) {
            return ports.contains(port) && host.endsWith("." + suffix);
        }

        @Override
        public String toString() {
            return "*." + suffix + portSuffix(ports);
        }
    }

    /** An address or a network: {@code prefix} leading bits of {@code address}. */
    record Network(InetAddress address, int prefix, Set<Integer> ports) implements EgressRule {
        public Network {
            ports = Set.copyOf(ports);
            int bits = address.getAddress().length * 8;
            if (prefix < 0 || prefix > bits) {
                throw new IllegalArgumentException("prefix /" + prefix + " out of range for " + address.getHostAddress());
            }
        }

        boolean matches(InetAddress a, int port) {
            return ports.contains(port) && AddressRanges.contains(address, prefix, a);
        }

        @Override
        public String toString() {
            boolean v6 = address instanceof Inet6Address;
            int bits = address.getAddress().length * 8;
            String net = address.getHostAddress() + (prefix == bits ? "" : "/" + prefix);
            if (v6 && !ports.equals(DEFAULT_PORTS)) {
                return "[" + net + "]" + portSuffix(ports);
            }
            return net + portSuffix(ports);
        }
    }

    private static String portSuffix(Set<Integer> ports) {
        return ports.equals(DEFAULT_PORTS) ? "" : ":" + ports.iterator().next();
    }

    /** Parses one rule; the exception's message says what is wrong and what is expected. */
    static EgressRule parse(String text) {
        String s = text.strip();
        if (s.isEmpty()) {
            throw new IllegalArgumentException("empty egress rule");
        }
        String hostPart = s;
        String portPart = null;
        if (s.startsWith("[")) {
            int close = s.indexOf(']');
            if (close < 0) {
                throw bad(s, "an IPv6 address in brackets lacks its ']'");
            }
            hostPart = s.substring(1, close);
            String rest = s.substring(close + 1);
            if (!rest.isEmpty()) {
                if (!rest.startsWith(":")) {
                    throw bad(s, "only ':PORT' may follow ']'");
                }
                portPart = rest.substring(1);
            }
        } else if (s.indexOf(':') >= 0 && s.indexOf(':') == s.lastIndexOf(':')) {
            hostPart = s.substring(0, s.indexOf(':'));
            portPart = s.substring(s.indexOf(':') + 1);
        }
        Set<Integer> ports = portPart == null ? DEFAULT_PORTS : Set.of(port(s, portPart));
        int slash = hostPart.indexOf('/');
        if (slash >= 0) {
            InetAddress a = HostSyntax.literal(hostPart.substring(0, slash));
            if (a == null) {
                throw bad(s, "a network is an IP address, '/' and a prefix length (10.0.0.0/8)");
            }
            String p = hostPart.substring(slash + 1);
            int bits = a.getAddress().length * 8;
            if (!p.matches("\\d{1,3}") || Integer.parseInt(p) > bits) {
                throw bad(s, "the prefix length must be 0 to " + bits);
            }
            int prefix = Integer.parseInt(p);
            byte[] net = network(a.getAddress(), prefix);
            if (!java.util.Arrays.equals(net, a.getAddress())) {
                throw bad(s, "host bits are set below the prefix (did you mean " + hostAddress(net) + "/" + prefix + "?)");
            }
            return new Network(a, prefix, ports);
        }
        InetAddress a = HostSyntax.literal(hostPart);
        if (a != null) {
            return new Network(a, a.getAddress().length * 8, ports);
        }
        if (hostPart.indexOf(':') >= 0) {
            throw bad(s, "not an IPv6 address (with a port, write [ADDRESS]:PORT)");
        }
        String name = HostSyntax.normalizeName(hostPart.startsWith("*.") ? hostPart.substring(2) : hostPart);
        if (name == null) {
            throw bad(s, hostPart.contains("*") ? "a wildcard is allowed only as a leading '*.' (*.example.com)"
                    : "not a host name, IP address or network");
        }
        return hostPart.startsWith("*.") ? new Domain(name, ports) : new Name(name, ports);
    }

    private static int port(String rule, String p) {
        if (!p.matches("\\d{1,5}") || Integer.parseInt(p) < 1 || Integer.parseInt(p) > 65535) {
            throw bad(rule, "the port must be a number from 1 to 65535");
        }
        return Integer.parseInt(p);
    }

    private static IllegalArgumentException bad(String rule, String why) {
        return new IllegalArgumentException("bad egress rule '" + rule + "': " + why
                + " (rules are HOST[:PORT], *.DOMAIN[:PORT], IP[:PORT] or CIDR[:PORT])");
    }

    /** The first {@code prefix} bits of an address, the rest zero. */
    private static byte[] network(byte[] b, int prefix) {
        byte[] out = b.clone();
        for (int i = 0; i < out.length; i++) {
            int keep = Math.max(0, Math.min(8, prefix - 8 * i));
            out[i] &= (byte) (0xff << (8 - keep));
        }
        return out;
    }

    private static String hostAddress(byte[] b) {
        try {
            return InetAddress.getByAddress(b).getHostAddress();
        } catch (UnknownHostException e) {
            throw new IllegalStateException(e);
        }
    }
}
