package io.vmgate.ssh;

import static org.assertj.core.api.Assertions.assertThat;

import ch.qos.logback.classic.spi.ILoggingEvent;
import io.vmgate.text.EventText;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PipedInputStream;
import java.io.PipedOutputStream;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.apache.sshd.client.channel.ChannelExec;
import org.apache.sshd.client.channel.ChannelShell;
import org.apache.sshd.client.channel.ClientChannelEvent;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Session semantics through the real OpenSSH client (and MINA's client where OpenSSH cannot
 * be driven precisely), against a passwordless loopback server whose VMs are stdio agents.
 */
class SshSessionTest {
    @TempDir
    static Path dir;
    static TestServer ts;
    static SshClientHelper ssh;

    @BeforeAll
    static void start() throws Exception {
        ts = TestServer.start(dir);
        ssh = ts.ssh();
    }

    @AfterAll
    static void stop() {
        if (ts != null) {
            ts.close();
        }
    }

    @AfterEach
    void nothingLeftRunning() {
        ts.launcher.failWith = null;
        ts.awaitAllVmsDestroyed();
    }

    @Test
    void exitStatusIsTheCommands() throws Exception {
        SshClientHelper.Result r = ssh.ssh("exit 7");
        assertThat(r.exitCode()).as(r.toString()).isEqualTo(7);
        assertThat(ssh.ssh("true").exitCode()).isZero();
    }

    @Test
    void stdinReachesTheCommandAndEofEndsIt() throws Exception {
        SshClientHelper.Result r = ssh.withStdin("hi\n".getBytes(StandardCharsets.UTF_8)).ssh("cat");
        assertThat(r.exitCode()).as(r.toString()).isZero();
        assertThat(r.out()).isEqualTo("hi\n");
    }

    @Test
    void stdoutAndStderrStaySeparate() throws Exception {
        SshClientHelper.Result r = ssh.ssh("echo to-out; echo to-err >&2; echo more-out; exit 3");
        assertThat(r.exitCode()).as(r.toString()).isEqualTo(3);
        assertThat(r.out()).isEqualTo("to-out\nmore-out\n");
        assertThat(r.err()).isEqualTo("to-err\n");
    }

    @Test
    void bulkDataIsByteIdenticalBothWays() throws Exception {
        byte[] data = new byte[8 * 1024 * 1024 + 123];
        new Random(42).nextBytes(data);
        SshClientHelper.Result r = ssh.withStdin(data).ssh("cat");
        assertThat(r.exitCode()).as(r.toString()).isZero();
        assertThat(r.stdout()).isEqualTo(data);
    }

    @Test
    void deathBySignalIsReportedAsExitSignalLikeOpenSsh() throws Exception {
        // OpenSSH's client ignores exit-signal (it logs it at debug level), prints nothing and exits 255.
        SshClientHelper.Result r = ssh.ssh("kill -TERM $$");
        assertThat(r.exitCode()).as(r.toString()).isEqualTo(255);
        assertThat(r.err()).isEmpty();
        SshClientHelper.Result verbose = ssh.sshWithFlags(List.of("-v"), "kill -KILL $$");
        assertThat(verbose.exitCode()).isEqualTo(255);
        assertThat(verbose.err()).contains("rtype exit-signal").doesNotContain("rtype exit-status");
        try (MinaTestClient mina = new MinaTestClient(ts.port())) {
            MinaTestClient.Exec e = mina.exec("kill -TERM $$", null);
            assertThat(e.signal()).isEqualTo("TERM");
            assertThat(e.status()).isNull();
        }
        assertThat(ts.lines()).anyMatch(m -> m.startsWith("exit_status ") && m.contains("signal=KILL"));
    }

