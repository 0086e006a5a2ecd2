package io.vmgate.vm.qemu;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.vmgate.text.Json;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.TimeoutException;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The QMP client against a scripted fake QEMU on a Unix socket. */
class QmpTest {
    @TempDir
    Path tmp;
    SocketChannel qemuSide;
    BufferedReader fromClient;
    Qmp qmp;

    @BeforeEach
    void connect() throws IOException {
        Path sock = tmp.resolve("qmp.sock");
        try (ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            server.bind(UnixDomainSocketAddress.of(sock));
            SocketChannel client = SocketChannel.open(UnixDomainSocketAddress.of(sock));
            qemuSide = server.accept();
            qmp = Qmp.connect(client, "test");
        }
        fromClient = new BufferedReader(new InputStreamReader(Channels.newInputStream(qemuSide), StandardCharsets.UTF_8));
    }

    @AfterEach
    void close() throws IOException {
        qmp.close();
        qemuSide.close();
    }

    private void send(String s) throws IOException {
        ByteBuffer b = ByteBuffer.wrap(s.getBytes(StandardCharsets.UTF_8));
        while (b.hasRemaining()) {
            qemuSide.write(b);
        }
    }

    /** Reads one request and returns its id. */
    private String expect(String command) throws Exception {
        Map<String, Object> req = Json.parseObject(fromClient.readLine());
        assertThat(req.get("execute")).isEqualTo(command);
        return (String) req.get("id");
    }

    private void negotiate() throws Exception {
        send("{\"QMP\": {\"version\": {}, \"capabilities\": [\"oob\"]}}\r\n");
        Thread t = Thread.ofVirtual().start(() -> {
            try {
                String id = expect("qmp_capabilities");
                send("{\"return\": {}, \"id\": \"" + id + "\"}\r\n");
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        qmp.negotiate(Duration.ofSeconds(5));
        t.join();
    }

    @Test
    void negotiatesRunsCommandsAndCollectsEvents() throws Exception {
        negotiate();
        Thread t = Thread.ofVirtual().start(() -> {
            try {
                String id = expect("query-status");
                // an event and some noise may arrive between request and answer
                send("{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\"}\r\n");
                send("this is not json\r\n\r\n");
                send("{\"return\": {\"status\": \"paused\", \"running\": false}, \"id\": \"" + id + "\"}\r\n");
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        Map<String, Object> r = qmp.execute("query-status", Map.of(), Duration.ofSeconds(5));
        t.join();
        assertThat(r).containsEntry("status", "paused").containsEntry("running", false);
        QmpEvent ev = qmp.awaitEvent("STOP", Duration.ofSeconds(5));
        assertThat(ev.timestampMicros()).isEqualTo(1_000_002L);
        assertThat(ev.data()).isEmpty();
    }

    @Test
    void errorsBecomeQmpExceptions() throws Exception {
        negotiate();
        Thread.ofVirtual().start(() -> {
            try {
                String id = expect("nope");
                send("{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command nope has not been found\"}, \"id\": \""
                        + id + "\"}\n");
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        assertThatThrownBy(() -> qmp.execute("nope", Map.of(), Duration.ofSeconds(5)))
                .isInstanceOf(QmpException.class).hasMessageContaining("CommandNotFound")
                .satisfies(e -> assertThat(((QmpException) e).errorClass()).isEqualTo("CommandNotFound"));
    }

    @Test
    void timeoutsAndDisconnectsDoNotHang() throws Exception {
        negotiate();
        assertThatThrownBy(() -> qmp.execute("query-status", Map.of(), Duration.ofMillis(100)))
                .isInstanceOf(TimeoutException.class);
        Thread.ofVirtual().start(() -> {
            try {
                expect("query-status");
                qemuSide.close(); // QEMU dies mid-command
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        assertThatThrownBy(() -> qmp.execute("query-status", Map.of(), Duration.ofSeconds(5)))
                .isInstanceOf(IOException.class).isNotInstanceOf(QmpException.class);
        qmp.closed().get();
        assertThatThrownBy(() -> qmp.execute("quit", Map.of(), Duration.ofSeconds(1))).isInstanceOf(IOException.class);
    }

    @Test
    void overlongLinesAreSkippedAndTheConnectionSurvives() throws Exception {
        send("{\"QMP\": {}}\n");
        Thread t = Thread.ofVirtual().start(() -> {
            try {
                String id = expect("qmp_capabilities");
                byte[] junk = new byte[Qmp.MAX_LINE + 1000];
                java.util.Arrays.fill(junk, (byte) '[');
                qemuSide.write(ByteBuffer.wrap(junk));
                send("\n{\"return\": {}, \"id\": \"" + id + "\"}\n");
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        qmp.negotiate(Duration.ofSeconds(20));
        t.join();
    }

    @Test
    void eventQueueIsBoundedAndKeepsTheNewest() throws Exception {
        negotiate();
        Thread t = Thread.ofVirtual().start(() -> {
            try {
                String id = expect("query-status");
                StringBuilder b = new StringBuilder();
                for (int i = 0; i < 3000; i++) {
                    b.append("{\"event\": \"E").append(i).append("\"}\n");
                }
                // the answer comes after all events, so once it is in, every event has been handled
                b.append("{\"return\": {}, \"id\": \"").append(id).append("\"}\n");
                send(b.toString());
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        qmp.execute("query-status", Map.of(), Duration.ofSeconds(10));
        t.join();
        assertThat(qmp.events()).hasSize(1024);
        assertThat(qmp.events().peek().name()).isEqualTo("E1976");
        assertThat(qmp.awaitEvent("E2999", Duration.ofSeconds(1)).name()).isEqualTo("E2999");
    }
}
