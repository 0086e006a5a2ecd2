package io.vmgate.ssh;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.PublicKey;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.apache.sshd.common.config.keys.KeyUtils;
import org.apache.sshd.server.auth.AsyncAuthException;
import org.apache.sshd.server.auth.password.PasswordAuthenticator;
import org.apache.sshd.server.auth.pubkey.PublickeyAuthenticator;
import org.apache.sshd.server.session.ServerSession;
import org.slf4j.spi.LoggingEventBuilder;

/**
 * Password and public-key checks, with every failure logged, counted per client address, and
 * answered after a delay that grows for an address that keeps failing (without holding one of
 * MINA's I/O threads: the answer is completed later by the scheduler).
 */
@SuppressWarnings("try") // MDC scopes: try-with-resources for the side effect
final class Auth implements PasswordAuthenticator, PublickeyAuthenticator {
    private final FailureTracker failures;
    private final java.util.concurrent.ScheduledExecutorService scheduler;
    private final String user;                  // null: any user name
    private final byte[] passwordDigest;        // null: no password auth
    private final PublickeyAuthenticator keys;  // null: no key auth

    Auth(FailureTracker failures, java.util.concurrent.ScheduledExecutorService scheduler, String user, byte[] password,
            PublickeyAuthenticator keys) {
        this.failures = failures;
        this.scheduler = scheduler;
        this.user = user;
        this.passwordDigest = password == null ? null : sha256(password);
        this.keys = keys;
    }

    boolean userAllowed(String username) {
        return user == null || MessageDigest.isEqual(sha256(bytes(username)), sha256(bytes(user)));
    }

    @Override
    public boolean authenticate(String username, String password, ServerSession session) {
        Connection conn = Connection.of(session);
        try (var s = conn.scope()) {
            // Both digests are computed whatever the outcome: the time taken says nothing about the password.
            boolean userOk = userAllowed(username);
            boolean passwordOk = passwordDigest != null && password != null
                    && MessageDigest.isEqual(sha256(bytes(password)), passwordDigest);
            if (userOk && passwordOk) {
                conn.lastAuthMethod = "password";
                return true;
            }
            return failed(conn, "password", username, null);
        }
    }

    @Override
    public boolean authenticate(String username, PublicKey key, ServerSession session) {
        Connection conn = Connection.of(session);
        try (var s = conn.scope()) {
            if (keys != null && userAllowed(username) && keys.authenticate(username, key, session)) {
                conn.lastAuthMethod = "publickey";
                return true;
            }
            return failed(conn, "publickey", username, KeyUtils.getFingerPrint(key));
        }
    }

    /** Records a failure; answers at once, or later (asynchronously) once the address is suspicious. */
    private boolean failed(Connection conn, String method, String username, String key) {
        conn.observer.authentication(method, false);
        Duration delay = failures.failed(conn.remoteIp);
        LoggingEventBuilder event = Events.log.atWarn().setMessage("auth_failed").addKeyValue("conn", conn.id)
                .addKeyValue("user", username).addKeyValue("remote", conn.remote).addKeyValue("method", method);
        if (key != null) {
            event.addKeyValue("key", key);
        }
        event.addKeyValue("failures", failures.failures(conn.remoteIp)).addKeyValue("delay_ms", delay.toMillis()).log();
        if (delay.isZero()) {
            return false;
        }
        AsyncAuthException later = new AsyncAuthException();
        scheduler.schedule(() -> later.setAuthed(false), delay.toMillis(), TimeUnit.MILLISECONDS);
        throw later;
    }

    private static byte[] bytes(String s) {
        return s == null ? new byte[0] : s.getBytes(StandardCharsets.UTF_8);
    }

    static byte[] sha256(byte[] b) {
        try {
            return MessageDigest.getInstance("SHA-256").digest(b);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
