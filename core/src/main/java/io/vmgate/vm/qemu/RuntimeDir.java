package io.vmgate.vm.qemu;

import java.io.IOException;
import java.io.Reader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Properties;

/**
 * One VM's private directory (mode 0700): {@code agent.sock}, {@code qmp.sock},
 * {@code console.sock} (all three listened on by the host), {@code console.log},
 * {@code qemu.stderr} and {@code qemu.pid}; while a VM is restored, {@code state.sock} (QEMU
 * listens, the host sends the template's state); while a template is saved, {@code migrate.sock}
 * (the host listens, QEMU sends its state).
 */
public record RuntimeDir(Path path) {
    /** A Unix socket path must fit sun_path (108 bytes with its NUL). */
    static final int MAX_SOCKET_PATH = 107;

    public Path agentSocket() {
        return path.resolve("agent.sock");
    }

    public Path qmpSocket() {
        return path.resolve("qmp.sock");
    }

    public Path consoleSocket() {
        return path.resolve("console.sock");
    }

    /** Where a restoring QEMU listens for the saved state ({@code migrate-incoming}); no longer than {@link #consoleSocket}. */
    public Path stateSocket() {
        return path.resolve("state.sock");
    }

    /** Where the host listens for a template's state while QEMU saves it. */
    public Path migrateSocket() {
        return path.resolve("migrate.sock");
    }

    public Path consoleLog() {
        return path.resolve("console.log");
    }

    public Path qemuStderr() {
        return path.resolve("qemu.stderr");
    }

    public Path pidFile() {
        return path.resolve("qemu.pid");
    }

    /**
     * Who owns this VM: the server process (pid + start time) and, once spawned, QEMU. Written at
     * creation and again after the spawn, atomically, so a reaper never reads half a file.
     */
    public record Owners(long ownerPid, long ownerStart, long qemuPid, long qemuStart) {
        static Owners self() {
            return new Owners(ProcessHandle.current().pid(), ProcStat.selfStartTime(), -1, -1);
        }

        Owners withQemu(long pid, long start) {
            return new Owners(ownerPid, ownerStart, pid, start);
        }
    }

    void writeOwners(Owners o) throws IOException {
        // Written by hand in Properties' format: Properties.store() adds a date, and the time
        // zone it loads for that costs ~8 ms on the way to every VM's start.
        StringBuilder text = new StringBuilder("# vmgate: QEMU and its owning server; start times are /proc/<pid>/stat field 22\n")
                .append("owner_pid=").append(o.ownerPid()).append('\n')
                .append("owner_start=").append(o.ownerStart()).append('\n');
        if (o.qemuPid() > 0) {
            text.append("qemu_pid=").append(o.qemuPid()).append('\n')
                    .append("qemu_start=").append(o.qemuStart()).append('\n');
        }
        Path tmp = path.resolve("qemu.pid.tmp");
        Files.writeString(tmp, text, StandardCharsets.UTF_8);
        Files.move(tmp, pidFile(), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }

    /** The pid file's content; throws if missing or malformed. */
    Owners readOwners() throws IOException {
        Properties p = new Properties();
        try (Reader r = Files.newBufferedReader(pidFile(), StandardCharsets.UTF_8)) {
            p.load(r);
        }
        try {
            return new Owners(Long.parseLong(p.getProperty("owner_pid")), Long.parseLong(p.getProperty("owner_start")),
                    Long.parseLong(p.getProperty("qemu_pid", "-1")), Long.parseLong(p.getProperty("qemu_start", "-1")));
        } catch (NumberFormatException | NullPointerException e) {
            throw new IOException("malformed " + pidFile(), e);
        }
    }
}
