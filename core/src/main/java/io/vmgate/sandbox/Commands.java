package io.vmgate.sandbox;

import io.vmgate.agent.Message;
import io.vmgate.agent.ProcessSpec;
import io.vmgate.agent.PtySpec;
import io.vmgate.exec.Command;
import io.vmgate.exec.Pty;
import io.vmgate.vm.GuestLogin;
import java.util.ArrayList;
import java.util.List;

/**
 * What a {@link Command} means in a guest, decided the way sshd decides it for the guest user
 * ({@link GuestLogin}): a shell line runs in the user's shell with {@code -c}, a login is the user's
 * shell as a login shell, sftp is the image's sftp-server (or vmgate's own), an argv runs as is;
 * all as the user, with sshd's environment and the command's own on top.
 */
final class Commands {
    private Commands() {}

    static ProcessSpec spec(GuestLogin login, Command c) {
        PtySpec pty = pty(c.pty());
        ProcessSpec s = switch (c.kind()) {
            case ARGV -> login.exec(c.argv(), pty, c.env());
            case SHELL -> login.command(c.line(), pty, c.env());
            case LOGIN -> login.shell(pty, c.env());
            case SFTP -> login.sftp(c.env());
        };
        return c.cwd() == null ? s : new ProcessSpec(s.executable(), s.argv(), s.env(), c.cwd(), s.pty(), s.credentials());
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
