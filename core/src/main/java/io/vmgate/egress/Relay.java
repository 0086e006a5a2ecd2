package io.vmgate.egress;

import io.vmgate.agent.GuestTunnel;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

/**
 * One tunnel's life on the host: decide, connect, carry bytes both ways, end. It runs on a
 * platform thread of its own, with a second one for the remote-to-guest direction (platform,
 * not virtual: a virtual thread blocked on a socket starts the JDK's I/O poller, whose thread
 * makes every later JVM exit wait ~0.3 s). Either direction failing ends both.
 *
 * <p>A half-close is carried as one: the guest's TEOF shuts the remote socket's output, the
 * remote's end of stream becomes TEOF. A guest's abort (TCLOSE first), a protocol error or a
 * byte limit resets the remote connection.
 */
final class Relay implements Runnable {
    private static final int BUFFER = 128 * 1024;

    private final Egress egress;
    private final GuestTunnel tunnel;
    private final AtomicReference<Socket> socket = new AtomicReference<>();
    private final AtomicReference<String> cut = new AtomicReference<>();
    private volatile boolean aborted;
    private final AtomicLong out = new AtomicLong();
    private final AtomicLong in = new AtomicLong();

    private volatile Thread thread;

    Relay(Egress egress, GuestTunnel tunnel) {
        this.egress = egress;
        this.tunnel = tunnel;
    }

    void start(String name) {
        thread = Thread.ofPlatform().daemon().name(name).start(this);
    }

    /** Waits for the relay's threads to end; false if they have not within the time. */
    boolean awaitEnd(java.time.Duration d) {
        Thread t = thread;
        try {
            return t == null || t.join(d);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        }
    }

    @Override
    public void run() {
        long t0 = System.nanoTime();
        try {
            relay(t0);
        } catch (RuntimeException | Error e) {
            abort("internal error: " + e);
            egress.finished(this);
            throw e;
        }
    }

    private void relay(long t0) {
        if (egress.closed()) {
            egress.denied(tunnel, GuestTunnel.Refusal.DENIED, "egress has ended for this VM", null, System.nanoTime() - t0);
            tunnel.refuse(GuestTunnel.Refusal.DENIED, "egress has ended for this VM");
            egress.finished(this);
            return;
        }
        EgressPolicy.Decision d = egress.policy.decide(tunnel.host(), tunnel.port(), egress.setup.resolver());
        switch (d) {
            case EgressPolicy.Decision.Denied no -> {
                egress.denied(tunnel, GuestTunnel.Refusal.DENIED, no.reason(),
                        no.address().map(InetAddress::getHostAddress).orElse(null), System.nanoTime() - t0);
                tunnel.refuse(GuestTunnel.Refusal.DENIED, no.reason());
                egress.finished(this);
            }
            case EgressPolicy.Decision.Unresolved u -> {
                egress.failed(tunnel, null, u.reason(), System.nanoTime() - t0);
                tunnel.refuse(GuestTunnel.Refusal.FAILED, u.reason());
                egress.finished(this);
            }
            case EgressPolicy.Decision.Allowed yes -> connectAndCarry(yes, t0);
        }
    }

    private void connectAndCarry(EgressPolicy.Decision.Allowed yes, long t0) {
        String destination = EgressPolicy.printable(tunnel.host()) + ":" + tunnel.port();
        Socket s = null;
        InetAddress address = null;
        String failure = null;
        for (InetAddress a : yes.addresses()) {
            address = a;
            try {
                s = connect(a);
                break;
            } catch (IOException e) {
                failure = "cannot connect to " + destination + " (" + a.getHostAddress() + "): " + e.getMessage();
            }
        }
        if (s != null && tunnel.tls()) {
            try {
                s = startTls(s);
            } catch (IOException e) {
                closeQuietly(s);
                s = null;
                failure = "TLS with " + destination + " failed: " + e.getMessage();
            }
        }
        if (s == null || egress.closed()) {
            closeQuietly(s);
            String reason = s == null ? failure : "egress has ended for this VM";
            egress.failed(tunnel, address.getHostAddress(), reason, System.nanoTime() - t0);
            tunnel.refuse(GuestTunnel.Refusal.FAILED, reason);
            egress.finished(this);
            return;
        }
        try {
            tunnel.accept();
        } catch (IOException e) {
            abort("the agent connection is gone: " + e.getMessage());
            egress.ended(this, tunnel, address.getHostAddress(), yes.rule(), 0, 0, System.nanoTime() - t0, cut.get());
            return;
        }
        Socket remote = s;
        Thread down = Thread.ofPlatform().daemon().name(Thread.currentThread().getName() + "-in").start(() -> remoteToGuest(remote));
        guestToRemote(remote);
        try {
            down.join();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            abort("interrupted");
        }
        tunnel.close();
        closeQuietly(remote);
        egress.ended(this, tunnel, address.getHostAddress(), yes.rule(), out.get(), in.get(), System.nanoTime() - t0, cut.get());
    }

