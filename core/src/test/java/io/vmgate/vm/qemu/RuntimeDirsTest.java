package io.vmgate.vm.qemu;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Instant;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class RuntimeDirsTest {
    @TempDir
    Path tmp;

    @Test
    void rootFollowsTheEnvironment() {
        assertThat(RuntimeDirs.defaultRoot(Map.of("VMGATE_RUNTIME_DIR", "/r", "XDG_RUNTIME_DIR", "/run/user/1000"), 1000))
                .isEqualTo(Path.of("/r"));
        assertThat(RuntimeDirs.defaultRoot(Map.of("XDG_RUNTIME_DIR", "/run/user/1000"), 1000))
                .isEqualTo(Path.of("/run/user/1000/vmgate"));
        assertThat(RuntimeDirs.defaultRoot(Map.of(), 0)).isEqualTo(Path.of("/run/vmgate"));
        assertThat(RuntimeDirs.defaultRoot(Map.of(), 1000)).isEqualTo(Path.of("/tmp/vmgate-1000"));
    }

    @Test
    void vmDirectoriesArePrivateAndUnique() throws IOException {
        Path root = tmp.resolve("root");
        RuntimeDir d = RuntimeDirs.create(root, "vm-1");
        assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(root))).isEqualTo("rwx------");
        assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(d.path()))).isEqualTo("rwx------");
        assertThat(d.agentSocket()).isEqualTo(root.resolve("vm-1/agent.sock"));
        assertThatThrownBy(() -> RuntimeDirs.create(root, "vm-1")).isInstanceOf(FileAlreadyExistsException.class);
        for (String bad : new String[] {"", "..", ".hidden", "-x", "a/b", "a b", "x".repeat(65)}) {
            assertThatThrownBy(() -> RuntimeDirs.create(root, bad)).as(bad).isInstanceOf(IllegalArgumentException.class);
        }
    }

    @Test
    void socketPathsThatDoNotFitAreRefusedClearly() {
        Path deep = tmp.resolve("x".repeat(60)).resolve("y".repeat(40));
        assertThatThrownBy(() -> RuntimeDirs.create(deep, "vm")).isInstanceOf(IOException.class)
                .hasMessageContaining("VMGATE_RUNTIME_DIR");
    }

    @Test
    void aSymlinkedRootIsRefused() throws IOException {
        Path target = Files.createDirectory(tmp.resolve("elsewhere"));
        Path link = Files.createSymbolicLink(tmp.resolve("link"), target);
        assertThatThrownBy(() -> RuntimeDirs.create(link, "vm")).isInstanceOf(IOException.class);
    }

    @Test
    void reapsTheQemuOfADeadServerButNothingElse() throws Exception {
        Path root = tmp.resolve("root");
        // a stand-in for an orphaned QEMU, and a dead "server" (a process that has exited)
        Process orphan = new ProcessBuilder("sleep", "600").start();
        Process deadOwner = new ProcessBuilder("true").start();
        long deadStart = ProcStat.startTime(deadOwner.pid()).orElse(123);
        deadOwner.waitFor();
        try {
            RuntimeDir stale = RuntimeDirs.create(root, "stale");
            stale.writeOwners(new RuntimeDir.Owners(deadOwner.pid(), deadStart, orphan.pid(),
                    ProcStat.startTime(orphan.pid()).orElseThrow()));

            // same pid as the orphan but another start time: a recycled pid, never to be signalled
            RuntimeDir recycled = RuntimeDirs.create(root, "recycled");
            recycled.writeOwners(new RuntimeDir.Owners(deadOwner.pid(), deadStart, orphan.pid(),
                    ProcStat.startTime(orphan.pid()).orElseThrow() - 1));

            RuntimeDir mine = RuntimeDirs.create(root, "mine"); // owned by this live process
            mine.writeOwners(RuntimeDir.Owners.self().withQemu(orphan.pid(), ProcStat.startTime(orphan.pid()).orElseThrow()));

            RuntimeDir fresh = RuntimeDirs.create(root, "being-created"); // no pid file yet, young
            RuntimeDir debris = RuntimeDirs.create(root, "debris"); // no pid file, old
            Files.setLastModifiedTime(debris.path(), FileTime.from(Instant.now().minusSeconds(3600)));

            // first the recycled one alone: must not kill
            Files.move(stale.path(), tmp.resolve("parked"));
            assertThat(RuntimeDirs.reapStale(root)).isEqualTo(2); // recycled + debris
            assertThat(orphan.isAlive()).isTrue();
            assertThat(recycled.path()).doesNotExist();
            assertThat(debris.path()).doesNotExist();
            assertThat(mine.path()).exists();
            assertThat(fresh.path()).exists();

            Files.move(tmp.resolve("parked"), stale.path());
            assertThat(RuntimeDirs.reapStale(root)).isEqualTo(1);
            assertThat(orphan.waitFor(5, TimeUnit.SECONDS)).isTrue();
            assertThat(stale.path()).doesNotExist();
            assertThat(mine.path()).exists();
        } finally {
            orphan.destroyForcibly();
        }
    }

    @Test
    void procStatParsingSurvivesOddProcessNames() {
        String stat = "1234 (we(ird) name)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        assertThat(ProcStat.parseStartTime(stat)).hasValue(987654);
        assertThat(ProcStat.parseStartTime("garbage")).isEmpty();
        assertThat(ProcStat.parseStartTime("1 (x) S 1 2")).isEmpty();
        assertThat(ProcStat.parseCpuTicks(stat)).as("utime 1 + stime 2").hasValue(3);
        assertThat(ProcStat.parseCpuTicks("1 (x) S 1 2")).isEmpty();
        assertThat(ProcStat.startTime(ProcessHandle.current().pid())).isPresent();
        assertThat(ProcStat.isSameProcess(ProcessHandle.current().pid(), ProcStat.selfStartTime())).isTrue();
    }

    @Test
    void tailsAreShortAndSafeToPrint() {
        String log = "one\ntwo\r\nthree\u001b[2J\nfour\n\n";
        assertThat(Tails.lastLines(log, 2)).isEqualTo("three\\x1b[2J\nfour");
        assertThat(Tails.lastLines("a\nb", 5)).isEqualTo("a\nb");
        assertThat(Tails.lastLines("", 5)).isEmpty();
        assertThat(Tails.indent("")).contains("(empty)");
    }
}
