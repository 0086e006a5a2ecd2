package io.vmgate.vm;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;

/**
 * A launcher whose launches a JVM exit abandons at once: while a launch runs, a shutdown hook
 * interrupts the launching thread (the launch then tears down what it had started) and holds the
 * JVM's exit until that is done. So a signal to a one-shot command ({@code vmgate run}) leaves no
 * QEMU or runtime directory behind, and a ~1 s cold boot nobody wants is not finished first.
 */
public final class AbortOnExit implements VmLauncher {
    private static volatile boolean exiting;
    private final VmLauncher inner;

    public AbortOnExit(VmLauncher inner) {
        this.inner = inner;
    }

    @Override
    public Vm launch(String vmId, Consumer<Vm.Phase> progress) throws VmException {
        Thread launching = Thread.currentThread();
        CountDownLatch settled = new CountDownLatch(1);
        Thread abort = new Thread(() -> {
            exiting = true;
            launching.interrupt();
            try {
                settled.await(10, TimeUnit.SECONDS);
            } catch (InterruptedException ignored) {
                // the JVM is going anyway
            }
        }, "vm-launch-abort");
        try {
            Runtime.getRuntime().addShutdownHook(abort);
        } catch (IllegalStateException shuttingDown) {
            exiting = true;
            throw new VmException("the JVM is exiting");
        }
        try {
            return inner.launch(vmId, progress);
        } finally {
            settled.countDown();
            try {
                Runtime.getRuntime().removeShutdownHook(abort);
            } catch (IllegalStateException shuttingDown) {
                // the hook runs, and finds the launch settled
            }
        }
    }

    /** Whether the JVM is exiting during a launch: that launch's failure is on purpose, and no news. */
    public static boolean exiting() {
        return exiting;
    }
}
