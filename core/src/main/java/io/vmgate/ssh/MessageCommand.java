package io.vmgate.ssh;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import org.apache.sshd.server.Environment;
import org.apache.sshd.server.ExitCallback;
import org.apache.sshd.server.channel.ChannelSession;
import org.apache.sshd.server.command.Command;

/** A request we accept only to refuse it clearly: one line on stderr, then exit status 255. */
final class MessageCommand implements Command {
    private final SessionChannel channel;
    private final String message;
    private OutputStream err;
    private ExitCallback exit;

    MessageCommand(SessionChannel channel, String message) {
        this.channel = channel;
        this.message = message;
    }

    @Override
    public void setInputStream(InputStream in) {
        // ignored
    }

    @Override
    public void setOutputStream(OutputStream out) {
        // nothing goes to stdout
    }

    @Override
    public void setErrorStream(OutputStream err) {
        this.err = err;
    }

    @Override
    public void setExitCallback(ExitCallback callback) {
        this.exit = callback;
    }

    @Override
    public void start(ChannelSession ignored, Environment env) {
        Thread.ofVirtual().name("vmgate-" + channel.conn.id + "-ch" + channel.number + "-refusal").start(() -> {
            try {
                err.write((message + (channel.hasPty() ? "\r\n" : "\n")).getBytes(StandardCharsets.UTF_8));
                err.flush();
            } catch (IOException | RuntimeException e) {
                // the client is gone
            }
            exit.onExit(GuestCommand.FAILED, message);
        });
    }

    @Override
    public void destroy(ChannelSession ignored) {
        // nothing runs
    }
}
