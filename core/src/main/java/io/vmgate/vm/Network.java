package io.vmgate.vm;

/**
 * The VM's network device. Egress through an allowlist needs none (it goes through the agent,
 * see {@code io.vmgate.egress.Egress}); only {@link #OPEN} adds one.
 */
public enum Network {
    /** No network device at all: the guest has only its loopback. The default. */
    NONE,
    /**
     * Full outbound access through QEMU's user-mode networking (NAT; nothing can connect in):
     * a virtio-net device, address 10.0.2.15/24, gateway 10.0.2.2, resolver 10.0.2.3. The
     * gateway is also the host's loopback: the guest reaches services listening on the host's
     * 127.0.0.1. For operators who want it; never a fallback for anything.
     */
    OPEN
}
