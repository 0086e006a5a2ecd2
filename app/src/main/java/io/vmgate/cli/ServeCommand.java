package io.vmgate.cli;

import io.vmgate.ssh.Durations;
import io.vmgate.ssh.ServerConfig;
import io.vmgate.ssh.VmgateSshServer;
import io.vmgate.vm.qemu.Snapshots;
import io.vmgate.vm.VmException;
import io.vmgate.vm.VmLauncher;
import io.vmgate.vm.WarmPool;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
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

    @Option(names = "--log-format", paramLabel = "text|json", defaultValue = "text", description = "Log format (default: ${DEFAULT-VALUE}).")
    Logging.Format logFormat;

    @Option(names = "--log-level", paramLabel = "LEVEL", defaultValue = "info", description = "Log level (default: ${DEFAULT-VALUE}).")
    String logLevel;

    @Override
    public Integer call() throws Exception {
        Logging.configure(logFormat, logLevel);
        // HOST, HOST:PORT, [V6]:PORT (a bare IPv6 address has several colons and no port).
        var m = java.util.regex.Pattern.compile("\\[(.+)]:(\\d+)|([^:]+):(\\d+)|\\[?([^\\]]+)]?").matcher(listen.strip());
        if (!m.matches()) {
            throw new picocli.CommandLine.ParameterException(new picocli.CommandLine(this), "--listen wants HOST[:PORT], not '" + listen + "'");
        }
        String host = m.group(1) != null ? m.group(1) : m.group(3) != null ? m.group(3) : m.group(5);
        String portText = m.group(2) != null ? m.group(2) : m.group(4);
        int port = portText != null ? Integer.parseInt(portText) : ServerConfig.DEFAULT_PORT;
        VmLauncher launcher = vmOptions.launcher(true);
        if (launcher instanceof Snapshots snapshots && pool == 0) {
            // Build the template now, not when the first user is waiting for it.
            Thread.ofVirtual().name("template-warm").start(() -> {
                try {
                    snapshots.ensureTemplate();
                } catch (VmException e) {
                    log.warn("snapshot_warm_failed reason=\"{}\"", e.getMessage().lines().findFirst().orElse(""));
                }
            });
        }
        WarmPool warmPool = pool > 0 ? new WarmPool(launcher, pool, maxSessions, vmOptions.memoryMib) : null;
        ServerConfig cfg = ServerConfig.builder(warmPool != null ? warmPool : launcher, hostKey != null ? hostKey : defaultHostKey())
                .listenHost(host).port(port)
                .authorizedKeys(authorizedKeys).user(user).passwordFile(passwordFile)
                .allowPasswordless(allowPasswordless)
                // QemuVm and WarmPool hand out VMs already configured (clock, hostname, entropy):
                // a second CONFIGURE here would only add a round trip before the first prompt byte.
                .guestHostname(null)
                .envAllowlist(envAllow).maxSessions(maxSessions).maxChannelsPerConnection(maxChannels)
                .apply(this::sessionLimits)
                .startupLimits(startupLimits())
                .build();
        VmgateSshServer server = new VmgateSshServer(cfg);
        try {
            server.start();
        } catch (IllegalArgumentException e) {
            if (warmPool != null) {
                warmPool.close();
            }
            throw e;
        }
        // SIGTERM/SIGINT drain: clients get a message, every VM is destroyed, then exit 0.
        CountDownLatch stopSignal = new CountDownLatch(1);
        Signals.forward(List.of("TERM", "INT", "HUP"), name -> {
            log.info("server_stopping reason=SIG{}", name);
            stopSignal.countDown();
        });
        log.info("server_listening addr={} port={} host_key={} fingerprint={} pool={} snapshots={}", host, server.port(),
                cfg.hostKeyPath(), server.hostKeyFingerprint(), pool, launcher instanceof Snapshots);
        stopSignal.await();
        server.stop();
        if (warmPool != null) {
            warmPool.close();
        }
        log.info("server_stopped");
        return 0;
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

    static Path defaultHostKey() {
        String state = System.getenv("XDG_STATE_HOME");
        Path base = state != null && state.startsWith("/") ? Path.of(state) : Path.of(System.getProperty("user.home"), ".local", "state");
        return base.resolve("vmgate").resolve("ssh_host_ed25519_key");
    }
}
