package io.vmgate.agent;

/**
 * Decides what happens to the connections a guest asks for through the agent's egress proxy
 * (see {@link AgentClient#serveEgress}). {@link #open} runs on the agent's reader thread: it
 * must return at once (resolving names or connecting belongs on a thread of its own), may
 * call {@link GuestTunnel#refuse}, and must answer every tunnel exactly once, eventually.
 */
@FunctionalInterface
public interface TunnelHandler {
    void open(GuestTunnel tunnel);
}
