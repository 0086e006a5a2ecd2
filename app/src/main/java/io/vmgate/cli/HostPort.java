package io.vmgate.cli;

import java.net.InetAddress;
import java.net.UnknownHostException;
import java.util.Arrays;
import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** An address option: {@code HOST}, {@code HOST:PORT} or {@code [V6]:PORT} (a bare IPv6 address has several colons and no port). */
record HostPort(String host, int port) {
    private static final Pattern FORM = Pattern.compile("\\[(.+)]:(\\d+)|([^:]+):(\\d+)|\\[?([^\\]]+)]?");

    /** Parses {@code text}; {@code defaultPort} when it names no port; empty when it is not an address. */
    static Optional<HostPort> parse(String text, int defaultPort) {
        Matcher m = FORM.matcher(text.strip());
        if (!m.matches()) {
            return Optional.empty();
        }
        String host = m.group(1) != null ? m.group(1) : m.group(3) != null ? m.group(3) : m.group(5);
        String portText = m.group(2) != null ? m.group(2) : m.group(4);
        try {
            int port = portText != null ? Integer.parseInt(portText) : defaultPort;
            return port > 65535 ? Optional.empty() : Optional.of(new HostPort(host, port));
        } catch (NumberFormatException e) {
            return Optional.empty();
        }
    }

    /** True when every address the host names is a loopback address. */
    boolean isLoopback() {
        try {
            InetAddress[] all = InetAddress.getAllByName(host);
            return all.length > 0 && Arrays.stream(all).allMatch(InetAddress::isLoopbackAddress);
        } catch (UnknownHostException e) {
            return false;
        }
    }
}
