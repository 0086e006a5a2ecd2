package io.vmgate.agent;

import java.io.Closeable;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.ByteChannel;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The host end of one agent connection. One thread reads frames and dispatches them; it
 * never blocks on a consumer, because every stream's buffer is bounded by the credit the
 * host granted, and it never writes (a guest that does not read its port while the host
 * writes to it could otherwise stall the reader). Writers share the channel under a lock.
 */
public final class AgentClient implements Closeable {
    private static final Logger log = LoggerFactory.getLogger(AgentClient.class);
    private static final java.security.SecureRandom ENTROPY = new java.security.SecureRandom();

    private final ByteChannel channel;
    private final String name;
    private final Object writeLock = new Object();
    private final Map<Integer, GuestProcess> processes = new ConcurrentHashMap<>();
    private final AtomicInteger nextId = new AtomicInteger(1);
    private final CompletableFuture<Message.Hello> hello = new CompletableFuture<>();
    /** CONFIGUREs sent and not yet answered, oldest first: the guest answers them in order. */
    private final java.util.Queue<CompletableFuture<Void>> configuring = new java.util.concurrent.ConcurrentLinkedQueue<>();
    private final Object configureLock = new Object();
    private final CompletableFuture<Void> disconnected = new CompletableFuture<>();
    private final Map<Integer, GuestTunnel> tunnels = new ConcurrentHashMap<>();
    private volatile TunnelHandler tunnelHandler;
    private volatile CompletableFuture<Void> egressAnswer = new CompletableFuture<>();
    /** The answer to the one HOME or SYNC in flight (callers send one at a time: see {@link #mountHome}). */
    private volatile CompletableFuture<Void> homeAnswer = new CompletableFuture<>();
    private volatile CompletableFuture<Void> syncAnswer = new CompletableFuture<>();
    /** Frames the reader's side must send without writing itself (refusals); bounded: see {@link #sendLater}. */
    private final java.util.concurrent.BlockingQueue<Message> deferred = new java.util.concurrent.LinkedBlockingQueue<>(4096);
    private final java.util.concurrent.atomic.AtomicBoolean deferredStarted = new java.util.concurrent.atomic.AtomicBoolean();
    private volatile Thread deferredSender;

    private AgentClient(ByteChannel channel, String name) {
        this.channel = channel;
        this.name = name;
    }

    /** Starts reading from the channel at once; the first message expected is HELLO (cold boot). */
    public static AgentClient connect(ByteChannel channel, String name) {
        AgentClient c = new AgentClient(channel, name);
        // A platform thread: a virtual one blocked on a socket brings up the JDK's I/O poller,
        // whose thread in native makes every JVM exit wait 0.3 s (HotSpot's VM_Exit).
        Thread.ofPlatform().daemon().name("agent-reader-" + name).start(c::readLoop);
        return c;
    }

    public String name() {
        return name;
    }

    public Message.Hello awaitHello(Duration timeout) throws IOException, TimeoutException {
        return await(hello, timeout, "agent hello");
    }

    /**
     * Sets the guest's clock, hostname and entropy, and waits for the agent's answer. After
     * a snapshot restore this is also how the host learns the agent is live.
     */
    public void configure(long unixTimeNanos, String hostname, byte[] entropy, Duration timeout)
            throws IOException, TimeoutException {
        await(configureAsync(unixTimeNanos, hostname, entropy), timeout, "agent configure");
    }

    /**
     * Sends CONFIGURE without waiting; the future completes on CONFIGURED. The agent handles
     * frames in order, so a START sent right after runs in a configured guest: after a cold
     * boot (where HELLO already proved the agent live) that saves a round trip.
     */
    public CompletableFuture<Void> configureAsync(long unixTimeNanos, String hostname, byte[] entropy) throws IOException {
        CompletableFuture<Void> answer = new CompletableFuture<>();
        // Queued and sent under one lock, so the queue's order is the wire's: each CONFIGURED
        // answers the oldest CONFIGURE (two in flight, e.g. a cold boot's and a pool's hand-out,
        // must not leave the first one waiting forever).
        synchronized (configureLock) {
            configuring.add(answer);
            if (disconnected.isDone()) {
                answer.completeExceptionally(gone(null));
            }
            send(new Message.Configure(unixTimeNanos, hostname, entropy));
        }
        return answer;
    }

