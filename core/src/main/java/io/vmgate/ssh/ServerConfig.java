package io.vmgate.ssh;

import io.vmgate.record.Recordings;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Objects;

/**
 * Everything {@link VmgateSshServer} needs. Build one with {@link #builder(GuestSource, Path)};
 * every field but the guest source and the host key path has a default.
 *
 * @param listenHost               address to listen on (a name or literal; loopback decides whether
 *                                 passwordless login may be the silent default)
 * @param port                     TCP port; 0 picks a free one ({@link VmgateSshServer#port()} tells which)
 * @param hostKeyPath              the ed25519 host key, generated (mode 0600) if missing
 * @param authorizedKeys           OpenSSH authorized_keys file for public-key auth, or null
 * @param user                     the only user name accepted (by every auth method), or null for any
 * @param passwordFile             file whose first line is the password, or null for no password auth
 * @param allowPasswordless        accept the "none" method (anyone may log in)
 * @param envAllowlist             env request names passed to the guest; '*' and '?' are globs
 * @param maxSessions              connections with a live VM at once; beyond it a friendly refusal
 * @param maxSessionsPerUser       connections with a live VM at once per authenticated user name; 0 for no limit
 * @param authTimeout              a connection must authenticate within this
 * @param maxAuthAttempts          authentication requests per connection before it is dropped
 * @param maxChannelsPerConnection session channels open at once on one connection
 * @param keepaliveInterval        probe a silent client this often (zero: never), like ClientAliveInterval
 * @param keepaliveCountMax        unanswered probes before the connection is dropped
 * @param idleTimeout              end a session (a connection with a VM) after this long without input or
 *                                 output on any of its channels; zero: never
 * @param maxSessionTime           end a session this long after its VM started; zero: no limit
 * @param timeoutWarning           warn the user this long before either timeout ends the session (less when
 *                                 the timeout itself is not longer: half of it); zero: no warning
 * @param timeoutGrace             when a timeout ends a session: time between SIGTERM to its processes and
 *                                 destroying the VM
 * @param guests                   gives each connection its guest, at its first shell, exec or subsystem
 * @param recordings               where every channel is recorded (asciicast v2), or null for no recording
 * @param observer                 hears connections, authentications, refusals and bytes (for metrics)
 * @param startupLimits            limits on connections that have not authenticated yet (see {@link StartupLimits})
 */
