package io.vmgate.ssh;

import io.vmgate.text.Durations;
import io.vmgate.exec.Waiting;
import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.UnknownHostException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyPair;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import org.apache.sshd.common.channel.ChannelFactory;
import org.apache.sshd.common.config.keys.AuthorizedKeyEntry;
import org.apache.sshd.common.global.KeepAliveHandler;
import org.apache.sshd.common.keyprovider.KeyPairProvider;
import org.apache.sshd.common.session.Session;
import org.apache.sshd.common.session.SessionListener;
import org.apache.sshd.core.CoreModuleProperties;
import org.apache.sshd.server.ServerBuilder;
import org.apache.sshd.server.SshServer;
import org.apache.sshd.server.auth.AbstractUserAuthFactory;
import org.apache.sshd.server.auth.UserAuth;
import org.apache.sshd.server.auth.UserAuthFactory;
import org.apache.sshd.server.auth.UserAuthNone;
import org.apache.sshd.server.auth.keyboard.DefaultKeyboardInteractiveAuthenticator;
import org.apache.sshd.server.auth.keyboard.UserAuthKeyboardInteractiveFactory;
import org.apache.sshd.server.auth.password.UserAuthPasswordFactory;
import org.apache.sshd.server.auth.pubkey.UserAuthPublicKeyFactory;
import org.apache.sshd.server.config.keys.AuthorizedKeysAuthenticator;
import org.apache.sshd.server.forward.RejectAllForwardingFilter;
import org.apache.sshd.server.global.NoMoreSessionsHandler;
import org.apache.sshd.server.global.OpenSshHostKeysHandler;
import org.apache.sshd.server.session.ServerSession;
import org.apache.sshd.server.session.ServerUserAuthServiceFactory;

/**
 * vmgate's SSH server: every connection that runs something gets its own guest from the
 * configured {@link GuestSource} (a fresh microVM, for {@code vmgate serve}), shared by the
 * connection's channels and closed when the connection ends.
 *
 * <pre>{@code
 * var server = new VmgateSshServer(ServerConfig.builder(guests, hostKey).port(2222).build());
 * server.start();   // binds; throws IllegalArgumentException for an unsafe or broken configuration
 * ...
 * server.stop();    // tells running sessions, closes connections, destroys every VM, waits
 * }</pre>
 *
 * <p>Events (logger {@code io.vmgate.ssh}, MDC {@code sid} = connection id), each
 * {@code name conn=... user=... remote=... key=value...}: {@code server_started},
 * {@code server_stopping}, {@code server_stopped}, {@code auth_passwordless},
 * {@code connection_accepted}, {@code auth_failed} (method, failures, delay_ms),
 * {@code auth_succeeded} (method, ms), {@code channel_opened}, {@code channel_refused},
 * {@code command_started} (kind, pty), {@code vm_starting}, {@code vm_ready} (ms),
 * {@code vm_failed}, {@code capacity_refused}, {@code exit_status} (code or signal, ms),
 * {@code command_aborted}, {@code vm_died} (reason, diagnostics), {@code vm_destroyed}
 * (ms, lifetime_ms), {@code connection_closed} (ms), {@code forwarding_refused} (kind, target),
 * {@code env_refused}, {@code subsystem_refused}, {@code signal_sent}, {@code signal_refused},
 * {@code pty_size_clamped}, {@code request_refused}, {@code keepalive_timeout},
 * {@code session_refused_per_user_limit} (max_sessions_per_user), {@code vm_wait_progress} (channel, after_ms:
 * a PTY user was told the VM is starting), {@code session_idle_warning} / {@code session_time_warning}
 * (idle_ms or max_ms, closes_in_ms, channels), {@code session_idle_timeout} / {@code session_time_limit}
 * (idle_ms or max_ms, processes, grace_ms), {@code session_terminated} (reason, exited_in_grace, ms),
 * {@code connection_error} (error: what made MINA drop the connection, e.g. a packet over the SSH limit).
 */
@SuppressWarnings("try") // MDC scopes: try-with-resources for the side effect
public final class VmgateSshServer implements AutoCloseable {
    private static final Duration DRAIN_TIMEOUT = Duration.ofSeconds(5);
    private static final Duration STOP_TIMEOUT = Duration.ofSeconds(30);

