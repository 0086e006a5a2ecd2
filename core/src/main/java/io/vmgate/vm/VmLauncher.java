package io.vmgate.vm;

import java.util.function.Consumer;

/** Makes VMs: a cold boot, a snapshot restore, or a hand-out from a warm pool. */
@FunctionalInterface
public interface VmLauncher {
    /**
     * Starts a VM and returns it ready for commands. {@code progress} hears each start-up
     * phase ({@code qemu_started}, ...) as it completes, on the launching thread.
     */
    Vm launch(String vmId, Consumer<Vm.Phase> progress) throws VmException;

    default Vm launch(String vmId) throws VmException {
        return launch(vmId, phase -> { });
    }
}
