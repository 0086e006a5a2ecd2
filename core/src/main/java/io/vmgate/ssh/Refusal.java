package io.vmgate.ssh;

/** A session cannot go ahead; {@link #ending()} says why, and its message is shown to the user as is (on stderr, exit 255). */
final class Refusal extends Exception {
    private final transient Ending ending;

    Refusal(Ending ending) {
        super(ending.message(), null, false, false);
        this.ending = ending;
    }

    Ending ending() {
        return ending;
    }
}
