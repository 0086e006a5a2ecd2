package io.vmgate.ssh;

/** A session cannot go ahead; the message is shown to the user as is (on stderr, exit 255). */
final class Refusal extends Exception {
    Refusal(String message) {
        super(message, null, false, false);
    }
}