    @Test
    void onlyAllowlistedEnvironmentIsPassed() throws Exception {
        SshClientHelper.Result r = ssh.withOption("SetEnv=LANG=C LC_TIME=POSIX FOO=bar")
                .ssh("echo \"LANG=$LANG LC_TIME=$LC_TIME FOO=${FOO-unset}\"");
        assertThat(r.exitCode()).as(r.toString()).isZero();
        assertThat(r.out()).isEqualTo("LANG=C LC_TIME=POSIX FOO=unset\n");
        assertThat(ts.lines()).anyMatch(m -> m.startsWith("env_refused ") && m.contains("name=FOO"));
    }

    @Test
    void aShellWithoutATerminalReadsCommandsFromStdin() throws Exception {
        SshClientHelper.Result r = ssh.withStdin("echo from-shell $((6*7))\nexit 4\n".getBytes(StandardCharsets.UTF_8)).ssh();
        assertThat(r.exitCode()).as(r.toString()).isEqualTo(4);
        assertThat(r.out()).isEqualTo("from-shell 42\n");
    }

    @Test
    void anInteractiveShellWithATerminal() throws Exception {
        // script(1) gives ssh a terminal; the shell's prompt and echo go through the guest's PTY.
        String inner = String.join(" ", quoteAll(sshCommand(List.of("-tt"))));
        SshClientHelper.Result r = SshClientHelper.run(List.of("script", "-qfec", inner, "/dev/null"),
                "echo shell-$((6*7)); echo $TERM; exit 3\n".getBytes(StandardCharsets.UTF_8),
                Map.of("TERM", "xterm-256color"), Duration.ofSeconds(60));
        assertThat(r.exitCode()).as(r.toString()).isEqualTo(3);
        assertThat(r.out()).contains("shell-42\r\n").contains("xterm-256color\r\n");
    }

    @Test
    void floodsOfEnvironmentAndHugeRequestsAreBounded() throws Exception {
        try (MinaTestClient mina = new MinaTestClient(ts.port())) {
            // 1 MiB of allowed env in 64 requests: only what fits the cap gets through.
            ChannelExec ch = mina.session.createExecChannel("env | grep -c '^LC_FLOOD'");
            for (int i = 0; i < 64; i++) {
                ch.setEnv("LC_FLOOD" + i, "v".repeat(16 * 1024 - 20));
            }
            MinaTestClient.Collector out = new MinaTestClient.Collector();
            ch.setOut(out);
            ch.setErr(out);
            ch.open().verify(MinaTestClient.TIMEOUT);
            ch.waitFor(EnumSet.of(ClientChannelEvent.CLOSED), MinaTestClient.TIMEOUT);
            assertThat(ch.getExitStatus()).as(out.text()).isZero();
            int passed = Integer.parseInt(out.text().strip());
            assertThat(passed).isPositive().isLessThanOrEqualTo(EnvPolicy.MAX_TOTAL / (16 * 1024 - 20));
            ch.close(true);
        }
        assertThat(ts.lines()).anyMatch(m -> m.startsWith("env_refused ") && m.contains("reason=too_much"));
        // A 1 MiB exec request is larger than any SSH packet may be: MINA drops that connection...
        try (MinaTestClient mina = new MinaTestClient(ts.port())) {
            try {
                mina.exec("echo " + "z".repeat(1024 * 1024), null);
            } catch (IOException | RuntimeException expected) {
                // the connection was dropped
            }
        }
        // ...and the server carries on.
        assertThat(ssh.ssh("echo ok").out()).isEqualTo("ok\n");
    }

    @Test
    void ttyRequestGivesAPtyWithTheDefaultSizeWhenTheClientHasNone() throws Exception {
        // -tt without a local terminal sends pty-req with 0x0: the guest's default applies.
        SshClientHelper.Result r = ssh.sshWithFlags(List.of("-tt"), "tty; stty size");
        assertThat(r.exitCode()).as(r.toString()).isZero();
        assertThat(r.out()).matches("(?s)/dev/pts/\\d+\r\n24 80\r\n");
    }

