package io.vmgate.egress;

import java.net.Inet4Address;
import java.net.InetAddress;
import java.net.UnknownHostException;
import java.util.List;
import java.util.Optional;

/**
 * Address ranges a host name must never lead to: a name is the guest's word for where to go,
 * and the name's owner controls its DNS, so a name that resolves to the host's loopback, the
 * operator's private network or the cloud's metadata service (DNS rebinding) is refused.
 * An IP address or network written in the allowlist is the operator's word, and is allowed.
 */
final class AddressRanges {
    private AddressRanges() {}

    private record Range(byte[] network, int prefix, String text, String name) {}

    private static final List<Range> SPECIAL = List.of(
            v4("0.0.0.0", 8, "unspecified ('this network')"),
            v4("10.0.0.0", 8, "private"),
            v4("100.64.0.0", 10, "shared address space (CGNAT)"),
            v4("127.0.0.0", 8, "loopback"),
            v4("169.254.0.0", 16, "link-local (cloud metadata services live here)"),
            v4("172.16.0.0", 12, "private"),
            v4("192.0.0.0", 24, "IETF protocol assignments"),
            v4("192.168.0.0", 16, "private"),
            v4("198.18.0.0", 15, "benchmarking"),
            v4("224.0.0.0", 4, "multicast"),
            v4("240.0.0.0", 4, "reserved or broadcast"),
            v6("::", 128, "unspecified"),
            v6("::1", 128, "loopback"),
            v6("100::", 64, "discard-only"),
            v6("2001::", 32, "Teredo tunnelling"),
            v6("64:ff9b:1::", 48, "local-use IPv4/IPv6 translation"),
            v6("fc00::", 7, "unique local (private; cloud metadata such as fd00:ec2::254 lives here)"),
            v6("fe80::", 10, "link-local"),
            v6("fec0::", 10, "site-local"),
            v6("ff00::", 8, "multicast"));

    /**
     * Why a name may not lead to {@code a} ("loopback 127.0.0.0/8"), or empty if it may. IPv4
     * addresses carried inside IPv6 ones (mapped, NAT64's 64:ff9b::/96, 6to4's 2002::/16) are
     * judged as the IPv4 address they carry.
     */
    static Optional<String> special(InetAddress a) {
        byte[] b = a.getAddress();
        if (b.length == 16) {
            byte[] inner = embeddedV4(b);
            if (inner != null) {
                InetAddress v4 = v4Address(inner);
                return special(v4).map(s -> s + " (" + v4.getHostAddress() + ", carried in " + a.getHostAddress() + ")");
            }
        }
        for (Range r : SPECIAL) {
            if (r.network.length == b.length && contains(r.network, r.prefix, b)) {
                return Optional.of(r.name + " " + r.text);
            }
        }
        return Optional.empty();
    }

    /** True if {@code a} lies in {@code network/prefix} (both of the same family). */
    static boolean contains(InetAddress network, int prefix, InetAddress a) {
        return contains(network.getAddress(), prefix, a.getAddress());
    }

    private static boolean contains(byte[] net, int prefix, byte[] b) {
        if (net.length != b.length) {
            return false;
        }
        for (int i = 0; i < net.length && prefix > 0; i++, prefix -= 8) {
            int mask = prefix >= 8 ? 0xff : (0xff << (8 - prefix)) & 0xff;
            if ((net[i] & mask) != (b[i] & mask)) {
                return false;
            }
        }
        return true;
    }

    private static byte[] embeddedV4(byte[] b) {
        boolean mapped = true, nat64 = true;
        for (int i = 0; i < 10; i++) {
            mapped &= b[i] == 0;
        }
        mapped &= (b[10] & 0xff) == 0xff && (b[11] & 0xff) == 0xff;
        byte[] wkp = {0, 0x64, (byte) 0xff, (byte) 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
        for (int i = 0; i < 12; i++) {
            nat64 &= b[i] == wkp[i];
        }
        if (mapped || nat64) {
            return java.util.Arrays.copyOfRange(b, 12, 16);
        }
        if ((b[0] & 0xff) == 0x20 && b[1] == 0x02) { // 6to4: 2002:AABB:CCDD::/48
            return java.util.Arrays.copyOfRange(b, 2, 6);
        }
        return null;
    }

    private static Range v4(String a, int prefix, String name) {
        return new Range(parse(a).getAddress(), prefix, a + "/" + prefix, name);
    }

    private static Range v6(String a, int prefix, String name) {
        return new Range(parse("[" + a + "]").getAddress(), prefix, a + "/" + prefix, name);
    }

    private static InetAddress parse(String literal) {
        try {
            return InetAddress.getByName(literal); // literals only: no lookup
        } catch (UnknownHostException e) {
            throw new ExceptionInInitializerError(e);
        }
    }

    private static InetAddress v4Address(byte[] b) {
        try {
            return Inet4Address.getByAddress(b);
        } catch (UnknownHostException e) {
            throw new IllegalStateException(e);
        }
    }
}
