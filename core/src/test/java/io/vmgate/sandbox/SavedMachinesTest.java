package io.vmgate.sandbox;

import static org.assertj.core.api.Assertions.assertThat;

import io.vmgate.sandbox.SavedMachines.Eviction;
import io.vmgate.sandbox.SavedMachines.Saved;
import java.nio.file.Path;
import java.time.Instant;
import java.util.List;
import java.util.OptionalInt;
import java.util.OptionalLong;
import org.junit.jupiter.api.Test;

class SavedMachinesTest {
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
}
