package io.vmgate.egress;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.vmgate.egress.EgressPolicy.Decision;
import java.net.InetAddress;
import java.net.UnknownHostException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

class EgressPolicyTest {

    /** A resolver with fixed answers that records what it was asked. */
    static final class StubResolver implements Resolver {
        final Map<String, List<String>> answers;
        final List<String> asked = new ArrayList<>();

        StubResolver(Map<String, List<String>> answers) {
            this.answers = answers;
        }

        @Override
        public List<InetAddress> resolve(String name) throws UnknownHostException {
            asked.add(name);
            List<String> a = answers.get(name);
            if (a == null) {
                throw new UnknownHostException(name);
            }
            List<InetAddress> out = new ArrayList<>();
            for (String s : a) {
                out.add(HostSyntax.literal(s));
            }
            return out;
        }
    }

    static final StubResolver DNS = new StubResolver(Map.of(
            "deb.debian.org", List.of("151.101.2.132", "2a04:4e42::644"),
            "api.github.com", List.of("140.82.121.6"),
            "rebind.example", List.of("127.0.0.1"),
            "metadata.example", List.of("169.254.169.254"),
            "metadata6.example", List.of("fd00:ec2::254"),
            "mixed.example", List.of("10.0.0.7", "93.184.216.34"),
            "cgnat.example", List.of("100.100.100.200"),
            "mapped.example", List.of("::ffff:192.168.1.1"),
            "nat64.example", List.of("64:ff9b::7f00:1"),
            "localhost", List.of("127.0.0.1", "::1")));

    static Decision decide(String policy, String host, int port) {
        return EgressPolicy.parse(policy).decide(host, port, DNS);
    }

    static String reason(Decision d) {
        assertThat(d).isInstanceOf(Decision.Denied.class);
        return ((Decision.Denied) d).reason();
    }

    @Test
    void rulesParseToTheirKindAndPrintAsWritten() {
        EgressPolicy p = EgressPolicy.parse(" deb.debian.org, *.GitHub.com:8443 ,127.0.0.1:8080,10.1.0.0/16,::1,[2001:db8::/32]:443,Example.ORG.");
        assertThat(p.rules()).hasSize(7);
        assertThat(p.rules().get(0)).isEqualTo(new EgressRule.Name("deb.debian.org", EgressRule.DEFAULT_PORTS));
        assertThat(p.rules().get(1)).isEqualTo(new EgressRule.Domain("github.com", java.util.Set.of(8443)));
        assertThat(p.rules().get(2)).isInstanceOf(EgressRule.Network.class);
        assertThat(((EgressRule.Network) p.rules().get(3)).prefix()).isEqualTo(16);
        assertThat(((EgressRule.Network) p.rules().get(4)).prefix()).isEqualTo(128);
        assertThat(((EgressRule.Network) p.rules().get(5)).prefix()).isEqualTo(32);
        assertThat(p.rules().get(6)).isEqualTo(new EgressRule.Name("example.org", EgressRule.DEFAULT_PORTS));
        assertThat(p.toString()).startsWith("deb.debian.org,*.github.com:8443,127.0.0.1:8080,10.1.0.0/16,");
    }

    @Test
    void badRulesSayWhatIsWrong() {
        assertThat(EgressPolicy.parse("").isEmpty()).isTrue();
        assertThat(EgressPolicy.parse("  ").isEmpty()).isTrue();
        assertThatThrownBy(() -> EgressPolicy.parse("a.com,,b.com")).hasMessageContaining("stray comma");
        assertThatThrownBy(() -> EgressPolicy.parse("a.com:0")).hasMessageContaining("1 to 65535");
        assertThatThrownBy(() -> EgressPolicy.parse("a.com:70000")).hasMessageContaining("1 to 65535");
        assertThatThrownBy(() -> EgressPolicy.parse("a.com:http")).hasMessageContaining("1 to 65535");
        assertThatThrownBy(() -> EgressPolicy.parse("*")).hasMessageContaining("bad egress rule '*'");
        assertThatThrownBy(() -> EgressPolicy.parse("*.*.com")).hasMessageContaining("leading '*.'");
        assertThatThrownBy(() -> EgressPolicy.parse("a*.com")).hasMessageContaining("leading '*.'");
        assertThatThrownBy(() -> EgressPolicy.parse("10.0.0.1/8")).hasMessageContaining("did you mean 10.0.0.0/8");
        assertThatThrownBy(() -> EgressPolicy.parse("10.0.0.0/33")).hasMessageContaining("0 to 32");
        assertThatThrownBy(() -> EgressPolicy.parse("example.com/8")).hasMessageContaining("IP address, '/'");
        assertThatThrownBy(() -> EgressPolicy.parse("2001:db8::1:443x")).hasMessageContaining("not an IPv6 address");
        assertThatThrownBy(() -> EgressPolicy.parse("[::1")).hasMessageContaining("']'");
        assertThatThrownBy(() -> EgressPolicy.parse("http://example.com")).hasMessageContaining("bad egress rule");
        assertThatThrownBy(() -> EgressPolicy.parse("exa mple.com")).hasMessageContaining("not a host name");
        // IPv4 in forms people confuse: refused rather than guessed
        assertThatThrownBy(() -> EgressPolicy.parse("127.1")).hasMessageContaining("bad egress rule");
        assertThatThrownBy(() -> EgressPolicy.parse("010.0.0.1")).hasMessageContaining("bad egress rule");
        assertThatThrownBy(() -> EgressPolicy.parse("0x7f.0.0.1")).hasMessageContaining("bad egress rule");
    }

