package io.vmgate.metrics;

import io.vmgate.sandbox.Sandboxes;
import io.vmgate.ssh.VmgateSshServer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

/**
 * Whether the server can take a new session now ({@code /readyz}): it accepts connections, the
 * snapshot template is built (a start would not wait for a build), a session slot is free, and
 * the last VM start did not fail in the last {@link #FAILED_START_MEMORY}. Alive ({@code /healthz})
 * is simply answering.
 */
public final class Health {
    /** How long a failed start keeps the server unready (unless a start succeeds first). */
    static final Duration FAILED_START_MEMORY = Duration.ofSeconds(30);
    private final VmgateSshServer server;
    private final Sandboxes engine;
    private final Metrics metrics;

    public Health(VmgateSshServer server, Sandboxes engine, Metrics metrics) {
        this.server = server;
        this.engine = engine;
        this.metrics = metrics;
    }

    /** What keeps the server from being ready, one line each; empty when it is ready. */
    public List<String> notReady() {
        List<String> why = new ArrayList<>();
        if (!server.accepting()) {
            why.add("the SSH server is not accepting connections");
        }
        if (!engine.templateReady()) {
            why.add("the snapshot template is not built yet");
        }
        int max = server.config().maxSessions();
        if (server.liveSessions() >= max) {
            why.add("at capacity: " + max + " of " + max + " sessions");
        }
        if (metrics.lastStartFailed(FAILED_START_MEMORY)) {
            why.add("the last VM start failed, " + FAILED_START_MEMORY.toSeconds() + " s ago at most (see vm_failed in the log)");
        }
        return why;
    }
}
