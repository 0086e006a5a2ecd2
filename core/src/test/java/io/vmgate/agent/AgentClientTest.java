package io.vmgate.agent;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The host client against a scripted guest on a Unix socket pair. */
class AgentClientTest {
    @TempDir
    Path dir;
    SocketChannel guest;
    AgentClient client;

    @BeforeEach
    void connect() throws Exception {
        Path sock = dir.resolve("agent.sock");
        try (ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            server.bind(UnixDomainSocketAddress.of(sock));
            SocketChannel host = SocketChannel.open(UnixDomainSocketAddress.of(sock));
            guest = server.accept();
            client = AgentClient.connect(host, "test");
        }
    }

    @AfterEach
    void close() throws Exception {
        client.close();
        guest.close();
    }

    void guestSends(Message m) throws Exception {
        ByteBuffer b = m.encode().encode();
        while (b.hasRemaining()) {
            guest.write(b);
        }
    }

    @Test
    void eachConfiguredAnswersTheOldestConfigure() throws Exception {
        CompletableFuture<Void> first = client.configureAsync(1, "a", new byte[0]);
        CompletableFuture<Void> second = client.configureAsync(2, "b", new byte[0]);
        assertThat(Message.decode(Frame.read(guest))).isInstanceOf(Message.Configure.class);
        assertThat(Message.decode(Frame.read(guest))).isInstanceOf(Message.Configure.class);
        guestSends(new Message.Configured());
        first.get(5, TimeUnit.SECONDS);
        assertThat(second).as("one answer completes one request").isNotDone();
        guestSends(new Message.Configured());
        second.get(5, TimeUnit.SECONDS);
    }

    @Test
    void anUnaskedConfiguredIsDroppedAndTheConnectionLives() throws Exception {
        guestSends(new Message.Configured());
        CompletableFuture<Void> asked = client.configureAsync(1, "a", new byte[0]);
        Frame.read(guest);
        guestSends(new Message.Configured());
        asked.get(5, TimeUnit.SECONDS);
        assertThat(client.disconnected()).isNotDone();
    }

    /** Starts a process and plays the guest's STARTED; returns the process. */
    GuestProcess started() throws Exception {
        GuestProcess p = client.start(ProcessSpec.shellCommand("x"));
        Message.Start start = (Message.Start) Message.decode(Frame.read(guest));
        guestSends(new Message.Started(start.id(), 42));
        assertThat(p.started().get(5, TimeUnit.SECONDS)).isEqualTo(42);
        return p;
    }

    static byte[] pattern(int n, int seed) {
        byte[] b = new byte[n];
        new java.util.Random(seed).nextBytes(b);
        return b;
    }

    @Test
    void outputArrivesIntactThroughTheGrowingRingWhileTheHostReads() throws Exception {
        GuestProcess p = started();
        java.io.ByteArrayOutputStream all = new java.io.ByteArrayOutputStream();
        CompletableFuture<Void> reader = CompletableFuture.runAsync(() -> {
            try {
                p.stdout().transferTo(all);
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        });
        java.io.ByteArrayOutputStream sent = new java.io.ByteArrayOutputStream();
        long credit = Protocol.INITIAL_WINDOW;
        for (int i = 0; i < 40; i++) {
            byte[] chunk = pattern(1 + (i * 7919) % Protocol.DATA_CHUNK * 3, i); // odd sizes: the ring wraps
            chunk = java.util.Arrays.copyOf(chunk, (int) Math.min(chunk.length, Protocol.MAX_PAYLOAD - 1));
            while (credit < chunk.length) { // wait for the host to give credit back, as the agent does
                Message m = Message.decode(Frame.read(guest));
                if (m instanceof Message.Window w) {
                    credit += w.increment();
                }
            }
            guestSends(new Message.Data(p.id(), Protocol.FD_STDOUT, chunk));
            credit -= chunk.length;
            sent.write(chunk);
        }
        guestSends(new Message.Eof(p.id(), Protocol.FD_STDOUT));
        reader.get(10, TimeUnit.SECONDS);
        assertThat(all.toByteArray()).isEqualTo(sent.toByteArray());
    }

    @Test
    void dataBeyondCreditOrForNobodyIsDroppedAndTheStreamStaysInStep() throws Exception {
        GuestProcess p = started();
        guestSends(new Message.Data(p.id(), Protocol.FD_STDOUT, pattern(Protocol.MAX_PAYLOAD - 1, 1)));
        guestSends(new Message.Data(p.id(), Protocol.FD_STDOUT, pattern(Protocol.MAX_PAYLOAD - 1, 2))); // over the window
        guestSends(new Message.Data(999, Protocol.FD_STDOUT, pattern(5000, 3)));                      // no such process
        guestSends(new Message.Data(p.id(), Protocol.FD_STDIN, pattern(5000, 4)));                    // not an output
        byte[] first = p.stdout().readNBytes(Protocol.MAX_PAYLOAD - 1);
        assertThat(first).isEqualTo(pattern(Protocol.MAX_PAYLOAD - 1, 1));
        guestSends(new Message.Data(p.id(), Protocol.FD_STDOUT, "after".getBytes()));
        guestSends(new Message.Eof(p.id(), Protocol.FD_STDOUT));
        assertThat(new String(p.stdout().readAllBytes())).as("the bad frames were skipped whole").isEqualTo("after");
        assertThat(client.disconnected()).isNotDone();
    }

    @Test
    void pendingConfiguresFailWhenTheGuestGoes() throws Exception {
        CompletableFuture<Void> pending = client.configureAsync(1, "a", new byte[0]);
        guest.close();
        assertThatThrownBy(() -> pending.get(5, TimeUnit.SECONDS)).isInstanceOf(ExecutionException.class)
                .hasCauseInstanceOf(AgentGoneException.class);
        assertThatThrownBy(() -> client.configureAsync(2, "b", new byte[0])).isInstanceOf(AgentGoneException.class);
    }
}
