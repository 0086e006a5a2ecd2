package io.vmgate.e2e;

import static org.assertj.core.api.Assertions.assertThat;

import io.vmgate.ssh.SshClientHelper;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code vmgate serve} driven by the real OpenSSH client (issue 3): exit codes, stdin and EOF,
 * 100 MB both ways, sftp and scp, env, forwarding refused on a connection that keeps working,
 * one VM per connection shared by its channels, auth refusals; and after every test, no QEMU and
 * no runtime directory left within 5 s. One server (restoring VMs from the snapshot template,
 * the default) serves the whole class, with key and password auth configured.
 */
class SshIT {
    static final String USER = "tester";
    static final String PASSWORD = "correct horse battery staple";
    static final long HUNDRED_MB = 100_000_000L;
    static final Duration LINE_TIMEOUT = Duration.ofSeconds(90);

    @TempDir
    static Path dir;
    static ServeProcess server;
    static Path key;
    static Path secondKey;
    static SshClientHelper ssh;

    @TempDir
    Path tmp;
    private final Cleanup cleanup = new Cleanup();

    @BeforeAll
    static void startServer() throws Exception {
        key = SshClientHelper.generateKey(dir, "id_first");
        secondKey = SshClientHelper.generateKey(dir, "id_second");
        Path authorized = dir.resolve("authorized_keys");
        // Several keys, a comment and a blank line, as OpenSSH users write the file.
        Files.writeString(authorized, "# vmgate test keys\n" + Files.readString(Path.of(key + ".pub")) + "\n"
                + Files.readString(Path.of(secondKey + ".pub")));
        Path password = dir.resolve("password");
        Files.writeString(password, PASSWORD + "\n");
        server = ServeProcess.builder(dir).name("SshIT")
                .args("--authorized-keys", authorized.toString(), "--user", USER, "--password-file", password.toString())
                .start();
        ssh = server.ssh().withUser(USER).withIdentity(key).withTimeout(Duration.ofSeconds(120));
    }

    @AfterAll
    static void stopServer() {
        if (server != null) {
            server.close();
        }
    }

    @BeforeEach
    void serverIsUp() {
        assertThat(server.isAlive()).as("the shared server is running; log:\n%s", server.tail()).isTrue();
    }

    @AfterEach
    void nothingLeftBehind() throws Exception {
        cleanup.closeAll();
        // After every disconnect the connection's QEMU and its runtime directory are gone within 5 s.
        Host.assertNothingLeft(server.runtimeRoot(), 5);
    }

    private LiveSsh live(SshClientHelper client, List<String> flags, String command) throws IOException {
        LiveSsh l = command == null ? LiveSsh.startShell(client, flags) : LiveSsh.start(client, flags, command);
        cleanup.add(l);
        return l;
    }

    // --- exit codes and streams

    @Test
    void exitStatusAndSeparateStreamsAreTheCommands() throws Exception {
        assertThat(ssh.ssh("exit 7").exitCode()).isEqualTo(7);
        SshClientHelper.Result r = ssh.ssh("echo out; echo err >&2; false");
        assertThat(r.exitCode()).as(r.toString()).isEqualTo(1);
        assertThat(r.out()).isEqualTo("out\n");
        assertThat(r.err()).isEqualTo("err\n");
    }

    @Test
    void killedBySignalIsReportedAsOpenSshDoes() throws Exception {
        // OpenSSH's client against its own sshd: exit 255 and nothing on stderr (SshVsOpenSshIT compares the two).
        SshClientHelper.Result r = ssh.ssh("kill -TERM $$");
        assertThat(r.exitCode()).as(r.toString()).isEqualTo(255);
        assertThat(r.out()).isEmpty();
        assertThat(r.err()).isEmpty();
        server.awaitLog("exit_status .*signal=\"?TERM", Duration.ofSeconds(5));
    }

    @Test
    void stdinReachesTheCommandAndItsEofEndsIt() throws Exception {
        SshClientHelper.Result r = ssh.withStdin("hi\n".getBytes(StandardCharsets.UTF_8)).ssh("cat");
        assertThat(r.exitCode()).as(r.toString()).isZero();
        assertThat(r.out()).isEqualTo("hi\n");
        assertThat(r.err()).isEmpty();
    }

