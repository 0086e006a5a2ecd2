package io.vmgate.ssh;

import io.vmgate.exec.Command;
import io.vmgate.exec.Execution;
import io.vmgate.exec.Pty;
import io.vmgate.text.KeyValue;
import java.io.IOException;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ScheduledExecutorService;
import org.apache.sshd.common.SshConstants;
import org.apache.sshd.common.channel.Channel;
import org.apache.sshd.common.channel.ChannelListener;
import org.apache.sshd.common.channel.PtyMode;
import org.apache.sshd.common.channel.RequestHandler;
import org.apache.sshd.common.util.buffer.Buffer;
import org.apache.sshd.server.channel.ChannelSession;

/**
 * A {@code session} channel whose shell, exec and sftp subsystem run in the connection's guest.
 * It records the pty-req, env (filtered) and window-change requests, forwards signals and
 * break to the guest process, refuses agent and X11 forwarding, and can end with
 * {@code exit-signal} as well as {@code exit-status}.
 */
@SuppressWarnings("try") // MDC scopes: try-with-resources for the side effect
final class SessionChannel extends ChannelSession {
    /** Larger terminals than this are clamped (the guest's winsize is 16 bits anyway). */
    static final int MAX_TERMINAL_DIMENSION = 10_000;
    static final int MAX_TERM_LENGTH = 128;
    /** Signal names a client may send (RFC 4254 §6.10 plus job control and a few more). */
    static final Set<String> SIGNALS = Set.of("ABRT", "ALRM", "FPE", "HUP", "ILL", "INT", "KILL", "PIPE", "QUIT",
            "SEGV", "TERM", "USR1", "USR2", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "WINCH");

    final Connection conn;
    final int number;
    private final EnvPolicy envPolicy;
    private final ScheduledExecutorService scheduler;
    final long openedNanos = System.nanoTime();

    private final Map<String, String> env = new LinkedHashMap<>();
    private int envBytes;
    private boolean freshMachine;
    private boolean pty;
    private String term = "";
    private int rows;
    private int cols;
    private Map<Integer, Integer> modes = Map.of();
    private Execution process;
    private boolean sizeChangedBeforeStart;
    /** The running command's recording, if the server records: it hears resizes. */
    volatile ChannelRecording recording;

    SessionChannel(Connection conn, EnvPolicy envPolicy, ScheduledExecutorService scheduler) {
        this.conn = conn;
        this.envPolicy = envPolicy;
        this.scheduler = scheduler;
        this.number = conn.nextChannelNumber();
        addChannelListener(new ChannelListener() {
            @Override
            public void channelOpenSuccess(Channel channel) {
                try (var s = conn.scope()) {
                    conn.tagged(Events.log.atInfo()).setMessage("channel_opened").addKeyValue("channel", number).log();
                }
            }

            private final java.util.concurrent.atomic.AtomicBoolean counted = new java.util.concurrent.atomic.AtomicBoolean(true);

            @Override
            public void channelClosed(Channel channel, Throwable reason) {
                if (counted.getAndSet(false)) {
                    conn.channelClosed();
                }
                try (var s = conn.scope()) {
                    conn.tagged(Events.log.atDebug()).setMessage("channel_closed").addKeyValue("channel", number)
                            .addKeyValue("ms", Events.msSince(openedNanos)).log();
                }
            }
        });
    }

    @Override
    protected RequestHandler.Result handleInternalRequest(String requestType, boolean wantReply, Buffer buffer)
            throws IOException {
        try (var s = conn.scope()) {
            return super.handleInternalRequest(requestType, wantReply, buffer);
        } catch (RuntimeException e) {
            // A malformed request (short buffer, bad lengths) is refused; the connection carries on.
            try (var s = conn.scope()) {
                conn.tagged(Events.log.atWarn()).setMessage("request_refused").addKeyValue("channel", number)
                        .addKeyValue("request", requestType).addKeyValue("reason", "malformed").addKeyValue("error", e.toString()).log();
            }
            return RequestHandler.Result.ReplyFailure;
        }
    }

