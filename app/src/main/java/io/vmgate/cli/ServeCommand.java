package io.vmgate.cli;

import io.vmgate.control.ControlServer;
import io.vmgate.metrics.Health;
import io.vmgate.metrics.Metrics;
import io.vmgate.metrics.MetricsServer;
import io.vmgate.record.Recordings;
import io.vmgate.text.Durations;
import io.vmgate.ssh.SessionInfo;
import io.vmgate.ssh.GuestSource;
import io.vmgate.ssh.ServerConfig;
import io.vmgate.ssh.VmgateSshServer;
import io.vmgate.sandbox.SandboxException;
import io.vmgate.sandbox.SandboxOptions;
import io.vmgate.sandbox.Sandboxes;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import picocli.CommandLine.Command;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** {@code vmgate serve}: the SSH server, one fresh VM per connection. */
@Command(name = "serve", mixinStandardHelpOptions = true, description = {
        "Serve SSH; every connection gets its own fresh microVM, destroyed when it closes.",
        "Every option can also come from the environment (--max-sessions -> VMGATE_MAX_SESSIONS)",
        "or from a --config file of NAME = VALUE lines (max-sessions = 8); flag > env > file > default."})
final class ServeCommand implements Callable<Integer> {
    private static final Logger log = LoggerFactory.getLogger(ServeCommand.class);

    @Mixin
    VmOptions vmOptions;

    @Option(names = "--config", paramLabel = "FILE", description = "Config file (Java properties: long option names without --).")
    Path config;

    @Option(names = "--listen", paramLabel = "HOST[:PORT]", defaultValue = "127.0.0.1:2222",
            description = "Address to listen on (default: ${DEFAULT-VALUE}).")
    String listen;

    @Option(names = "--host-key", paramLabel = "FILE", description = "ed25519 host key, generated if missing (default: ~/.local/state/vmgate/ssh_host_ed25519_key).")
    Path hostKey;

    @Option(names = "--authorized-keys", paramLabel = "FILE", description = "OpenSSH authorized_keys file for public-key login.")
    Path authorizedKeys;

    @Option(names = "--user", paramLabel = "NAME", description = "The only user name accepted.")
    String user;

    @Option(names = "--password-file", paramLabel = "FILE", description = "File whose first line is the password for --user.")
    Path passwordFile;

    @Option(names = "--allow-passwordless", description = "Let anyone in without credentials (needed on a non-loopback address without other auth).")
    boolean allowPasswordless;

    @Option(names = "--env-allow", paramLabel = "NAME", split = ",", defaultValue = "TERM,LANG,LC_*",
            description = "Client environment variables passed to the guest; globs allowed (default: ${DEFAULT-VALUE}).")
    List<String> envAllow;

    @Option(names = "--max-sessions", paramLabel = "N", defaultValue = "16",
            description = "Connections with a live VM at once; beyond it new sessions are refused (default: ${DEFAULT-VALUE}).")
    int maxSessions;

    @Option(names = "--max-channels", paramLabel = "N", defaultValue = "10", description = "Channels open at once per connection (default: ${DEFAULT-VALUE}).")
    int maxChannels;

    @Option(names = "--max-sessions-per-user", paramLabel = "N", defaultValue = "0",
            description = "Connections with a live VM at once per user name; beyond it new sessions are refused; 0 is unlimited (default: ${DEFAULT-VALUE}).")
    int maxSessionsPerUser;

    @Option(names = "--idle-timeout", paramLabel = "DURATION", defaultValue = "off", converter = DurationConverter.class,
            description = "End a session after DURATION with no input or output on any of its channels, e.g. 10m (default: ${DEFAULT-VALUE}).")
    Duration idleTimeout;

    @Option(names = "--max-session-time", paramLabel = "DURATION", defaultValue = "off", converter = DurationConverter.class,
            description = "End a session DURATION after its VM started, e.g. 1h (default: ${DEFAULT-VALUE}).")
    Duration maxSessionTime;

