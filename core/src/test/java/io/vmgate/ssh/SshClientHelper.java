package io.vmgate.ssh;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

/**
 * Drives the real OpenSSH client tools ({@code ssh}, {@code scp}, {@code sftp}) against a server
 * on 127.0.0.1: no host key checks, no agent, no config files, batch mode, and a timeout on
 * every run. Immutable: each {@code with...} returns a copy. Reusable from the e2e tests.
 *
 * <pre>{@code
 * var ssh = SshClientHelper.forPort(port).withIdentity(key);
 * SshClientHelper.Result r = ssh.ssh("exit 7");          // r.exitCode() == 7
 * r = ssh.withStdin("hi\n".getBytes()).ssh("cat");       // r.out() == "hi\n"
 * }</pre>
 */
public final class SshClientHelper {
    /** How one run ended; {@code timedOut} runs were killed and have exit code -1. */
    public record Result(int exitCode, byte[] stdout, byte[] stderr, boolean timedOut) {
        public String out() {
            return new String(stdout, StandardCharsets.UTF_8);
        }

        public String err() {
            return new String(stderr, StandardCharsets.UTF_8);
        }

        @Override
        public String toString() {
            return "exit " + exitCode + (timedOut ? " (TIMED OUT)" : "") + "\n--- stdout:\n" + abbreviate(out())
                    + "\n--- stderr:\n" + abbreviate(err());
        }

        private static String abbreviate(String s) {
            return s.length() > 4000 ? s.substring(0, 4000) + "... (" + s.length() + " chars)" : s;
        }
    }

    private final String host;
    private final int port;
    private final String user;
    private final Path identity;
    private final List<String> options;
    private final Map<String, String> env;
    private final byte[] stdin;
    private final Duration timeout;
    private final boolean batch;

    private SshClientHelper(String host, int port, String user, Path identity, List<String> options,
            Map<String, String> env, byte[] stdin, Duration timeout, boolean batch) {
        this.host = host;
        this.port = port;
        this.user = user;
        this.identity = identity;
        this.options = List.copyOf(options);
        this.env = Map.copyOf(env);
        this.stdin = stdin;
        this.timeout = timeout;
        this.batch = batch;
    }

    public static SshClientHelper forPort(int port) {
        return new SshClientHelper("127.0.0.1", port, "tester", null, List.of(), Map.of(), null, Duration.ofSeconds(60), true);
    }

    public SshClientHelper withHost(String h) {
        return new SshClientHelper(h, port, user, identity, options, env, stdin, timeout, batch);
    }

    public SshClientHelper withUser(String u) {
        return new SshClientHelper(host, port, u, identity, options, env, stdin, timeout, batch);
    }

    /** Authenticate with this private key (and no other). */
    public SshClientHelper withIdentity(Path key) {
        return new SshClientHelper(host, port, user, key, options, env, stdin, timeout, batch);
    }

    /** Adds {@code -o option} (for example {@code SetEnv=LANG=C}). */
    public SshClientHelper withOption(String option) {
        List<String> o = new ArrayList<>(options);
        o.add(option);
        return new SshClientHelper(host, port, user, identity, o, env, stdin, timeout, batch);
    }

    /** An environment variable for the client process itself. */
    public SshClientHelper withClientEnv(String name, String value) {
        Map<String, String> e = new LinkedHashMap<>(env);
        e.put(name, value);
        return new SshClientHelper(host, port, user, identity, options, e, stdin, timeout, batch);
    }

    /** Bytes fed to the client's stdin (default: /dev/null, as with {@code ssh -n}). */
    public SshClientHelper withStdin(byte[] bytes) {
        return new SshClientHelper(host, port, user, identity, options, env, bytes, timeout, batch);
    }

    public SshClientHelper withTimeout(Duration t) {
        return new SshClientHelper(host, port, user, identity, options, env, stdin, t, batch);
    }

