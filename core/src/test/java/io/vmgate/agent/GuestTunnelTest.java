package io.vmgate.agent;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** The host's end of egress tunnels against a guest played frame by frame: the protocol as written, and worse. */
class GuestTunnelTest {
    static final Duration WAIT = Duration.ofSeconds(10);
    FakeGuest guest;
    final BlockingQueue<GuestTunnel> opened = new LinkedBlockingQueue<>();

    @BeforeEach
    void start() throws Exception {
        guest = new FakeGuest("tunnel-test");
        guest.client().awaitHello(WAIT);
    }

    @AfterEach
    void stop() throws IOException {
        guest.close();
    }

    /** Egress on, every tunnel handed to the test. */
    void serve() throws Exception {
        CompletableFuture<Void> ready = guest.client().serveEgress(3128, opened::add);
        assertThat(guest.next(Message.Egress.class, WAIT)).isEqualTo(new Message.Egress(3128));
        assertThat(ready).isNotDone(); // not before the guest says it listens
        guest.send(new Message.EgressStatus(3128, ""));
        ready.get(10, TimeUnit.SECONDS);
    }

    GuestTunnel open(int id, String host, int port) throws Exception {
        guest.send(new Message.TunnelOpen(id, host, port, false));
        GuestTunnel t = opened.poll(10, TimeUnit.SECONDS);
        assertThat(t).isNotNull();
        assertThat(t.id()).isEqualTo(id);
        assertThat(t.host()).isEqualTo(host);
        assertThat(t.port()).isEqualTo(port);
        return t;
    }

    @Test
    void withoutEgressEveryTunnelIsRefused() throws Exception {
        guest.send(new Message.TunnelOpen(5, "example.com", 443, false));
        assertThat(guest.next(Message.TunnelRefused.class, WAIT))
                .isEqualTo(new Message.TunnelRefused(5, GuestTunnel.Refusal.DENIED, "egress is not enabled for this VM"));
    }

    @Test
    void aGuestThatCannotListenFailsTheStart() throws Exception {
        CompletableFuture<Void> ready = guest.client().serveEgress(3128, opened::add);
        guest.next(Message.Egress.class, WAIT);
        guest.send(new Message.EgressStatus(3128, "cannot listen on 127.0.0.1:3128: Address in use"));
        assertThatThrownBy(() -> ready.get(10, TimeUnit.SECONDS)).hasRootCauseMessage(
                "the guest cannot serve its egress proxy: cannot listen on 127.0.0.1:3128: Address in use");
    }