    // --- env

    /** The variable a client sends ({@code ssh -o SetEnv=VMGATE_FRESH=1}) to get a fresh machine, not its saved one. */
    static final String FRESH_VARIABLE = "VMGATE_FRESH";

    @Override
    protected RequestHandler.Result handleEnvParsed(String name, String value) {
        synchronized (this) {
            if (FRESH_VARIABLE.equals(name) && process == null) { // for vmgate, not the guest: never passed on
                freshMachine = "1".equals(value);
                conn.tagged(Events.log.atInfo()).setMessage("fresh_machine_requested").addKeyValue("channel", number)
                        .addKeyValue("value", freshMachine).log();
                return RequestHandler.Result.ReplySuccess;
            }
            String refusal = process != null ? "too_late" : envPolicy.refusal(name, value, env.size(), envBytes);
            if (refusal == null) {
                String old = env.put(name, value);
                envBytes += name.length() + value.length() + 1 - (old == null ? 0 : name.length() + old.length() + 1);
                return RequestHandler.Result.ReplySuccess;
            }
            conn.tagged(Events.log.atInfo()).setMessage("env_refused").addKeyValue("channel", number).addKeyValue("name", name)
                    .addKeyValue("reason", refusal).log();
            return RequestHandler.Result.ReplyFailure;
        }
    }

    // --- pty-req and window-change

    @Override
    protected RequestHandler.Result handlePtyReq(Buffer buffer, boolean wantReply) throws IOException {
        String t = buffer.getString();
        long c = buffer.getUInt();
        long r = buffer.getUInt();
        buffer.getUInt(); // width in pixels
        buffer.getUInt(); // height in pixels
        byte[] encoded = buffer.getBytes();
        Map<Integer, Integer> parsed = parseModes(encoded);
        synchronized (this) {
            if (process != null) {
                return RequestHandler.Result.ReplyFailure;
            }
            pty = true;
            term = sanitizeTerm(t);
            cols = clampDimension(c, "cols");
            rows = clampDimension(r, "rows");
            modes = parsed;
        }
        return RequestHandler.Result.ReplySuccess;
    }

    /** RFC 4254 §8: (u8 opcode, u32 value)* ending at TTY_OP_END; opcodes 160+ stop parsing. */
    static Map<Integer, Integer> parseModes(byte[] m) {
        Map<Integer, Integer> byOpcode = new LinkedHashMap<>();
        for (int i = 0; i + 5 <= m.length; i += 5) {
            int op = m[i] & 0xff;
            if (op == PtyMode.TTY_OP_END || op >= 160) {
                break;
            }
            int value = ((m[i + 1] & 0xff) << 24) | ((m[i + 2] & 0xff) << 16) | ((m[i + 3] & 0xff) << 8) | (m[i + 4] & 0xff);
            if (byOpcode.size() < 256 || byOpcode.containsKey(op)) {
                byOpcode.put(op, value);
            }
        }
        return new java.util.TreeMap<>(byOpcode);
    }

    private static String sanitizeTerm(String t) {
        if (t == null || t.isEmpty() || t.length() > MAX_TERM_LENGTH || !t.matches("[A-Za-z0-9._+-]+")) {
            return t == null || t.isEmpty() ? "" : "xterm";
        }
        return t;
    }

    /** 0 (and nonsense) means "the guest's default"; huge values are clamped. */
    private int clampDimension(long v, String what) {
        if (v <= 0) {
            return 0;
        }
        if (v > MAX_TERMINAL_DIMENSION) {
            conn.tagged(Events.log.atInfo()).setMessage("pty_size_clamped").addKeyValue("channel", number).addKeyValue(what, v)
                    .addKeyValue("max", MAX_TERMINAL_DIMENSION).log();
            return MAX_TERMINAL_DIMENSION;
        }
        return (int) v;
    }

