package io.vmgate.ssh;

import java.net.InetSocketAddress;
import java.net.SocketAddress;
import org.apache.sshd.common.io.IoSession;
import org.apache.sshd.common.session.Session;
import org.apache.sshd.common.session.SessionListener;
import org.apache.sshd.server.ServerFactoryManager;
import org.apache.sshd.server.session.ServerSessionImpl;

/**
 * The session factory with the {@link StartupGate} in front: a connection the gate drops is
 * closed as soon as it is accepted, before an SSH session (identification, key exchange) exists
 * for it; one it lets in holds its ticket until it authenticates or closes.
 *
 * <p>Why the factory and not MINA's {@code IoServiceEventListener.connectionAccepted}: an
 * exception thrown there aborts the connection without closing its socket (MINA SSHD 2.16's
 * {@code Nio2Acceptor} closes only a session it created), so every dropped connection would leak
 * a file descriptor. Here the socket is MINA's session, and closing it is complete.
 */
final class GatedSessionFactory extends QuickAckSessionFactory {
    private static final Object TICKET = new Object();
    private static final Object DROPPED = new Object();

    private final StartupGate gate;
    private final SshObserver observer;

    GatedSessionFactory(ServerFactoryManager server, StartupGate gate, SshObserver observer) {
        super(server);
        this.gate = gate;
        this.observer = observer;
    }

    StartupGate gate() {
        return gate;
    }

    @Override
    public void sessionCreated(IoSession ioSession) throws Exception {
        SocketAddress remote = ioSession.getRemoteAddress();
        String address = remote instanceof InetSocketAddress in && in.getAddress() != null ? in.getAddress().getHostAddress()
                : String.valueOf(remote);
        String shown = remote instanceof InetSocketAddress in ? (address.contains(":") ? "[" + address + "]" : address) + ":" + in.getPort()
                : address;
        switch (gate.admit(address)) {
            case StartupGate.Admitted a -> {
                ioSession.setAttribute(TICKET, a.ticket());
                super.sessionCreated(ioSession);
            }
            case StartupGate.Dropped d -> {
                ioSession.setAttribute(DROPPED, Boolean.TRUE);
                ioSession.close(true);
                observer.refused(d.why().reason);
                if (d.logCount() > 0) {
                    Events.log.atInfo().setMessage("connection_dropped").addKeyValue("remote", shown)
                            .addKeyValue("reason", d.why().reason).addKeyValue("unauthenticated", d.unauthenticated())
                            .addKeyValue("source_unauthenticated", d.sourceUnauthenticated()).addKeyValue("dropped", d.logCount()).log();
                }
            }
        }
    }

    @Override
    protected ServerSessionImpl doCreateSession(IoSession ioSession) throws Exception {
        ServerSessionImpl session = super.doCreateSession(ioSession);
        if (ioSession.getAttribute(TICKET) instanceof StartupGate.Ticket ticket) {
            session.addSessionListener(new SessionListener() {
                @Override
                public void sessionEvent(Session s, Event event) {
                    if (event == Event.Authenticated) {
                        ticket.release();
                    }
                }

                @Override
                public void sessionClosed(Session s) {
                    ticket.release();
                }
            });
        }
        return session;
    }

    @Override
    public void sessionClosed(IoSession ioSession) throws Exception {
        if (ioSession.getAttribute(TICKET) instanceof StartupGate.Ticket ticket) {
            ticket.release(); // also when no SSH session came to exist
        }
        if (ioSession.getAttribute(DROPPED) == null) {
            super.sessionClosed(ioSession);
        }
    }

    @Override
    public void exceptionCaught(IoSession ioSession, Throwable cause) throws Exception {
        if (ioSession.getAttribute(DROPPED) == null) {
            super.exceptionCaught(ioSession, cause);
        }
    }
}