    @Option(names = "--timeout-warning", paramLabel = "DURATION", defaultValue = "60s", converter = DurationConverter.class,
            description = "Warn the user this long before a timeout ends the session; 0 for no warning (default: ${DEFAULT-VALUE}).")
    Duration timeoutWarning;

    @Option(names = "--timeout-grace", paramLabel = "DURATION", defaultValue = "5s", converter = DurationConverter.class,
            description = "When a timeout ends a session: time between SIGTERM to its processes and destroying the VM (default: ${DEFAULT-VALUE}).")
    Duration timeoutGrace;

    @Option(names = "--max-startups", paramLabel = "START:RATE:FULL", defaultValue = "10:30:100",
            description = "Unauthenticated connections: from START on, drop new ones with RATE %% chance, rising to all at FULL; N means N:100:N (default: ${DEFAULT-VALUE}).")
    String maxStartups;

    @Option(names = "--per-source-max-startups", paramLabel = "N", defaultValue = "8",
            description = "Unauthenticated connections at once from one address; 0 is unlimited (default: ${DEFAULT-VALUE}).")
    int perSourceMaxStartups;

    @Option(names = "--per-source-rate", paramLabel = "N/DURATION", defaultValue = "300/1m",
            description = "Connections accepted per address per DURATION; 0/1s is unlimited (default: ${DEFAULT-VALUE}).")
    String perSourceRate;

    @Option(names = "--pool", paramLabel = "N", defaultValue = "0",
            description = "Keep N VMs started and idle so a connection only waits for the hand-over (default: ${DEFAULT-VALUE}).")
    int pool;

    @Option(names = "--persist", paramLabel = "none|home|machine", defaultValue = "none",
            description = "What outlives a connection: none; home: each user's home directory is a disk of its own, kept across "
                    + "connections (a user's connections at once share one VM); machine: the home, and the whole VM saved when the "
                    + "user's last connection ends, resumed at their next within --resume-within. Per user in the config file: "
                    + "persist.alice = home (default: ${DEFAULT-VALUE}).")
    String persist;

    @Option(names = "--resume-within", paramLabel = "DURATION", defaultValue = "1h", converter = DurationConverter.class,
            description = "With --persist machine: how long a saved machine is resumed; later, a fresh one (same home) (default: ${DEFAULT-VALUE}).")
    Duration resumeWithin;

    @Option(names = "--max-saved", paramLabel = "N",
            description = "With --persist machine: at most N saved machines; after a save the least recently saved of other users "
                    + "are evicted, logged (default: no limit).")
    Integer maxSaved;

    @Option(names = "--saved-disk-quota", paramLabel = "SIZE",
            description = "With --persist machine: at most SIZE (e.g. 2G) of saved machines, evicted likewise; a machine alone "
                    + "larger is not kept (default: no limit).")
    String savedDiskQuota;

    @Option(names = "--persist-size", paramLabel = "SIZE", defaultValue = "1G",
            description = "Size of each persistent home, e.g. 512M, 4G; sparse on the host, and every home has this size (default: ${DEFAULT-VALUE}).")
    String persistSize;

    @Option(names = "--state-dir", paramLabel = "DIR",
            description = "Where persistent homes are kept (DIR/homes, one 0700 directory per user; default: $XDG_STATE_HOME/vmgate or ~/.local/state/vmgate).")
    Path stateDir;

    @Option(names = "--metrics-listen", paramLabel = "HOST:PORT",
            description = "Serve Prometheus metrics (/metrics), /healthz and /readyz over HTTP here (default: off). Loopback only, unless --metrics-public.")
    String metricsListen;

    @Option(names = "--metrics-public", description = "Allow --metrics-listen on a non-loopback address (anyone who reaches it can read the metrics).")
    boolean metricsPublic;

