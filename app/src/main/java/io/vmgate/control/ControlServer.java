package io.vmgate.control;

import io.vmgate.ssh.SessionInfo;
import io.vmgate.text.Json;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.nio.file.attribute.UserPrincipal;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import jdk.net.ExtendedSocketOptions;
import jdk.net.UnixDomainPrincipal;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Serves the control protocol ({@code docs/control.md}) on a Unix socket: one JSON request per
 * line, one JSON response per line. The socket is mode 0600 and a client whose peer credentials
 * are not the socket's owner is refused, so only the operator can use it.
 *
 * <p>One server per socket: a lock file beside it ({@code <socket>.lock}) is held for the server's
 * life. A second server on the same path refuses to start, naming it; a socket left by a server
 * that crashed (its lock is free) is replaced.
 */
public final class ControlServer implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(ControlServer.class);
    /** The longest request line read; a longer one is answered with an error and the connection closed. */
    static final int MAX_LINE = 64 * 1024;
    /** The longest user name a request may name, in UTF-8 bytes (what {@code vmgate sessions homes} shows of a name). */
    static final int MAX_USER_BYTES = 256;

    /** What the socket can do to the server. */
    public interface Operations {
        List<SessionInfo> sessions();

        /** Ends a session; false if there is no such session. */
        boolean kill(String id, String reason);

        /** The persistent homes the server keeps ({@code --persist home}); none by default. */
        default List<Home> homes() throws java.io.IOException {
            return List.of();
        }

        /** Removes {@code user}'s saved machine ({@code --persist machine}), not their home; by default the server saves none. */
        default MachineRemoval discardMachine(String user) throws java.io.IOException {
            return MachineRemoval.NOT_SAVING;
        }
    }

    /** What became of {@code {"op":"discard_machine"}}, with what the operator is told when it was not done. */
    public enum MachineRemoval {
        REMOVED(null),
        RUNNING("%s's machine is running (it is saved when their last connection ends): end their sessions first"
                + " (vmgate sessions, then vmgate sessions kill ID), then discard it"),
        NONE_SAVED("%s has no saved machine"),
        NOT_SAVING("this server saves no machines (it runs without --persist machine)");

        private final String refusal;

        MachineRemoval(String refusal) {
            this.refusal = refusal;
        }

        /** The error for {@code user}, null when it was done. */
        String refusal(String user) {
            return refusal == null ? null : refusal.formatted(user);
        }
    }

    /** A persistent home and its saved machine ({@code savedBytes} -1, {@code savedAt} null: none), for {@code {"op":"homes"}} (docs/control.md). */
    public record Home(String dir, String user, long sizeBytes, long usedBytes, java.time.Instant modified, boolean inUse,
            long savedBytes, java.time.Instant savedAt) {}

    private final Path socket;
    private final FileChannel lockFile;
    private final FileLock lock;
    private final ServerSocketChannel server;
    private final UserPrincipal owner;
    private final Operations ops;
    private final Thread acceptor;
    private volatile boolean closed;

    private ControlServer(Path socket, FileChannel lockFile, FileLock lock, ServerSocketChannel server, UserPrincipal owner,
            Operations ops) {
        this.socket = socket;
        this.lockFile = lockFile;
        this.lock = lock;
        this.server = server;
        this.owner = owner;
        this.ops = ops;
        this.acceptor = Thread.ofPlatform().daemon().name("vmgate-control").unstarted(this::acceptLoop);
    }

    /**
     * Listens on {@code socket} (its directory is created 0700 if missing).
     *
     * @throws IOException when another server holds the socket, the path is something else than a
     *                     socket, or it cannot be bound; the message says which and what to do
     */
    public static ControlServer start(Path socket, Operations ops) throws IOException {
        socket = socket.toAbsolutePath().normalize();
        Path dir = socket.getParent();
        if (!Files.isDirectory(dir)) {
            Files.createDirectories(dir, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
        }
        Path lockPath = socket.resolveSibling(socket.getFileName() + ".lock");
        FileChannel lockFile = FileChannel.open(lockPath, StandardOpenOption.CREATE, StandardOpenOption.WRITE);
        FileLock lock;
        try {
            lock = lockFile.tryLock();
        } catch (OverlappingFileLockException e) {
            lock = null;
        }
        if (lock == null) {
            lockFile.close();
            throw new IOException("another vmgate serve is using the control socket " + socket
                    + " (its state directory is this one's): stop it, or give this server its own with --control-socket PATH");
        }
        ServerSocketChannel server = null;
        try {
            removeStale(socket);
            server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
            server.bind(UnixDomainSocketAddress.of(socket), 16);
            Files.setPosixFilePermissions(socket, PosixFilePermissions.fromString("rw-------"));
            UserPrincipal owner = Files.getOwner(socket, LinkOption.NOFOLLOW_LINKS);
            ControlServer c = new ControlServer(socket, lockFile, lock, server, owner, ops);
            c.acceptor.start();
            log.atInfo().setMessage("control_listening").addKeyValue("socket", socket.toString()).log();
            return c;
        } catch (IOException | RuntimeException e) {
            if (server != null) {
                server.close();
                Files.deleteIfExists(socket);
            }
            lock.release();
            lockFile.close();
            throw e instanceof IOException io && io.getMessage() != null && io.getMessage().contains(socket.toString()) ? io
                    : new IOException("cannot listen on the control socket " + socket + ": " + e.getMessage(), e);
        }
    }

    /** A socket whose lock is free was left by a server that is gone: remove it. Anything else there is not ours. */
    private static void removeStale(Path socket) throws IOException {
        int mode;
        try {
            mode = (Integer) Files.getAttribute(socket, "unix:mode", LinkOption.NOFOLLOW_LINKS);
        } catch (NoSuchFileException e) {
            return;
        }
        if ((mode & 0170000) != 0140000) {
            throw new IOException("the control socket path " + socket + " exists and is not a socket; remove it or choose"
                    + " another with --control-socket PATH");
        }
        Files.delete(socket);
        log.atInfo().setMessage("control_socket_replaced").addKeyValue("socket", socket.toString())
                .addKeyValue("reason", "left by a server that is gone").log();
    }

    public Path socket() {
        return socket;
    }

    private void acceptLoop() {
        while (!closed) {
            SocketChannel client;
            try {
                client = server.accept();
            } catch (IOException e) {
                if (!closed) {
                    log.atWarn().setMessage("control_accept_failed").addKeyValue("error", e.toString()).log();
                }
                return;
            }
            Thread.ofVirtual().name("vmgate-control-client").start(() -> serve(client));
        }
    }

    private void serve(SocketChannel client) {
        try (client; InputStream in = new java.io.BufferedInputStream(Channels.newInputStream(client));
                OutputStream out = Channels.newOutputStream(client)) {
            UnixDomainPrincipal peer = client.getOption(ExtendedSocketOptions.SO_PEERCRED);
            if (!peer.user().equals(owner)) {
                log.atWarn().setMessage("control_refused").addKeyValue("peer_user", peer.user().getName())
                        .addKeyValue("owner", owner.getName()).log();
                reply(out, error("only " + owner.getName() + ", who owns this socket, may use it"));
                return;
            }
            while (true) {
                String line;
                try {
                    line = readLine(in);
                } catch (LineTooLong e) {
                    reply(out, error("request line longer than " + MAX_LINE + " bytes"));
                    return;
                }
                if (line == null) {
                    return;
                }
                if (line.isBlank()) {
                    continue;
                }
                reply(out, handle(line));
            }
        } catch (IOException e) {
            // the client went away
        }
    }

    /** One request line to its response. */
    Map<String, Object> handle(String line) {
        Map<String, Object> req;
        try {
            req = Json.parseObject(line);
        } catch (Json.JsonException e) {
            return error("bad request: " + e.getMessage());
        }
        Object op = req.get("op");
        if ("sessions".equals(op)) {
            List<Map<String, Object>> list = ops.sessions().stream().map(ControlServer::toJson).toList();
            Map<String, Object> r = ok();
            r.put("sessions", list);
            return r;
        }
        if ("homes".equals(op)) {
            List<Home> homes;
            try {
                homes = ops.homes();
            } catch (java.io.IOException e) {
                return error("cannot list the homes: " + e.getMessage());
            }
            Map<String, Object> r = ok();
            r.put("homes", homes.stream().map(ControlServer::toJson).toList());
            return r;
        }
        if ("kill".equals(op)) {
            if (!(req.get("id") instanceof String id) || id.isEmpty()) {
                return error("kill needs an \"id\"");
            }
            String reason = req.get("reason") instanceof String s ? s : "";
            boolean killed = ops.kill(id, reason);
            log.atInfo().setMessage("control_kill").addKeyValue("session", id).addKeyValue("found", killed).log();
            return killed ? ok() : error("no live session " + id);
        }
        if ("discard_machine".equals(op)) {
            return discardMachine(req.get("user"));
        }
        return error("unknown op " + (op == null ? "(none)" : Json.write(op))
                + ": use \"sessions\", \"kill\", \"homes\" or \"discard_machine\"");
    }

    private Map<String, Object> discardMachine(Object name) {
        if (!(name instanceof String user)) {
            return error("discard_machine needs a \"user\" (a user name)");
        }
        String bad = badUserName(user);
        if (bad != null) {
            return error("bad user name: " + bad);
        }
        MachineRemoval r;
        try {
            r = ops.discardMachine(user);
        } catch (java.io.IOException e) {
            log.atWarn().setMessage("control_discard_machine").addKeyValue("user", user).addKeyValue("result", "failed")
                    .addKeyValue("error", e.toString()).log();
            return error("cannot discard the saved machine of " + user + ": " + e.getMessage());
        }
        log.atInfo().setMessage("control_discard_machine").addKeyValue("user", user)
                .addKeyValue("result", r.name().toLowerCase(java.util.Locale.ROOT)).log();
        return r == MachineRemoval.REMOVED ? ok() : error(r.refusal(user));
    }

    /** Why {@code user} cannot be a user name (the request is the client's: it is checked here), or null. */
    static String badUserName(String user) {
        if (user.isEmpty()) {
            return "it is empty";
        }
        if (user.getBytes(StandardCharsets.UTF_8).length > MAX_USER_BYTES) {
            return "longer than " + MAX_USER_BYTES + " bytes";
        }
        if (user.codePoints().anyMatch(Character::isISOControl)) {
            return "it has control characters";
        }
        return null;
    }

    static Map<String, Object> toJson(SessionInfo s) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("id", s.id());
        m.put("user", s.user());
        m.put("remote", s.remote());
        m.put("vm", s.vm());
        m.put("started", s.started().toString());
        m.put("idle_ms", s.idle().toMillis());
        m.put("bytes_in", s.bytesIn());
        m.put("bytes_out", s.bytesOut());
        m.put("channels", s.channels());
        return m;
    }

    static Map<String, Object> toJson(Home h) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("dir", h.dir());
        m.put("user", h.user());
        m.put("size_bytes", h.sizeBytes());
        m.put("used_bytes", h.usedBytes());
        m.put("modified", h.modified().toString());
        m.put("in_use", h.inUse());
        if (h.savedAt() != null) {
            m.put("saved_bytes", h.savedBytes());
            m.put("saved_at", h.savedAt().toString());
        }
        return m;
    }

    private static Map<String, Object> ok() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("ok", true);
        return m;
    }

    private static Map<String, Object> error(String message) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("ok", false);
        m.put("error", message);
        return m;
    }

    private static void reply(OutputStream out, Map<String, Object> response) throws IOException {
        out.write((Json.write(response) + "\n").getBytes(StandardCharsets.UTF_8));
        out.flush();
    }

    private static final class LineTooLong extends IOException {
        LineTooLong() {
            super("request line too long");
        }
    }

    /** A line without its newline (UTF-8), or null at EOF; at most {@link #MAX_LINE} bytes. */
    private static String readLine(InputStream in) throws IOException {
        java.io.ByteArrayOutputStream b = new java.io.ByteArrayOutputStream();
        int c;
        while ((c = in.read()) >= 0 && c != '\n') {
            if (b.size() >= MAX_LINE) {
                throw new LineTooLong();
            }
            b.write(c);
        }
        if (c < 0 && b.size() == 0) {
            return null;
        }
        return b.toString(StandardCharsets.UTF_8);
    }

    /** Stops listening, removes the socket and gives up the lock. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        try {
            server.close();
        } catch (IOException e) {
            // closing anyway
        }
        try {
            Files.deleteIfExists(socket);
        } catch (IOException e) {
            log.atWarn().setMessage("control_socket_not_removed").addKeyValue("socket", socket.toString())
                    .addKeyValue("error", e.toString()).log();
        }
        try {
            lock.release();
            lockFile.close();
        } catch (IOException e) {
            // the process is going away
        }
    }
}