    private final ServerConfig config;
    private final EnvPolicy envPolicy;
    private final FailureTracker failures = new FailureTracker();
    private final SessionSlots slots;
    private final SessionClock.Settings clockSettings;
    private final Set<Connection> connections = ConcurrentHashMap.newKeySet();
    private SshServer sshd;
    private ScheduledExecutorService scheduler;
    private KeyPair hostKey;
    private volatile boolean stopping;

    public VmgateSshServer(ServerConfig config) {
        this.config = config;
        this.envPolicy = new EnvPolicy(config.envAllowlist());
        this.slots = new SessionSlots(config.maxSessions(), config.maxSessionsPerUser());
        this.clockSettings = SessionClock.Settings.of(config);
    }

    public ServerConfig config() {
        return config;
    }

    /**
     * Checks the auth configuration, loads (or generates) the host key and starts listening.
     *
     * @throws IllegalArgumentException when the configuration is unsafe or unusable (for example no
     *                                  authentication on a non-loopback address); the message says what to do
     * @throws IOException              when the host key or the listening socket cannot be set up
     */
    public synchronized void start() throws IOException {
        if (sshd != null) {
            throw new IllegalStateException("already started");
        }
        boolean loopback = isLoopback(config.listenHost());
        boolean passwordless = decidePasswordless(loopback);
        byte[] password = config.passwordFile() == null ? null : readPassword(config.passwordFile());
        AuthorizedKeysAuthenticator keys = config.authorizedKeys() == null ? null : authorizedKeys(config.authorizedKeys());
        hostKey = HostKeys.loadOrGenerate(config.hostKeyPath());

        scheduler = Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, "vmgate-ssh-timer");
            t.setDaemon(true);
            return t;
        });
        Auth auth = new Auth(failures, scheduler, config.user(), password, keys);

        SshServer s = ServerBuilder.builder().build();
        s.setHost(config.listenHost());
        s.setPort(config.port());
        s.setKeyPairProvider(KeyPairProvider.wrap(hostKey));

        // Authentication: exactly what is configured, nothing from the JVM user's ~/.ssh.
        List<UserAuthFactory> methods = new ArrayList<>();
        s.setPublickeyAuthenticator(null);
        s.setPasswordAuthenticator(null);
        s.setKeyboardInteractiveAuthenticator(null);
        s.setHostBasedAuthenticator(null);
        s.setGSSAuthenticator(null);
        if (keys != null) {
            s.setPublickeyAuthenticator(auth);
            methods.add(new UserAuthPublicKeyFactory());
        }
        if (password != null) {
            s.setPasswordAuthenticator(auth);
            s.setKeyboardInteractiveAuthenticator(new DefaultKeyboardInteractiveAuthenticator());
            methods.add(new UserAuthKeyboardInteractiveFactory());
            methods.add(new UserAuthPasswordFactory());
        }
        if (passwordless) {
            methods.add(new NoneFactory(auth));
        }
        s.setUserAuthFactories(methods);
        CoreModuleProperties.MAX_AUTH_REQUESTS.set(s, config.maxAuthAttempts());
        CoreModuleProperties.AUTH_TIMEOUT.set(s, config.authTimeout());

        // Only session channels; every kind of forwarding is refused (and logged).
        List<ChannelFactory> channelTypes = List.of(
                new Channels.SessionFactory(config.maxChannelsPerConnection(), envPolicy, scheduler),
                new Channels.ForwardingFactory(Channels.DIRECT_TCPIP),
                new Channels.ForwardingFactory(Channels.DIRECT_STREAMLOCAL));
        s.setChannelFactories(channelTypes);
        s.setForwardingFilter(RejectAllForwardingFilter.INSTANCE);
        s.setAgentFactory(null);
        s.setGlobalRequestHandlers(List.of(
                KeepAliveHandler.INSTANCE,
                NoMoreSessionsHandler.INSTANCE,
                OpenSshHostKeysHandler.INSTANCE,
                new Channels.ForwardRequestRefuser()));
        s.setShellFactory(null);
        s.setCommandFactory(null);
        s.setSubsystemFactories(List.of());

        // Timeouts: no MINA idle timeout (an idle shell is fine, as with OpenSSH); dead peers are
        // found by our keepalive probes and TCP keepalive. Blocked output waits for the client
        // as long as the connection lives: that is the flow control.
        CoreModuleProperties.IDLE_TIMEOUT.set(s, Duration.ZERO);
        CoreModuleProperties.WAIT_FOR_SPACE_TIMEOUT.set(s, Duration.ofDays(365));
        CoreModuleProperties.SOCKET_KEEPALIVE.set(s, true);
        CoreModuleProperties.TCP_NODELAY.set(s, true);
        CoreModuleProperties.SERVER_IDENTIFICATION.set(s, "vmgate");
        // A backstop only (MINA drops the whole connection past it): our factory refuses channels well before.
        CoreModuleProperties.MAX_CONCURRENT_CHANNELS.set(s, config.maxChannelsPerConnection() + 16);

        s.setServiceFactories(List.of(ServerUserAuthServiceFactory.INSTANCE, new Channels.ConnectionServiceFactory()));
        s.setSessionFactory(new GatedSessionFactory(s, new StartupGate(config.startupLimits()), config.observer()));
        s.addSessionListener(new Listener());
        try {
            s.start();
        } catch (IOException e) {
            scheduler.shutdownNow();
            throw new IOException("cannot listen on " + config.listenHost() + " port " + config.port() + ": " + e.getMessage(), e);
        } catch (RuntimeException e) {
            scheduler.shutdownNow();
            throw e;
        }
        sshd = s;
        StartupLimits startup = config.startupLimits();
        Events.log.atInfo().setMessage("server_started").addKeyValue("listen", config.listenHost()).addKeyValue("port", port())
                .addKeyValue("host_key", config.hostKeyPath()).addKeyValue("fingerprint", HostKeys.fingerprint(hostKey))
                .addKeyValue("auth", String.join(",", methods.stream().map(UserAuthFactory::getName).toList()))
                .addKeyValue("max_sessions", config.maxSessions())
                .addKeyValue("max_sessions_per_user", config.maxSessionsPerUser() == 0 ? "unlimited" : config.maxSessionsPerUser())
                .addKeyValue("idle_timeout", config.idleTimeout().isZero() ? "off" : Durations.format(config.idleTimeout()))
                .addKeyValue("max_session_time", config.maxSessionTime().isZero() ? "off" : Durations.format(config.maxSessionTime()))
                .addKeyValue("max_startups", startup.maxStartups())
                .addKeyValue("per_source_max_startups", startup.perSourceMaxStartups())
                .addKeyValue("per_source_rate", startup.perSourceRate() + "/" + Durations.format(startup.perSourcePeriod())).log();
    }

    private boolean decidePasswordless(boolean loopback) {
        if (config.allowPasswordless()) {
            if (!loopback) {
                Events.log.atWarn().setMessage("auth_passwordless").addKeyValue("listen", config.listenHost())
                        .addKeyValue("note", "--allow-passwordless: anyone who can reach this address gets a VM").log();
            }
            return true;
        }
        if (config.hasCredentials()) {
            return false;
        }
        if (!loopback) {
            throw new IllegalArgumentException("refusing to serve " + config.listenHost()
                    + " without authentication: anyone who can reach it would get a VM. Configure"
                    + " --authorized-keys FILE, or --password-file FILE (with --user NAME), or pass"
                    + " --allow-passwordless to accept anyone on purpose.");
        }
        Events.log.atWarn().setMessage("auth_passwordless").addKeyValue("listen", config.listenHost())
                .addKeyValue("note", "no authentication configured: passwordless login allowed on this loopback address").log();
        return true;
    }

    private static byte[] readPassword(Path file) {
        byte[] all;
        try {
            all = Files.readAllBytes(file);
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot read password file " + file + ": " + e.getMessage(), e);
        }
        int end = 0;
        while (end < all.length && all[end] != '\n') {
            end++;
        }
        if (end > 0 && all[end - 1] == '\r') {
            end--;
        }
        byte[] password = Arrays.copyOf(all, end);
        Arrays.fill(all, (byte) 0);
        if (password.length == 0) {
            throw new IllegalArgumentException("password file " + file + " is empty (the first line is the password)");
        }
        // Passwords arrive as Java strings: normalise through UTF-8 the way the comparison will.
        return new String(password, StandardCharsets.UTF_8).getBytes(StandardCharsets.UTF_8);
    }

    private static AuthorizedKeysAuthenticator authorizedKeys(Path file) {
        int n;
        try {
            n = AuthorizedKeyEntry.readAuthorizedKeys(file).size();
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot read authorized keys file " + file + ": " + e.getMessage(), e);
        }
        if (n == 0) {
            Events.log.atWarn().setMessage("authorized_keys_empty").addKeyValue("file", file).log();
        }
        return new AuthorizedKeysAuthenticator(file);
    }

    static boolean isLoopback(String host) {
        if (host == null || host.isBlank()) {
            return false;
        }
        try {
            InetAddress[] all = InetAddress.getAllByName(host);
            return all.length > 0 && Arrays.stream(all).allMatch(InetAddress::isLoopbackAddress);
        } catch (UnknownHostException e) {
            return false;
        }
    }

    /** The port actually listened on (useful with port 0). */
    public synchronized int port() {
        if (sshd == null) {
            throw new IllegalStateException("not started");
        }
        for (SocketAddress a : sshd.getBoundAddresses()) {
            if (a instanceof InetSocketAddress in) {
                return in.getPort();
            }
        }
        return sshd.getPort();
    }

    /** The host key's SHA256 fingerprint, as {@code ssh-keygen -l} shows it. */
    public synchronized String hostKeyFingerprint() {
        if (hostKey == null) {
            throw new IllegalStateException("not started");
        }
        return HostKeys.fingerprint(hostKey);
    }

    /** Connections currently holding a guest (or opening one). */
    public int liveSessions() {
        return slots.live();
    }

    /** Connections of this user currently holding a guest (or opening one). */
    public int liveSessions(String user) {
        return slots.live(user);
    }

    /** Recent failed authentication attempts from an address (0 after a success or a quiet spell). */
    public int failuresFor(String address) {
        return failures.failures(address);
    }

    /** Whether the server is listening and not stopping (for readiness checks). */
    public synchronized boolean accepting() {
        return sshd != null && !stopping;
    }

    /** The authenticated connections open now, oldest first, as an operator sees them. */
    public List<SessionInfo> sessions() {
        return connections.stream().map(Connection::info).filter(java.util.Objects::nonNull)
                .sorted(java.util.Comparator.comparing(SessionInfo::started)).toList();
    }

    /**
     * Ends the session with connection id {@code id}: its commands end with a line saying the operator
     * ended the session (and {@code reason}, if given) and exit status 255, its guest is destroyed,
     * the connection closed. Logged as {@code session_killed}.
     *
     * @return false when no authenticated session has that id (or it is already ending)
     */
    public boolean kill(String id, String reason) {
        for (Connection c : connections) {
            if (c.id.equals(id) && c.user() != null) {
                try (var s = c.scope()) {
                    return c.kill(reason);
                }
            }
        }
        return false;
    }

    /** Open SSH connections, authenticated or not. */
    public int connections() {
        return connections.size();
    }

    /**
     * Stops: tells every running command that the server is going away (a message on stderr,
     * exit status 255), lets clients take their exit status and leave, closes what is left,
     * and returns once every VM is destroyed.
     */
    public void stop() {
        SshServer s;
        synchronized (this) {
            s = sshd;
            if (s == null || stopping) {
                return;
            }
            stopping = true;
        }
        long t0 = System.nanoTime();
        Events.log.atInfo().setMessage("server_stopping").addKeyValue("connections", connections.size())
                .addKeyValue("live_sessions", liveSessions()).log();
        List<Connection> all = List.copyOf(connections);
        all.forEach(Connection::shutdown);
        // Commands print the message and send exit-status; clients that got it close on their own.
        Waiting.await(allOf(all.stream().map(Connection::commandsDone).toList()), DRAIN_TIMEOUT);
        all.forEach(c -> c.session.close(false));
        Waiting.await(allOf(all.stream().map(Connection::released).toList()), DRAIN_TIMEOUT);
        try {
            s.stop(true);
        } catch (IOException e) {
            Events.log.atWarn().setMessage("server_stop_error").addKeyValue("error", e.toString()).log();
        }
        List<Connection> left = List.copyOf(connections);
        left.forEach(Connection::close);
        if (!Waiting.await(allOf(left.stream().map(Connection::released).toList()), STOP_TIMEOUT)) {
            Events.log.atError().setMessage("server_stop_timeout").addKeyValue("live_sessions", liveSessions()).log();
        }
        scheduler.shutdownNow();
        synchronized (this) {
            sshd = null;
            stopping = false;
        }
        Events.log.atInfo().setMessage("server_stopped").addKeyValue("ms", Events.msSince(t0)).log();
    }

    private static CompletableFuture<Void> allOf(List<CompletableFuture<Void>> futures) {
        return CompletableFuture.allOf(futures.toArray(CompletableFuture[]::new));
    }

    @Override
    public void close() {
        stop();
    }

    /** Attaches a {@link Connection} to each session and logs its life. */
    private final class Listener implements SessionListener {
        @Override
        public void sessionCreated(Session session) {
            Connection c = new Connection((ServerSession) session, slots, config, scheduler, clockSettings, () -> stopping);
            session.setAttribute(Connection.KEY, c);
            connections.add(c);
            config.observer().connectionOpened();
            try (var s = c.scope()) {
                Events.log.atInfo().setMessage("connection_accepted").addKeyValue("conn", c.id).addKeyValue("remote", c.remote).log();
            }
        }

        @Override
        public void sessionEvent(Session session, Event event) {
            if (event == Event.KeyEstablished) {
                Connection c = session.getAttribute(Connection.KEY);
                if (c != null && !c.keysEstablished) {
                    c.keysEstablished = true;
                    config.observer().handshake(true);
                }
            }
            if (event == Event.Authenticated) {
                Connection c = session.getAttribute(Connection.KEY);
                if (c != null) {
                    try (var s = c.scope()) {
                        config.observer().authentication(c.lastAuthMethod, true);
                        failures.succeeded(c.remoteIp);
                        c.authenticated(session.getUsername(), conn -> Keepalive.start(scheduler, conn.session,
                                config.keepaliveInterval(), config.keepaliveCountMax(), conn.id, conn::tagged));
                    }
                }
            }
        }

        /** Transport-level trouble (e.g. a packet over the SSH limit, a bad MAC): MINA drops the connection. */
        @Override
        public void sessionException(Session session, Throwable t) {
            Connection c = session.getAttribute(Connection.KEY);
            if (c != null) {
                try (var s = c.scope()) {
                    c.tagged(Events.log.atInfo()).setMessage("connection_error")
                            .addKeyValue("error", t.getClass().getSimpleName() + ": " + t.getMessage()).log();
                }
            }
        }

        @Override
        public void sessionClosed(Session session) {
            Connection c = session.getAttribute(Connection.KEY);
            if (c != null) {
                try (var s = c.scope()) {
                    c.close();
                }
                if (!c.keysEstablished) {
                    config.observer().handshake(false);
                }
                config.observer().connectionClosed();
                c.released().whenComplete((r, e) -> connections.remove(c));
            }
        }
    }

    /** "none" authentication (passwordless), still limited to the configured user name. */
    private static final class NoneFactory extends AbstractUserAuthFactory {
        private final Auth auth;

        NoneFactory(Auth auth) {
            super(UserAuthNone.NAME);
            this.auth = auth;
        }

        @Override
        public UserAuth createUserAuth(ServerSession session) {
            return new UserAuthNone() {
                @Override
                public Boolean doAuth(org.apache.sshd.common.util.buffer.Buffer buffer, boolean init) {
                    if (auth.userAllowed(getUsername())) {
                        Connection.of(session).lastAuthMethod = "none";
                        return Boolean.TRUE;
                    }
                    Connection c = Connection.of(session);
                    c.observer.authentication("none", false);
                    try (var s = c.scope()) {
                        Events.log.atWarn().setMessage("auth_failed").addKeyValue("conn", c.id).addKeyValue("user", getUsername())
                                .addKeyValue("remote", c.remote).addKeyValue("method", "none")
                                .addKeyValue("reason", "user_not_allowed").log();
                    }
                    return Boolean.FALSE;
                }
            };
        }
    }
}
