package io.vmgate.ssh;

import java.io.IOException;
import java.time.Duration;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.UnaryOperator;
import org.apache.sshd.common.SshConstants;
import org.apache.sshd.common.util.buffer.Buffer;
import org.apache.sshd.server.session.ServerSession;
import org.slf4j.spi.LoggingEventBuilder;

/**
 * Probes a silent client the way OpenSSH's ClientAliveInterval / ClientAliveCountMax do: a
 * {@code keepalive@openssh.com} global request every interval; after too many unanswered, the
 * connection is dropped.
 */
@SuppressWarnings("try") // MDC scopes: try-with-resources for the side effect
final class Keepalive {
    private final ServerSession session;
    private final int countMax;
    private final String sid;
    private final UnaryOperator<LoggingEventBuilder> tagged;
    private final ScheduledFuture<?> task;
    private int missed; // guarded by this

    private Keepalive(ScheduledExecutorService scheduler, ServerSession session, Duration every, int countMax, String sid,
            UnaryOperator<LoggingEventBuilder> tagged) {
        this.session = session;
        this.countMax = countMax;
        this.sid = sid;
        this.tagged = tagged;
        this.task = scheduler.scheduleAtFixedRate(this::probe, every.toMillis(), every.toMillis(), TimeUnit.MILLISECONDS);
    }

    /** Starts probing; null when {@code every} is zero (keepalive off). */
    static Keepalive start(ScheduledExecutorService scheduler, ServerSession session, Duration every, int countMax, String sid,
            UnaryOperator<LoggingEventBuilder> tagged) {
        return every.isZero() ? null : new Keepalive(scheduler, session, every, countMax, sid, tagged);
    }

    void stop() {
        task.cancel(false);
    }

    private void probe() {
        try (var s = Events.scope(sid)) {
            int n;
            synchronized (this) {
                n = ++missed;
            }
            if (n > countMax) {
                tagged.apply(Events.log.atWarn()).setMessage("keepalive_timeout").addKeyValue("unanswered", n - 1).log();
                stop();
                session.close(true);
                return;
            }
            Buffer b = session.createBuffer(SshConstants.SSH_MSG_GLOBAL_REQUEST, 32);
            b.putString("keepalive@openssh.com");
            b.putBoolean(true);
            session.request(b, "keepalive@openssh.com", (cmd, reply) -> {
                synchronized (this) {
                    missed = 0;
                }
            });
        } catch (IOException | RuntimeException e) {
            // the session is closing; its close listener does the rest
        }
    }
}
