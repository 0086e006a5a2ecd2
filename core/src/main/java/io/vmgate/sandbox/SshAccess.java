package io.vmgate.sandbox;

import io.vmgate.exec.Command;
import io.vmgate.exec.Execution;
import io.vmgate.exec.Guest;
import io.vmgate.ssh.HostKeys;
import io.vmgate.ssh.ServerConfig;
import io.vmgate.ssh.VmgateSshServer;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.KeyPair;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.Consumer;
import java.util.stream.Stream;
import org.apache.sshd.common.config.keys.PublicKeyEntry;

/**
 * An SSH endpoint for one sandbox ({@link Sandbox#enableSsh()}): vmgate's SSH front door on a free
 * port of 127.0.0.1, accepting only a key pair made for it, every connection landing in that
 * sandbox (which outlives the connections). The client side is written to a private directory
 * (mode 0700): the identity and a known-hosts file that pins this endpoint's host key. Closing
 * stops the server and deletes the directory and every key in it.
 *
 * <pre>{@code
 * try (SshAccess ssh = sandbox.enableSsh()) {
 *     Process p = new ProcessBuilder(ssh.command("uname", "-a")).inheritIO().start();
 *     System.out.println(String.join(" ", ssh.command()));   // for a person to paste
 * }
 * }</pre>
 */
public final class SshAccess implements AutoCloseable {
    /** The user name the endpoint expects (any connection lands in the same sandbox). */
    public static final String USER = "root";
    private static final String HOST = "127.0.0.1";

    private final VmgateSshServer server;
    private final Path dir;
    private final int port;
    private final Consumer<SshAccess> onClose;
    private final AtomicBoolean closed = new AtomicBoolean();

    private SshAccess(VmgateSshServer server, Path dir, Consumer<SshAccess> onClose) {
        this.server = server;
        this.dir = dir;
        this.port = server.port();
        this.onClose = onClose;
    }

    static SshAccess open(Guest sandbox, Consumer<SshAccess> onClose) throws IOException {
        Path dir = Files.createTempDirectory("vmgate-ssh-", PosixFilePermissions.asFileAttribute(
                PosixFilePermissions.fromString("rwx------")));
        VmgateSshServer server = null;
        try {
            KeyPair user = HostKeys.loadOrGenerate(dir.resolve("id_ed25519"), "vmgate sandbox " + sandbox.id());
            Files.writeString(dir.resolve("authorized_keys"), PublicKeyEntry.toString(user.getPublic()) + "\n");
            Guest shared = new SharedGuest(sandbox);
            ServerConfig config = ServerConfig.builder((sessionId, userName) -> shared, dir.resolve("host_ed25519_key"))
                    .listenHost(HOST).port(0).authorizedKeys(dir.resolve("authorized_keys")).user(USER)
                    .envAllowlist(List.of("TERM", "LANG", "LC_*")).build();
            server = new VmgateSshServer(config);
            server.start();
            KeyPair host = HostKeys.loadOrGenerate(config.hostKeyPath());
            Files.writeString(dir.resolve("known_hosts"),
                    "[" + HOST + "]:" + server.port() + " " + PublicKeyEntry.toString(host.getPublic()) + "\n");
            return new SshAccess(server, dir, onClose);
        } catch (IOException | RuntimeException e) {
            if (server != null) {
                server.stop();
            }
            deleteTree(dir);
            throw e;
        }
    }

    public String host() {
        return HOST;
    }

    public int port() {
        return port;
    }

    public String user() {
        return USER;
    }

    /** The private key to log in with (OpenSSH format, mode 0600). */
    public Path identityFile() {
        return dir.resolve("id_ed25519");
    }

    /** A known-hosts file holding exactly this endpoint's host key. */
    public Path knownHostsFile() {
        return dir.resolve("known_hosts");
    }

    /** The host key's SHA256 fingerprint, as {@code ssh-keygen -l} shows it. */
    public String hostKeyFingerprint() {
        return server.hostKeyFingerprint();
    }

    /**
     * An {@code ssh} command line for this endpoint, with {@code remote} as the command to run (none:
     * a shell; add {@code -t} yourself for a terminal). Hardened: no configuration files, only this
     * identity, no agent, the host key pinned (not {@code StrictHostKeyChecking=no}), every kind of
     * forwarding off, no password prompts.
     */
    public List<String> command(String... remote) {
        List<String> argv = new ArrayList<>(List.of("ssh", "-F", "none",
                "-i", identityFile().toString(),
                "-o", "IdentitiesOnly=yes",
                "-o", "IdentityAgent=none",
                "-o", "UserKnownHostsFile=" + knownHostsFile(),
                "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes",
                "-o", "UpdateHostKeys=no",
                "-o", "ClearAllForwardings=yes",
                "-o", "ForwardAgent=no",
                "-o", "ForwardX11=no",
                "-o", "PasswordAuthentication=no",
                "-o", "KbdInteractiveAuthentication=no",
                "-o", "BatchMode=yes",
                "-o", "LogLevel=ERROR",
                "-p", Integer.toString(port),
                USER + "@" + HOST));
        argv.addAll(List.of(remote));
        return List.copyOf(argv);
    }

    /** Stops the endpoint (its connections end; the sandbox lives on) and deletes the key material. */
    @Override
    public void close() {
        if (!closed.compareAndSet(false, true)) {
            return;
        }
        try {
            server.stop();
        } finally {
            deleteTree(dir);
            onClose.accept(this);
        }
    }

    private static void deleteTree(Path p) {
        try (Stream<Path> s = Files.walk(p)) {
            for (Path q : s.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(q);
            }
        } catch (IOException | UncheckedIOException e) {
            // best effort: a temporary directory of our own
        }
    }

    /** The sandbox as every connection of the endpoint sees it: closing a connection does not close it. */
    private record SharedGuest(Guest sandbox) implements Guest {
        @Override
        public String id() {
            return sandbox.id();
        }

        @Override
        public Execution exec(Command command) throws IOException {
            return sandbox.exec(command);
        }

        @Override
        public CompletableFuture<String> lost() {
            return sandbox.lost();
        }

        @Override
        public String diagnostics() {
            return sandbox.diagnostics();
        }

        @Override
        public void close() {
            // the sandbox belongs to its owner, not to one SSH connection
        }
    }
}
