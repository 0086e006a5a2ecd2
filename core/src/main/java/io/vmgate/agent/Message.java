package io.vmgate.agent;

import io.vmgate.exec.ExitStatus;
import java.util.List;

/** The messages of docs/protocol.md, each able to encode itself and be decoded from a {@link Frame}. */
public sealed interface Message {

    int id();

    Frame encode();

    record Hello(int version, long bootNanos, String kernelRelease) implements Message {
        public int id() { return 0; }
        public Frame encode() {
            return frame(Protocol.HELLO, 0, new Payload.Writer().u16(version).u64(bootNanos).str(kernelRelease));
        }
    }

    /** A terminal mode: an RFC 4254 §8 opcode and its value. */
    record TermMode(int opcode, int value) {}

    record Start(int id, ProcessSpec spec) implements Message {
        public Frame encode() {
            Credentials c = spec.credentials();
            var w = new Payload.Writer().u8(spec.pty() != null ? 1 : 0).i32(c.uid()).i32(c.gid()).u16(c.groups().size());
            c.groups().forEach(w::i32);
            w.str(spec.executable() == null ? "" : spec.executable()).u16(spec.argv().size());
            spec.argv().forEach(w::str);
            w.u16(spec.env().size());
            spec.env().forEach((k, v) -> w.str(k + "=" + v));
            w.str(spec.cwd() == null ? "" : spec.cwd());
            PtySpec pty = spec.pty() != null ? spec.pty() : PtySpec.NONE;
            w.str(pty.term()).u16(pty.rows()).u16(pty.cols()).u16(pty.modes().size());
            for (TermMode m : pty.modes()) {
                w.u8(m.opcode()).i32(m.value());
            }
            if (w.size() > Protocol.MAX_PAYLOAD) {
                throw new IllegalArgumentException("command, environment and terminal settings take "
                        + w.size() + " bytes; the limit is " + Protocol.MAX_PAYLOAD);
            }
            return frame(Protocol.START, id, w);
        }
    }

    record Started(int id, int pid) implements Message {
        public Frame encode() { return frame(Protocol.STARTED, id, new Payload.Writer().i32(pid)); }
    }

    record Data(int id, int fd, byte[] data) implements Message {
        public Frame encode() { return frame(Protocol.DATA, id, new Payload.Writer().u8(fd).raw(data, 0, data.length)); }
    }

    record Eof(int id, int fd) implements Message {
        public Frame encode() { return frame(Protocol.EOF, id, new Payload.Writer().u8(fd)); }
    }

    record Window(int id, int fd, int increment) implements Message {
        public Frame encode() { return frame(Protocol.WINDOW, id, new Payload.Writer().u8(fd).i32(increment)); }
    }

    record Resize(int id, int rows, int cols) implements Message {
        public Frame encode() { return frame(Protocol.RESIZE, id, new Payload.Writer().u16(rows).u16(cols)); }
    }

    record Signal(int id, String name) implements Message {
        public Frame encode() { return frame(Protocol.SIGNAL, id, new Payload.Writer().str(name)); }
    }

    record Exit(int id, ExitStatus status) implements Message {
        public Frame encode() {
            return frame(Protocol.EXIT, id, new Payload.Writer().i32(status.code()).u8(status.signal())
                    .u8(status.coreDumped() ? 1 : 0).str(status.signalName()));
        }
    }

    record Close(int id) implements Message {
        public Frame encode() { return frame(Protocol.CLOSE, id, new Payload.Writer()); }
    }

    record Error(int id, int code, String message) implements Message {
        public Frame encode() { return frame(Protocol.ERROR, id, new Payload.Writer().i32(code).str(message)); }
    }

    record Configure(long unixTimeNanos, String hostname, byte[] entropy) implements Message {
        public int id() { return 0; }
        public Frame encode() {
            return frame(Protocol.CONFIGURE, 0, new Payload.Writer().u64(unixTimeNanos).str(hostname).bytes(entropy));
        }
    }

