package io.vmgate.e2e;

import java.util.ArrayList;
import java.util.List;

/** What one test started (clients, agents, servers): closed after it, newest first, even when it failed. */
final class Cleanup {
    private final List<AutoCloseable> started = new ArrayList<>();

    void add(AutoCloseable c) {
        started.add(c);
    }

    /** Closes everything; a close that fails is reported, and the rest are still closed. */
    void closeAll() {
        for (AutoCloseable c : started.reversed()) {
            try {
                c.close();
            } catch (Exception e) {
                System.err.println("cleanup: " + e);
            }
        }
        started.clear();
    }
}
