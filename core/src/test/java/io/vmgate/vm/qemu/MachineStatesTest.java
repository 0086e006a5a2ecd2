package io.vmgate.vm.qemu;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.vmgate.vm.VmException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** A saved machine's files, without QEMU: what resumes, what is refused before anything starts, what is kept. */
class MachineStatesTest {
    static final String KEY = "0123456789abcdef".repeat(4);

    @TempDir
    Path dir;

    private void save(String key) throws Exception {
        byte[] header = key == null ? Template.header("memory-ab") : Template.header("memory-ab", key);
        Files.write(dir.resolve(MachineStates.STATE), TemplateTest.concat(header, new byte[] {'Q', 'E', 'V', 'M'}));
    }

    private String[] names() throws Exception {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).sorted().toArray(String[]::new);
        }
    }

    @Test
    void aMachineSavedUnderAnotherTemplateKeyIsRefusedBeforeAnythingStarts() throws Exception {
        save(KEY);
        assertThatThrownBy(() -> MachineStates.resume(null, "f".repeat(64), "vm", dir, p -> { }))
                .isInstanceOf(VmException.class).hasMessageContaining("another image");
        save(null);
        assertThatThrownBy(() -> MachineStates.resume(null, KEY, "vm", dir, p -> { }))
                .isInstanceOf(VmException.class).hasMessageContaining("older vmgate");
        Files.writeString(dir.resolve(MachineStates.STATE), "garbage");
        assertThatThrownBy(() -> MachineStates.resume(null, KEY, "vm", dir, p -> { }))
                .isInstanceOf(VmException.class).hasMessageContaining("cannot be read");
        assertThat(names()).as("a refusal changes nothing").containsExactly("machine");
    }

    @Test
    void onlyTheLatestFailedMachineIsKeptAside() throws Exception {
        save(KEY);
        assertThat(MachineStates.setAside(dir, "1").getFileName().toString()).isEqualTo("machine.failed-1");
        assertThat(MachineStates.exists(dir)).isFalse();
        save(KEY);
        MachineStates.setAside(dir, "2");
        assertThat(names()).containsExactly("machine.failed-2");
    }

    @Test
    void aTornSaveIsRemovedAndNothingElse() throws Exception {
        save(KEY);
        Files.writeString(dir.resolve("machine.tmp"), "half");
        assertThat(MachineStates.discardTemporary(dir)).isTrue();
        assertThat(MachineStates.discardTemporary(dir)).isFalse();
        assertThat(names()).containsExactly("machine");
        Files.writeString(dir.resolve("memory-ab"), "");
        Files.writeString(dir.resolve("machine.failed-1"), "kept");
        MachineStates.discard(dir);
        assertThat(names()).as("discarding a machine keeps the one set aside for the operator").containsExactly("machine.failed-1");
    }
}
