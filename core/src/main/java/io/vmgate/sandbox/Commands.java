package io.vmgate.sandbox;

import io.vmgate.agent.Message;
import io.vmgate.agent.ProcessSpec;
import io.vmgate.agent.PtySpec;
import io.vmgate.exec.Command;
import io.vmgate.exec.Pty;
import io.vmgate.vm.GuestLogin;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * What a {@link Command} means in a guest, decided the way sshd decides it for the guest user
 * ({@link GuestLogin}): a shell line runs in the user's shell with {@code -c}, a login is the user's
 * shell as a login shell, sftp is the image's sftp-server (or vmgate's own), an argv runs as is;
 * all as the user, with sshd's environment and the command's own on top.
 */
final class Commands {
    private Commands() {}

    /** @param sessionEnv the sandbox's own variables (the egress proxy's), under the command's */
    static ProcessSpec spec(GuestLogin login, Command c, Map<String, String> sessionEnv) {
        PtySpec pty = pty(c.pty());
        Map<String, String> env = new LinkedHashMap<>(sessionEnv);
        env.putAll(c.env());
        ProcessSpec s = switch (c.kind()) {
            case ARGV -> login.exec(c.argv(), pty, env);
            case SHELL -> login.command(c.line(), pty, env);
            case LOGIN -> login.shell(pty, env);
            case SFTP -> login.sftp(env);
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
