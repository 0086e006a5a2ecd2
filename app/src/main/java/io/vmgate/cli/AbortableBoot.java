package io.vmgate.cli;

import io.vmgate.vm.Vm;
import io.vmgate.vm.VmException;
import io.vmgate.vm.VmLauncher;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;

/**
 * A VM boot that a signal abandons at once, for {@code run}'s early VM and its normal path alike.
 * While the boot runs, a shutdown hook interrupts the booting thread (the boot then tears down what
 * it had started) and holds the JVM's exit until that is done: no QEMU or runtime directory
 * outlives vmgate, and a ~1 s cold boot nobody wants is not finished first.
 */
final class AbortableBoot {
    private static volatile boolean stopping;

    private AbortableBoot() {}

    static Vm launch(VmLauncher launcher, String vmId, Consumer<Vm.Phase> progress) throws VmException {
        Thread booting = Thread.currentThread();
        CountDownLatch settled = new CountDownLatch(1);
        Thread abort = new Thread(() -> {
            stopping = true;
            booting.interrupt();
            try {
                settled.await(10, TimeUnit.SECONDS);
            } catch (InterruptedException ignored) {
                // the JVM is going anyway
            }
        }, "vm-boot-abort");
        try {
            Runtime.getRuntime().addShutdownHook(abort);
        } catch (IllegalStateException shuttingDown) {
            stopping = true;
            throw new VmException("vmgate is stopping");
        }
        try {
            return launcher.launch(vmId, progress);
        } finally {
            settled.countDown();
            try {
                Runtime.getRuntime().removeShutdownHook(abort);
            } catch (IllegalStateException shuttingDown) {
                // the hook runs, and finds the boot settled
            }
        }
    }

    /** Whether a signal is stopping the JVM during a boot: that boot's failure is on purpose, and no news. */
    static boolean stopping() {
        return stopping;
    }
}