    @Test
    void ttySizeFollowsTheClientsTerminal() throws Exception {
        // script(1) gives ssh a real terminal of a known size.
        String inner = "stty rows 33 cols 111; " + String.join(" ", quoteAll(sshCommand(List.of("-tt"), "tty; stty size")));
        SshClientHelper.Result r = SshClientHelper.run(List.of("script", "-qfec", inner, "/dev/null"), null, Map.of(),
                Duration.ofSeconds(60));
        assertThat(r.exitCode()).as(r.toString()).isZero();
        assertThat(r.out()).containsPattern("/dev/pts/\\d+\r\n").contains("33 111");
    }

    @Test
    void ptyResizeAndSizesAreClamped() throws Exception {
        try (MinaTestClient mina = new MinaTestClient(ts.port())) {
            ChannelExec ch = mina.session.createExecChannel("stty size; read x; stty size; read y; stty size");
            ch.setUsePty(true);
            ch.setPtyColumns(100_000);
            ch.setPtyLines(50);
            MinaTestClient.Collector out = new MinaTestClient.Collector();
            ch.setOut(out);
            ch.setErr(out);
            PipedOutputStream keys = new PipedOutputStream();
            ch.setIn(new PipedInputStream(keys));
            ch.open().verify(MinaTestClient.TIMEOUT);
            MinaTestClient.awaitOutput(out, "50 " + SessionChannel.MAX_TERMINAL_DIMENSION);
            ch.sendWindowChange(132, 43);
            keys.write("\n".getBytes());
            keys.flush();
            MinaTestClient.awaitOutput(out, "43 132");
            ch.sendWindowChange(0, 0); // nonsense: ignored
            keys.write("\n".getBytes());
            keys.flush();
            ch.waitFor(EnumSet.of(ClientChannelEvent.CLOSED), MinaTestClient.TIMEOUT);
            assertThat(ch.getExitStatus()).isZero();
            assertThat(out.text()).containsSubsequence("50 10000", "43 132", "43 132");
        }
    }

    @Test
    void signalAndBreakReachTheProcess() throws Exception {
        try (MinaTestClient mina = new MinaTestClient(ts.port())) {
            for (String how : List.of("signal", "break")) {
                ChannelExec ch = mina.session.createExecChannel(
                        "trap 'echo got-int; exit 3' INT; echo ready; while :; do sleep 0.05; done");
                MinaTestClient.Collector out = new MinaTestClient.Collector();
                ch.setOut(out);
                ch.setErr(out);
                ch.open().verify(MinaTestClient.TIMEOUT);
                MinaTestClient.awaitOutput(out, "ready");
                if (how.equals("signal")) {
                    MinaTestClient.sendSignal(ch, "INT");
                } else {
                    MinaTestClient.sendBreak(ch);
                }
                ch.waitFor(EnumSet.of(ClientChannelEvent.CLOSED), MinaTestClient.TIMEOUT);
                assertThat(out.text()).as(how).contains("got-int");
                assertThat(ch.getExitStatus()).as(how).isEqualTo(3);
                ch.close(true);
            }
        }
    }

    @Test
    void channelsOfOneConnectionShareOneVm() throws Exception {
        int before = ts.launcher.launched.size();
        try (MinaTestClient mina = new MinaTestClient(ts.port())) {
            assertThat(ts.launcher.launched).as("authenticating alone starts no VM").hasSize(before);
            assertThat(mina.exec("echo one", null).out()).isEqualTo("one\n");
            assertThat(mina.exec("echo two", null).out()).isEqualTo("two\n");
            assertThat(ts.launcher.launched).hasSize(before + 1);
            assertThat(ts.server.liveSessions()).isEqualTo(1);
        }
        ts.awaitAllVmsDestroyed();
    }

    @Test
    void channelsPerConnectionAreBounded() throws Exception {
        int max = ts.config.maxChannelsPerConnection();
        try (MinaTestClient mina = new MinaTestClient(ts.port())) {
            List<ChannelShell> open = new ArrayList<>();
            for (int i = 0; i < max; i++) {
                ChannelShell sh = mina.session.createShellChannel();
                sh.open().verify(MinaTestClient.TIMEOUT);
                open.add(sh);
            }
            ChannelShell oneTooMany = mina.session.createShellChannel();
            assertThat(catchOpen(oneTooMany)).contains("too many channels");
            open.get(0).close(false).await(MinaTestClient.TIMEOUT);
            TestServer.await(() -> open.get(0).isClosed(), "first shell closed");
            // One slot is free again, and the connection still works.
            assertThat(mina.exec("echo still-here", null).out()).isEqualTo("still-here\n");
            for (ChannelShell sh : open) {
                sh.close(true);
            }
        }
    }

