package io.vmgate.sandbox;

import java.time.Duration;

/**
 * Hears how sandboxes start, for metrics: set one with {@link Sandboxes.Builder#observer}. Every
 * method has an empty default, runs on the thread that did the work, and must return at once.
 * State (idle sandboxes in the pool, whether the template is ready) is read from
 * {@link Sandboxes} instead.
 */
public interface SandboxObserver {
    /** Observes nothing. */
    SandboxObserver NONE = new SandboxObserver() { };

    /** How a sandbox came to be. */
    enum StartPath {
        /** Handed over from the warm pool (already running). */
        POOLED,
        /** Restored from the snapshot template into a fresh VM. */
        RESTORED,
        /** Booted from the image (no template, or its restore failed). */
        COLD;

        /** The path as metrics and logs write it ({@code pooled}). */
        public String label() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    /** A sandbox started and is ready for commands; {@code took} is the wait of the caller of {@link Sandboxes#start}. */
    default void started(StartPath path, Duration took) { }

    /** A start failed (the caller got a {@link SandboxException}). */
    default void startFailed() { }

    /** A snapshot template was built (the first time, or again after one failed to restore). */
    default void templateBuilt(Duration took) { }

    /** Making the engine removed what {@code count} VMs of crashed processes had left behind. */
    default void reaped(int count) { }
}