    /**
     * CONFIGURE with the host's current time and 64 fresh random bytes: what every VM needs
     * before it runs anything, and again when it is handed out after idling in a pool.
     */
    public void configureFresh(String hostname, Duration timeout) throws IOException, TimeoutException {
        await(configureFreshAsync(hostname), timeout, "agent configure");
    }

    /** {@link #configureFresh} without waiting for the answer (see {@link #configureAsync}). */
    public CompletableFuture<Void> configureFreshAsync(String hostname) throws IOException {
        byte[] entropy = new byte[64];
        ENTROPY.nextBytes(entropy);
        return configureAsync(System.currentTimeMillis() * 1_000_000L, hostname, entropy);
    }

    /** Starts a process; returns at once (the pid arrives in {@link GuestProcess#started()}). */
    public GuestProcess start(ProcessSpec spec) throws IOException {
        int id = nextId.getAndIncrement();
        Frame frame;
        try {
            frame = new Message.Start(id, spec).encode();
        } catch (IllegalArgumentException e) {
            throw new IOException(e.getMessage(), e);
        }
        GuestProcess p = new GuestProcess(id, this, spec.pty() != null);
        processes.put(id, p);
        if (disconnected.isDone()) {
            processes.remove(id);
            throw gone(null);
        }
        write(frame);
        return p;
    }

    /**
     * Asks the guest to serve its egress proxy on {@code 127.0.0.1:port} and hands every
     * connection made through it to {@code handler}. The future completes once the guest
     * listens (a process started after that finds the proxy), or fails with the guest's reason.
     * Until this is called, the guest's tunnel requests are refused.
     */
    public CompletableFuture<Void> serveEgress(int port, TunnelHandler handler) throws IOException {
        if (port < 1 || port > 0xffff) {
            throw new IllegalArgumentException("proxy port " + port + " out of range");
        }
        CompletableFuture<Void> answer = new CompletableFuture<>();
        egressAnswer = answer;
        tunnelHandler = java.util.Objects.requireNonNull(handler, "handler");
        send(new Message.Egress(port));
        return answer;
    }

    /**
     * Asks the guest to mount its home disk (a VM started with one, see docs/protocol.md) at
     * {@code path}, owned by {@code uid:gid}; the future completes once it is mounted, or fails
     * with the guest's reason. One at a time: the host sends it once, before any START.
     */
    public CompletableFuture<Void> mountHome(String path, int uid, int gid) throws IOException {
        if (path.getBytes(java.nio.charset.StandardCharsets.UTF_8).length > Protocol.MAX_HOME_PATH) {
            throw new IllegalArgumentException("home path longer than " + Protocol.MAX_HOME_PATH + " bytes");
        }
        CompletableFuture<Void> answer = new CompletableFuture<>();
        homeAnswer = answer;
        if (disconnected.isDone()) {
            answer.completeExceptionally(gone(null));
        }
        send(new Message.Home(path, uid, gid));
        return answer;
    }

    /**
     * Asks the guest to write every filesystem's dirty data to its disks; with {@code freeze} (the
     * last word before the host destroys a VM with a persistent home) it also freezes the home:
     * clean, nothing to replay at its next mount, writes after this block. Completes when it has,
     * or fails with its reason. One at a time.
     */
    public CompletableFuture<Void> sync(boolean freeze) throws IOException {
        CompletableFuture<Void> answer = new CompletableFuture<>();
        syncAnswer = answer;
        if (disconnected.isDone()) {
            answer.completeExceptionally(gone(null));
        }
        send(new Message.Sync(freeze));
        return answer;
    }