    @Override
    protected RequestHandler.Result handleWindowChange(Buffer buffer, boolean wantReply) throws IOException {
        long c = buffer.getUInt();
        long r = buffer.getUInt();
        int newCols = clampDimension(c, "cols");
        int newRows = clampDimension(r, "rows");
        if (newCols == 0 || newRows == 0) {
            return RequestHandler.Result.ReplyFailure;
        }
        conn.activity(); // a user resizing a terminal is not idle
        ChannelRecording rec = recording;
        if (rec != null) {
            rec.resize(newCols, newRows);
        }
        Execution p;
        synchronized (this) {
            cols = newCols;
            rows = newRows;
            p = process;
            if (p == null) {
                sizeChangedBeforeStart = true;
            }
        }
        if (p != null) {
            try {
                p.resize(newRows, newCols);
            } catch (IOException e) {
                return RequestHandler.Result.ReplyFailure;
            }
        }
        return RequestHandler.Result.ReplySuccess;
    }

    // --- signal and break

    @Override
    protected RequestHandler.Result handleSignalParsed(String name) throws IOException {
        String n = name == null ? "" : name.startsWith("SIG") ? name.substring(3) : name;
        if (!SIGNALS.contains(n)) {
            conn.tagged(Events.log.atInfo()).setMessage("signal_refused").addKeyValue("channel", number)
                    .addKeyValue("signal", name).log();
            return RequestHandler.Result.ReplyFailure;
        }
        return deliver(n);
    }

    @Override
    protected RequestHandler.Result handleBreakParsed(long breakLength) throws IOException {
        return deliver("INT");
    }

    private RequestHandler.Result deliver(String signal) {
        Execution p;
        synchronized (this) {
            p = process;
        }
        conn.tagged(Events.log.atInfo()).setMessage("signal_sent").addKeyValue("channel", number).addKeyValue("signal", signal)
                .addKeyValue("delivered", p != null).log();
        if (p == null) {
            return RequestHandler.Result.ReplyFailure;
        }
        try {
            p.signal(signal);
            return RequestHandler.Result.ReplySuccess;
        } catch (IOException e) {
            return RequestHandler.Result.ReplyFailure;
        }
    }

    // --- shell, exec, subsystem

    @Override
    protected RequestHandler.Result handleShellParsed(String request) throws IOException {
        commandInstance = new GuestCommand(this, GuestCommand.Kind.SHELL, Command.login(), "", scheduler);
        return prepareChannelCommand(request, commandInstance);
    }

    @Override
    protected RequestHandler.Result handleExecParsed(String request, String commandLine) throws IOException {
        commandInstance = new GuestCommand(this, GuestCommand.Kind.EXEC, Command.shell(commandLine), commandLine, scheduler);
        return prepareChannelCommand(request, commandInstance);
    }

    @Override
    protected RequestHandler.Result handleSubsystemParsed(String request, String subsystem) throws IOException {
        if (!"sftp".equals(subsystem)) {
            // Accepted, then ended with a message and 255: a failure reply races the message, and
            // OpenSSH's client exits on the failure before it has printed what we wrote.
            conn.tagged(Events.log.atWarn()).setMessage("subsystem_refused").addKeyValue("channel", number)
                    .addKeyValue("subsystem", subsystem).log();
            commandInstance = new MessageCommand(this, "vmgate: unknown subsystem " + KeyValue.quote(subsystem) + " (only sftp is available)");
            return prepareChannelCommand(request, commandInstance);
        }
        commandInstance = new GuestCommand(this, GuestCommand.Kind.SUBSYSTEM, Command.sftp(), subsystem, scheduler);
        return prepareChannelCommand(request, commandInstance);
    }

    // --- forwarding requests on the channel: refused

    @Override
    protected RequestHandler.Result handleAgentForwarding(String requestType, Buffer buffer, boolean wantReply) {
        conn.tagged(Events.log.atInfo()).setMessage("forwarding_refused").addKeyValue("channel", number)
                .addKeyValue("kind", "agent").addKeyValue("request", requestType).log();
        return RequestHandler.Result.ReplyFailure;
    }

