package io.vmgate.control;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.vmgate.ssh.SessionInfo;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The control socket: its protocol, its mode, one server per socket, stale sockets replaced. */
class ControlServerTest {
    @TempDir
    Path dir;

    final List<String> killed = new ArrayList<>();

    /** Operations of a server with no sessions: a test overrides what it asks about. */
    private abstract static class NoSessions implements ControlServer.Operations {
        @Override
        public List<SessionInfo> sessions() {
            return List.of();
        }

        @Override
        public boolean kill(String id, String reason) {
            return false;
        }
    }

    final ControlServer.Operations ops = new ControlServer.Operations() {
        @Override
        public List<SessionInfo> sessions() {
            return List.of(new SessionInfo("3fa2c1d0", "alice\u001b[2J", "127.0.0.1:5000", "ssh-3fa2c1d0",
                    Instant.parse("2026-12-01T16:35:38Z"), Duration.ofMillis(4200), 10, 20, 1));
        }

        @Override
        public boolean kill(String id, String reason) {
            killed.add(id + ":" + reason);
            return id.equals("3fa2c1d0");
        }

        @Override
        public List<ControlServer.Home> homes() {
            return List.of(new ControlServer.Home("2bd806c97f0e00af1a1fc3328fa763a9", "alice", 1L << 30, 3L << 20,
                    Instant.parse("2026-12-01T16:35:38Z"), true, -1, null),
                    new ControlServer.Home("4c26d9074c27d89ede59270c0ac14b71", "bob", 1L << 30, 1L << 20,
                    Instant.parse("2026-12-01T16:30:00Z"), false, 2L << 20, Instant.parse("2026-12-01T16:31:00Z")));
        }
    };

    @Test
    @SuppressWarnings("unchecked")
    void listsThePersistentHomes() throws Exception {
        Path sock = dir.resolve("control.sock");
        try (ControlServer s = ControlServer.start(sock, ops)) {
            Map<String, Object> list = ControlClient.request(sock, Map.of("op", "homes"));
            assertThat(list).containsEntry("ok", true);
            assertThat((List<Object>) list.get("homes")).containsExactly(Map.of("dir", "2bd806c97f0e00af1a1fc3328fa763a9",
                    "user", "alice", "size_bytes", 1L << 30, "used_bytes", 3L << 20, "modified", "2026-12-01T16:35:38Z", "in_use", true),
                    Map.of("dir", "4c26d9074c27d89ede59270c0ac14b71", "user", "bob", "size_bytes", 1L << 30, "used_bytes", 1L << 20,
                            "modified", "2026-12-01T16:30:00Z", "in_use", false, "saved_bytes", 2L << 20,
                            "saved_at", "2026-12-01T16:31:00Z"));
        }
        ControlServer.Operations none = new NoSessions() { };
        try (ControlServer s = ControlServer.start(sock, none)) {
            assertThat(ControlClient.request(sock, Map.of("op", "homes"))).containsEntry("ok", true).containsEntry("homes", List.of());
        }
    }

    @Test
    void discardsASavedMachineAndSaysWhyNot() throws Exception {
        List<String> asked = new ArrayList<>();
        ControlServer.Operations machines = new NoSessions() {
            @Override
            public ControlServer.MachineRemoval discardMachine(String user) throws IOException {
                asked.add(user);
                return switch (user) {
                    case "alice" -> ControlServer.MachineRemoval.REMOVED;
                    case "bob" -> ControlServer.MachineRemoval.RUNNING;
                    case "broken" -> throw new IOException("disk on fire");
                    default -> ControlServer.MachineRemoval.NONE_SAVED;
                };
            }
        };
        Path sock = dir.resolve("control.sock");
        try (ControlServer s = ControlServer.start(sock, machines)) {
            assertThat(ControlClient.request(sock, Map.of("op", "discard_machine", "user", "alice"))).isEqualTo(Map.of("ok", true));
            assertThat(ControlClient.request(sock, Map.of("op", "discard_machine", "user", "bob"))).containsEntry("ok", false)
                    .extractingByKey("error").asString().startsWith("bob's machine is running").contains("vmgate sessions kill ID");
            assertThat(ControlClient.request(sock, Map.of("op", "discard_machine", "user", "carol")))
                    .containsEntry("error", "carol has no saved machine");
            assertThat(ControlClient.request(sock, Map.of("op", "discard_machine", "user", "broken")))
                    .containsEntry("error", "cannot discard the saved machine of broken: disk on fire");
            // The request is the client's: a bad name is refused here, never handed on.
            assertThat(s.handle("{\"op\":\"discard_machine\"}")).containsEntry("error", "discard_machine needs a \"user\" (a user name)");
            assertThat(s.handle("{\"op\":\"discard_machine\",\"user\":7}")).containsEntry("ok", false);
            assertThat(s.handle("{\"op\":\"discard_machine\",\"user\":\"\"}")).containsEntry("error", "bad user name: it is empty");
            assertThat(s.handle("{\"op\":\"discard_machine\",\"user\":\"al\\u001b[2Jice\"}"))
                    .containsEntry("error", "bad user name: it has control characters");
            assertThat(s.handle("{\"op\":\"discard_machine\",\"user\":\"al\\nice\"}")).containsEntry("ok", false);
            assertThat(s.handle("{\"op\":\"discard_machine\",\"user\":\"al\\u007fice\"}")).containsEntry("ok", false);
            assertThat(s.handle("{\"op\":\"discard_machine\",\"user\":\"" + "\u00e9".repeat(129) + "\"}"))
                    .containsEntry("error", "bad user name: longer than 256 bytes");
            assertThat(s.handle("{\"op\":\"discard_machine\",\"user\":\"" + "\u00e9".repeat(128) + "\"}")).containsEntry("ok", false)
                    .containsEntry("error", "\u00e9".repeat(128) + " has no saved machine");
        }
        assertThat(asked).containsExactly("alice", "bob", "carol", "broken", "\u00e9".repeat(128));
        try (ControlServer s = ControlServer.start(sock, ops)) { // an engine that saves no machines
            assertThat(ControlClient.request(sock, Map.of("op", "discard_machine", "user", "alice"))).containsEntry("ok", false)
                    .containsEntry("error", "this server saves no machines (it runs without --persist machine)");
        }
    }

