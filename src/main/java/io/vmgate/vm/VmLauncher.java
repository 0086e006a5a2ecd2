package io.vmgate.vm;

/** Makes VMs: a cold boot, a snapshot restore, or a hand-out from a warm pool. */
@FunctionalInterface
public interface VmLauncher {
    Vm launch(String vmId) throws VmException;
}