    @Test
    void bytesGoBothWaysWithinTheWindowAndEndWithTheCloseHandshake() throws Exception {
        serve();
        GuestTunnel t = open(7, "example.com", 443);
        t.accept();
        assertThat(guest.next(WAIT)).isEqualTo(new Message.TunnelOpened(7));

        guest.send(new Message.TunnelData(7, "client hello".getBytes(StandardCharsets.US_ASCII)));
        byte[] got = new byte[12];
        assertThat(t.input().readNBytes(got, 0, 12)).isEqualTo(12);
        assertThat(new String(got, StandardCharsets.US_ASCII)).isEqualTo("client hello");

        // Host to guest: at most a window until the guest grants more.
        byte[] big = new byte[Protocol.TUNNEL_WINDOW + 100_000];
        CompletableFuture<Void> writer = CompletableFuture.runAsync(() -> {
            try {
                t.output().write(big);
                t.output().close();
            } catch (IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        });
        long n = 0;
        for (Message m; (m = guest.next(Duration.ofMillis(500))) != null; ) {
            n += ((Message.TunnelData) m).data().length;
        }
        assertThat(n).isEqualTo(Protocol.TUNNEL_WINDOW);
        assertThat(writer).isNotDone();
        guest.send(new Message.TunnelWindow(7, Protocol.TUNNEL_WINDOW));
        while (n < big.length) {
            n += guest.next(Message.TunnelData.class, WAIT).data().length;
        }
        assertThat(guest.next(WAIT)).isEqualTo(new Message.TunnelEof(7));
        writer.get(10, TimeUnit.SECONDS);

        guest.send(new Message.TunnelEof(7));
        assertThat(t.input().read()).isEqualTo(-1);
        t.close();
        assertThat(guest.next(WAIT)).isEqualTo(new Message.TunnelClose(7));
        assertThat(guest.client().tunnels()).isEqualTo(1); // until the guest lets go too
        guest.send(new Message.TunnelClose(7));
        guest.send(new Message.TunnelOpen(7, "example.org", 80, false)); // the id may be used again
        assertThat(open(7, "example.org", 80).host()).isEqualTo("example.org");
        assertThat(guest.client().tunnels()).isEqualTo(1);
    }

    @Test
    void aHostileGuestOnlyBreaksItsOwnTunnels() throws Exception {
        serve();
        GuestTunnel t = open(1, "example.com", 443);
        // before the answer, and for ids nobody opened: dropped, logged
        guest.send(new Message.TunnelData(1, new byte[] {1}));
        guest.send(new Message.TunnelData(99, new byte[] {1}));
        guest.send(new Message.TunnelWindow(99, 5));
        guest.send(new Message.TunnelEof(99));
        guest.send(new Message.TunnelClose(99));
        guest.send(new Message.TunnelOpen(1, "evil.example", 443, false)); // the id is in use
        guest.send(new Frame(Protocol.TOPEN, 2, new byte[] {0, 0, 0, 1, 'x', 0, 80, 2})); // unknown flag
        guest.send(new Frame(Protocol.TWINDOW, 1, new byte[] {0, 0, 0, 0})); // increment 0
        open(8, "sentinel.example", 443); // frames are handled in order: all of the above is behind us
        t.accept();
        assertThat(guest.next(WAIT)).isEqualTo(new Message.TunnelOpened(1));
        // more than the window: the tunnel breaks, what fitted is still delivered
        for (int sent = 0; sent < Protocol.TUNNEL_WINDOW; sent += Protocol.MAX_PAYLOAD) { // a frame holds less than a window
            guest.send(new Message.TunnelData(1, new byte[Protocol.MAX_PAYLOAD]));
        }
        guest.send(new Message.TunnelData(1, new byte[] {2}));
        open(9, "sentinel.example", 443); // handled before anything is read (and credit returned)
        InputStream in = t.input();
        assertThat(in.readNBytes(Protocol.TUNNEL_WINDOW)).hasSize(Protocol.TUNNEL_WINDOW);
        assertThatThrownBy(in::read).hasMessageContaining("TDATA beyond the window");
        assertThatThrownBy(() -> t.output().write(1)).hasMessageContaining("TDATA beyond the window");
        t.close();
        assertThat(guest.next(Message.TunnelClose.class, WAIT)).isEqualTo(new Message.TunnelClose(1));
        // nothing else was opened, and the connection itself lives on
        assertThat(opened).isEmpty(); // (the sentinels were taken by open())
        assertThat(guest.client().disconnected()).isNotDone();
        guest.send(new Message.TunnelClose(1));
        assertThat(open(3, "example.net", 443).id()).isEqualTo(3);
    }

    @Test
    void grantsBeyondTheWindowAreClamped() throws Exception {
        serve();
        GuestTunnel t = open(4, "example.com", 443);
        t.accept();
        guest.next(Message.TunnelOpened.class, WAIT);
        guest.send(new Message.TunnelWindow(4, Protocol.TUNNEL_WINDOW)); // the credit is full already
        guest.send(new Message.TunnelWindow(4, Protocol.TUNNEL_WINDOW));
        Thread.sleep(200);
        CompletableFuture.runAsync(() -> {
            try {
                t.output().write(new byte[3 * Protocol.TUNNEL_WINDOW]);
            } catch (IOException e) {
                // the tunnel closes at the end of the test
            }
        });
        long n = 0;
        for (Message m; (m = guest.next(Duration.ofMillis(500))) != null; ) {
            n += ((Message.TunnelData) m).data().length;
        }
        assertThat(n).isEqualTo(Protocol.TUNNEL_WINDOW);
        t.close();
    }

    @Test
    void aFloodOfRequestsNeverStallsTheConnection() throws Exception {
        for (int i = 1; i <= 20_000; i++) { // more than the answers the host queues
            guest.send(new Message.TunnelOpen(i, "example.com", 443, false));
        }
        int answers = 0;
        while (guest.next(Message.TunnelRefused.class, Duration.ofSeconds(2)) != null) {
            answers++;
        }
        assertThat(answers).isBetween(1, 20_000);
        assertThat(guest.client().disconnected()).isNotDone();
        guest.send(new Message.TunnelOpen(50_000, "example.com", 443, false));
        assertThat(guest.next(Message.TunnelRefused.class, WAIT).id()).isEqualTo(50_000);
    }
}
