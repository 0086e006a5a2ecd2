package io.vmgate.cli;

import io.vmgate.sandbox.EarlyStart;
import io.vmgate.sandbox.Sandbox;
import io.vmgate.sandbox.SandboxException;
import io.vmgate.sandbox.SandboxOptions;
import io.vmgate.sandbox.Sandboxes;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * When {@code vmgate run} may start its sandbox before picocli has even built its model of the
 * command line (~0.2 s of interpreted reflection on a cold JVM), so that time overlaps the VM's
 * own start instead of adding to it (see {@link EarlyStart}): only when nothing before {@code --}
 * and nothing in the environment can change the sandbox. The parsed options decide whether it is used.
 */
final class EarlyVm {
    /** Options of {@code run} that do not change the sandbox. Anything else before {@code --}: no guess. */
    private static final Set<String> NEUTRAL_OPTIONS = Set.of("-v", "--verbose", "-t", "--tty", "--no-snapshot");
    /** Variables that reach the options the same way on both paths, or not at all. */
    private static final Set<String> NEUTRAL_ENV = Set.of("VMGATE_RUNTIME_DIR", "VMGATE_CACHE", "VMGATE_LAUNCHED_AT",
            "VMGATE_DEBUG");

    private static EarlyStart current;

    private EarlyVm() {}

    /** From {@code main}, before any parsing: starts the guessed sandbox when a guess is safe. */
    static synchronized void startIfPredictable(String[] args, Map<String, String> env) {
        Boolean noSnapshot = guessNoSnapshot(args, env);
        if (noSnapshot == null || current != null) {
            return;
        }
        current = EarlyStart.begin(SandboxOptions.builder().snapshot(!noSnapshot).build(), RunCommand.vmId());
    }

    /** Waits (at most {@code limit}) until the early sandbox's QEMU runs, if there is one. */
    static void awaitQemuStarted(Duration limit) {
        EarlyStart early;
        synchronized (EarlyVm.class) {
            early = current;
        }
        if (early != null) {
            early.awaitQemuStarted(limit);
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

    /** A sandbox started early, and when its image was found (for --verbose). */
    record Taken(Sandbox sandbox, long imageReadyNanos) {}

    /** The early sandbox if {@code engine} would start exactly it, else null (with it torn down). */
    static Taken take(Sandboxes engine, String id) throws SandboxException {
        EarlyStart early;
        synchronized (EarlyVm.class) {
            early = current;
            current = null;
        }
        if (early == null) {
            return null;
        }
        Sandbox s = early.take(engine, id);
        return s == null ? null : new Taken(s, early.imageReadyNanos());
    }

    /** From {@code main} once the command is done: an early sandbox nobody took is torn down now. */
    static void discardUntaken() {
        EarlyStart early;
        synchronized (EarlyVm.class) {
            early = current;
            current = null;
        }
        if (early != null) {
            early.discard();
        }
    }
}
