package io.vmgate.agent;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * A guest played by a test, frame by frame, against a real {@link AgentClient}: for what the real
 * agent would never send (a hostile or broken guest). Greets with HELLO; {@link #next} returns
 * what the host sends.
 */
public final class FakeGuest implements AutoCloseable {
    private final Path dir;
    private final SocketChannel guest;
    private final AgentClient client;
    private final BlockingQueue<Message> received = new LinkedBlockingQueue<>();

    public FakeGuest(String name) throws IOException {
        dir = Files.createTempDirectory(Path.of("/tmp"), "fake-guest-");
        Path sock = dir.resolve("s");
        try (ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            server.bind(UnixDomainSocketAddress.of(sock));
            SocketChannel host = SocketChannel.open(UnixDomainSocketAddress.of(sock));
            guest = server.accept();
            client = AgentClient.connect(host, name);
        }
        Thread.ofPlatform().daemon().name("fake-guest-" + name).start(() -> {
            try {
                for (Frame f; (f = Frame.read(guest)) != null; ) {
                    received.add(Message.decode(f));
                }
            } catch (IOException e) {
                // closed
            }
        });
        send(new Message.Hello(Protocol.VERSION, 1, "fake"));
    }

    public AgentClient client() {
        return client;
    }

    public void send(Message m) throws IOException {
        send(m.encode());
    }

    public void send(Frame f) throws IOException {
        ByteBuffer b = f.encode();
        synchronized (guest) {
            while (b.hasRemaining()) {
                guest.write(b);
            }
        }
    }

    /** The next frame the host sent, or null after the timeout. */
    public Message next(Duration timeout) throws InterruptedException {
        return received.poll(timeout.toMillis(), TimeUnit.MILLISECONDS);
    }

    /** The next frame of the given type, skipping others; null after the timeout. */
    public <T extends Message> T next(Class<T> type, Duration timeout) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        for (Message m; (m = next(Duration.ofNanos(Math.max(0, deadline - System.nanoTime())))) != null; ) {
            if (type.isInstance(m)) {
                return type.cast(m);
            }
        }
        return null;
    }

    @Override
    public void close() throws IOException {
        client.close();
        guest.close();
        Files.deleteIfExists(dir.resolve("s"));
        Files.deleteIfExists(dir);
    }
}