    private static String catchOpen(ChannelShell ch) {
        try {
            ch.open().verify(MinaTestClient.TIMEOUT);
            return "opened";
        } catch (IOException e) {
            return e.getMessage();
        }
    }

    @Test
    void forwardingOfEveryKindIsRefusedWhileTheShellWorks() throws Exception {
        int mark = ts.mark();
        int localPort = freePort();
        int socksPort = freePort();
        // ssh only asks for agent forwarding when it can reach an agent.
        Path agentSocket = dir.resolve("agent.sock");
        Path localSocket = dir.resolve("forwarded.sock");
        Process agent = new ProcessBuilder("ssh-agent", "-D", "-a", agentSocket.toString())
                .redirectOutput(ProcessBuilder.Redirect.DISCARD).redirectErrorStream(true).start();
        TestServer.await(() -> Files.exists(agentSocket), "ssh-agent listening");
        Process p = ssh.withClientEnv("DISPLAY", ":99")
                .withClientEnv("SSH_AUTH_SOCK", agentSocket.toString())
                .withOption("IdentityAgent=" + agentSocket) // (IdentityAgent=none would hide the agent)
                .withOption("ExitOnForwardFailure=no")
                .startSsh(List.of("-L", localPort + ":127.0.0.1:9", "-R", "0:127.0.0.1:9", "-D", String.valueOf(socksPort),
                        "-L", localSocket + ":/run/remote.sock", "-R", "/tmp/vmgate-test-remote.sock:127.0.0.1:9",
                        "-A", "-X"),
                        "read line; echo \"shell says $line\"");
        try {
            ts.awaitEvent(mark, "command_started", "");
            // -L: a real connection to the local port makes ssh ask for direct-tcpip, which is refused.
            assertThat(connectAndRead(localPort, new byte[0])).isEqualTo(-1);
            // -D: a SOCKS4 CONNECT makes ssh ask for direct-tcpip too.
            byte[] socks4 = {4, 1, 0, 9, 127, 0, 0, 1, 'u', 0};
            connectAndRead(socksPort, socks4);
            ts.awaitEvent(mark, "forwarding_refused", "kind=direct-tcpip target=127.0.0.1:9");
            TestServer.await(() -> ts.eventsSince(mark).stream()
                    .filter(e -> EventText.matches(e, "forwarding_refused", "kind=direct-tcpip")).count() >= 2,
                    "both -L and -D connections refused");
            // -L to a Unix socket: direct-streamlocal, refused the same way.
            TestServer.await(() -> Files.exists(localSocket), "ssh listening on " + localSocket);
            try (var ch = java.nio.channels.SocketChannel.open(java.net.UnixDomainSocketAddress.of(localSocket))) {
                java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(16);
                while (ch.read(b) >= 0) {
                    b.clear();
                }
            }
            ts.awaitEvent(mark, "forwarding_refused", "kind=direct-streamlocal@openssh.com target=/run/remote.sock");
            ts.awaitEvent(mark, "forwarding_refused", "kind=streamlocal-forward@openssh.com target=/tmp/vmgate-test-remote.sock");
            ts.awaitEvent(mark, "forwarding_refused", "kind=tcpip-forward");
            ts.awaitEvent(mark, "forwarding_refused", "kind=x11");
            ts.awaitEvent(mark, "forwarding_refused", "kind=agent");
            try (OutputStream in = p.getOutputStream()) {
                in.write("ping\n".getBytes(StandardCharsets.UTF_8));
            }
            assertThat(p.waitFor(30, TimeUnit.SECONDS)).isTrue();
            String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            String err = new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
            assertThat(out).as(err).isEqualTo("shell says ping\n");
            assertThat(p.exitValue()).as(err).isZero();
        } finally {
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            p.destroyForcibly();
            agent.destroy();
        }
    }

