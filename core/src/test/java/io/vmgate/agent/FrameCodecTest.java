package io.vmgate.agent;

import io.vmgate.exec.ExitStatus;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.ByteArrayInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;

class FrameCodecTest {

    private static Frame roundTrip(Frame f) throws IOException {
        ByteBuffer wire = f.encode();
        byte[] bytes = new byte[wire.remaining()];
        wire.get(bytes);
        return Frame.read(Channels.newChannel(new ByteArrayInputStream(bytes)));
    }

    @Test
    void everyMessageRoundTrips() throws IOException {
        var pty = new PtySpec("xterm", 40, 120, List.of(new Message.TermMode(53, 1), new Message.TermMode(1, 3)));
        List<Message> all = List.of(
                new Message.Hello(2, 123456789L, "6.1.0-56-cloud-amd64"),
                new Message.Start(7, new ProcessSpec(List.of("sh", "-c", "echo hi"), Map.of("LANG", "C"), "/tmp", pty)),
                new Message.Start(8, ProcessSpec.exec(List.of("true"))),
                new Message.Start(9, new ProcessSpec("/bin/bash", List.of("-bash"), Map.of("HOME", "/home/u"), "/home/u", pty,
                        new Credentials(1000, 1000, List.of(27, 100, Integer.MAX_VALUE, -2)))),
                new Message.Started(7, 42),
                new Message.Data(7, 1, "hello".getBytes()),
                new Message.Eof(7, 2),
                new Message.Window(7, 0, 4096),
                new Message.Resize(7, 50, 200),
                new Message.Signal(7, "TERM"),
                new Message.Exit(7, new ExitStatus(-1, 9, "KILL", true)),
                new Message.Exit(7, ExitStatus.code(42)),
                new Message.Close(7),
                new Message.Error(7, 3, "unknown id"),
                new Message.Configure(1_700_000_000_000_000_000L, "vm-1", new byte[] {1, 2, 3}),
                new Message.Configured(),
                new Message.Home("/home/alice", 1000, 1001),
                new Message.HomeStatus(""),
                new Message.HomeStatus("mount: Bad message"),
                new Message.Sync(true),
                new Message.Sync(false),
                new Message.Synced(""),
                new Message.Synced("syncfs /root: Input/output error"),
                new Message.Egress(3128),
                new Message.EgressStatus(3128, ""),
                new Message.EgressStatus(3128, "cannot listen on 127.0.0.1:3128: Address in use"),
                new Message.TunnelOpen(5, "deb.debian.org", 443, false),
                new Message.TunnelOpen(6, "2001:db8::1", 8443, true),
                new Message.TunnelOpened(5),
                new Message.TunnelRefused(5, GuestTunnel.Refusal.LIMIT, "32 connections at once"),
                new Message.TunnelData(5, new byte[] {22, 3, 1}),
                new Message.TunnelEof(5),
                new Message.TunnelWindow(5, Protocol.TUNNEL_WINDOW),
                new Message.TunnelClose(5));
        for (Message m : all) {
            Message back = Message.decode(roundTrip(m.encode()));
            assertThat(back).usingRecursiveComparison().isEqualTo(m);
        }
    }

