package io.vmgate.sandbox;

/** What became of a request to remove a user's saved machine ({@link Sandboxes#discardSavedMachine}). */
public enum SavedMachineRemoval {
    /** It was there and no VM held the home: gone (the home stays); the user's next session starts a fresh machine. */
    REMOVED,
    /**
     * A VM holds the user's home (their machine runs, resumes, or is being saved as their last
     * connection ends; or another vmgate process has it): nothing changed.
     */
    RUNNING,
    /** The user has no saved machine (nor, perhaps, a home): nothing changed. */
    NONE_SAVED
}