    @Test
    void sftpPutAndGetAreByteIdentical() throws Exception {
        Path local = dir.resolve("sftp-local.bin");
        Path remote = dir.resolve("sftp-remote.bin");
        Path back = dir.resolve("sftp-back.bin");
        byte[] data = new byte[3 * 1024 * 1024 + 17];
        new Random(7).nextBytes(data);
        Files.write(local, data);
        SshClientHelper.Result r = ssh.sftp("put " + local + " " + remote + "\nget " + remote + " " + back + "\n");
        assertThat(r.exitCode()).as(r.toString()).isZero();
        assertThat(Files.readAllBytes(remote)).isEqualTo(data);
        assertThat(Files.readAllBytes(back)).isEqualTo(data);
    }

    @Test
    void scpBothWaysIsByteIdentical() throws Exception {
        Path local = dir.resolve("scp-local.bin");
        Path remote = dir.resolve("scp-remote.bin");
        Path back = dir.resolve("scp-back.bin");
        byte[] data = new byte[2 * 1024 * 1024 + 5];
        new Random(9).nextBytes(data);
        Files.write(local, data);
        SshClientHelper.Result up = ssh.scp(local.toString(), ssh.remote(remote.toString()));
        assertThat(up.exitCode()).as(up.toString()).isZero();
        SshClientHelper.Result down = ssh.scp(ssh.remote(remote.toString()), back.toString());
        assertThat(down.exitCode()).as(down.toString()).isZero();
        assertThat(Files.readAllBytes(remote)).isEqualTo(data);
        assertThat(Files.readAllBytes(back)).isEqualTo(data);
        // The legacy scp protocol (scp -O runs "scp -t" through exec) works too.
        Path legacy = dir.resolve("scp-legacy.bin");
        SshClientHelper.Result old = ssh.scp("-O", local.toString(), ssh.remote(legacy.toString()));
        assertThat(old.exitCode()).as(old.toString()).isZero();
        assertThat(Files.readAllBytes(legacy)).isEqualTo(data);
    }

    @Test
    void unknownSubsystemIsRefusedWithAMessage() throws Exception {
        SshClientHelper.Result r = ssh.sshWithFlags(List.of("-s"), "no-such-thing");
        assertThat(r.exitCode()).as(r.toString()).isEqualTo(255);
        assertThat(r.err()).contains("unknown subsystem").contains("no-such-thing");
        assertThat(ssh.ssh("echo ok").out()).isEqualTo("ok\n");
    }

    @Test
    void aCommandTooLargeForTheAgentGetsAMessageAnd255() throws Exception {
        // Two arguments near Linux's 128 KiB per-argument limit, plus allowed env: more than a START frame holds.
        String big = "x".repeat(127 * 1024);
        SshClientHelper.Result r = ssh.withOption("SetEnv=LANG=" + "y".repeat(15 * 1024)).ssh("true", big, big);
        assertThat(r.exitCode()).as(r.toString()).isEqualTo(255);
        assertThat(r.err()).contains("vmgate: cannot start the command").contains("limit");
        assertThat(ssh.ssh("echo ok").out()).isEqualTo("ok\n");
    }

    @Test
    void aVmThatDiesEndsTheSessionWithAMessageAnd255() throws Exception {
        int mark = ts.mark();
        int before = ts.launcher.launched.size();
        Process p = ssh.startSsh(List.of(), "echo started; sleep 60");
        try {
            InputStream out = p.getInputStream();
            byte[] first = out.readNBytes("started\n".length());
            assertThat(new String(first, StandardCharsets.UTF_8)).isEqualTo("started\n");
            ts.launcher.launched.get(before).kill();
            assertThat(p.waitFor(30, TimeUnit.SECONDS)).as("ssh ended after the VM died").isTrue();
            String err = new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
            assertThat(p.exitValue()).as(err).isEqualTo(255);
            assertThat(err).contains("vmgate: the VM stopped unexpectedly");
        } finally {
            p.destroyForcibly();
        }
        ts.awaitEvent(mark, e -> e.getMessage().equals("vm_died") && EventText.fields(e).get("reason") != null, "vm_died with a reason");
        assertThat(ssh.ssh("echo fine").out()).isEqualTo("fine\n");
    }

