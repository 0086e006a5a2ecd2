package io.vmgate.agent;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * One connection a guest process asked for through the agent's egress proxy (docs/protocol.md,
 * "Egress tunnels"): the guest named {@link #host()} and {@link #port()}; whoever handles it
 * decides, then either {@link #refuse refuses} or connects and {@link #accept accepts}, and
 * carries bytes between {@link #input()} (what the guest sends) and {@link #output()} (what it
 * receives), both flow-controlled by credit. {@link #close()} ends it.
 *
 * <p>The reader thread of the {@link AgentClient} only records what the guest says here and
 * never sends: answers and data go out from the handler's threads. So a guest that stops
 * reading its port can never stall the reader (see {@link #send}).
 */
public final class GuestTunnel {
    /** Why a tunnel was refused; each becomes its own HTTP answer in the guest's proxy. */
    public enum Refusal {
        /** Not allowed by the policy (403). */
        DENIED(1),
        /** A limit of the session: connections at once, bytes (503). */
        LIMIT(2),
        /** Allowed, but the name did not resolve or the connection failed (502). */
        FAILED(3);

        private final int code;

        Refusal(int code) {
            this.code = code;
        }

        public int code() {
            return code;
        }

        static Refusal of(int code) {
            for (Refusal r : values()) {
                if (r.code == code) {
                    return r;
                }
            }
            return null;
        }
    }

    private static final int SENT = 1, RECEIVED = 2; // TCLOSE

    private final int id;
    private final String host;
    private final int port;
    private final boolean tls;
    private final AgentClient agent;
    final InboundStream fromGuest;
    final OutboundStream toGuest;
    private final Object sendLock = new Object();
    private final AtomicInteger closes = new AtomicInteger();
    private volatile boolean open;
    private volatile boolean answered;
    private volatile boolean guestEof;
    private volatile boolean guestAborted;

    GuestTunnel(int id, String host, int port, boolean tls, AgentClient agent) {
        this.id = id;
        this.host = host;
        this.port = port;
        this.tls = tls;
        this.agent = agent;
        this.fromGuest = new InboundStream(n -> sendIfOpen(new Message.TunnelWindow(id, n)), Protocol.TUNNEL_WINDOW);
        this.toGuest = new OutboundStream(new OutboundStream.Sink() {
            public void data(byte[] b, int off, int len) throws IOException {
                send(new Message.TunnelData(id, java.util.Arrays.copyOfRange(b, off, off + len)));
            }

            public void eof() throws IOException {
                send(new Message.TunnelEof(id));
            }
        }, Protocol.TUNNEL_WINDOW, Protocol.TUNNEL_CHUNK);
    }

    /** The tunnel id the guest chose. */
    public int id() {
        return id;
    }

    /** As the guest sent it: a name or an IP literal. Unchecked: the policy checks it. */
    public String host() {
        return host;
    }

    /** As the guest sent it: 0–65535. Unchecked: the policy checks it. */
    public int port() {
        return port;
    }

    /**
     * The guest's client sent an {@code https://} URL as a plain proxy request (busybox wget does):
     * the host is to speak TLS to the server, verifying its certificate, and carry the plaintext.
     */
    public boolean tls() {
        return tls;
    }

    /**
     * The connection is up: tells the guest, which starts carrying bytes. Fails if the tunnel was
     * answered already (closed meanwhile, which refuses it) or the agent connection is gone.
     */
    public void accept() throws IOException {
        synchronized (sendLock) {
            if (answered) {
                throw new IOException("tunnel " + id + " was closed before it opened");
            }
            answered = true;
            open = true;
            agent.send(new Message.TunnelOpened(id));
        }
    }

    /**
     * Tells the guest no, with a one-line reason its user will read. Never blocks: safe on any
     * thread, including inside {@link TunnelHandler#open}. The id is free again at once. Does
     * nothing if the tunnel was answered already (a {@link #close()} meanwhile refuses it).
     */
    public void refuse(Refusal reason, String message) {
        synchronized (sendLock) {
            if (answered) {
                return;
            }
            answered = true;
        }
        agent.forgetTunnel(this); // before the answer: the guest may reuse the id once it has it
        agent.sendLater(new Message.TunnelRefused(id, reason, oneLine(message)));
    }

    /** What the guest sends; end of stream at its TEOF (or TCLOSE). */
    public InputStream input() {
        return fromGuest;
    }

    /** What the guest receives; writes block for credit; close() sends TEOF. */
    public OutputStream output() {
        return toGuest;
    }

    /** True if the guest released the tunnel (TCLOSE) before finishing its side (TEOF): an abort, not an end. */
    public boolean guestAborted() {
        return guestAborted;
    }

    /**
     * Releases the tunnel (TCLOSE): after both sides' TEOF the normal end, before it an abort.
     * A tunnel not answered yet is refused instead. Idempotent; nothing is sent for the tunnel
     * after it.
     */
    public void close() {
        boolean wasOpen;
        int before;
        synchronized (sendLock) {
            if (!answered) {
                answered = true;
                agent.forgetTunnel(this);
                agent.sendLater(new Message.TunnelRefused(id, Refusal.FAILED, "the connection was closed before it opened"));
                return;
            }
            wasOpen = open;
            open = false; // from here on no TDATA, TEOF or TWINDOW: TCLOSE is the last frame
            before = closes.getAndAccumulate(SENT, (a, b) -> a | b);
        }
        if ((before & SENT) != 0) {
            return;
        }
        if (wasOpen) {
            agent.sendQuietly(new Message.TunnelClose(id));
        }
        IOException closed = new IOException("tunnel closed");
        toGuest.fail(closed);
        fromGuest.fail(closed);
        if ((before | SENT) == (SENT | RECEIVED)) {
            agent.forgetTunnel(this);
        }
    }

    /** Sends a frame for this tunnel unless it has been closed; TDATA and TEOF after close fail. */
    private void send(Message m) throws IOException {
        synchronized (sendLock) {
            if (!open) {
                throw new IOException("tunnel " + id + " is closed");
            }
            agent.send(m);
        }
    }

    private void sendIfOpen(Message m) {
        synchronized (sendLock) {
            if (open) {
                agent.sendQuietly(m);
            }
        }
    }

    // ---- what the guest says (on the agent's reader thread: records, never sends) ----

    void guestData(byte[] data) throws ProtocolException {
        if (!open) {
            if (answered && (closes.get() & SENT) != 0) {
                return; // we let go; the guest has not heard yet
            }
            throw ProtocolException.message("TDATA for tunnel " + id + ", which is not open");
        }
        if (guestEof) {
            broken("TDATA after TEOF");
        }
        if (!fromGuest.offer(data)) {
            broken("TDATA beyond the window");
        }
    }

    void guestEof() throws ProtocolException {
        if (guestEof) {
            broken("second TEOF");
        }
        guestEof = true;
        fromGuest.finish();
    }

    void guestWindow(int increment) {
        toGuest.grant(increment);
    }

    void guestClose() throws ProtocolException {
        if ((closes.get() & RECEIVED) != 0) {
            throw ProtocolException.message("second TCLOSE for tunnel " + id);
        }
        guestAborted = !guestEof;
        guestEof = true;
        fromGuest.finish(); // what arrived still reaches the remote end
        toGuest.fail(new IOException("the guest closed the tunnel"));
        if (closes.accumulateAndGet(RECEIVED, (a, b) -> a | b) == (SENT | RECEIVED)) {
            agent.forgetTunnel(this);
        }
    }

    boolean answered() {
        return answered;
    }

    /** The guest broke the protocol on this tunnel: its handler aborts it (a stream with bytes missing is worse than none). */
    private void broken(String why) throws ProtocolException {
        IOException e = new IOException("the guest broke the tunnel protocol: " + why);
        fromGuest.fail(e);
        toGuest.fail(e);
        throw ProtocolException.message(why + " on tunnel " + id);
    }

    void fail(IOException cause) {
        fromGuest.fail(cause);
        toGuest.fail(cause);
    }

    /** One line of at most MAX_REFUSAL bytes of UTF-8: the guest prints it as an answer's body. */
    static String oneLine(String s) {
        String line = s.replaceAll("[\\p{Cntrl}]", " ");
        while (line.getBytes(StandardCharsets.UTF_8).length > Protocol.MAX_REFUSAL) {
            line = line.substring(0, line.length() - Math.max(1, line.length() / 8));
        }
        return line;
    }
}
