package io.vmgate.egress;

import java.net.InetAddress;
import java.net.UnknownHostException;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * Where a VM's processes may open TCP connections: an allowlist of {@link EgressRule}s, as
 * {@code --egress RULE,...} writes it. An empty list allows nothing at all (no proxy, no
 * network): there is no "allow everything" spelling.
 *
 * <p>{@link #decide} judges one request from the guest: an IP literal must lie in an IP or
 * network rule for its port; a name must match a name or domain rule for its port, and is
 * then resolved on the host; an address the name resolves to is used only if it is public
 * or lies in an IP or network rule (see {@link AddressRanges}). A name that matches no rule
 * is never resolved, so a guest cannot use the host's resolver to send data out.
 */
public record EgressPolicy(List<EgressRule> rules) {

    public EgressPolicy {
        rules = List.copyOf(rules);
    }

    /** Allows nothing. */
    public static EgressPolicy none() {
        return new EgressPolicy(List.of());
    }

    /**
     * Parses a comma-separated list ({@code deb.debian.org,*.github.com,127.0.0.1:8080}); a
     * blank string is {@link #none()}. Throws IllegalArgumentException naming the bad rule.
     */
    public static EgressPolicy parse(String spec) {
        List<EgressRule> rules = new ArrayList<>();
        if (spec.isBlank()) {
            return none();
        }
        for (String part : spec.split(",", -1)) {
            if (part.isBlank()) {
                throw new IllegalArgumentException("empty egress rule in '" + spec + "' (a stray comma?)");
            }
            rules.add(EgressRule.parse(part));
        }
        return new EgressPolicy(rules);
    }

    public boolean isEmpty() {
        return rules.isEmpty();
    }

    /** The outcome of one request: where to connect, or why not. */
    public sealed interface Decision {
        /** Connect to these addresses, in order, until one answers. */
        record Allowed(List<InetAddress> addresses, EgressRule rule) implements Decision {}

        /** Not allowed; the reason is one line for the guest's user. */
        record Denied(String reason, Optional<InetAddress> address) implements Decision {}

        /** Allowed, but the name does not resolve. */
        record Unresolved(String reason) implements Decision {}
    }

    /** Judges a request for {@code host:port} as the guest sent it (unchecked). */
    public Decision decide(String host, int port, Resolver resolver) {
        if (port < 1 || port > 65535) {
            return denied("port " + port + " is not a TCP port");
        }
        InetAddress literal = HostSyntax.literal(host);
        if (literal != null) {
            for (EgressRule r : rules) {
                if (r instanceof EgressRule.Network n && n.matches(literal, port)) {
                    return new Decision.Allowed(List.of(literal), r);
                }
            }
            return new Decision.Denied(destination(literal.getHostAddress(), port) + " is not in the egress allowlist ("
                    + summary() + ")", Optional.of(literal));
        }
        String name = HostSyntax.normalizeName(host);
        if (name == null) {
            return denied("'" + printable(host) + "' is not a host name or IP address");
        }
        EgressRule matched = null;
        for (EgressRule r : rules) {
            if (r instanceof EgressRule.Name n && n.matches(name, port) || r instanceof EgressRule.Domain d && d.matches(name, port)) {
                matched = r;
                break;
            }
        }
        if (matched == null) {
            return denied(destination(name, port) + " is not in the egress allowlist (" + summary() + ")");
        }
        List<InetAddress> resolved;
        try {
            resolved = resolver.resolve(name);
        } catch (UnknownHostException e) {
            return new Decision.Unresolved("cannot resolve " + name + " on the host");
        }
        List<InetAddress> usable = new ArrayList<>();
        String refused = null;
        InetAddress first = null;
        for (InetAddress a : resolved) {
            Optional<String> why = AddressRanges.special(a);
            if (why.isEmpty() || coveredByNetworkRule(a, port)) {
                usable.add(a);
            } else if (refused == null) {
                first = a;
                refused = name + " resolves to " + a.getHostAddress() + ", a " + why.get()
                        + " address; a name may not lead there (allow the address itself as an IP rule if that is intended)";
            }
        }
        if (usable.isEmpty()) {
            return refused != null ? new Decision.Denied(refused, Optional.of(first))
                    : new Decision.Unresolved(name + " has no addresses");
        }
        return new Decision.Allowed(List.copyOf(usable), matched);
    }

    private boolean coveredByNetworkRule(InetAddress a, int port) {
        for (EgressRule r : rules) {
            if (r instanceof EgressRule.Network n && n.matches(a, port)) {
                return true;
            }
        }
        return false;
    }

    /** The rules as written, shortened for a one-line message. */
    String summary() {
        String all = String.join(", ", rules.stream().map(EgressRule::toString).toList());
        return rules.isEmpty() ? "it is empty" : all.length() <= 200 ? "allowed: " + all : "allowed: " + all.substring(0, 200) + "...";
    }

    @Override
    public String toString() {
        return String.join(",", rules.stream().map(EgressRule::toString).toList());
    }

    private static Decision denied(String reason) {
        return new Decision.Denied(reason, Optional.empty());
    }

    private static String destination(String host, int port) {
        return (host.indexOf(':') >= 0 ? "[" + host + "]" : host) + ":" + port;
    }

    /** The guest's text, safe for a log line or a message: printable ASCII, at most 100 characters. */
    static String printable(String s) {
        String t = s.replaceAll("[^\\x21-\\x7e]", "?");
        return t.length() > 100 ? t.substring(0, 100) + "..." : t;
    }
}
