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

    @Test
    void pendingConfiguresFailWhenTheGuestGoes() throws Exception {
        CompletableFuture<Void> pending = client.configureAsync(1, "a", new byte[0]);
        guest.close();
        assertThatThrownBy(() -> pending.get(5, TimeUnit.SECONDS)).isInstanceOf(ExecutionException.class)
                .hasCauseInstanceOf(AgentGoneException.class);
        assertThatThrownBy(() -> client.configureAsync(2, "b", new byte[0])).isInstanceOf(AgentGoneException.class);
    }
}