    @Test
    void namesMatchExactlyAndWildcardsOnlyBelowTheirDomain() {
        assertThat(decide("deb.debian.org", "deb.debian.org", 443)).isInstanceOf(Decision.Allowed.class);
        assertThat(decide("deb.debian.org", "DEB.Debian.org.", 80)).isInstanceOf(Decision.Allowed.class);
        assertThat(reason(decide("deb.debian.org", "deb.debian.org", 8080))).isEqualTo(
                "deb.debian.org:8080 is not in the egress allowlist (allowed: deb.debian.org)");
        assertThat(reason(decide("deb.debian.org", "security.debian.org", 443))).contains("security.debian.org:443 is not");
        assertThat(decide("*.github.com", "api.github.com", 443)).isInstanceOf(Decision.Allowed.class);
        assertThat(reason(decide("*.github.com", "github.com", 443))).contains("github.com:443 is not");
        assertThat(reason(decide("*.github.com", "evilgithub.com", 443))).contains("not in the egress allowlist");
        assertThat(reason(decide("*.github.com:8443", "api.github.com", 443))).contains("not in the egress allowlist");
    }

    @Test
    void anAllowedNameGoesToWhatTheHostResolves() {
        Decision d = decide("deb.debian.org", "deb.debian.org", 443);
        assertThat(((Decision.Allowed) d).addresses()).extracting(InetAddress::getHostAddress)
                .containsExactly("151.101.2.132", "2a04:4e42:0:0:0:0:0:644");
        assertThat(((Decision.Allowed) d).rule()).hasToString("deb.debian.org");
        assertThat(decide("nxdomain.example", "nxdomain.example", 443)).isInstanceOf(Decision.Unresolved.class);
    }

    @Test
    void aNameThatMatchesNoRuleIsNeverResolved() {
        StubResolver dns = new StubResolver(Map.of());
        EgressPolicy p = EgressPolicy.parse("deb.debian.org,10.0.0.0/8");
        for (String host : List.of("secret-data.attacker.example", "a.b", "x.deb.debian.org")) {
            assertThat(p.decide(host, 443, dns)).isInstanceOf(Decision.Denied.class);
        }
        assertThat(dns.asked).isEmpty(); // no DNS query leaves the host for them (no exfiltration)
    }

    @Test
    void aNameLeadingToAPrivateAddressIsRefusedUnlessTheAddressIsAllowedAsWritten() {
        assertThat(reason(decide("rebind.example", "rebind.example", 443))).isEqualTo(
                "rebind.example resolves to 127.0.0.1, a loopback 127.0.0.0/8 address; a name may not lead there "
                        + "(allow the address itself as an IP rule if that is intended)");
        assertThat(((Decision.Denied) decide("rebind.example", "rebind.example", 443)).address())
                .map(InetAddress::getHostAddress).hasValue("127.0.0.1");
        assertThat(reason(decide("localhost:8080", "localhost", 8080))).contains("loopback");
        assertThat(decide("localhost:8080,127.0.0.1:8080", "localhost", 8080)).isInstanceOfSatisfying(Decision.Allowed.class,
                a -> assertThat(a.addresses()).extracting(InetAddress::getHostAddress).containsExactly("127.0.0.1"));
        assertThat(reason(decide("localhost:8080,127.0.0.1:9090", "localhost", 8080))).contains("loopback"); // other port
        assertThat(reason(decide("metadata.example", "metadata.example", 80))).contains("169.254.169.254").contains("link-local");
        assertThat(reason(decide("metadata6.example", "metadata6.example", 80))).contains("unique local");
        assertThat(reason(decide("cgnat.example", "cgnat.example", 80))).contains("CGNAT");
        assertThat(reason(decide("mapped.example", "mapped.example", 80))).contains("192.168.1.1").contains("private");
        assertThat(reason(decide("nat64.example", "nat64.example", 80))).contains("loopback").contains("carried in");
        // only the public address of a name with both is used
        assertThat(((Decision.Allowed) decide("mixed.example", "mixed.example", 443)).addresses())
                .extracting(InetAddress::getHostAddress).containsExactly("93.184.216.34");
    }