    @Option(names = "--record", paramLabel = "DIR",
            description = "Record every channel (shell, exec, sftp) as an asciicast v2 file in DIR (mode 0600; DIR made 0700 if missing).")
    Path record;

    @Option(names = "--record-input", description = "With --record: record what users type too (it includes passwords typed at prompts).")
    boolean recordInput;

    @Option(names = "--record-max-size", paramLabel = "SIZE", defaultValue = "0", converter = SizeConverter.class,
            description = "With --record: stop a recording (not the session) at SIZE bytes, e.g. 10M; 0 for no limit (default: ${DEFAULT-VALUE}).")
    long recordMaxSize;

    @Option(names = "--control-socket", paramLabel = "PATH",
            description = "Unix socket for `vmgate sessions` (default: control.sock beside the host key).")
    Path controlSocket;

    @Option(names = "--log-format", paramLabel = "text|json", defaultValue = "text", description = "Log format (default: ${DEFAULT-VALUE}).")
    Logging.Format logFormat;

    @Option(names = "--log-level", paramLabel = "LEVEL", defaultValue = "info", description = "Log level (default: ${DEFAULT-VALUE}).")
    String logLevel;

    @Override
    public Integer call() throws Exception {
        Logging.configure(logFormat, logLevel);
        HostPort ssh = HostPort.parse(listen, ServerConfig.DEFAULT_PORT)
                .orElseThrow(() -> usage("--listen wants HOST[:PORT], not '" + listen + "'"));
        String host = ssh.host();
        int port = ssh.port();
        HostPort metricsAt = metricsAddress();
        Recordings recordings = record == null ? null : Recordings.open(record, recordInput, recordMaxSize);
        Metrics metrics = metricsAt == null ? null : new Metrics().withJvmMetrics();
        Path configFile = config != null ? config : System.getenv("VMGATE_CONFIG") != null ? Path.of(System.getenv("VMGATE_CONFIG")) : null;
        SandboxOptions options = persistence(vmOptions.options());
        Map<String, SandboxOptions.Persist> persistByUser = perUserPersist(configFile);
        if (options.persist() != SandboxOptions.Persist.NONE && pool > 0) {
            throw usage("--pool does not serve --persist " + persist + ": each VM needs its user's home disk when it starts; drop --pool");
        }
        Sandboxes.Builder sandboxes = Sandboxes.builder(options).rebuildTemplatesInBackground()
                .buildProgress(line -> log.atInfo().setMessage("rootfs_build_progress").addKeyValue("step", line).log());
        if (pool > 0) {
            sandboxes.warmPool(pool, maxSessions);
        }
        if (metrics != null) {
            sandboxes.observer(metrics.sandboxes());
        }
        Sandboxes engine = sandboxes.build();
        if (options.persist() != SandboxOptions.Persist.NONE
                || persistByUser.values().stream().anyMatch(p -> p != SandboxOptions.Persist.NONE)) {
            try {
                engine.prepareHomes(); // a state directory that cannot be written stops the server, not every login
            } catch (SandboxException e) {
                engine.close();
                throw e;
            }
            log.atInfo().setMessage("persist_home").addKeyValue("dir", engine.homesDirectory())
                    .addKeyValue("size_mib", options.persistSizeMib())
                    .addKeyValue("default", options.persist().name().toLowerCase(java.util.Locale.ROOT))
                    .addKeyValue("per_user", persistByUser.size()).log();
        }
        if (engine.restoresFromTemplate() && pool == 0) {
            // Build the template now, not when the first user is waiting for it.
            Thread.ofVirtual().name("template-warm").start(() -> {
                try {
                    engine.prepare();
                    if (options.persist() == SandboxOptions.Persist.NONE
                            && persistByUser.values().stream().anyMatch(p -> p != SandboxOptions.Persist.NONE)) {
                        engine.prepareHomeTemplate(); // the sessions of users with persist.USER = home restore from it
                    }
                } catch (SandboxException e) {
                    log.atWarn().setMessage("snapshot_warm_failed")
                            .addKeyValue("reason", e.getMessage().lines().findFirst().orElse("")).log();
                }
            });
        }
        Map<String, List<String>> egressByUser = perUserEgress(configFile);
        GuestSource guests = new GuestSource() {
            @Override
            public io.vmgate.exec.Guest open(String sessionId, String userName) throws java.io.IOException {
                return open(sessionId, userName, false);
            }

            @Override
            public io.vmgate.exec.Guest open(String sessionId, String userName, boolean freshMachine) throws java.io.IOException {
                return engine.start("ssh-" + sessionId, Sandboxes.Session.of(userName).egress(egressByUser.get(userName))
                        .persist(persistByUser.get(userName)).freshMachine(freshMachine));
            }
        };
        ServerConfig cfg = ServerConfig.builder(guests, hostKey != null ? hostKey : defaultHostKey())
                .listenHost(host).port(port)
                .authorizedKeys(authorizedKeys).user(user).passwordFile(passwordFile)
                .allowPasswordless(allowPasswordless)
                .envAllowlist(envAllow).maxSessions(maxSessions).maxChannelsPerConnection(maxChannels)
                .apply(this::sessionLimits)
                .recordings(recordings)
                .observer(metrics != null ? metrics.ssh() : null)
                .startupLimits(startupLimits())
                .build();
        VmgateSshServer server = new VmgateSshServer(cfg);
        Path socket = controlSocket != null ? controlSocket : cfg.hostKeyPath().toAbsolutePath().resolveSibling("control.sock");
        ControlServer control = null;
        MetricsServer metricsServer = null;
        try {
            server.start();
            // After the SSH checks (a refused configuration leaves nothing); a second server on this state directory stops here.
            control = ControlServer.start(socket, new ControlServer.Operations() {
                @Override
                public List<SessionInfo> sessions() {
                    return server.sessions();
                }

                @Override
                public boolean kill(String id, String reason) {
                    return server.kill(id, reason);
                }

                @Override
                public List<ControlServer.Home> homes() throws java.io.IOException {
                    return engine.homes().stream().map(h -> new ControlServer.Home(h.directory(), h.user(), h.sizeBytes(),
                            h.usedBytes(), h.modified(), h.inUse(), h.savedBytes(), h.savedAt())).toList();
                }

                @Override
                public ControlServer.MachineRemoval discardMachine(String user) throws java.io.IOException {
                    if (options.persist() != SandboxOptions.Persist.MACHINE
                            && !persistByUser.containsValue(SandboxOptions.Persist.MACHINE)) {
                        return ControlServer.MachineRemoval.NOT_SAVING;
                    }
                    return switch (engine.discardSavedMachine(user)) {
                        case REMOVED -> ControlServer.MachineRemoval.REMOVED;
                        case RUNNING -> ControlServer.MachineRemoval.RUNNING;
                        case NONE_SAVED -> ControlServer.MachineRemoval.NONE_SAVED;
                    };
                }
            });
            if (metrics != null) {
                metrics.watch(server, engine);
                Health health = new Health(server, engine, metrics);
                metricsServer = MetricsServer.start(metricsAt.host(), metricsAt.port(), metrics, health::notReady);
                log.atInfo().setMessage("metrics_listening").addKeyValue("addr", metricsAt.host())
                        .addKeyValue("port", metricsServer.port()).addKeyValue("public", metricsPublic).log();
            }
        } catch (IllegalArgumentException | java.io.IOException e) {
            server.stop();
            if (control != null) {
                control.close();
            }
            engine.close();
            throw e;
        }
        if (recordings != null) {
            log.atInfo().setMessage("recording_enabled").addKeyValue("dir", recordings.directory().toString())
                    .addKeyValue("input", recordings.input()).addKeyValue("max_bytes", recordings.cap()).log();
        }
        // SIGTERM/SIGINT drain: clients get a message, every VM is destroyed, then exit 0.
        CountDownLatch stopSignal = new CountDownLatch(1);
        Signals.forward(List.of("TERM", "INT", "HUP"), name -> {
            log.atInfo().setMessage("server_stopping").addKeyValue("reason", "SIG" + name).log();
            stopSignal.countDown();
        });
        log.atInfo().setMessage("server_listening").addKeyValue("addr", host).addKeyValue("port", server.port())
                .addKeyValue("host_key", cfg.hostKeyPath()).addKeyValue("fingerprint", server.hostKeyFingerprint())
                .addKeyValue("pool", pool).addKeyValue("snapshots", engine.restoresFromTemplate()).log();
        stopSignal.await();
        server.stop();
        control.close();
        if (metricsServer != null) {
            metricsServer.close();
        }
        engine.close();
        log.atInfo().setMessage("server_stopped").log();
        return 0;
    }