    /** Tunnels open or being decided right now. */
    public int tunnels() {
        return tunnels.size();
    }

    public CompletableFuture<Void> disconnected() {
        return disconnected;
    }

    public int running() {
        return processes.size();
    }

    void send(Message m) throws IOException {
        write(m.encode());
    }

    /**
     * DATA, encoded straight from the caller's bytes into the frame that goes on the wire (stdin:
     * one copy, where building a {@link Message.Data} and its {@link Frame} took three).
     */
    void sendData(int id, int fd, byte[] b, int off, int len) throws IOException {
        if (len > Protocol.MAX_PAYLOAD - 1) {
            throw new IllegalArgumentException("DATA of " + len + " bytes exceeds MAX_PAYLOAD");
        }
        ByteBuffer frame = ByteBuffer.allocate(Protocol.HEADER + 1 + len);
        frame.putInt(5 + 1 + len).put(Protocol.DATA).putInt(id).put((byte) fd).put(b, off, len).flip();
        write(frame);
    }

    /** For credit grants and kills from paths that cannot usefully handle a dead connection. */
    void sendQuietly(Message m) {
        try {
            send(m);
        } catch (IOException e) {
            log.atDebug().setMessage("agent_send_failed").addKeyValue("vm", name).addKeyValue("msg", m.getClass().getSimpleName())
                    .addKeyValue("error", e.toString()).log();
        }
    }

    void forgetTunnel(GuestTunnel t) {
        tunnels.remove(t.id(), t);
    }

    /**
     * Sends a frame from a thread of its own, for answers decided on the reader thread. A guest
     * that asks faster than the host can answer fills the queue; what does not fit is dropped
     * (logged), and the guest's own requests then wait forever: the guest only hurts itself.
     */
    void sendLater(Message m) {
        if (disconnected.isDone()) {
            return;
        }
        if (!deferred.offer(m)) {
            log.atWarn().setMessage("agent_flood").addKeyValue("vm", name).addKeyValue("dropped", m.getClass().getSimpleName())
                    .addKeyValue("note", "the guest asks faster than the host can answer").log();
            return;
        }
        if (deferredStarted.compareAndSet(false, true)) {
            deferredSender = Thread.ofPlatform().daemon().name("agent-sender-" + name).start(() -> {
                try {
                    while (!disconnected.isDone()) { // woken by shutdown's interrupt, or notices within a second
                        Message next = deferred.poll(1, TimeUnit.SECONDS);
                        if (next != null) {
                            send(next);
                        }
                    }
                } catch (InterruptedException | IOException e) {
                    // the connection ended: nothing left to answer
                }
            });
        }
    }

    private void write(Frame f) throws IOException {
        write(f.encode());
    }

    private void write(ByteBuffer buf) throws IOException {
        if (disconnected.isDone()) {
            throw gone(null);
        }
        synchronized (writeLock) {
            try {
                while (buf.hasRemaining()) {
                    channel.write(buf);
                }
            } catch (IOException e) {
                shutdown(e);
                throw gone(e);
            }
        }
    }

    private AgentGoneException gone(Throwable cause) {
        return new AgentGoneException("the VM's agent connection is closed", cause);
    }

