package io.vmgate.vm;

import io.vmgate.agent.AgentClient;
import java.util.List;
import java.util.concurrent.CompletableFuture;

/** A running microVM whose agent has greeted the host. Closing it always tears it down completely. */
public interface Vm extends AutoCloseable {
    /** Every VM is configured (clock, hostname, entropy) with this hostname before it is handed out. */
    String HOSTNAME = "vmgate";

    String id();

    /** The connection to the guest agent, ready for START. */
    AgentClient agent();

    /** Completes when the VM is gone (QEMU exited, for whatever reason). */
    CompletableFuture<Void> exited();

    /** What a user or operator needs to understand a VM that died: console and VMM stderr tails. */
    String diagnostics();

    /** When each start-up phase completed, in order (for --verbose and logs). */
    List<Phase> phases();

    /** Idempotent, never throws, returns only when nothing of the VM is left. */
    @Override
    void close();

    record Phase(String name, long nanoTime) {}
}