    /** The layout of docs/protocol.md's START (version 2), byte for byte: what the C decoder reads. */
    @Test
    void startCarriesCredentialsAndPathAfterTheFlags() {
        var spec = new ProcessSpec("/bin/sh", List.of("-sh"), Map.of("A", "b"), "/w", null, new Credentials(1234, 42, List.of(5, -2)));
        ByteBuffer expected = ByteBuffer.allocate(200)
                .put((byte) 0).putInt(1234).putInt(42).putShort((short) 2).putInt(5).putInt(0xfffffffe)
                .putInt(7).put("/bin/sh".getBytes())
                .putShort((short) 1).putInt(3).put("-sh".getBytes())
                .putShort((short) 1).putInt(3).put("A=b".getBytes())
                .putInt(2).put("/w".getBytes())
                .putInt(0).putShort((short) 0).putShort((short) 0).putShort((short) 0);
        byte[] want = java.util.Arrays.copyOf(expected.array(), expected.position());
        assertThat(new Message.Start(3, spec).encode().payload()).isEqualTo(want);
        // an empty path means argv[0]; root by default
        Message.Start plain = new Message.Start(4, ProcessSpec.exec(List.of("true")));
        assertThat(java.util.Arrays.copyOfRange(plain.encode().payload(), 0, 15))
                .isEqualTo(new byte[] {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
    }

    @Test
    void aStartWithAnIdOfAllOnesIsRefused() {
        assertThatThrownBy(() -> new Credentials(-1, 0, List.of())).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> new Credentials(0, 0, List.of(3, -1))).isInstanceOf(IllegalArgumentException.class);
        byte[] ok = new Message.Start(5, ProcessSpec.exec(List.of("id")).withCredentials(new Credentials(7, 7, List.of()))).encode().payload();
        for (int field : new int[] {1, 5}) { // uid, gid
            byte[] bad = ok.clone();
            ByteBuffer.wrap(bad).putInt(field, -1);
            assertThatThrownBy(() -> Message.decode(new Frame(Protocol.START, 5, bad)))
                    .isInstanceOf(ProtocolException.class).hasMessageContaining("is not an id");
        }
        byte[] manyGroups = ok.clone();
        ByteBuffer.wrap(manyGroups).putShort(9, (short) (Protocol.MAX_GROUPS + 1));
        assertThatThrownBy(() -> Message.decode(new Frame(Protocol.START, 5, manyGroups)))
                .isInstanceOf(ProtocolException.class).hasMessageContaining("ngroups");
    }

    @Test
    void impossibleLengthIsAFramingErrorBeforeAnyAllocation() {
        byte[] huge = ByteBuffer.allocate(9).putInt(Integer.MAX_VALUE).put((byte) 4).putInt(1).array();
        assertThatThrownBy(() -> Frame.read(Channels.newChannel(new ByteArrayInputStream(huge))))
                .isInstanceOfSatisfying(ProtocolException.class, e -> assertThat(e.isFraming()).isTrue());
        byte[] tiny = ByteBuffer.allocate(9).putInt(4).put((byte) 4).putInt(1).array();
        assertThatThrownBy(() -> Frame.read(Channels.newChannel(new ByteArrayInputStream(tiny))))
                .isInstanceOf(ProtocolException.class);
    }

    @Test
    void truncatedFrameIsEofButCleanEndIsNull() throws IOException {
        assertThat(Frame.read(Channels.newChannel(new ByteArrayInputStream(new byte[0])))).isNull();
        byte[] cut = ByteBuffer.allocate(10).putInt(100).put((byte) 4).putInt(1).put((byte) 1).array();
        assertThatThrownBy(() -> Frame.read(Channels.newChannel(new ByteArrayInputStream(cut))))
                .isInstanceOf(EOFException.class);
    }

    @Test
    void malformedPayloadsAreMessageErrors() {
        List<Frame> bad = List.of(
                new Frame(Protocol.EXIT, 1, new byte[] {0, 0}),                       // truncated
                new Frame(Protocol.EOF, 1, new byte[] {1, 9}),                        // trailing byte
                new Frame(Protocol.EOF, 1, new byte[] {7}),                           // bad fd
                new Frame(Protocol.WINDOW, 1, new byte[] {0, 0, 0, 0, 0}),            // zero increment
                new Frame((byte) 0x7f, 1, new byte[0]),                               // unknown type
                new Frame(Protocol.STARTED, 0, new byte[] {0, 0, 0, 1}),              // needs an id
                new Frame(Protocol.SIGNAL, 1, new byte[] {0, 0, 0, 2, 'A', 0}),       // NUL in string
                new Frame(Protocol.SIGNAL, 1, new byte[] {(byte) 0xff, (byte) 0xff, (byte) 0xff, (byte) 0xff}),
                new Message.Exit(1, new ExitStatus(300, 0, "", false)).encode(),    // code > 255
                new Frame(Protocol.EGRESS, 1, new byte[] {0x0c, 0x38}),               // must be on id 0
                new Frame(Protocol.EGRESS_STATUS, 0, new byte[] {0x0c}),              // truncated
                new Frame(Protocol.TOPEN, 0, new Message.TunnelOpen(1, "a", 1, false).encode().payload()), // needs an id
                new Frame(Protocol.TOPEN, 1, new byte[] {0, 0, 0, 1, 'a', 0, 80}),    // no flags
                new Frame(Protocol.TOPEN, 1, new byte[] {0, 0, 0, 1, 'a', 0, 80, 4}), // unknown flag
                new Frame(Protocol.TOPEN, 1, new byte[] {0, 0, 0, 1, 0, 0, 80, 0}),   // NUL in the host
                new Frame(Protocol.TOPENED, 1, new byte[] {0}),                       // trailing byte
                new Frame(Protocol.TREFUSED, 1, new byte[] {0, 0, 0, 0, 0}),          // reason 0
                new Frame(Protocol.TREFUSED, 1, new byte[] {4, 0, 0, 0, 0}),          // reason 4
                new Frame(Protocol.TREFUSED, 1, refusal(Protocol.MAX_REFUSAL + 1)),   // message too long
                new Frame(Protocol.TDATA, 1, new byte[0]),                            // empty
                new Frame(Protocol.TDATA, 0, new byte[] {1}),                         // needs an id
                new Frame(Protocol.TWINDOW, 1, new byte[] {0, 0, 0, 0}),              // zero increment
                new Frame(Protocol.TWINDOW, 1, new byte[] {0, 8, 0, 1}),              // beyond the window
                new Frame(Protocol.TCLOSE, 0, new byte[0]),                           // needs an id
                new Frame(Protocol.HOME, 1, new Message.Home("/root", 0, 0).encode().payload()), // must be on id 0
                new Frame(Protocol.HOME, 0, new Message.Home("/root", -1, 0).encode().payload()), // uid 0xFFFFFFFF
                new Frame(Protocol.HOME, 0, new byte[] {0, 0, 0, 1, '/', 0, 0, 0}),    // truncated gid
                new Frame(Protocol.SYNC, 0, new byte[] {0, 0}),                       // trailing byte
                new Frame(Protocol.SYNC, 0, new byte[0]),                             // no flags
                new Frame(Protocol.SYNC, 0, new byte[] {2}),                          // unknown flag
                new Frame(Protocol.SYNCED, 3, new byte[] {0, 0, 0, 0}),               // must be on id 0
                new Frame(Protocol.HOME_STATUS, 0, new byte[] {0, 0, 0, 2, 'o'}));    // truncated
        for (Frame f : bad) {
            assertThatThrownBy(() -> Message.decode(f))
                    .as("type %d", f.type())
                    .isInstanceOfSatisfying(ProtocolException.class, e -> assertThat(e.isFraming()).isFalse());
        }
    }

    private static byte[] refusal(int n) {
        ByteBuffer b = ByteBuffer.allocate(5 + n).put((byte) 1).putInt(n);
        while (b.hasRemaining()) {
            b.put((byte) 'x');
        }
        return b.array();
    }

    @Test
    void aRefusalOfTheLongestMessageDecodesAndTheHostKeepsItsMessagesToOneLine() throws ProtocolException {
        assertThat(Message.decode(new Frame(Protocol.TREFUSED, 1, refusal(Protocol.MAX_REFUSAL)))).isInstanceOf(Message.TunnelRefused.class);
        String line = GuestTunnel.oneLine("a\r\nb\u0000" + "\u00e9".repeat(2000));
        assertThat(line).startsWith("a  b ").doesNotContain("\n", "\r", "\u0000");
        assertThat(line.getBytes(java.nio.charset.StandardCharsets.UTF_8).length).isLessThanOrEqualTo(Protocol.MAX_REFUSAL);
    }

    /** Random and mutated bytes: the decoder either yields messages or throws IOException, nothing else. */
    @Test
    void survivesRandomAndMutatedInput() {
        Random rnd = new Random(2026);
        List<byte[]> seeds = new ArrayList<>();
        for (Message m : List.of(new Message.Hello(1, 5, "k"), new Message.Exit(3, ExitStatus.code(1)),
                new Message.Start(2, ProcessSpec.exec(List.of("a", "b"))), new Message.Data(2, 1, new byte[10]),
                new Message.TunnelOpen(4, "example.com", 443, true), new Message.TunnelWindow(4, 100),
                new Message.EgressStatus(3128, "x"), new Message.TunnelData(4, new byte[7]))) {
            seeds.add(m.encode().encode().array());
        }
        for (int i = 0; i < 200_000; i++) {
            byte[] input;
            if (i % 2 == 0) {
                input = new byte[rnd.nextInt(64)];
                rnd.nextBytes(input);
            } else {
                input = seeds.get(rnd.nextInt(seeds.size())).clone();
                for (int k = rnd.nextInt(4); k >= 0; k--) {
                    input[rnd.nextInt(input.length)] = (byte) rnd.nextInt(256);
                }
            }
            var in = Channels.newChannel(new ByteArrayInputStream(input));
            try {
                Frame f;
                while ((f = Frame.read(in)) != null) {
                    try {
                        Message.decode(f);
                    } catch (ProtocolException e) {
                        // expected for most inputs
                    }
                }
            } catch (IOException e) {
                // framing errors and truncation end the stream; that is the contract
            }
        }
    }
}
