package io.vmgate.sandbox;

import io.vmgate.image.ImageStore;
import io.vmgate.vm.AbortOnExit;
import io.vmgate.vm.Vm;
import io.vmgate.vm.VmConfig;
import io.vmgate.vm.VmException;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.TimeUnit;

/**
 * Starts a sandbox before its caller knows for sure that it wants it, for command-line front ends
 * that pay JVM start-up on every run ({@code vmgate run}): the guess boots while the command line is
 * parsed (~0.2 s on a cold JVM), instead of after.
 *
 * <p>The image is guessed too: the one found current last time, not checked first. {@link #take}
 * hands the sandbox over only when the caller's {@link Sandboxes} (made from the parsed options,
 * with the image checked meanwhile) would start exactly the same VM; otherwise the early one is torn
 * down before anything runs in it. One nobody takes is torn down by {@link #discard()}, and also
 * when the JVM exits (a signal abandons its boot at once).
 */
public final class EarlyStart {
    private final SandboxOptions options;
    private final String id;
    private final CompletableFuture<VmConfig> config = new CompletableFuture<>();
    private final CompletableFuture<Void> qemuStarted = new CompletableFuture<>();
    private final CompletableFuture<Vm> vm = new CompletableFuture<>();
    private volatile long imageReadyNanos;
    private volatile boolean taken;
    private final Thread closeOnExit = new Thread(this::discardNow, "early-vm-teardown");
    private final Thread launching;

    private EarlyStart(SandboxOptions options, String id) {
        this.options = options;
        this.id = id;
        this.launching = Thread.ofPlatform().daemon().name("early-vm").unstarted(this::launch);
    }

    /** Starts, on a thread of its own, the sandbox {@code options} most likely give, named {@code id}. */
    public static EarlyStart begin(SandboxOptions options, String id) {
        EarlyStart early = new EarlyStart(options, id);
        Runtime.getRuntime().addShutdownHook(early.closeOnExit); // before the start: discardNow() may interrupt it
        early.launching.start();
        return early;
    }

    /**
     * Waits (at most {@code limit}) until the early sandbox's QEMU runs: until then the JVM's cores
     * are best spent on getting it going. The limit covers a first run that builds the image or template.
     */
    public void awaitQemuStarted(Duration limit) {
        try {
            qemuStarted.get(limit.toMillis(), TimeUnit.MILLISECONDS);
        } catch (Exception e) {
            // slow or failed: go on; take() reports a failure the way the normal path would
        }
    }

    /** When the guessed image was found (for timing reports). */
    public long imageReadyNanos() {
        return imageReadyNanos;
    }

    private void launch() {
        try {
            if (options.image() != null || options.rootfs() != null) {
                throw new IllegalArgumentException("an early start guesses the built-in image only");
            }
            ImageStore store = Sandboxes.imageStore(options);
            VmConfig c = Sandboxes.vmConfig(options, store.lastResolved().orElse(null) != null
                    ? store.lastResolved().get() : store.defaultImage());
            imageReadyNanos = System.nanoTime();
            config.complete(c);
            var launcher = new AbortOnExit(Sandboxes.qemuLauncher(c,
                    options.snapshot() ? Sandboxes.snapshots(c, options, false) : null));
            vm.complete(launcher.launch(id, phase -> {
                if (phase.name().equals("qemu_started")) {
                    qemuStarted.complete(null);
                }
            }));
        } catch (Throwable t) {
            config.completeExceptionally(t);
            vm.completeExceptionally(t);
        } finally {
            qemuStarted.complete(null);
        }
    }

    /**
     * The early sandbox, if {@code engine} would start exactly it (same options, same VM
     * configuration, same id), waiting for its start to finish (a failed start throws as the normal
     * path would); else null, with it torn down.
     */
    public Sandbox take(Sandboxes engine, String wantedId) throws SandboxException {
        VmConfig guessed;
        try {
            guessed = config.join();
        } catch (CompletionException e) {
            removeHook();
            return null; // no guess was possible; the normal path reports whatever went wrong
        }
        if (!guessed.equals(engine.config()) || options.snapshot() != engine.options().snapshot() || !id.equals(wantedId)) {
            // The remembered image was stale, or a guess went wrong: the wanted sandbox has the
            // same id, so the guessed one must be gone first.
            discard();
            return null;
        }
        try {
            Vm v = vm.join();
            taken = true;
            removeHook();
            return engine.adopt(v, Sandboxes.Session.DEFAULT, () -> { });
        } catch (CompletionException e) {
            removeHook();
            if (e.getCause() instanceof VmException ve) {
                throw new SandboxException(ve.getMessage(), ve, AbortOnExit.exiting());
            }
            throw new SandboxException("the VM did not start: " + e.getCause(), e.getCause());
        }
    }

    /** Tears the early sandbox down (interrupting its start if it is still booting), unless taken. Idempotent. */
    public void discard() {
        if (taken) {
            return;
        }
        discardNow();
        removeHook();
    }

    private void discardNow() {
        if (!vm.isDone()) {
            // A boot still in progress (a stale image's, or one a usage error made useless) gives
            // up at its next wait and tears down what it started, rather than finishing first.
            launching.interrupt();
        }
        try {
            vm.join().close();
        } catch (CompletionException e) {
            // it never started: nothing to tear down
        }
    }

    private void removeHook() {
        try {
            Runtime.getRuntime().removeShutdownHook(closeOnExit);
        } catch (IllegalStateException ignored) {
            // shutting down: the hook runs, and close() is idempotent
        }
    }
}
