package io.vmgate.image;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;

class SharedLibrariesTest {
    @Test
    void parsesLddOutput() throws ImageException {
        String out = """
                \tlinux-vdso.so.1 (0x00007ffd5a1f1000)
                \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f6e8c18a000)
                \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f6e8c100000)
                \t/lib64/ld-linux-x86-64.so.2 (0x00007f6e8c3b3000)
                """;
        assertThat(SharedLibraries.parse(out, Path.of("/x"))).containsExactly(Path.of("/lib/x86_64-linux-gnu/libc.so.6"),
                Path.of("/lib/x86_64-linux-gnu/libz.so.1"), Path.of("/lib64/ld-linux-x86-64.so.2"));
    }

    @Test
    void aMissingLibraryIsAnError() {
        assertThatThrownBy(() -> SharedLibraries.parse("\tlibfoo.so.1 => not found\n", Path.of("/usr/bin/x")))
                .isInstanceOf(ImageException.class).hasMessageContaining("libfoo.so.1");
    }

    @Test
    void staticBusyboxHasNoneAndSftpServerHasALoader() throws ImageException {
        assumeTrue(Files.isExecutable(Path.of("/bin/busybox")) && Files.isExecutable(Path.of("/usr/lib/openssh/sftp-server")));
        assertThat(SharedLibraries.of(Path.of("/bin/busybox"))).isEmpty();
        assertThat(SharedLibraries.of(Path.of("/usr/lib/openssh/sftp-server")))
                .anyMatch(p -> p.getFileName().toString().startsWith("ld-linux"))
                .anyMatch(p -> p.getFileName().toString().startsWith("libc.so"));
    }
}