    /** The metrics address, or null when off; refuses a non-loopback one without --metrics-public. */
    HostPort metricsAddress() {
        if (metricsListen == null || metricsListen.isBlank()) {
            return null;
        }
        HostPort a = HostPort.parse(metricsListen, -1).filter(h -> h.port() >= 0)
                .orElseThrow(() -> usage("--metrics-listen wants HOST:PORT, not '" + metricsListen + "'"));
        if (!metricsPublic && !a.isLoopback()) {
            throw usage("refusing to serve metrics on " + a.host() + ": anyone who can reach it could read them."
                    + " Use a loopback address (127.0.0.1:9100), or add --metrics-public to serve it on purpose");
        }
        return a;
    }

    private picocli.CommandLine.ParameterException usage(String message) {
        return new picocli.CommandLine.ParameterException(new picocli.CommandLine(this), message);
    }

    /** Per-user limit and session timeouts, from the options (flag, env, config file or default). */
    ServerConfig.Builder sessionLimits(ServerConfig.Builder b) {
        return b.maxSessionsPerUser(maxSessionsPerUser).idleTimeout(idleTimeout).maxSessionTime(maxSessionTime)
                .timeoutWarning(timeoutWarning).timeoutGrace(timeoutGrace);
    }

    /** --max-startups, --per-source-max-startups, --per-source-rate; a bad value is a usage error naming it. */
    io.vmgate.ssh.StartupLimits startupLimits() {
        try {
            return io.vmgate.ssh.StartupLimits.DEFAULT.withMaxStartups(maxStartups).withPerSourceMaxStartups(perSourceMaxStartups)
                    .withPerSourceRate(perSourceRate);
        } catch (IllegalArgumentException e) {
            throw new picocli.CommandLine.ParameterException(new picocli.CommandLine(this), e.getMessage());
        }
    }