    /**
     * Password authentication: the password is handed to ssh through SSH_ASKPASS (a script in
     * {@code workDir}), batch mode is off and only password methods are tried.
     */
    public SshClientHelper withPassword(String password, Path workDir) throws IOException {
        Path pw = Files.createTempFile(workDir, "pw", ".txt", PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
        Files.writeString(pw, password);
        Path askpass = Files.createTempFile(workDir, "askpass", ".sh", PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
        Files.writeString(askpass, "#!/bin/sh\ncat '" + pw + "'\n");
        SshClientHelper h = new SshClientHelper(host, port, user, identity, options, env, stdin, timeout, false)
                .withClientEnv("SSH_ASKPASS", askpass.toString())
                .withClientEnv("SSH_ASKPASS_REQUIRE", "force")
                .withClientEnv("DISPLAY", ":0")
                .withOption("PreferredAuthentications=password,keyboard-interactive")
                .withOption("NumberOfPasswordPrompts=1")
                .withOption("PubkeyAuthentication=no");
        return h;
    }

    public int port() {
        return port;
    }

    /** {@code user@host}, the destination argument. */
    public String destination() {
        return user + "@" + host;
    }

    /** {@code user@host:path}, for scp. */
    public String remote(String path) {
        return destination() + ":" + path;
    }

    /**
     * The {@code -o} options every tool gets: no host key checks, no agent, no user config. Options
     * added with {@link #withOption} come first, so they win (OpenSSH keeps the first value it sees).
     */
    public List<String> commonOptions() {
        List<String> o = new ArrayList<>(List.of("-F", "/dev/null"));
        for (String opt : options) {
            o.add("-o");
            o.add(opt);
        }
        o.addAll(List.of(
                "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null",
                "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR",
                "-o", "BatchMode=" + (batch ? "yes" : "no"),
                "-o", "ConnectTimeout=20",
                "-o", "IdentityAgent=none",
                "-o", "Port=" + port));
        if (identity != null) {
            o.addAll(List.of("-o", "IdentitiesOnly=yes", "-o", "IdentityFile=" + identity));
        } else {
            o.addAll(List.of("-o", "PubkeyAuthentication=no"));
        }
        return o;
    }

    /** {@code ssh [options] user@host args...}; args before the destination go in {@code sshFlags}. */
    public Result ssh(String... remoteCommand) throws IOException, InterruptedException {
        return sshWithFlags(List.of(), remoteCommand);
    }

    public Result sshWithFlags(List<String> sshFlags, String... remoteCommand) throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>(List.of("ssh"));
        cmd.addAll(commonOptions());
        cmd.addAll(sshFlags);
        cmd.add(destination());
        cmd.addAll(List.of(remoteCommand));
        return run(cmd, stdin, env, timeout);
    }

    /** {@code scp [options] args...}; use {@link #remote(String)} for the remote side. */
    public Result scp(String... args) throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>(List.of("scp", "-q"));
        cmd.addAll(commonOptions());
        cmd.addAll(List.of(args));
        return run(cmd, stdin, env, timeout);
    }

    /** {@code sftp -b -}: runs the batch commands, one per line. */
    public Result sftp(String batchCommands) throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>(List.of("sftp", "-q", "-b", "-"));
        cmd.addAll(commonOptions());
        cmd.add(destination());
        return run(cmd, batchCommands.getBytes(StandardCharsets.UTF_8), env, timeout);
    }

    /**
     * Starts ssh without waiting (for tests that kill the client or run things beside it). Its
     * stdin is a pipe: write to {@link Process#getOutputStream()}, close it for EOF.
     */
    public Process startSsh(List<String> sshFlags, String... remoteCommand) throws IOException {
        List<String> cmd = new ArrayList<>(List.of("ssh"));
        cmd.addAll(commonOptions());
        cmd.addAll(sshFlags);
        cmd.add(destination());
        cmd.addAll(List.of(remoteCommand));
        ProcessBuilder pb = new ProcessBuilder(cmd);
        pb.environment().putAll(env);
        return pb.start();
    }

    /** Runs any command with optional stdin, capturing both outputs; kills it (and its children) on timeout. */
    public static Result run(List<String> cmd, byte[] input, Map<String, String> env, Duration timeout)
            throws IOException, InterruptedException {
        ProcessBuilder pb = new ProcessBuilder(cmd);
        pb.environment().putAll(env);
        if (input == null) {
            pb.redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")));
        }
        Process p = pb.start();
        CompletableFuture<byte[]> out = drain(p.getInputStream());
        CompletableFuture<byte[]> err = drain(p.getErrorStream());
        if (input != null) {
            Thread.ofVirtual().start(() -> {
                try (var to = p.getOutputStream()) {
                    to.write(input);
                } catch (IOException ignored) {
                    // the command may exit before reading everything
                }
            });
        }
        boolean done = p.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS);
        if (!done) {
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            p.destroyForcibly();
            p.waitFor(10, TimeUnit.SECONDS);
        }
        byte[] o = out.completeOnTimeout(new byte[0], 10, TimeUnit.SECONDS).join();
        byte[] e = err.completeOnTimeout(new byte[0], 10, TimeUnit.SECONDS).join();
        return new Result(done ? p.exitValue() : -1, o, e, !done);
    }

    private static CompletableFuture<byte[]> drain(InputStream in) {
        CompletableFuture<byte[]> f = new CompletableFuture<>();
        Thread.ofVirtual().start(() -> {
            try (in) {
                f.complete(in.readAllBytes());
            } catch (IOException e) {
                f.complete(new byte[0]);
            }
        });
        return f;
    }

    /** Generates a passphrase-less ed25519 key pair with ssh-keygen; returns the private key path. */
    public static Path generateKey(Path dir, String name) throws IOException, InterruptedException {
        Path key = dir.resolve(name);
        Result r = run(List.of("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key.toString()),
                null, Map.of(), Duration.ofSeconds(30));
        if (r.exitCode() != 0) {
            throw new IOException("ssh-keygen failed: " + r);
        }
        return key;
    }
}