public record ServerConfig(
        String listenHost,
        int port,
        Path hostKeyPath,
        Path authorizedKeys,
        String user,
        Path passwordFile,
        boolean allowPasswordless,
        List<String> envAllowlist,
        int maxSessions,
        int maxSessionsPerUser,
        Duration authTimeout,
        int maxAuthAttempts,
        int maxChannelsPerConnection,
        Duration keepaliveInterval,
        int keepaliveCountMax,
        Duration idleTimeout,
        Duration maxSessionTime,
        Duration timeoutWarning,
        Duration timeoutGrace,
        GuestSource guests,
        Recordings recordings,
        SshObserver observer,
        StartupLimits startupLimits) {

    public static final String DEFAULT_LISTEN_HOST = "127.0.0.1";
    public static final int DEFAULT_PORT = 2222;
    public static final List<String> DEFAULT_ENV_ALLOWLIST = List.of("TERM", "LANG", "LC_*");
    public static final int DEFAULT_MAX_SESSIONS = 16;
    public static final Duration DEFAULT_AUTH_TIMEOUT = Duration.ofSeconds(60);
    public static final int DEFAULT_MAX_AUTH_ATTEMPTS = 6;
    public static final int DEFAULT_MAX_CHANNELS = 10;
    public static final Duration DEFAULT_KEEPALIVE_INTERVAL = Duration.ofSeconds(15);
    public static final int DEFAULT_KEEPALIVE_COUNT_MAX = 4;
    public static final Duration DEFAULT_TIMEOUT_WARNING = Duration.ofSeconds(60);
    public static final Duration DEFAULT_TIMEOUT_GRACE = Duration.ofSeconds(5);

    public ServerConfig {
        listenHost = listenHost == null || listenHost.isBlank() ? DEFAULT_LISTEN_HOST : listenHost.strip();
        Objects.requireNonNull(hostKeyPath, "hostKeyPath");
        Objects.requireNonNull(guests, "guests");
        envAllowlist = List.copyOf(envAllowlist == null ? DEFAULT_ENV_ALLOWLIST : envAllowlist);
        authTimeout = authTimeout == null ? DEFAULT_AUTH_TIMEOUT : authTimeout;
        keepaliveInterval = keepaliveInterval == null ? Duration.ZERO : keepaliveInterval;
        idleTimeout = idleTimeout == null ? Duration.ZERO : idleTimeout;
        maxSessionTime = maxSessionTime == null ? Duration.ZERO : maxSessionTime;
        timeoutWarning = timeoutWarning == null ? DEFAULT_TIMEOUT_WARNING : timeoutWarning;
        timeoutGrace = timeoutGrace == null ? DEFAULT_TIMEOUT_GRACE : timeoutGrace;
        user = user == null || user.isEmpty() ? null : user;
        observer = observer == null ? SshObserver.NONE : observer;
        startupLimits = startupLimits == null ? StartupLimits.DEFAULT : startupLimits;
        require(port >= 0 && port <= 65535, "port must be 0..65535, not " + port);
        require(maxSessions >= 1, "max sessions must be at least 1, not " + maxSessions);
        require(maxSessionsPerUser >= 0, "max sessions per user must be at least 1 (or 0 for no limit), not " + maxSessionsPerUser);
        require(maxAuthAttempts >= 1, "max auth attempts must be at least 1, not " + maxAuthAttempts);
        require(maxChannelsPerConnection >= 1, "max channels per connection must be at least 1, not " + maxChannelsPerConnection);
        require(!authTimeout.isNegative() && !authTimeout.isZero(), "auth timeout must be positive");
        require(!keepaliveInterval.isNegative(), "keepalive interval must not be negative");
        require(keepaliveCountMax >= 1, "keepalive count must be at least 1, not " + keepaliveCountMax);
        require(!idleTimeout.isNegative(), "idle timeout must not be negative");
        require(!maxSessionTime.isNegative(), "max session time must not be negative");
        require(!timeoutWarning.isNegative(), "timeout warning must not be negative");
        require(!timeoutGrace.isNegative(), "timeout grace must not be negative");
        for (String name : envAllowlist) {
            require(name != null && name.matches("[A-Za-z0-9_*?]+"),
                    "env allowlist entries are variable names or globs with * and ?, not '" + name + "'");
        }
    }

    private static void require(boolean ok, String message) {
        if (!ok) {
            throw new IllegalArgumentException(message);
        }
    }

    /**
     * How long before {@code timeout} the user is warned: the configured warning when it is shorter
     * than the timeout, else half the timeout; zero when warnings are off.
     */
    public Duration warningBefore(Duration timeout) {
        if (timeoutWarning.isZero() || timeout.isZero()) {
            return Duration.ZERO;
        }
        return timeoutWarning.compareTo(timeout) < 0 ? timeoutWarning : timeout.dividedBy(2);
    }

    /** True when at least one real authentication method (keys or password) is configured. */
    public boolean hasCredentials() {
        return authorizedKeys != null || passwordFile != null;
    }

    public static Builder builder(GuestSource guests, Path hostKeyPath) {
        return new Builder(guests, hostKeyPath);
    }

    public Builder toBuilder() {
        Builder b = new Builder(guests, hostKeyPath);
        b.listenHost = listenHost;
        b.port = port;
        b.authorizedKeys = authorizedKeys;
        b.user = user;
        b.passwordFile = passwordFile;
        b.allowPasswordless = allowPasswordless;
        b.envAllowlist = envAllowlist;
        b.maxSessions = maxSessions;
        b.maxSessionsPerUser = maxSessionsPerUser;
        b.authTimeout = authTimeout;
        b.maxAuthAttempts = maxAuthAttempts;
        b.maxChannelsPerConnection = maxChannelsPerConnection;
        b.keepaliveInterval = keepaliveInterval;
        b.keepaliveCountMax = keepaliveCountMax;
        b.idleTimeout = idleTimeout;
        b.maxSessionTime = maxSessionTime;
        b.timeoutWarning = timeoutWarning;
        b.timeoutGrace = timeoutGrace;
        b.recordings = recordings;
        b.observer = observer;
        b.startupLimits = startupLimits;
        return b;
    }

    /** Mutable builder with the defaults above. */
    public static final class Builder {
        private GuestSource guests;
        private Path hostKeyPath;
        private String listenHost = DEFAULT_LISTEN_HOST;
        private int port = DEFAULT_PORT;
        private Path authorizedKeys;
        private String user;
        private Path passwordFile;
        private boolean allowPasswordless;
        private List<String> envAllowlist = DEFAULT_ENV_ALLOWLIST;
        private int maxSessions = DEFAULT_MAX_SESSIONS;
        private int maxSessionsPerUser;
        private Duration authTimeout = DEFAULT_AUTH_TIMEOUT;
        private int maxAuthAttempts = DEFAULT_MAX_AUTH_ATTEMPTS;
        private int maxChannelsPerConnection = DEFAULT_MAX_CHANNELS;
        private Duration keepaliveInterval = DEFAULT_KEEPALIVE_INTERVAL;
        private int keepaliveCountMax = DEFAULT_KEEPALIVE_COUNT_MAX;
        private Duration idleTimeout = Duration.ZERO;
        private Duration maxSessionTime = Duration.ZERO;
        private Duration timeoutWarning = DEFAULT_TIMEOUT_WARNING;
        private Duration timeoutGrace = DEFAULT_TIMEOUT_GRACE;
        private Recordings recordings;
        private SshObserver observer = SshObserver.NONE;
        private StartupLimits startupLimits = StartupLimits.DEFAULT;

        private Builder(GuestSource guests, Path hostKeyPath) {
            this.guests = guests;
            this.hostKeyPath = hostKeyPath;
        }

        public Builder guests(GuestSource v) { guests = v; return this; }
        public Builder hostKeyPath(Path v) { hostKeyPath = v; return this; }
        public Builder listenHost(String v) { listenHost = v; return this; }
        public Builder port(int v) { port = v; return this; }
        public Builder authorizedKeys(Path v) { authorizedKeys = v; return this; }
        public Builder user(String v) { user = v; return this; }
        public Builder passwordFile(Path v) { passwordFile = v; return this; }
        public Builder allowPasswordless(boolean v) { allowPasswordless = v; return this; }
        public Builder envAllowlist(List<String> v) { envAllowlist = v; return this; }
        public Builder maxSessions(int v) { maxSessions = v; return this; }
        public Builder maxSessionsPerUser(int v) { maxSessionsPerUser = v; return this; }
        public Builder authTimeout(Duration v) { authTimeout = v; return this; }
        public Builder maxAuthAttempts(int v) { maxAuthAttempts = v; return this; }
        public Builder maxChannelsPerConnection(int v) { maxChannelsPerConnection = v; return this; }
        public Builder keepaliveInterval(Duration v) { keepaliveInterval = v; return this; }
        public Builder keepaliveCountMax(int v) { keepaliveCountMax = v; return this; }
        public Builder idleTimeout(Duration v) { idleTimeout = v; return this; }
        public Builder maxSessionTime(Duration v) { maxSessionTime = v; return this; }
        public Builder timeoutWarning(Duration v) { timeoutWarning = v; return this; }
        public Builder timeoutGrace(Duration v) { timeoutGrace = v; return this; }
        /** Record every channel into this directory (null: no recording). */
        public Builder recordings(Recordings v) { recordings = v; return this; }
        /** Tell this observer what happens (for metrics). */
        public Builder observer(SshObserver v) { observer = v; return this; }
        /** Limits on connections that have not authenticated yet (OpenSSH's MaxStartups and more). */
        public Builder startupLimits(StartupLimits v) { startupLimits = v; return this; }

        /** Lets a caller set a group of options in one step of a chain. */
        public Builder apply(java.util.function.Consumer<Builder> options) {
            options.accept(this);
            return this;
        }

        public ServerConfig build() {
            return new ServerConfig(listenHost, port, hostKeyPath, authorizedKeys, user, passwordFile,
                    allowPasswordless, envAllowlist, maxSessions, maxSessionsPerUser, authTimeout, maxAuthAttempts,
                    maxChannelsPerConnection, keepaliveInterval, keepaliveCountMax, idleTimeout, maxSessionTime,
                    timeoutWarning, timeoutGrace, guests, recordings, observer, startupLimits);
        }
    }
}