    /** 30s, 10m, 1h, 500ms, plain seconds, or off. */
    static final class DurationConverter implements ITypeConverter<Duration> {
        @Override
        public Duration convert(String value) {
            try {
                return Durations.parse(value);
            } catch (IllegalArgumentException e) {
                throw new picocli.CommandLine.TypeConversionException(e.getMessage());
            }
        }
    }

    /** 512, 64K, 10M, 1G (powers of 1024). */
    static final class SizeConverter implements ITypeConverter<Long> {
        @Override
        public Long convert(String value) {
            var m = java.util.regex.Pattern.compile("(\\d+)([KkMmGg]?)[Bb]?").matcher(value.strip());
            if (!m.matches()) {
                throw new picocli.CommandLine.TypeConversionException("'" + value + "' is not a size: write 4096, 512K, 10M or 1G");
            }
            int shift = switch (m.group(2).toUpperCase(java.util.Locale.ROOT)) {
                case "K" -> 10;
                case "M" -> 20;
                case "G" -> 30;
                default -> 0;
            };
            try {
                long n = Long.parseLong(m.group(1));
                if (n > (Long.MAX_VALUE >> shift)) {
                    throw new NumberFormatException();
                }
                return n << shift;
            } catch (NumberFormatException e) {
                throw new picocli.CommandLine.TypeConversionException("'" + value + "' is too large");
            }
        }
    }