    @Test
    void outputGoesOnAfterTheClientsEof() throws Exception {
        // Half-close: the client's EOF ends the guest's stdin only; the command then keeps writing.
        SshClientHelper.Result r = ssh.withStdin("a\nb\n".getBytes(StandardCharsets.UTF_8))
                .ssh("wc -l; sleep 1; echo after-eof; echo also-stderr >&2; exit 6");
        assertThat(r.exitCode()).as(r.toString()).isEqualTo(6);
        assertThat(r.out().replace(" ", "")).isEqualTo("2\nafter-eof\n");
        assertThat(r.err()).isEqualTo("also-stderr\n");
    }

    /** One client run with large stdin/stdout, hashed on the fly so 100 MB never sit in the heap. */
    record Bulk(int exit, String inSha, long outBytes, String outSha, List<String> outChunkShas, String outHead,
            String stderr, double seconds) {}

    /**
     * Runs {@code ssh dest command} with {@code inBytes} seeded random bytes on stdin (none: /dev/null)
     * and hashes stdout, whole and per {@code chunk} bytes; keeps its first 4 KiB as text.
     */
    private Bulk bulk(String command, long inBytes, int chunk) throws Exception {
        List<String> cmd = new ArrayList<>(List.of("ssh"));
        cmd.addAll(ssh.commonOptions());
        cmd.add(ssh.destination());
        cmd.add(command);
        ProcessBuilder pb = new ProcessBuilder(cmd);
        if (inBytes == 0) {
            pb.redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")));
        }
        long t0 = System.nanoTime();
        Process p = pb.start();
        cleanup.add(p::destroyForcibly);
        CompletableFuture<String> inSha = new CompletableFuture<>();
        if (inBytes > 0) {
            Thread.ofVirtual().start(() -> {
                MessageDigest md = sha256();
                Random random = new Random(42);
                byte[] buf = new byte[1 << 20];
                try (OutputStream to = p.getOutputStream()) {
                    for (long left = inBytes; left > 0; ) {
                        random.nextBytes(buf);
                        int n = (int) Math.min(buf.length, left);
                        md.update(buf, 0, n);
                        to.write(buf, 0, n);
                        left -= n;
                    }
                } catch (IOException e) {
                    inSha.complete("stdin write failed: " + e);
                    return;
                }
                inSha.complete(HexFormat.of().formatHex(md.digest()));
            });
        } else {
            inSha.complete("");
        }
        CompletableFuture<byte[]> err = new CompletableFuture<>();
        Thread.ofVirtual().start(() -> {
            try (InputStream e = p.getErrorStream()) {
                err.complete(e.readAllBytes());
            } catch (IOException e) {
                err.complete(new byte[0]);
            }
        });
        MessageDigest whole = sha256();
        MessageDigest part = sha256();
        List<String> chunks = new ArrayList<>();
        byte[] head = new byte[4096];
        int headLen = 0;
        long total = 0;
        long inChunk = 0;
        try (InputStream out = p.getInputStream()) {
            byte[] buf = new byte[1 << 16];
            int n;
            while ((n = out.read(buf)) >= 0) {
                whole.update(buf, 0, n);
                if (headLen < head.length) {
                    int h = Math.min(n, head.length - headLen);
                    System.arraycopy(buf, 0, head, headLen, h);
                    headLen += h;
                }
                total += n;
                for (int off = 0; off < n; ) {
                    int take = (int) Math.min(n - off, chunk - inChunk);
                    part.update(buf, off, take);
                    inChunk += take;
                    off += take;
                    if (inChunk == chunk) {
                        chunks.add(HexFormat.of().formatHex(part.digest()));
                        inChunk = 0;
                    }
                }
            }
        }
        if (!p.waitFor(300, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new AssertionError("ssh '" + command + "' did not finish within 300 s");
        }
        return new Bulk(p.exitValue(), inSha.get(60, TimeUnit.SECONDS), total, HexFormat.of().formatHex(whole.digest()),
                chunks, new String(head, 0, headLen, StandardCharsets.UTF_8),
                new String(err.get(60, TimeUnit.SECONDS), StandardCharsets.UTF_8), (System.nanoTime() - t0) / 1e9);
    }

    static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new AssertionError(e);
        }
    }

    static String sha256(Path file) throws IOException {
        MessageDigest md = sha256();
        try (InputStream in = Files.newInputStream(file)) {
            byte[] b = new byte[1 << 16];
            int n;
            while ((n = in.read(b)) >= 0) {
                md.update(b, 0, n);
            }
        }
        return HexFormat.of().formatHex(md.digest());
    }

    @Test
    void hundredMegabytesThroughCatComeBackByteIdentical() throws Exception {
        Bulk b = bulk("cat", HUNDRED_MB, 1 << 20);
        System.out.printf("100 MB through `ssh host cat` (both directions at once): %.1f s%n", b.seconds());
        assertThat(b.exit()).as(b.stderr()).isZero();
        assertThat(b.outBytes()).isEqualTo(HUNDRED_MB);
        assertThat(b.outSha()).isEqualTo(b.inSha());
    }

    @Test
    void hundredMegabytesHostToGuestArriveByteIdentical() throws Exception {
        // The guest hashes what reached its stdin: EOF must arrive, after exactly those bytes.
        Bulk b = bulk("sha256sum; echo end", HUNDRED_MB, 1 << 20);
        System.out.printf("100 MB host to guest: %.1f s%n", b.seconds());
        assertThat(b.exit()).as(b.stderr()).isZero();
        assertThat(b.outHead()).isEqualTo(b.inSha() + "  -\nend\n");
    }

    @Test
    void hundredMegabytesGuestToHostArriveByteIdentical() throws Exception {
        // Random bytes made in the guest (1 MB of urandom, sent 100 times: urandom itself is slow
        // under TCG); the guest prints the block's hash on stderr, the host hashes every block.
        int block = 1_000_000;
        Bulk b = bulk("head -c " + block + " /dev/urandom > /tmp/block && sha256sum /tmp/block >&2"
                + " && i=0 && while [ $i -lt 100 ]; do cat /tmp/block; i=$((i+1)); done", 0, block);
        System.out.printf("100 MB guest to host: %.1f s%n", b.seconds());
        assertThat(b.exit()).as(b.stderr()).isZero();
        assertThat(b.outBytes()).isEqualTo(HUNDRED_MB);
        String guestSha = b.stderr().strip().split("\\s+")[0];
        assertThat(guestSha).hasSize(64);
        assertThat(b.outChunkShas()).hasSize(100).allMatch(guestSha::equals);
    }

    // --- files

    private Path randomFile(String name, int size, long seed) throws IOException {
        byte[] data = new byte[size];
        new Random(seed).nextBytes(data);
        Path f = tmp.resolve(name);
        Files.write(f, data);
        return f;
    }

    @Test
    void sftpPutAndGetAreByteIdentical() throws Exception {
        Path up = randomFile("up.bin", 8_000_000, 1);
        Path down = tmp.resolve("down.bin");
        SshClientHelper.Result r = ssh.sftp("put " + up + " /root/up.bin\nls -l /root/up.bin\nget /root/up.bin " + down + "\n");
        assertThat(r.exitCode()).as(r.toString()).isZero();
        assertThat(r.out()).contains("8000000");
        assertThat(Files.size(down)).isEqualTo(8_000_000);
        assertThat(sha256(down)).isEqualTo(sha256(up));
    }

    /** A ControlMaster connection (no command) that later commands share; ended by {@code ssh -O exit}. */
    private SshClientHelper master() throws Exception {
        Path sock = tmp.resolve("cm.sock");
        SshClientHelper m = ssh.withOption("ControlPath=" + sock);
        LiveSsh master = live(m.withOption("ControlMaster=yes").withOption("ControlPersist=no"), List.of("-N"), null);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (!Files.exists(sock)) {
            assertThat(master.isAlive()).as("the master connection is up: %s", master).isTrue();
            assertThat(System.nanoTime()).as("the master's control socket to appear").isLessThan(deadline);
            Thread.sleep(50);
        }
        SshClientHelper shared = m.withOption("ControlMaster=no");
        cleanup.add(() -> shared.sshWithFlags(List.of("-O", "exit")));
        return shared;
    }

    @Test
    void scpBothWaysIsByteIdenticalAndTheGuestHasTheSameBytes() throws Exception {
        // OpenSSH 9's scp speaks SFTP; a master connection lets us check the guest's copy too.
        SshClientHelper shared = master();
        Path up = randomFile("up.bin", 8_000_000, 2);
        SshClientHelper.Result put = shared.scp(up.toString(), shared.remote("/root/copy.bin"));
        assertThat(put.exitCode()).as(put.toString()).isZero();
        SshClientHelper.Result sum = shared.ssh("sha256sum /root/copy.bin");
        assertThat(sum.exitCode()).as(sum.toString()).isZero();
        assertThat(sum.out().split("\\s+")[0]).isEqualTo(sha256(up));
        Path down = tmp.resolve("down.bin");
        SshClientHelper.Result get = shared.scp(shared.remote("/root/copy.bin"), down.toString());
        assertThat(get.exitCode()).as(get.toString()).isZero();
        assertThat(sha256(down)).isEqualTo(sha256(up));
    }

    // --- environment

    @Test
    void setEnvOnTheAllowlistIsPassedAndOtherVariablesAreNot() throws Exception {
        SshClientHelper.Result r = ssh.withOption("SetEnv=LANG=C VMGATE_NOT_ALLOWED=leak LC_TIME=C.UTF-8")
                .ssh("echo \"LANG=[$LANG] LC_TIME=[$LC_TIME] OTHER=[$VMGATE_NOT_ALLOWED]\"");
        assertThat(r.exitCode()).as(r.toString()).isZero();
        assertThat(r.out()).isEqualTo("LANG=[C] LC_TIME=[C.UTF-8] OTHER=[]\n");
        server.awaitLog("env_refused .*name=\"?VMGATE_NOT_ALLOWED", Duration.ofSeconds(5));
    }

    // --- forwarding: refused, and the connection's shell carries on

    /**
     * Opens a shell (no command, no PTY: commands come on stdin) with the given flags, proves it
     * answers, runs {@code during}, proves it still answers, and exits; returns ssh's stderr.
     */
    private String shellKeepsWorking(SshClientHelper client, List<String> flags, ThrowingRunnable during) throws Exception {
        LiveSsh shell = live(client.withOption("LogLevel=INFO"), flags, null);
        shell.writeLine("echo before-$((1+1)) \"[$SSH_AUTH_SOCK][$DISPLAY]\"");
        shell.awaitLine("before-2 [][]", LINE_TIMEOUT);
        during.run();
        shell.writeLine("echo after-$((2+2))");
        shell.awaitLine("after-4", Duration.ofSeconds(30));
        shell.writeLine("exit 0");
        assertThat(shell.awaitExit(Duration.ofSeconds(30))).as(shell.toString()).isZero();
        return shell.stderr();
    }

    interface ThrowingRunnable {
        void run() throws Exception;
    }

    @Test
    void localForwardingIsRefusedWhileTheShellKeepsWorking() throws Exception {
        int local = ServeProcess.freePort();
        String stderr = shellKeepsWorking(ssh.withOption("ExitOnForwardFailure=yes"),
                List.of("-L", local + ":127.0.0.1:" + server.port()), () -> {
                    try (Socket s = new Socket()) {
                        s.connect(new InetSocketAddress("127.0.0.1", local), 10_000);
                        s.setSoTimeout(30_000);
                        assertThat(s.getInputStream().read()).as("the forwarded connection is closed, not served").isEqualTo(-1);
                    }
                });
        assertThat(stderr).contains("administratively prohibited");
        server.awaitLog("forwarding_refused .*kind=direct-tcpip target=\"?127.0.0.1:" + server.port(), Duration.ofSeconds(5));
    }

    @Test
    void dynamicForwardingIsRefusedWhileTheShellKeepsWorking() throws Exception {
        int socks = ServeProcess.freePort();
        String stderr = shellKeepsWorking(ssh.withOption("ExitOnForwardFailure=yes"), List.of("-D", Integer.toString(socks)), () -> {
            try (Socket s = new Socket()) {
                s.connect(new InetSocketAddress("127.0.0.1", socks), 10_000);
                s.setSoTimeout(30_000);
                var out = s.getOutputStream();
                var in = s.getInputStream();
                out.write(new byte[] {5, 1, 0}); // SOCKS5, one method: no auth
                assertThat(in.readNBytes(2)).containsExactly(5, 0);
                out.write(new byte[] {5, 1, 0, 1, 127, 0, 0, 1, 0, 22}); // CONNECT 127.0.0.1:22
                byte[] reply = in.readNBytes(2);
                // Refused: either closed at once, or a SOCKS reply other than "succeeded" (0).
                assertThat(reply.length < 2 || reply[1] != 0).as("SOCKS reply %s", Arrays.toString(reply)).isTrue();
            }
        });
        assertThat(stderr).contains("administratively prohibited");
        server.awaitLog("forwarding_refused .*kind=direct-tcpip target=\"?127.0.0.1:22\\b", Duration.ofSeconds(5));
    }

    @Test
    void remoteForwardingIsRefusedWhileTheShellKeepsWorking() throws Exception {
        String stderr = shellKeepsWorking(ssh, List.of("-R", "0:127.0.0.1:" + server.port()), () -> { });
        assertThat(stderr).contains("remote port forwarding failed");
        server.awaitLog("forwarding_refused .*kind=\"?tcpip-forward", Duration.ofSeconds(5));
    }

    @Test
    void agentForwardingIsRefusedWhileTheShellKeepsWorking() throws Exception {
        // A real agent, so the client really asks to forward it.
        Path agentSock = tmp.resolve("agent.sock");
        Process agent = new ProcessBuilder("ssh-agent", "-D", "-a", agentSock.toString())
                .redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
        cleanup.add(() -> {
            agent.destroyForcibly();
            agent.waitFor(10, TimeUnit.SECONDS);
        });
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (!Files.exists(agentSock) && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        assertThat(agentSock).exists();
        // The guest's $SSH_AUTH_SOCK is checked empty by shellKeepsWorking.
        // IdentityAgent=none (the helper's default) would also stop ssh from forwarding: name the agent.
        shellKeepsWorking(ssh.withOption("IdentityAgent=" + agentSock).withClientEnv("SSH_AUTH_SOCK", agentSock.toString()),
                List.of("-A"), () -> { });
        server.awaitLog("forwarding_refused .*kind=agent", Duration.ofSeconds(5));
    }

    @Test
    void x11ForwardingIsRefusedWhileTheShellKeepsWorking() throws Exception {
        // The guest's $DISPLAY is checked empty by shellKeepsWorking.
        String stderr = shellKeepsWorking(ssh.withClientEnv("DISPLAY", ":0").withClientEnv("XAUTHORITY", tmp.resolve("xauth").toString()),
                List.of("-X"), () -> { });
        assertThat(stderr).contains("X11 forwarding request failed");
        server.awaitLog("forwarding_refused .*kind=x11", Duration.ofSeconds(5));
    }

    // --- one VM per connection, shared by its channels

    private static final String BOOT_ID = "cat /proc/sys/kernel/random/boot_id";

    @Test
    void aConnectionThatOnlyAuthenticatesStartsNoVm() throws Exception {
        int before = server.logLines("auth_succeeded").size();
        LiveSsh idle = live(ssh, List.of("-N"), null);
        server.awaitLogCount("auth_succeeded", before + 1, LINE_TIMEOUT);
        Thread.sleep(1000);
        assertThat(idle.isAlive()).as("%s", idle).isTrue();
        // (The server may still be building its snapshot template at start: that VM is not the connection's.)
        assertThat(Host.qemusUnder(server.runtimeRoot())).as("QEMUs for a connection with no session")
                .noneMatch(cl -> cl.contains("/ssh-"));
        assertThat(Host.entries(server.runtimeRoot())).noneMatch(p -> p.getFileName().toString().startsWith("ssh-"));
    }

    @Test
    void twoConnectionsAtOnceHaveTheirOwnVms() throws Exception {
        LiveSsh first = live(ssh, List.of(), BOOT_ID + "; echo secret > /root/mine; echo written; sleep 600");
        first.awaitLine("written", LINE_TIMEOUT);
        SshClientHelper.Result second = ssh.ssh(BOOT_ID + "; test -e /root/mine && echo present || echo absent");
        assertThat(second.exitCode()).as(second.toString()).isZero();
        assertThat(first.isAlive()).as("the first connection is still live: %s", first).isTrue();
        List<String> lines = second.out().lines().toList();
        assertThat(lines).hasSize(2);
        assertThat(lines.get(1)).as("a file written in the other connection's VM").isEqualTo("absent");
        String firstBoot = first.lines().getFirst();
        assertThat(firstBoot).matches("[0-9a-f-]{36}");
        assertThat(lines.get(0)).matches("[0-9a-f-]{36}").as("each connection has its own kernel boot").isNotEqualTo(firstBoot);
        // The second connection's VM goes within seconds of its end; the first one's stays.
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
        while (Host.qemusUnder(server.runtimeRoot()).size() > 1 && System.nanoTime() < deadline) {
            Thread.sleep(50);
        }
        assertThat(Host.qemusUnder(server.runtimeRoot())).as("only the first connection's VM is left").hasSize(1);
        assertThat(first.isAlive()).isTrue();
    }

    @Test
    void controlMasterSessionsShareTheConnectionsVm() throws Exception {
        SshClientHelper shared = master();
        SshClientHelper.Result one = shared.ssh("echo shared > /root/note; " + BOOT_ID);
        assertThat(one.exitCode()).as(one.toString()).isZero();
        SshClientHelper.Result two = shared.ssh("cat /root/note; " + BOOT_ID);
        assertThat(two.exitCode()).as(two.toString()).isZero();
        assertThat(two.out()).isEqualTo("shared\n" + one.out());
        assertThat(Host.qemusUnder(server.runtimeRoot())).as("one VM for the master connection").hasSize(1);
        SshClientHelper.Result exit = shared.sshWithFlags(List.of("-O", "exit"));
        assertThat(exit.exitCode()).as(exit.toString()).isZero();
    }

    /**
     * Every session over a master gets its own exit status. Each client here has already sent EOF
     * (stdin is /dev/null), so it answers the server's EOF with CLOSE at once: an exit-status sent
     * after the EOF can arrive too late to be sent at all (the client then exits 255).
     */
    @Test
    void everySessionOverAControlMasterGetsItsExitStatus() throws Exception {
        SshClientHelper shared = master();
        List<Integer> codes = new ArrayList<>();
        for (int i = 0; i < 100; i++) {
            codes.add(shared.ssh("exit 3").exitCode());
        }
        assertThat(codes).as("exit codes of 100 sessions over one ControlMaster connection").containsOnly(3);
    }

    @Test
    void clientKilledMidCommandLeavesNothingWithin5Seconds() throws Exception {
        LiveSsh client = live(ssh, List.of(), "echo started; sleep 600");
        client.awaitLine("started", LINE_TIMEOUT);
        assertThat(Host.qemusUnder(server.runtimeRoot())).hasSize(1);
        assertThat(Host.entries(server.runtimeRoot())).hasSize(1);
        client.kill9();
        Host.assertNothingLeft(server.runtimeRoot(), 5);
    }

    // --- auth

    @Test
    void wrongCredentialsAreRefusedAndTheServerKeepsServing() throws Exception {
        Path stranger = SshClientHelper.generateKey(tmp, "id_stranger");
        SshClientHelper.Result unknownKey = ssh.withIdentity(stranger).ssh("echo in");
        assertThat(unknownKey.exitCode()).as(unknownKey.toString()).isEqualTo(255);
        assertThat(unknownKey.out()).isEmpty();
        assertThat(unknownKey.err()).contains("Permission denied");

        SshClientHelper.Result wrongPassword = ssh.withPassword("not the password", tmp).ssh("echo in");
        assertThat(wrongPassword.exitCode()).as(wrongPassword.toString()).isEqualTo(255);
        assertThat(wrongPassword.out()).isEmpty();
        assertThat(wrongPassword.err()).contains("Permission denied");

        SshClientHelper.Result wrongUser = ssh.withUser("mallory").ssh("echo in");
        assertThat(wrongUser.exitCode()).as(wrongUser.toString()).isEqualTo(255);
        assertThat(wrongUser.out()).isEmpty();

        // Nothing was started for them, and everyone else still gets in.
        assertThat(server.logLines("vm_requested")).allMatch(l -> !l.contains("mallory"));
        assertThat(ssh.ssh("echo in").out()).isEqualTo("in\n");
        assertThat(ssh.withIdentity(secondKey).ssh("echo second key").out()).isEqualTo("second key\n");
        SshClientHelper.Result password = ssh.withPassword(PASSWORD, tmp).ssh("echo password");
        assertThat(password.exitCode()).as(password.toString()).isZero();
        assertThat(password.out()).isEqualTo("password\n");
        assertThat(server.logLines("auth_failed").size()).isGreaterThanOrEqualTo(3);
    }

    @Test
    void passwordlessOnANonLoopbackAddressIsRefusedAtStartup() throws Exception {
        try (ServeProcess open = ServeProcess.builder(tmp).name("SshIT-nonloopback").listenHost("0.0.0.0").startNoWait()) {
            int code = open.awaitExit(Duration.ofSeconds(180));
            assertThat(code).as(open.logs()).isNotZero();
            assertThat(open.logs()).contains("--authorized-keys").doesNotContain(ServeProcess.LISTENING);
            Host.assertNothingLeft(open.runtimeRoot(), 1);
        }
    }
}