    @Test
    void addressesAreAllowedOnlyByAddressRulesAsWritten() {
        assertThat(decide("127.0.0.1:8080", "127.0.0.1", 8080)).isInstanceOf(Decision.Allowed.class);
        assertThat(reason(decide("127.0.0.1:8080", "127.0.0.1", 8081))).isEqualTo(
                "127.0.0.1:8081 is not in the egress allowlist (allowed: 127.0.0.1:8080)");
        assertThat(decide("10.0.0.0/8", "10.200.3.4", 443)).isInstanceOf(Decision.Allowed.class);
        assertThat(decide("10.0.0.0/8", "10.200.3.4", 22)).isInstanceOf(Decision.Denied.class);
        assertThat(decide("0.0.0.0/0:443", "169.254.169.254", 443)).isInstanceOf(Decision.Allowed.class); // as written
        assertThat(decide("[2001:db8::/32]:443", "2001:db8::5", 443)).isInstanceOf(Decision.Allowed.class);
        assertThat(decide("::1", "0:0:0:0:0:0:0:1", 80)).isInstanceOf(Decision.Allowed.class);
        assertThat(decide("127.0.0.1", "::ffff:127.0.0.1", 80)).isInstanceOf(Decision.Allowed.class); // the same address
        // a name rule never allows an address the guest names directly
        assertThat(decide("deb.debian.org", "151.101.2.132", 443)).isInstanceOf(Decision.Denied.class);
    }

    @Test
    void whatTheGuestSendsIsCheckedBeforeAnythingElse() {
        EgressPolicy p = EgressPolicy.parse("*.example.com,10.0.0.0/8");
        StubResolver dns = new StubResolver(Map.of());
        for (String host : List.of("", " ", "a b.example.com", "a\0.example.com", "x.example.com\r\nHost: y", "127.1",
                "0x7f000001", "2130706433", "[::1]", "-.example.com", "a..example.com", "a".repeat(64) + ".example.com",
                ("a." ).repeat(130) + "example.com", "\u00e9.example.com")) {
            assertThat(p.decide(host, 443, dns)).as(host).isInstanceOf(Decision.Denied.class);
        }
        assertThat(reason(p.decide("a\nb", 443, dns))).isEqualTo("'a?b' is not a host name or IP address");
        assertThat(reason(p.decide("x.example.com", 0, dns))).contains("not a TCP port");
        assertThat(reason(p.decide("x.example.com", 65536, dns))).contains("not a TCP port");
        assertThat(dns.asked).isEmpty();
    }

    @Test
    void anEmptyPolicyAllowsNothing() {
        EgressPolicy none = EgressPolicy.none();
        assertThat(reason(none.decide("deb.debian.org", 443, DNS))).contains("(it is empty)");
        assertThat(none.decide("127.0.0.1", 80, DNS)).isInstanceOf(Decision.Denied.class);
    }

    @Test
    void specialRangesAreNamed() {
        assertThat(AddressRanges.special(HostSyntax.literal("8.8.8.8"))).isEmpty();
        assertThat(AddressRanges.special(HostSyntax.literal("2a00:1450:4001::200e"))).isEmpty();
        assertThat(AddressRanges.special(HostSyntax.literal("0.0.0.0"))).hasValueSatisfying(s -> assertThat(s).contains("unspecified"));
        assertThat(AddressRanges.special(HostSyntax.literal("::"))).hasValueSatisfying(s -> assertThat(s).contains("unspecified"));
        assertThat(AddressRanges.special(HostSyntax.literal("172.31.255.255"))).hasValue("private 172.16.0.0/12");
        assertThat(AddressRanges.special(HostSyntax.literal("172.32.0.1"))).isEmpty();
        assertThat(AddressRanges.special(HostSyntax.literal("224.0.0.251"))).hasValueSatisfying(s -> assertThat(s).contains("multicast"));
        assertThat(AddressRanges.special(HostSyntax.literal("ff02::1"))).hasValueSatisfying(s -> assertThat(s).contains("multicast"));
        assertThat(AddressRanges.special(HostSyntax.literal("fe80::1"))).hasValueSatisfying(s -> assertThat(s).contains("link-local"));
        assertThat(AddressRanges.special(HostSyntax.literal("255.255.255.255"))).hasValueSatisfying(s -> assertThat(s).contains("broadcast"));
        assertThat(AddressRanges.special(HostSyntax.literal("2002:c0a8:0101::1"))).hasValueSatisfying(s -> assertThat(s).contains("192.168.1.1"));
        assertThat(AddressRanges.special(HostSyntax.literal("2002:0808:0808::1"))).isEmpty(); // 6to4 of a public address
    }
}