    /**
     * Per-user egress allowlists from the config file, {@code egress.alice = pypi.org,*.pythonhosted.org}:
     * that user's sessions get these rules instead of {@code --egress} (an empty value: no network).
     */
    static Map<String, List<String>> perUserEgress(Path configFile) throws java.io.IOException {
        Map<String, List<String>> byUser = new java.util.HashMap<>();
        if (configFile == null) {
            return byUser;
        }
        java.util.Properties p = new java.util.Properties();
        try (var r = java.nio.file.Files.newBufferedReader(configFile)) {
            p.load(r);
        }
        for (String key : p.stringPropertyNames()) {
            if (key.startsWith("egress.") && key.length() > "egress.".length()) {
                String user = key.substring("egress.".length());
                List<String> rules = java.util.Arrays.stream(p.getProperty(key).split(",")).map(String::strip).filter(x -> !x.isEmpty()).toList();
                try {
                    Sandboxes.Session.of(user).egress(rules); // checks the rules now, not at the user's first login
                } catch (IllegalArgumentException e) {
                    throw new IllegalArgumentException(configFile + ": " + key + ": " + e.getMessage(), e);
                }
                byUser.put(user, rules);
            }
        }
        return byUser;
    }

    /** The options with --persist, --persist-size and --state-dir; a bad value is a usage error naming it. */
    SandboxOptions persistence(SandboxOptions o) {
        try {
            SandboxOptions.Builder b = o.toBuilder().persist(SandboxOptions.Persist.parse(persist))
                    .persistSizeMib(VmOptions.mib(persistSize, "--persist-size"));
            if (resumeWithin != null && !resumeWithin.isZero()) {
                b.resumeWithin(resumeWithin);
            }
            if (stateDir != null) {
                b.stateDirectory(stateDir);
            }
            if (maxSaved != null) {
                b.maxSaved(maxSaved);
            }
            if (savedDiskQuota != null) {
                b.savedDiskQuotaBytes((long) VmOptions.mib(savedDiskQuota, "--saved-disk-quota") << 20);
            }
            return b.build();
        } catch (IllegalArgumentException e) {
            throw usage("--persist: " + e.getMessage());
        }
    }

    /**
     * Per-user persistence from the config file, {@code persist.alice = home}: that user's sessions
     * keep (or, with {@code none}, do not keep) a home whatever {@code --persist} says.
     */
    static Map<String, SandboxOptions.Persist> perUserPersist(Path configFile) throws java.io.IOException {
        Map<String, SandboxOptions.Persist> byUser = new java.util.HashMap<>();
        if (configFile == null) {
            return byUser;
        }
        java.util.Properties p = new java.util.Properties();
        try (var r = java.nio.file.Files.newBufferedReader(configFile)) {
            p.load(r);
        }
        for (String key : p.stringPropertyNames()) {
            if (key.startsWith("persist.") && key.length() > "persist.".length()) {
                try {
                    byUser.put(key.substring("persist.".length()), SandboxOptions.Persist.parse(p.getProperty(key)));
                } catch (IllegalArgumentException e) {
                    throw new IllegalArgumentException(configFile + ": " + key + ": " + e.getMessage(), e);
                }
            }
        }
        return byUser;
    }

    static Path defaultHostKey() {
        String state = System.getenv("XDG_STATE_HOME");
        Path base = state != null && state.startsWith("/") ? Path.of(state) : Path.of(System.getProperty("user.home"), ".local", "state");
        return base.resolve("vmgate").resolve("ssh_host_ed25519_key");
    }
}
