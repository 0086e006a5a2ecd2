package io.vmgate.cli;

import java.util.List;
import java.util.function.Consumer;
import sun.misc.Signal;

/**
 * Host signals for {@code vmgate run}: the JDK has no public API for them, and
 * jdk.unsupported's sun.misc.Signal is the supported way to catch SIGWINCH and friends.
 */
final class Signals {
    private Signals() {}

    static void onWindowChange(Runnable action) {
        Signal.handle(new Signal("WINCH"), s -> action.run());
    }

    /** Passes these signals on (by name) instead of letting them end the JVM. */
    static void forward(List<String> names, Consumer<String> to) {
        for (String name : names) {
            try {
                Signal.handle(new Signal(name), s -> to.accept(s.getName()));
            } catch (IllegalArgumentException e) {
                // the JVM reserves this one (QUIT with some flags): leave it alone
            }
        }
    }
}
