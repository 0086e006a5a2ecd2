package io.vmgate.sandbox;

import io.vmgate.agent.Message;
import io.vmgate.agent.ProcessSpec;
import io.vmgate.agent.PtySpec;
import io.vmgate.exec.Command;
import io.vmgate.exec.Pty;
import java.util.ArrayList;
import java.util.List;

/**
 * What a {@link Command} means in the guest, the way sshd decides it: a shell line runs in the
 * user's shell with {@code -c}, a login is the user's shell as a login shell, sftp is the guest's
 * sftp-server.
 */
final class GuestLogin {
    static final String SHELL = "/bin/sh";
    static final String SFTP_SERVER = "/usr/lib/openssh/sftp-server";

    private GuestLogin() {}

    static ProcessSpec spec(Command c) {
        List<String> argv = switch (c.kind()) {
            case ARGV -> c.argv();
            case SHELL -> List.of(SHELL, "-c", c.line());
            case LOGIN -> List.of(SHELL, "-l");
            case SFTP -> List.of(SFTP_SERVER);
        };
        return new ProcessSpec(argv, c.env(), c.cwd(), pty(c.pty()));
    }

    private static PtySpec pty(Pty p) {
        if (p == null) {
            return null;
        }
        List<Message.TermMode> modes = new ArrayList<>();
        p.modes().forEach((op, v) -> modes.add(new Message.TermMode(op, v)));
        return new PtySpec(p.term(), p.rows(), p.cols(), modes);
    }
}
