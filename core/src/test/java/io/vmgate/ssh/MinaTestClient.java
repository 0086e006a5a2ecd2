package io.vmgate.ssh;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.EnumSet;
import org.apache.sshd.client.SshClient;
import org.apache.sshd.client.channel.ChannelExec;
import org.apache.sshd.client.channel.ClientChannel;
import org.apache.sshd.client.channel.ClientChannelEvent;
import org.apache.sshd.client.keyverifier.AcceptAllServerKeyVerifier;
import org.apache.sshd.client.session.ClientSession;
import org.apache.sshd.common.SshConstants;
import org.apache.sshd.common.util.buffer.Buffer;

/**
 * MINA's own SSH client, for what the OpenSSH client cannot be told to do on demand: exact
 * pty sizes, window-change, signal and break requests, many channels on one connection.
 */
final class MinaTestClient implements AutoCloseable {
    static final Duration TIMEOUT = Duration.ofSeconds(30);
    final SshClient client;
    final ClientSession session;

    MinaTestClient(int port) throws IOException {
        client = SshClient.setUpDefaultClient();
        client.setServerKeyVerifier(AcceptAllServerKeyVerifier.INSTANCE);
        client.start();
        session = client.connect("tester", "127.0.0.1", port).verify(TIMEOUT).getSession();
        session.auth().verify(TIMEOUT);
    }

    /** Output collected so far, safe to poll from the test thread. */
    static final class Collector extends OutputStream {
        private final ByteArrayOutputStream buf = new ByteArrayOutputStream();

        @Override
        public synchronized void write(int b) {
            buf.write(b);
        }

        @Override
        public synchronized void write(byte[] b, int off, int len) {
            buf.write(b, off, len);
        }

        synchronized String text() {
            return buf.toString(StandardCharsets.UTF_8);
        }
    }

    record Exec(Integer status, String signal, String out, String err) {}

    Exec exec(String command, byte[] stdin) throws IOException {
        try (ChannelExec ch = session.createExecChannel(command)) {
            Collector out = new Collector();
            Collector err = new Collector();
            ch.setOut(out);
            ch.setErr(err);
            ch.setIn(new ByteArrayInputStream(stdin == null ? new byte[0] : stdin));
            ch.open().verify(TIMEOUT);
            ch.waitFor(EnumSet.of(ClientChannelEvent.CLOSED), TIMEOUT);
            return new Exec(ch.getExitStatus(), ch.getExitSignal(), out.text(), err.text());
        }
    }

    static void sendSignal(ClientChannel ch, String name) throws IOException {
        Buffer b = ch.getSession().createBuffer(SshConstants.SSH_MSG_CHANNEL_REQUEST, 64);
        b.putUInt(ch.getRecipient());
        b.putString("signal");
        b.putBoolean(false);
        b.putString(name);
        ch.writePacket(b);
    }

    static void sendBreak(ClientChannel ch) throws IOException {
        Buffer b = ch.getSession().createBuffer(SshConstants.SSH_MSG_CHANNEL_REQUEST, 64);
        b.putUInt(ch.getRecipient());
        b.putString("break");
        b.putBoolean(false);
        b.putUInt(500);
        ch.writePacket(b);
    }

    static void awaitOutput(Collector c, String text) {
        TestServer.await(() -> c.text().contains(text), () -> "output containing '" + text + "', got: " + c.text());
    }

    @Override
    public void close() throws IOException {
        try {
            session.close(true);
        } finally {
            client.stop();
        }
    }
}