    record Configured() implements Message {
        public int id() { return 0; }
        public Frame encode() { return frame(Protocol.CONFIGURED, 0, new Payload.Writer()); }
    }

    /** Asks the guest to mount its home disk at {@code path}, owned by uid:gid. */
    record Home(String path, int uid, int gid) implements Message {
        public int id() { return 0; }
        public Frame encode() { return frame(Protocol.HOME, 0, new Payload.Writer().str(path).i32(uid).i32(gid)); }
    }

    /** The guest's answer to {@link Home}: an empty error means the home is mounted. */
    record HomeStatus(String error) implements Message {
        public int id() { return 0; }
        public Frame encode() { return frame(Protocol.HOME_STATUS, 0, new Payload.Writer().str(error)); }
    }

    /** Asks the guest to write its filesystems' dirty data to its disks; {@code freeze}: and freeze the home (last word). */
    record Sync(boolean freeze) implements Message {
        public int id() { return 0; }
        public Frame encode() { return frame(Protocol.SYNC, 0, new Payload.Writer().u8(freeze ? Protocol.SYNC_FREEZE : 0)); }
    }

    /** The guest's answer to {@link Sync}: an empty error means everything was written. */
    record Synced(String error) implements Message {
        public int id() { return 0; }
        public Frame encode() { return frame(Protocol.SYNCED, 0, new Payload.Writer().str(error)); }
    }

    /** Asks the guest to serve the egress proxy on 127.0.0.1:port (0: stop). */
    record Egress(int port) implements Message {
        public int id() { return 0; }
        public Frame encode() { return frame(Protocol.EGRESS, 0, new Payload.Writer().u16(port)); }
    }

    /** The guest's answer to {@link Egress}: an empty error means it listens. */
    record EgressStatus(int port, String error) implements Message {
        public int id() { return 0; }
        public Frame encode() { return frame(Protocol.EGRESS_STATUS, 0, new Payload.Writer().u16(port).str(error)); }
    }

    /**
     * The guest asks for a TCP connection to host:port on a new tunnel; with {@code tls}, the host
     * is to speak TLS to it and carry the plaintext. Not checked here: the policy does it.
     */
    record TunnelOpen(int id, String host, int port, boolean tls) implements Message {
        public Frame encode() {
            return frame(Protocol.TOPEN, id, new Payload.Writer().str(host).u16(port).u8(tls ? Protocol.TOPEN_TLS : 0));
        }
    }

    record TunnelOpened(int id) implements Message {
        public Frame encode() { return frame(Protocol.TOPENED, id, new Payload.Writer()); }
    }

    record TunnelRefused(int id, GuestTunnel.Refusal reason, String message) implements Message {
        public Frame encode() {
            return frame(Protocol.TREFUSED, id, new Payload.Writer().u8(reason.code()).str(message));
        }
    }

    record TunnelData(int id, byte[] data) implements Message {
        public Frame encode() { return frame(Protocol.TDATA, id, new Payload.Writer().raw(data, 0, data.length)); }
    }

    record TunnelEof(int id) implements Message {
        public Frame encode() { return frame(Protocol.TEOF, id, new Payload.Writer()); }
    }

    record TunnelWindow(int id, int increment) implements Message {
        public Frame encode() { return frame(Protocol.TWINDOW, id, new Payload.Writer().i32(increment)); }
    }

    record TunnelClose(int id) implements Message {
        public Frame encode() { return frame(Protocol.TCLOSE, id, new Payload.Writer()); }
    }

    private static Frame frame(byte type, int id, Payload.Writer w) {
        return new Frame(type, id, w.toByteArray());
    }

