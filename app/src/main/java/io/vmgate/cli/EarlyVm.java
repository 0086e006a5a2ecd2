package io.vmgate.cli;

import io.vmgate.image.Image;
import io.vmgate.image.ImageStore;
import io.vmgate.vm.Vm;
import io.vmgate.vm.VmConfig;
import io.vmgate.vm.VmException;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.TimeUnit;

/**
 * Starts the VM {@code vmgate run} will most likely ask for before picocli has even built its
 * model of the command line (~0.2 s of interpreted reflection on a cold JVM), so that time
 * overlaps the VM's own start instead of adding to it.
 *
 * <p>It is a guess, made only when nothing before {@code --} and nothing in the environment can
 * change the VM's configuration; the parsed options decide. {@link #take} hands the VM over only
 * when the configuration the options produce equals the guessed one; the image is guessed too
 * (the one found current last time), and checked by the normal path while the VM boots, so a
 * stale one is discarded before anything runs in it. A VM nobody takes (help,
 * a usage error) is torn down like any other, also when the JVM is stopped by a signal.
 */
final class EarlyVm {
    /** Options of {@code run} that do not change the VM. Anything else before {@code --}: no guess. */
    private static final Set<String> NEUTRAL_OPTIONS = Set.of("-v", "--verbose", "-t", "--tty", "--no-snapshot");
    /** Variables that reach the configuration the same way on both paths, or not at all. */
    private static final Set<String> NEUTRAL_ENV = Set.of("VMGATE_RUNTIME_DIR", "VMGATE_CACHE", "VMGATE_LAUNCHED_AT",
            "VMGATE_DEBUG");

    private static EarlyVm current;

    private final boolean noSnapshot;
    private final String vmId;
    private final CompletableFuture<VmConfig> config = new CompletableFuture<>();
    private final CompletableFuture<Void> qemuStarted = new CompletableFuture<>();
    private final CompletableFuture<Vm> vm = new CompletableFuture<>();
    private volatile long imageReadyNanos;
    private final Thread closeOnExit = new Thread(this::discard, "early-vm-teardown");
    private volatile Thread launching;

    private EarlyVm(boolean noSnapshot, String vmId) {
        this.noSnapshot = noSnapshot;
        this.vmId = vmId;
    }

    /** From {@code main}, before any parsing: starts the guessed VM on another thread when a guess is safe. */
    static synchronized void startIfPredictable(String[] args, Map<String, String> env) {
        Boolean noSnapshot = guessNoSnapshot(args, env);
        if (noSnapshot == null || current != null) {
            return;
        }
        EarlyVm early = new EarlyVm(noSnapshot, RunCommand.vmId());
        current = early; // before the thread runs: take() must never miss it and start a twin
        early.launching = Thread.ofPlatform().daemon().name("early-vm").unstarted(early::launch);
        Runtime.getRuntime().addShutdownHook(early.closeOnExit); // after: discard() may interrupt it
        early.launching.start();
    }

    /**
     * Waits (at most {@code limit}) until the early VM's QEMU runs. Until then the JVM's cores are
     * best spent on getting QEMU going; once it runs, parsing overlaps its boot. The limit covers
     * a first run that must build the image or the snapshot template.
     */
    static void awaitQemuStarted(Duration limit) {
        EarlyVm early;
        synchronized (EarlyVm.class) {
            early = current;
        }
        if (early != null) {
            try {
                early.qemuStarted.get(limit.toMillis(), TimeUnit.MILLISECONDS);
            } catch (Exception e) {
                // slow or failed: go on; take() reports a failure the way the normal path would
            }
        }
    }

    private void launch() {
        try {
            // The image found current last time, not checked again here: RunCommand's check runs
            // while this VM boots, and take() discards the VM unless the check returns the same image.
            ImageStore store = ImageStore.atDefaultLocation();
            Image image = store.lastResolved().orElse(null);
            VmConfig c = VmConfig.defaults(image != null ? image : store.defaultImage());
            imageReadyNanos = System.nanoTime();
            config.complete(c);
            vm.complete(AbortableBoot.launch(VmOptions.launcher(c, noSnapshot, false), vmId, phase -> {
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
     * Null when no safe guess exists, else whether the guess is a cold boot. Only {@code run}
     * with neutral options before {@code --} and no VM settings in the environment qualifies.
     */
    static Boolean guessNoSnapshot(String[] args, Map<String, String> env) {
        if (args.length == 0 || !args[0].equals("run")) {
            return null;
        }
        for (String name : env.keySet()) {
            if (name.startsWith("VMGATE_") && !NEUTRAL_ENV.contains(name)) {
                return null;
            }
        }
        boolean noSnapshot = false;
        for (String a : List.of(args).subList(1, args.length)) {
            if (a.equals("--")) {
                break;
            }
            if (!NEUTRAL_OPTIONS.contains(a)) {
                return null;
            }
            noSnapshot |= a.equals("--no-snapshot");
        }
        return noSnapshot;
    }

    /** A VM started early, and when its image was found ready (for --verbose). */
    record Taken(Vm vm, long imageReadyNanos) {}

    /**
     * The early VM if it was started for exactly this configuration (waiting for its start to
     * finish; a failed start throws as the normal path would), else null, with it torn down.
     */
    static Taken take(VmConfig wanted, boolean wantedNoSnapshot, String wantedId) throws VmException {
        EarlyVm early;
        synchronized (EarlyVm.class) {
            early = current;
            current = null;
        }
        if (early == null) {
            return null;
        }
        VmConfig guessed;
        try {
            guessed = early.config.join();
        } catch (CompletionException e) {
            removeHook(early);
            return null; // no guess was possible; the normal path reports whatever went wrong
        }
        if (!guessed.equals(wanted) || early.noSnapshot != wantedNoSnapshot || !early.vmId.equals(wantedId)) {
            // The remembered image was stale (an input changed since), or a guess went wrong: the
            // wanted VM has the same id, so the guessed one must be gone first.
            early.discard();
            removeHook(early);
            return null;
        }
        try {
            Vm v = early.vm.join();
            removeHook(early);
            return new Taken(v, early.imageReadyNanos);
        } catch (CompletionException e) {
            removeHook(early);
            if (e.getCause() instanceof VmException ve) {
                throw ve;
            }
            throw new VmException("the VM did not start: " + e.getCause(), e.getCause());
        }
    }

    /** From {@code main} once the command is done: an early VM nobody took is torn down now. */
    static void discardUntaken() {
        EarlyVm early;
        synchronized (EarlyVm.class) {
            early = current;
            current = null;
        }
        if (early != null) {
            early.discard();
            removeHook(early);
        }
    }

    private void discard() {
        Thread t = launching;
        if (t != null && !vm.isDone()) {
            // A boot still in progress (a stale image's, or one a usage error made useless) gives
            // up at its next wait and tears down what it started, rather than finishing first.
            t.interrupt();
        }
        try {
            vm.join().close();
        } catch (CompletionException e) {
            // it never started: nothing to tear down
        }
    }

    private static void removeHook(EarlyVm early) {
        try {
            Runtime.getRuntime().removeShutdownHook(early.closeOnExit);
        } catch (IllegalStateException ignored) {
            // shutting down: the hook runs, and close() is idempotent
        }
    }
}