    private Socket connect(InetAddress a) throws IOException {
        Socket s = new Socket();
        socket.set(s); // then check: abort() sets the flag, then looks at the socket
        try {
            if (aborted) {
                throw new IOException("aborted");
            }
            s.setTcpNoDelay(true); // interactive protocols (ssh, git) go through CONNECT
            s.connect(new InetSocketAddress(a, tunnel.port()), (int) egress.limits.connectTimeout().toMillis());
            return s;
        } catch (IOException e) {
            s.close();
            throw e;
        }
    }

    /**
     * TLS on the connection, for a client that sent {@code GET https://} to the proxy: the server's
     * certificate is checked for the name the guest asked for (or the IP address), against the
     * host's trust ({@link Egress.Setup#tls()}). The guest gets the plaintext.
     */
    private Socket startTls(Socket plain) throws IOException {
        String name = tunnel.host().toLowerCase(java.util.Locale.ROOT).replaceFirst("\\.$", "");
        javax.net.ssl.SSLSocket ssl = (javax.net.ssl.SSLSocket) egress.setup.tls().getSocketFactory()
                .createSocket(plain, name, tunnel.port(), true);
        javax.net.ssl.SSLParameters p = ssl.getSSLParameters();
        p.setEndpointIdentificationAlgorithm("HTTPS");
        if (HostSyntax.literal(name) == null) {
            p.setServerNames(java.util.List.of(new javax.net.ssl.SNIHostName(name)));
        }
        ssl.setSSLParameters(p);
        ssl.setSoTimeout((int) egress.limits.connectTimeout().toMillis());
        ssl.startHandshake();
        ssl.setSoTimeout(0);
        return ssl;
    }

    /** Guest to remote: until the guest's TEOF, then half-close the remote's input. */
    private void guestToRemote(Socket remote) {
        byte[] buf = new byte[BUFFER];
        try {
            InputStream from = tunnel.input();
            OutputStream to = remote.getOutputStream();
            for (int n; (n = from.read(buf)) > 0; ) {
                count(out, egress.bytesOut, egress.limits.maxBytesOut(), n, "sent");
                to.write(buf, 0, n);
            }
            if (tunnel.guestAborted()) {
                throw new IOException("the guest aborted the connection");
            }
            remote.shutdownOutput();
        } catch (IOException e) {
            abort(e.getMessage());
        }
    }

    /** Remote to guest: until the remote's end of stream, then TEOF. */
    private void remoteToGuest(Socket remote) {
        byte[] buf = new byte[BUFFER];
        try {
            InputStream from = remote.getInputStream();
            OutputStream to = tunnel.output();
            for (int n; (n = from.read(buf)) > 0; ) {
                count(in, egress.bytesIn, egress.limits.maxBytesIn(), n, "received");
                to.write(buf, 0, n);
            }
            to.close();
        } catch (IOException e) {
            abort(e.getMessage());
        }
    }

    private void count(AtomicLong mine, AtomicLong session, long limit, int n, String verb) throws IOException {
        mine.addAndGet(n);
        if (session.addAndGet(n) > limit) {
            throw new IOException("this VM has " + verb + " its egress limit of " + limit + " bytes");
        }
    }

    /** Ends the connection at once both ways (a reset to the remote end, TCLOSE to the guest). */
    void abort(String why) {
        cut.compareAndSet(null, why);
        aborted = true;
        Socket s = socket.get();
        if (s != null) {
            try {
                s.setSoLinger(true, 0);
            } catch (IOException ignored) {
                // closing anyway
            }
            closeQuietly(s);
        }
        tunnel.close();
    }

    private static void closeQuietly(Socket s) {
        if (s != null) {
            try {
                s.close();
            } catch (IOException ignored) {
                // nothing to do
            }
        }
    }
}