    /** Decodes a frame's payload, checking every field; never returns null. */
    static Message decode(Frame f) throws ProtocolException {
        var r = new Payload.Reader(f.payload());
        int id = f.id();
        Message m = switch (f.type()) {
            case Protocol.HELLO -> new Hello(r.u16("version"), r.u64("boot_ns"), r.str("kernel_release"));
            case Protocol.START -> decodeStart(id, r);
            case Protocol.STARTED -> new Started(id, r.i32("pid"));
            case Protocol.DATA -> {
                int fd = fd(r.u8("fd"));
                yield new Data(id, fd, r.rest());
            }
            case Protocol.EOF -> new Eof(id, fd(r.u8("fd")));
            case Protocol.WINDOW -> {
                int fd = fd(r.u8("fd"));
                long inc = r.u32("increment");
                if (inc == 0 || inc > Protocol.INITIAL_WINDOW) {
                    throw ProtocolException.message("window increment " + inc + " out of range");
                }
                yield new Window(id, fd, (int) inc);
            }
            case Protocol.RESIZE -> new Resize(id, r.u16("rows"), r.u16("cols"));
            case Protocol.SIGNAL -> new Signal(id, r.str("signal name"));
            case Protocol.EXIT -> {
                int code = r.i32("code");
                int sig = r.u8("signal");
                int core = r.u8("core_dumped");
                String name = r.str("signal_name");
                if (core > 1 || (sig == 0) != (code >= 0) || code > 255) {
                    throw ProtocolException.message("inconsistent exit: code " + code + " signal " + sig);
                }
                yield new Exit(id, new ExitStatus(code, sig, name, core == 1));
            }
            case Protocol.CLOSE -> new Close(id);
            case Protocol.ERROR -> new Error(id, r.i32("code"), r.str("message"));
            case Protocol.CONFIGURE -> new Configure(r.u64("time"), r.str("hostname"), r.bytes("entropy"));
            case Protocol.CONFIGURED -> new Configured();
            case Protocol.HOME -> {
                String path = r.str("path");
                int uid = r.i32("uid");
                int gid = r.i32("gid");
                if (uid == -1 || gid == -1) {
                    throw ProtocolException.message("HOME uid or gid 0xFFFFFFFF");
                }
                yield new Home(path, uid, gid);
            }
            case Protocol.HOME_STATUS -> new HomeStatus(r.str("error"));
            case Protocol.SYNC -> {
                int flags = r.u8("flags");
                if ((flags & ~Protocol.SYNC_FREEZE) != 0) {
                    throw ProtocolException.message("unknown SYNC flags 0x" + Integer.toHexString(flags));
                }
                yield new Sync(flags != 0);
            }
            case Protocol.SYNCED -> new Synced(r.str("error"));
            case Protocol.EGRESS -> new Egress(r.u16("port"));
            case Protocol.EGRESS_STATUS -> new EgressStatus(r.u16("port"), r.str("error"));
            case Protocol.TOPEN -> {
                String host = r.str("host");
                int port = r.u16("port");
                int flags = r.u8("flags");
                if ((flags & ~Protocol.TOPEN_TLS) != 0) {
                    throw ProtocolException.message("unknown TOPEN flags 0x" + Integer.toHexString(flags));
                }
                yield new TunnelOpen(id, host, port, flags != 0);
            }
            case Protocol.TOPENED -> new TunnelOpened(id);
            case Protocol.TREFUSED -> {
                int code = r.u8("reason");
                GuestTunnel.Refusal reason = GuestTunnel.Refusal.of(code);
                if (reason == null) {
                    throw ProtocolException.message("unknown TREFUSED reason " + code);
                }
                String message = r.str("message");
                if (message.getBytes(java.nio.charset.StandardCharsets.UTF_8).length > Protocol.MAX_REFUSAL) {
                    throw ProtocolException.message("TREFUSED message longer than " + Protocol.MAX_REFUSAL);
                }
                yield new TunnelRefused(id, reason, message);
            }
            case Protocol.TDATA -> {
                byte[] data = r.rest();
                if (data.length == 0) {
                    throw ProtocolException.message("empty TDATA");
                }
                yield new TunnelData(id, data);
            }
            case Protocol.TEOF -> new TunnelEof(id);
            case Protocol.TWINDOW -> {
                long inc = r.u32("increment");
                if (inc == 0 || inc > Protocol.TUNNEL_WINDOW) {
                    throw ProtocolException.message("tunnel window increment " + inc + " out of range");
                }
                yield new TunnelWindow(id, (int) inc);
            }
            case Protocol.TCLOSE -> new TunnelClose(id);
            default -> throw ProtocolException.message("unknown frame type 0x" + Integer.toHexString(f.type() & 0xff));
        };
        r.end(m.getClass().getSimpleName());
        if (m.id() != id) {
            throw ProtocolException.message(m.getClass().getSimpleName() + " must be sent on id 0, not " + id);
        }
        if (id == 0 && !(m instanceof Hello || m instanceof Configure || m instanceof Configured || m instanceof Error
                || m instanceof Egress || m instanceof EgressStatus || m instanceof Home || m instanceof HomeStatus
                || m instanceof Sync || m instanceof Synced)) {
            throw ProtocolException.message(m.getClass().getSimpleName() + " needs a " + (f.type() >= Protocol.TOPEN ? "tunnel" : "process")
                    + " id, got 0");
        }
        return m;
    }

