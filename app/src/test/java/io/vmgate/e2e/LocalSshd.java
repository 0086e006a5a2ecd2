package io.vmgate.e2e;

import io.vmgate.ssh.SshClientHelper;
import java.io.File;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * OpenSSH's own sshd on a free loopback port with a throw-away configuration (its own host key
 * and authorized_keys, no PAM), as the reference vmgate must behave like. Logs in as root, the
 * user the tests run as. {@link #close()} kills it.
 */
final class LocalSshd implements AutoCloseable {
    static final Path SSHD = Path.of("/usr/sbin/sshd");

    private final Process process;
    private final int port;
    private final Path log;

    private LocalSshd(Process process, int port, Path log) {
        this.process = process;
        this.port = port;
        this.log = log;
    }

    /** Starts sshd accepting {@code clientKey}'s public half for root; waits until it accepts TCP connections. */
    static LocalSshd start(Path dir, Path clientKey) throws Exception {
        Files.createDirectories(dir);
        // Privilege separation needs its empty directory (a fresh machine may not have it yet).
        Files.createDirectories(Path.of("/run/sshd"));
        Path hostKey = dir.resolve("sshd_host_key");
        if (!Files.exists(hostKey)) {
            SshClientHelper.Result r = SshClientHelper.run(List.of("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    hostKey.toString()), null, Map.of(), Duration.ofSeconds(30));
            if (r.exitCode() != 0) {
                throw new IOException("ssh-keygen failed: " + r);
            }
        }
        Path authorized = dir.resolve("sshd_authorized_keys");
        Files.copy(Path.of(clientKey + ".pub"), authorized, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        Path cfg = dir.resolve("sshd_config");
        Files.writeString(cfg, String.join("\n",
                "ListenAddress 127.0.0.1",
                "HostKey " + hostKey,
                "AuthorizedKeysFile " + authorized,
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PidFile none",
                "PrintMotd no",
                "PrintLastLog no",
                "Subsystem sftp internal-sftp",
                ""));
        Path log = dir.resolve("sshd.log");
        for (int attempt = 1; ; attempt++) {
            int port = ServeProcess.freePort();
            Process p = new ProcessBuilder(SSHD.toString(), "-D", "-e", "-f", cfg.toString(), "-p", Integer.toString(port))
                    .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                    .redirectErrorStream(true)
                    .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()))
                    .start();
            LocalSshd sshd = new LocalSshd(p, port, log);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (p.isAlive() && System.nanoTime() < deadline && !accepts(port)) {
                Thread.sleep(50);
            }
            if (p.isAlive() && accepts(port)) {
                return sshd;
            }
            sshd.close();
            if (attempt >= 3) {
                throw new IOException("sshd did not start; its log:\n" + Files.readString(log));
            }
        }
    }

    private static boolean accepts(int port) {
        try (Socket s = new Socket()) {
            s.connect(new InetSocketAddress("127.0.0.1", port), 500);
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    int port() {
        return port;
    }

    String log() throws IOException {
        return Files.readString(log);
    }

    @Override
    public void close() {
        process.descendants().forEach(ProcessHandle::destroyForcibly);
        process.destroyForcibly();
        try {
            process.waitFor(10, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