    private void readLoop() {
        Throwable cause = null;
        ByteBuffer header = ByteBuffer.allocate(Protocol.HEADER);
        ByteBuffer fdByte = ByteBuffer.allocate(1);
        try {
            Frame.Header h;
            while ((h = Frame.readHeader(channel, header)) != null) {
                try {
                    if (h.type() == Protocol.DATA && h.payloadLength() >= 1) {
                        fdByte.clear();
                        Frame.readFully(channel, fdByte);
                        data(h.id(), fdByte.get(0) & 0xff, h.payloadLength() - 1);
                        continue;
                    }
                    dispatch(Message.decode(Frame.readPayload(channel, h)));
                } catch (ProtocolException e) {
                    if (e.isFraming()) {
                        throw e;
                    }
                    // The guest is not trusted: a bad message is logged and dropped.
                    log.atWarn().setMessage("agent_bad_message").addKeyValue("vm", name).addKeyValue("type", h.type())
                            .addKeyValue("id", h.id()).addKeyValue("error", e.getMessage()).log();
                }
            }
        } catch (ProtocolException e) {
            log.atWarn().setMessage("agent_protocol_error").addKeyValue("vm", name).addKeyValue("error", e.getMessage()).log();
            cause = e;
        } catch (IOException e) {
            cause = e;
        } catch (RuntimeException e) {
            log.atError().setMessage("agent_reader_crashed").addKeyValue("vm", name).setCause(e).log();
            cause = e;
        }
        shutdown(cause);
    }

    private void dispatch(Message m) throws ProtocolException {
        switch (m) {
            case Message.Hello h -> {
                if (h.version() != Protocol.VERSION) {
                    hello.completeExceptionally(ProtocolException.framing(
                            "guest agent speaks protocol version " + h.version() + ", this host speaks " + Protocol.VERSION));
                } else {
                    hello.complete(h);
                }
            }
            case Message.Configured c -> {
                CompletableFuture<Void> oldest = configuring.poll();
                if (oldest == null) {
                    throw ProtocolException.message("CONFIGURED without a CONFIGURE");
                }
                oldest.complete(null);
            }
            case Message.Started s -> process(s.id()).started.complete(s.pid());
            case Message.Eof e -> {
                GuestProcess p = process(e.id());
                (e.fd() == Protocol.FD_STDERR ? p.stderr : p.stdout).finish();
            }
            case Message.Window w -> {
                if (w.fd() != Protocol.FD_STDIN) {
                    throw ProtocolException.message("WINDOW from the guest must be for stdin");
                }
                process(w.id()).stdin.grant(w.increment());
            }
            case Message.Exit x -> {
                GuestProcess p = processes.remove(x.id());
                if (p == null) {
                    throw ProtocolException.message("EXIT for unknown id " + x.id());
                }
                p.stdout.finish();
                p.stderr.finish();
                p.stdin.fail(new IOException("process has exited"));
                p.started.complete(-1);
                p.exit.complete(x.status());
            }
            case Message.Error e -> {
                log.atWarn().setMessage("agent_error").addKeyValue("vm", name).addKeyValue("id", e.id())
                        .addKeyValue("code", e.code()).addKeyValue("message", e.message()).log();
                GuestProcess p = e.id() == 0 ? null : processes.get(e.id());
                // An ERROR on a process that never started means the START was refused.
                if (p != null && !p.started.isDone()) {
                    processes.remove(e.id());
                    p.fail(new IOException("the guest refused to start the process: " + e.message()));
                }
            }
            case Message.HomeStatus s -> {
                if (s.error().isEmpty()) {
                    homeAnswer.complete(null);
                } else {
                    homeAnswer.completeExceptionally(new IOException(s.error()));
                }
            }
            case Message.Synced s -> {
                if (s.error().isEmpty()) {
                    syncAnswer.complete(null);
                } else {
                    syncAnswer.completeExceptionally(new IOException(s.error()));
                }
            }
            case Message.EgressStatus s -> {
                if (s.error().isEmpty()) {
                    egressAnswer.complete(null);
                } else {
                    egressAnswer.completeExceptionally(new IOException("the guest cannot serve its egress proxy: " + s.error()));
                }
            }
            case Message.TunnelOpen o -> openTunnel(o);
            case Message.TunnelData d -> tunnel(d.id()).guestData(d.data());
            case Message.TunnelEof e -> tunnel(e.id()).guestEof();
            case Message.TunnelWindow w -> tunnel(w.id()).guestWindow(w.increment());
            case Message.TunnelClose c -> tunnel(c.id()).guestClose();
            default -> throw ProtocolException.message(m.getClass().getSimpleName() + " is not sent by a guest");
        }
    }

