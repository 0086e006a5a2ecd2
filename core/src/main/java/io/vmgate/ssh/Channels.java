package io.vmgate.ssh;

import java.io.IOException;
import org.apache.sshd.client.future.DefaultOpenFuture;
import org.apache.sshd.client.future.OpenFuture;
import org.apache.sshd.common.Service;
import org.apache.sshd.common.SshConstants;
import org.apache.sshd.common.SshException;
import org.apache.sshd.common.channel.Channel;
import org.apache.sshd.common.channel.ChannelFactory;
import org.apache.sshd.common.channel.exception.SshChannelOpenException;
import org.apache.sshd.common.io.IoWriteFuture;
import org.apache.sshd.common.session.ConnectionService;
import org.apache.sshd.common.session.Session;
import org.apache.sshd.common.session.helpers.AbstractConnectionServiceRequestHandler;
import org.apache.sshd.common.util.buffer.Buffer;
import org.apache.sshd.server.channel.AbstractServerChannel;
import org.apache.sshd.server.session.AbstractServerSession;
import org.apache.sshd.server.session.ServerConnectionService;
import org.apache.sshd.server.session.ServerConnectionServiceFactory;

/**
 * The channel types the server knows: {@code session} (bounded per connection), and the
 * forwarding ones, which are refused with a logged event while the connection carries on.
 */
@SuppressWarnings("try") // MDC scopes: try-with-resources for the side effect
final class Channels {
    private Channels() {}

    /** Channel types a client may open towards a server for forwarding; all refused. */
    static final String DIRECT_TCPIP = "direct-tcpip";
    static final String DIRECT_STREAMLOCAL = "direct-streamlocal@openssh.com";

    /** Global requests asking the server to listen for forwarding; all refused. */
    static final java.util.Set<String> FORWARD_REQUESTS = java.util.Set.of("tcpip-forward", "cancel-tcpip-forward",
            "streamlocal-forward@openssh.com", "cancel-streamlocal-forward@openssh.com");

    static final class SessionFactory implements ChannelFactory {
        private final int maxChannels;
        private final EnvPolicy envPolicy;
        private final java.util.concurrent.ScheduledExecutorService scheduler;

        SessionFactory(int maxChannels, EnvPolicy envPolicy, java.util.concurrent.ScheduledExecutorService scheduler) {
            this.maxChannels = maxChannels;
            this.envPolicy = envPolicy;
            this.scheduler = scheduler;
        }

        @Override
        public String getName() {
            return "session";
        }

        @Override
        public Channel createChannel(Session session) throws IOException {
            Connection conn = Connection.of(session);
            int max = maxChannels;
            if (!conn.tryOpenChannel(max)) {
                conn.observer.refused("too_many_channels");
                try (var s = conn.scope()) {
                    conn.tagged(Events.log.atWarn()).setMessage("channel_refused").addKeyValue("reason", "too_many_channels")
                            .addKeyValue("max", max).log();
                }
                return new Refused(SshConstants.SSH_OPEN_RESOURCE_SHORTAGE,
                        "vmgate: too many channels on this connection (at most " + max + ")");
            }
            return new SessionChannel(conn, envPolicy, scheduler);
        }
    }

    /** direct-tcpip (ssh -L, -D) and direct-streamlocal: logged and refused. */
    static final class ForwardingFactory implements ChannelFactory {
        private final String type;

        ForwardingFactory(String type) {
            this.type = type;
        }

        @Override
        public String getName() {
            return type;
        }

        @Override
        public Channel createChannel(Session session) {
            return new Refused(SshConstants.SSH_OPEN_ADMINISTRATIVELY_PROHIBITED, "forwarding is disabled on this server") {
                @Override
                protected void logRefusal(Buffer open) {
                    Connection conn = Connection.of(session);
                    String target;
                    try {
                        target = DIRECT_TCPIP.equals(type) ? open.getString() + ":" + open.getUInt() : open.getString();
                    } catch (RuntimeException e) {
                        target = "?";
                    }
                    try (var s = conn.scope()) {
                        conn.tagged(Events.log.atInfo()).setMessage("forwarding_refused").addKeyValue("kind", type)
                                .addKeyValue("target", target).log();
                    }
                }
            };
        }
    }

    /**
     * A channel that fails to open with the given reason, like MINA's own filtered channels.
     * MINA sends a generic text with the reason code; {@link VmConnectionService} swaps in ours.
     */
    static class Refused extends AbstractServerChannel {
        /** (channel id, message) of the refusal being sent on this thread right now. */
        static final ThreadLocal<Object[]> PENDING = new ThreadLocal<>();
        private final int reason;
        private final String message;

        Refused(int reason, String message) {
            super("", java.util.List.of(), null);
            this.reason = reason;
            this.message = message;
        }

        protected void logRefusal(Buffer open) {
            // logged by the factory
        }

        @Override
        protected OpenFuture doInit(Buffer buffer) {
            logRefusal(buffer);
            PENDING.set(new Object[] {getChannelId(), message});
            OpenFuture f = new DefaultOpenFuture(this, this);
            try {
                f.setException(new SshChannelOpenException(getChannelId(), reason, message));
            } finally {
                super.close(true);
            }
            return f;
        }

        @Override
        protected void doWriteData(byte[] data, int off, long len) {
            // never open
        }

        @Override
        protected void doWriteExtendedData(byte[] data, int off, long len) {
            // never open
        }
    }

    /** The standard connection service, except that refused channels carry our message. */
    static final class ConnectionServiceFactory extends ServerConnectionServiceFactory {
        @Override
        public Service create(Session session) throws IOException {
            VmConnectionService service = new VmConnectionService((AbstractServerSession) session);
            service.addPortForwardingEventListenerManager(this);
            return service;
        }
    }

    static final class VmConnectionService extends ServerConnectionService {
        VmConnectionService(AbstractServerSession session) throws SshException {
            super(session);
        }

        @Override
        protected IoWriteFuture sendChannelOpenFailure(Buffer buffer, long sender, int reasonCode, String message, String lang)
                throws IOException {
            Object[] pending = Refused.PENDING.get();
            if (pending != null) {
                Refused.PENDING.remove();
                // MINA's listener calls us on the same thread, right after the refusal; match it exactly.
                if (("Generic error while opening channel: " + pending[0]).equals(message)) {
                    message = (String) pending[1];
                }
            }
            return super.sendChannelOpenFailure(buffer, sender, reasonCode, message, lang);
        }
    }

    /** tcpip-forward (ssh -R) and streamlocal-forward: logged and refused. */
    static final class ForwardRequestRefuser extends AbstractConnectionServiceRequestHandler {
        @Override
        public Result process(ConnectionService service, String request, boolean wantReply, Buffer buffer) {
            if (!FORWARD_REQUESTS.contains(request)) {
                return Result.Unsupported;
            }
            Connection conn = Connection.of(service.getSession());
            String target;
            try {
                target = request.contains("tcpip") ? buffer.getString() + ":" + buffer.getUInt() : buffer.getString();
            } catch (RuntimeException e) {
                target = "?";
            }
            try (var s = conn.scope()) {
                conn.tagged(Events.log.atInfo()).setMessage("forwarding_refused").addKeyValue("kind", request)
                        .addKeyValue("target", target).log();
            }
            return Result.ReplyFailure;
        }
    }
}