    private static int fd(int fd) throws ProtocolException {
        if (fd > 2) {
            throw ProtocolException.message("fd " + fd + " is not 0, 1 or 2");
        }
        return fd;
    }

    private static Start decodeStart(int id, Payload.Reader r) throws ProtocolException {
        int flags = r.u8("flags");
        if ((flags & ~1) != 0) {
            throw ProtocolException.message("unknown START flags " + flags);
        }
        int uid = r.i32("uid"), gid = r.i32("gid");
        int ngroups = r.u16("ngroups");
        if (ngroups > Protocol.MAX_GROUPS) {
            throw ProtocolException.message("ngroups " + ngroups + " out of range");
        }
        var groups = new java.util.ArrayList<Integer>(ngroups);
        for (int i = 0; i < ngroups; i++) {
            groups.add(r.i32("group"));
        }
        Credentials credentials;
        try {
            credentials = new Credentials(uid, gid, groups);
        } catch (IllegalArgumentException e) {
            throw ProtocolException.message(e.getMessage());
        }
        String path = r.str("path");
        int argc = r.u16("argc");
        if (argc < 1 || argc > Protocol.MAX_ARGS) {
            throw ProtocolException.message("argc " + argc + " out of range");
        }
        var argv = new java.util.ArrayList<String>(argc);
        for (int i = 0; i < argc; i++) {
            argv.add(r.str("argv"));
        }
        int envc = r.u16("envc");
        if (envc > Protocol.MAX_ENV) {
            throw ProtocolException.message("envc " + envc + " out of range");
        }
        var env = new java.util.LinkedHashMap<String, String>();
        for (int i = 0; i < envc; i++) {
            String kv = r.str("env");
            int eq = kv.indexOf('=');
            if (eq <= 0) {
                throw ProtocolException.message("env entry without NAME=");
            }
            env.put(kv.substring(0, eq), kv.substring(eq + 1));
        }
        String cwd = r.str("cwd");
        String term = r.str("term");
        int rows = r.u16("rows"), cols = r.u16("cols");
        int nmodes = r.u16("nmodes");
        if (nmodes > Protocol.MAX_MODES) {
            throw ProtocolException.message("nmodes " + nmodes + " out of range");
        }
        var modes = new java.util.ArrayList<TermMode>(nmodes);
        for (int i = 0; i < nmodes; i++) {
            modes.add(new TermMode(r.u8("mode opcode"), r.i32("mode value")));
        }
        PtySpec pty = (flags & 1) != 0 ? new PtySpec(term, rows, cols, List.copyOf(modes)) : null;
        return new Start(id, new ProcessSpec(path.isEmpty() ? null : path, List.copyOf(argv), env, cwd.isEmpty() ? null : cwd,
                pty, credentials));
    }
}