    @Test
    void listsAndKillsSessionsOverASocketOnlyItsOwnerMayOpen() throws Exception {
        Path sock = dir.resolve("control.sock");
        try (ControlServer s = ControlServer.start(sock, ops)) {
            assertThat(Files.getPosixFilePermissions(sock)).isEqualTo(PosixFilePermissions.fromString("rw-------"));
            Map<String, Object> list = ControlClient.request(sock, Map.of("op", "sessions"));
            assertThat(list).containsEntry("ok", true);
            assertThat((List<?>) list.get("sessions")).singleElement().isEqualTo(Map.of("id", "3fa2c1d0",
                    "user", "alice\u001b[2J", "remote", "127.0.0.1:5000", "vm", "ssh-3fa2c1d0",
                    "started", "2026-12-01T16:35:38Z", "idle_ms", 4200L, "bytes_in", 10L, "bytes_out", 20L, "channels", 1L));
            assertThat(ControlClient.request(sock, Map.of("op", "kill", "id", "3fa2c1d0", "reason", "bye")))
                    .containsEntry("ok", true);
            assertThat(ControlClient.request(sock, Map.of("op", "kill", "id", "nope")))
                    .containsEntry("ok", false).containsEntry("error", "no live session nope");
            assertThat(killed).containsExactly("3fa2c1d0:bye", "nope:");
            assertThat(ControlClient.request(sock, Map.of("op", "reboot"))).containsEntry("ok", false);
            assertThat(ControlClient.request(sock, Map.of("op", "kill"))).containsEntry("ok", false);
            assertThat(s.handle("{not json")).containsEntry("ok", false);
            assertThat(s.handle("[1]")).containsEntry("ok", false);
        }
        assertThat(sock).doesNotExist();
    }

    @Test
    void aSecondServerOnTheSameSocketRefusesClearly() throws Exception {
        Path sock = dir.resolve("control.sock");
        try (ControlServer first = ControlServer.start(sock, ops)) {
            assertThatThrownBy(() -> ControlServer.start(sock, ops)).isInstanceOf(IOException.class)
                    .hasMessageContaining("another vmgate serve is using the control socket " + sock)
                    .hasMessageContaining("--control-socket");
            assertThat(ControlClient.request(sock, Map.of("op", "sessions"))).containsEntry("ok", true);
        }
    }

    @Test
    void aSocketLeftByACrashedServerIsReplacedAndAnythingElseIsRefused() throws Exception {
        Path sock = dir.resolve("control.sock");
        // A crashed server: its socket file remains, nobody listens, nobody holds the lock.
        ServerSocketChannel dead = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        dead.bind(UnixDomainSocketAddress.of(sock));
        dead.close();
        assertThat(sock).exists();
        assertThatThrownBy(() -> ControlClient.request(sock, Map.of("op", "sessions"))).isInstanceOf(IOException.class)
                .hasMessageContaining("nothing answers");
        try (ControlServer s = ControlServer.start(sock, ops)) {
            assertThat(ControlClient.request(sock, Map.of("op", "sessions"))).containsEntry("ok", true);
        }
        Files.writeString(sock, "not a socket");
        assertThatThrownBy(() -> ControlServer.start(sock, ops)).isInstanceOf(IOException.class)
                .hasMessageContaining("is not a socket");
        assertThat(Files.readString(sock)).isEqualTo("not a socket");
        assertThatThrownBy(() -> ControlClient.request(dir.resolve("none.sock"), Map.of("op", "sessions")))
                .isInstanceOf(IOException.class).hasMessageContaining("no control socket at");
    }
}