    @Test
    void aVmThatCannotStartGivesTheLaunchersMessageAnd255() throws Exception {
        ts.launcher.failWith = "no kernel image at /nowhere: run `vmgate image build`";
        SshClientHelper.Result r = ssh.ssh("true");
        assertThat(r.exitCode()).as(r.toString()).isEqualTo(255);
        assertThat(r.err()).contains("vmgate: no kernel image at /nowhere: run `vmgate image build`");
        ts.launcher.failWith = null;
        assertThat(ssh.ssh("echo fine").out()).isEqualTo("fine\n");
    }

    @Test
    void theVmIsDestroyedWhenTheClientIsKilledMidCommand() throws Exception {
        int before = ts.launcher.launched.size();
        Process p = ssh.startSsh(List.of(), "echo started; sleep 60");
        try {
            assertThat(new String(p.getInputStream().readNBytes(8), StandardCharsets.UTF_8)).isEqualTo("started\n");
            assertThat(ts.launcher.launched).hasSize(before + 1);
        } finally {
            p.destroyForcibly(); // SIGKILL: no goodbye from the client
            p.waitFor();
        }
        StdioAgentVm vm = ts.launcher.launched.get(before);
        TestServer.await(vm::isClosed, "VM closed after the client was killed");
        ts.awaitAllVmsDestroyed();
    }

    @Test
    void eventsCarryTheConnectionIdInTheMdc() throws Exception {
        int mark = ts.mark();
        assertThat(ssh.ssh("true").exitCode()).isZero();
        ts.awaitEvent(mark, "vm_released", "");
        ILoggingEvent ready = ts.awaitEvent(mark, "vm_assigned", "");
        String conn = (String) EventText.fields(ready).get("conn");
        assertThat(ready.getMDCPropertyMap()).containsEntry("sid", conn);
        List<String> ours = ts.eventsSince(mark).stream()
                .filter(e -> conn.equals(e.getMDCPropertyMap().get("sid")))
                .map(ILoggingEvent::getMessage).toList();
        assertThat(ours).containsSubsequence("connection_accepted", "auth_succeeded", "channel_opened",
                "command_started", "vm_requested", "vm_assigned", "exit_status");
        assertThat(ts.lines()).anyMatch(m -> m.startsWith("vm_released conn=" + conn));
        assertThat(ts.lines()).anyMatch(m -> m.startsWith("connection_closed conn=" + conn));
    }

    // --- helpers

    private static List<String> sshCommand(List<String> flags, String... remote) {
        List<String> cmd = new ArrayList<>(List.of("ssh"));
        cmd.addAll(ssh.commonOptions());
        cmd.addAll(flags);
        cmd.add(ssh.destination());
        cmd.addAll(List.of(remote));
        return cmd;
    }

    private static List<String> quoteAll(List<String> args) {
        return args.stream().map(a -> "'" + a.replace("'", "'\\''") + "'").toList();
    }

    private static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }

    /** Connects, sends bytes, and reads until the other side closes; returns the last read result. */
    private static int connectAndRead(int port, byte[] send) throws IOException {
        try (Socket s = new Socket()) {
            s.connect(new InetSocketAddress("127.0.0.1", port), 10_000);
            s.setSoTimeout(20_000);
            s.getOutputStream().write(send);
            s.getOutputStream().flush();
            InputStream in = s.getInputStream();
            int r;
            while ((r = in.read()) >= 0) {
                // a SOCKS reply, if any; the connection is closed once the forwarding is refused
            }
            return r;
        }
    }
}
