package io.vmgate.egress;

import java.net.InetAddress;
import java.net.UnknownHostException;
import java.util.List;

/** Turns a host name into addresses, on the host (never in the guest). Tests give their own. */
@FunctionalInterface
public interface Resolver {
    /** The name's addresses, at least one; {@link UnknownHostException} when it has none. */
    List<InetAddress> resolve(String name) throws UnknownHostException;

    /** The host's resolver (the JDK's, with its cache). */
    static Resolver system() {
        return name -> List.of(InetAddress.getAllByName(name));
    }
}
