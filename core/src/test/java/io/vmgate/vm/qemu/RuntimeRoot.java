package io.vmgate.vm.qemu;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;
import org.junit.jupiter.api.extension.AfterEachCallback;
import org.junit.jupiter.api.extension.BeforeEachCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * A fresh runtime root for each test, under /tmp (short: socket paths are limited), that must be
 * empty again when the test ends: whatever VMs it started left nothing behind. Use with
 * {@code @RegisterExtension final RuntimeRoot runtime = new RuntimeRoot("vmgate-it-");}.
 */
public final class RuntimeRoot implements BeforeEachCallback, AfterEachCallback {
    private final String prefix;
    private Path path;

    public RuntimeRoot(String prefix) {
        this.prefix = prefix;
    }

    /** This test's runtime root. */
    public Path path() {
        return path;
    }

    @Override
    public void beforeEach(ExtensionContext context) throws IOException {
        path = Files.createTempDirectory(Path.of("/tmp"), prefix);
    }

    @Override
    public void afterEach(ExtensionContext context) throws IOException {
        try (Stream<Path> s = Files.list(path)) {
            assertThat(s.toList()).as("runtime directories left behind").isEmpty();
        }
        Files.delete(path);
    }
}
