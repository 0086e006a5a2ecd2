package io.vmgate.vm.qemu;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The template state file's header (docs/templates.md): read strictly, since the file names what QEMU maps. */
class TemplateTest {
    @TempDir
    Path dir;

    Path write(byte[] content) throws Exception {
        Path p = dir.resolve("state");
        Files.write(p, content);
        return p;
    }

    static byte[] concat(byte[] a, byte[] b) {
        byte[] out = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }

    @Test
    void readsTheMemoryFileBesideTheStateAndTheStreamAfterTheHeader() throws Exception {
        byte[] stream = {'Q', 'E', 'V', 'M', 0, 0, 0, 3, '\n', '\n'};
        Template t = Template.read(write(concat(Template.header("memory-0a1b"), stream)));
        assertThat(t.memory()).isEqualTo(dir.resolve("memory-0a1b"));
        assertThat(t.stream()).isEqualTo(stream);
        assertThat(t.state()).isEqualTo(dir.resolve("state"));
        assertThat(t.key()).isEmpty();
    }

    @Test
    void aSavedMachineNamesTheTemplateKeyItDescendsFrom() throws Exception {
        String key = "0123456789abcdef".repeat(4);
        byte[] stream = {'Q', 'E', 'V', 'M', '\n', '\n'};
        Template t = Template.read(write(concat(Template.header("memory-0a1b", key), stream)));
        assertThat(t.key()).contains(key);
        assertThat(t.memory()).isEqualTo(dir.resolve("memory-0a1b"));
        assertThat(t.stream()).isEqualTo(stream);
        assertThatThrownBy(() -> Template.header("memory-0a1b", "ABC")).isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void aMissingFileIsNoSuchFileNotCorrupt() {
        assertThatThrownBy(() -> Template.read(dir.resolve("state"))).isInstanceOf(NoSuchFileException.class);
    }

    @Test
    void anythingElseIsCorrupt() {
        for (String bad : new String[] {
                "", "QEVM\0\0\0\3", "vmgate-template 2\nmemory memory-ab\n\nX", // an older version
                "vmgate-template 3\n", "vmgate-template 3\nmemory memory-ab\nX", // no empty line
                "vmgate-template 3\nmemory ../../etc/passwd\n\nX", "vmgate-template 3\nmemory /etc/passwd\n\nX",
                "vmgate-template 3\nmemory memory-AB\n\nX", "vmgate-template 3\nmemory memory-\n\nX",
                "vmgate-template 3\nmemory memory-ab" + "c".repeat(200) + "\n\nX", "vmgate-template 3\nmem memory-ab\n\nX",
                "vmgate-template 3\nmemory memory-ab\nkey " + "a".repeat(63) + "\n\nX", // a short key
                "vmgate-template 3\nmemory memory-ab\nkey " + "A".repeat(64) + "\n\nX",
                "vmgate-template 3\nmemory memory-ab\nkey " + "a".repeat(64) + "\nX", // no empty line after it
                "vmgate-template 3\nmemory memory-ab\nkey " + "a".repeat(64) + "\nkey " + "a".repeat(64) + "\n\nX",
                "vmgate-template 3\nmemory memory-ab\nkeys " + "a".repeat(64) + "\n\nX"}) {
            assertThatThrownBy(() -> Template.read(write(bad.getBytes(StandardCharsets.ISO_8859_1))))
                    .as("%s", bad).isInstanceOf(Template.Corrupt.class);
        }
    }

    @Test
    void anOversizedFileIsCorruptWithoutReadingItAll() throws Exception {
        Path p = dir.resolve("state");
        try (var ch = java.nio.channels.FileChannel.open(p, java.nio.file.StandardOpenOption.CREATE_NEW,
                java.nio.file.StandardOpenOption.WRITE)) {
            ch.write(java.nio.ByteBuffer.wrap(Template.header("memory-ab")));
            ch.truncate(Template.MAX_STATE_BYTES + 2L); // sparse
            ch.write(java.nio.ByteBuffer.wrap(new byte[] {1}), Template.MAX_STATE_BYTES + 1L);
        }
        assertThatThrownBy(() -> Template.read(p)).isInstanceOf(Template.Corrupt.class).hasMessageContaining("larger");
    }

    @Test
    void theHeaderOnlyNamesPlainMemoryFiles() {
        assertThatThrownBy(() -> Template.header("../memory-ab")).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> Template.header("state")).isInstanceOf(IllegalArgumentException.class);
    }
}
