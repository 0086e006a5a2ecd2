package io.vmgate.sandbox;

import static org.assertj.core.api.Assertions.assertThat;

import io.vmgate.sandbox.SavedMachines.Eviction;
import io.vmgate.sandbox.SavedMachines.Saved;
import io.vmgate.vm.qemu.MachineStates;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.List;
import java.util.OptionalInt;
import java.util.OptionalLong;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class SavedMachinesTest {
    @TempDir
    Path tmp;

    private static final Path A = Path.of("/h/a"), B = Path.of("/h/b"), C = Path.of("/h/c"), D = Path.of("/h/d");

    private static Saved saved(Path dir, long bytes, int minute) {
        return new Saved(dir, bytes, Instant.parse("2026-12-01T10:00:00Z").plusSeconds(60L * minute));
    }

    private static List<String> names(List<Eviction> e) {
        return e.stream().map(x -> x.machine().dir().getFileName() + ":" + x.reason()).toList();
    }

    @Test
    void unlimitedEvictsNothing() {
        List<Saved> all = List.of(saved(A, 100, 1), saved(B, 100, 2));
        assertThat(SavedMachines.evictions(all, B, OptionalInt.empty(), OptionalLong.empty())).isEmpty();
    }

    @Test
    void beyondMaxSavedTheLeastRecentlySavedOthersGo() {
        List<Saved> all = List.of(saved(C, 10, 3), saved(A, 10, 1), saved(D, 10, 0), saved(B, 10, 2));
        // D was saved just now (its time is the oldest on purpose: the one just saved is never evicted for others).
        assertThat(names(SavedMachines.evictions(all, D, OptionalInt.of(2), OptionalLong.empty())))
                .containsExactly("a:max_saved", "b:max_saved");
    }

    @Test
    void overTheQuotaTheOldestGoUntilTheRestFit() {
        List<Saved> all = List.of(saved(A, 40, 1), saved(B, 40, 2), saved(C, 40, 3), saved(D, 30, 4));
        assertThat(names(SavedMachines.evictions(all, D, OptionalInt.empty(), OptionalLong.of(100))))
                .containsExactly("a:saved_disk_quota", "b:saved_disk_quota");
        assertThat(SavedMachines.evictions(all, D, OptionalInt.empty(), OptionalLong.of(150))).isEmpty();
    }

    @Test
    void oneThatAloneExceedsTheQuotaIsNotKeptAndEvictsNobody() {
        List<Saved> all = List.of(saved(A, 40, 1), saved(B, 200, 2));
        assertThat(names(SavedMachines.evictions(all, B, OptionalInt.of(5), OptionalLong.of(100))))
                .containsExactly("b:alone_exceeds_quota");
    }

    @Test
    void theOneJustSavedIsNeverEvictedForOthersEvenWhenNothingElseCanGo() {
        List<Saved> all = List.of(saved(A, 90, 1));
        assertThat(SavedMachines.evictions(all, A, OptionalInt.of(0), OptionalLong.of(100))).isEmpty();
    }

    @Test
    void bothLimitsTheCountFirst() {
        List<Saved> all = List.of(saved(A, 10, 1), saved(B, 80, 2), saved(C, 50, 3));
        assertThat(names(SavedMachines.evictions(all, C, OptionalInt.of(2), OptionalLong.of(100))))
                .containsExactly("a:max_saved", "b:saved_disk_quota");
    }

    @Test
    void aMachineIsDiscardedOnlyUnderItsHomesLockAndARefusalKeepsTheLock() throws Exception {
        HomeStore store = new HomeStore(tmp.resolve("homes"), 64L << 20);
        store.prepare();
        Path home;
        try (HomeStore.Home h = store.open("alice")) {
            home = h.directory();
            Files.writeString(home.resolve(MachineStates.STATE), "saved");
            Files.writeString(home.resolve("memory-1"), "link");
            assertThat(SavedMachines.discardIfIdle(home)).isEqualTo(SavedMachineRemoval.RUNNING);
            assertThat(home.resolve(MachineStates.STATE)).exists();
            // A record lock is the process's: a second descriptor closed after a failed try would drop it.
            assertThat(heldByThisProcess(home.resolve(HomeStore.LOCK))).as("the VM's lock on the home survives the refusal").isTrue();
        }
        assertThat(SavedMachines.discardIfIdle(home)).isEqualTo(SavedMachineRemoval.REMOVED);
        assertThat(home.resolve(MachineStates.STATE)).doesNotExist();
        assertThat(home.resolve("memory-1")).doesNotExist();
        assertThat(home.resolve(HomeStore.IMAGE)).as("the home stays").exists();
        assertThat(heldByThisProcess(home.resolve(HomeStore.LOCK))).isFalse();
        assertThat(SavedMachines.discardIfIdle(home)).isEqualTo(SavedMachineRemoval.NONE_SAVED);
        assertThat(SavedMachines.discardIfIdle(store.directoryOf("nobody"))).isEqualTo(SavedMachineRemoval.NONE_SAVED);
        assertThat(store.directoryOf("nobody")).doesNotExist();
        store.open("alice").close(); // the home opens as before
    }

    /** Whether /proc/locks has a POSIX lock of this process on {@code file}. */
    private static boolean heldByThisProcess(Path file) throws Exception {
        long ino = (Long) Files.getAttribute(file, "unix:ino");
        String pid = Long.toString(ProcessHandle.current().pid());
        return Files.readAllLines(Path.of("/proc/locks")).stream().map(l -> l.trim().split("\\s+"))
                .anyMatch(f -> f.length > 5 && f[1].equals("POSIX") && f[4].equals(pid) && f[5].endsWith(":" + ino));
    }
}