    @Override
    protected RequestHandler.Result handleX11Forwarding(String requestType, Buffer buffer, boolean wantReply) {
        conn.tagged(Events.log.atInfo()).setMessage("forwarding_refused").addKeyValue("channel", number)
                .addKeyValue("kind", "x11").addKeyValue("request", requestType).log();
        return RequestHandler.Result.ReplyFailure;
    }

    // --- used by GuestCommand

    synchronized boolean hasPty() {
        return pty;
    }

    /** The terminal as the client described it: TERM and size (empty and 0 without a pty). */
    record Terminal(String term, int cols, int rows) {}

    /** Whether the client sent {@code VMGATE_FRESH=1} on this channel. */
    synchronized boolean freshMachine() {
        return freshMachine;
    }

    synchronized Terminal terminal() {
        return pty ? new Terminal(term.isEmpty() ? "xterm" : term, cols, rows) : new Terminal(null, 0, 0);
    }

    /** {@code command} with the terminal and environment the client asked for. */
    synchronized Command complete(Command command) {
        Map<String, String> vars = new LinkedHashMap<>();
        String local = localAddress();
        if (local != null) {
            vars.put("SSH_CLIENT", conn.remoteIp + " " + remotePort() + " " + localPort());
            vars.put("SSH_CONNECTION", conn.remoteIp + " " + remotePort() + " " + local + " " + localPort());
        }
        vars.putAll(env);
        Command c = command.env(vars);
        return pty ? c.pty(new Pty(term.isEmpty() ? "xterm" : term, rows, cols, modes)) : c;
    }

    private String localAddress() {
        return conn.session.getIoSession().getLocalAddress() instanceof java.net.InetSocketAddress a && a.getAddress() != null
                ? a.getAddress().getHostAddress() : null;
    }

    private int localPort() {
        return conn.session.getIoSession().getLocalAddress() instanceof java.net.InetSocketAddress a ? a.getPort() : 0;
    }

    private int remotePort() {
        return conn.session.getClientAddress() instanceof java.net.InetSocketAddress a ? a.getPort() : 0;
    }

    /** The guest process is running: later window-change, signal and break requests go to it. */
    void attach(Execution p) throws IOException {
        boolean resize;
        int r;
        int c;
        synchronized (this) {
            process = p;
            resize = sizeChangedBeforeStart && pty;
            r = rows;
            c = cols;
        }
        if (resize) {
            p.resize(r, c);
        }
    }

    /**
     * Ends the channel the way OpenSSH's sshd does for a process killed by a signal: EOF, then
     * {@code exit-signal} (name without SIG, core flag, empty message and language), then close.
     */
    /**
     * Sends exit-status before MINA's EOF, for the same reason as {@link #exitWithSignal}:
     * MINA's own order (EOF first) loses the status when the client closes in between.
     */
    @Override
    protected void closeShell(int exitValue, boolean closeImmediately) throws IOException {
        if (!isClosing()) {
            if (out != null) {
                out.flush();
            }
            sendExitStatus(exitValue);
        }
        super.closeShell(exitValue, closeImmediately);
    }

    void exitWithSignal(String signalName, boolean coreDumped) throws IOException {
        if (isClosing()) {
            commandExitFuture.setClosed();
            return;
        }
        if (out != null) {
            out.flush();
        }
        // exit-signal before EOF: a client that already sent its EOF answers ours with CLOSE,
        // and MINA drops every write after it, so the status would be lost.
        if (!exitStatusSent.getAndSet(true)) {
            Buffer b = getSession().createBuffer(SshConstants.SSH_MSG_CHANNEL_REQUEST, 64);
            b.putUInt(getRecipient());
            b.putString("exit-signal");
            b.putBoolean(false); // want-reply must be false (RFC 4254 §6.10)
            b.putString(signalName);
            b.putBoolean(coreDumped);
            b.putString("");
            b.putString("");
            writePacket(b);
            notifyStateChanged("exit-signal");
        }
        if (out != null) {
            out.close();
        }
        sendEof();
        commandExitFuture.setClosed();
        close(false);
    }
}
