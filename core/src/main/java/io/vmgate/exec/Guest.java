package io.vmgate.exec;

import java.io.IOException;
import java.util.concurrent.CompletableFuture;

/** A machine that runs commands: what a front end needs of a sandbox. */
public interface Guest extends AutoCloseable {

    /** A short name for logs ({@code ssh-3fa2c1d0}). */
    String id();

    /**
     * Starts a command and returns at once. Throws when the guest cannot start it (a
     * {@link GuestGoneException} if the guest is gone); a program that does not exist still starts
     * and exits 127, as in a shell.
     */
    Execution exec(Command command) throws IOException;

    /** Completes with the reason, in words for a user, if the guest stops without being closed. */
    CompletableFuture<String> lost();

    /**
     * One line for the user this guest was started for, about how it came to be (their saved
     * machine expired or did not resume, so this one is fresh); empty when there is nothing to say.
     * A front end shows it once, before the first command's output.
     */
    default String notice() {
        return "";
    }

    /** What a user or operator needs to understand a guest that died (console tails); may be empty. */
    default String diagnostics() {
        return "";
    }

    /** Tears the guest down; idempotent, never throws, returns when nothing of it is left. */
    @Override
    void close();
}