    private void openTunnel(Message.TunnelOpen o) throws ProtocolException {
        GuestTunnel t = new GuestTunnel(o.id(), o.host(), o.port(), o.tls(), this);
        if (tunnels.putIfAbsent(o.id(), t) != null) {
            throw ProtocolException.message("TOPEN for tunnel " + o.id() + ", which is in use");
        }
        TunnelHandler h = tunnelHandler;
        if (h == null) {
            t.refuse(GuestTunnel.Refusal.DENIED, "egress is not enabled for this VM");
            return;
        }
        try {
            h.open(t);
        } catch (RuntimeException e) {
            log.atError().setMessage("agent_tunnel_handler_failed").addKeyValue("vm", name).addKeyValue("tunnel", o.id())
                    .setCause(e).log();
            if (!t.answered()) {
                t.refuse(GuestTunnel.Refusal.FAILED, "internal error");
            }
        }
    }

    private GuestTunnel tunnel(int id) throws ProtocolException {
        GuestTunnel t = tunnels.get(id);
        if (t == null) {
            throw ProtocolException.message("unknown tunnel id " + id);
        }
        return t;
    }

    /**
     * A DATA payload of {@code n} bytes, still on the channel: read straight into the stream's
     * buffer, or consumed and dropped (with the same checks as any message) when it is not
     * acceptable. The guest is not trusted: its fd, id and credit are all checked.
     */
    private void data(int id, int fd, int n) throws IOException {
        GuestProcess p = processes.get(id);
        InboundStream s = p == null ? null : fd == Protocol.FD_STDERR ? p.stderr : fd == Protocol.FD_STDOUT ? p.stdout : null;
        if (s == null) {
            Frame.readFully(channel, ByteBuffer.allocate(n)); // bounded by MAX_PAYLOAD
            throw ProtocolException.message(p == null ? "unknown process id " + id : "DATA from the guest on fd " + fd);
        }
        switch (s.offer(channel, n)) {
            case ACCEPTED, DISCARDED -> { } // DISCARDED: output after kill(), dropped on purpose
            case OVERRUN -> throw ProtocolException.message("DATA on fd " + fd + " beyond the granted window or after EOF");
        }
    }

    private GuestProcess process(int id) throws ProtocolException {
        GuestProcess p = processes.get(id);
        if (p == null) {
            throw ProtocolException.message("unknown process id " + id);
        }
        return p;
    }

    private void shutdown(Throwable cause) {
        if (!disconnected.complete(null)) {
            return;
        }
        AgentGoneException gone = gone(cause);
        hello.completeExceptionally(gone);
        CompletableFuture<Void> c;
        while ((c = configuring.poll()) != null) {
            c.completeExceptionally(gone);
        }
        egressAnswer.completeExceptionally(gone);
        homeAnswer.completeExceptionally(gone);
        syncAnswer.completeExceptionally(gone);
        processes.values().forEach(p -> p.fail(gone));
        processes.clear();
        tunnels.values().forEach(t -> t.fail(gone));
        tunnels.clear();
        deferred.clear();
        Thread sender = deferredSender;
        if (sender != null) {
            sender.interrupt();
        }
        try {
            channel.close();
        } catch (IOException ignored) {
            // already broken
        }
    }

    @Override
    public void close() {
        shutdown(null);
    }

    private static <T> T await(CompletableFuture<T> f, Duration timeout, String what) throws IOException, TimeoutException {
        try {
            return f.get(timeout.toMillis(), TimeUnit.MILLISECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new java.io.InterruptedIOException("interrupted waiting for " + what);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof IOException io) {
                throw io;
            }
            throw new IOException(what + " failed", e.getCause());
        } catch (TimeoutException e) {
            throw new TimeoutException("no " + what + " within " + timeout.toMillis() + " ms");
        }
    }
}
