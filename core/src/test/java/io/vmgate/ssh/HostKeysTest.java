package io.vmgate.ssh;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.KeyPair;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.Callable;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The host key: made once, private, reused, never silently replaced. */
class HostKeysTest {
    @TempDir
    Path dir;

    @Test
    void generatedOnceThenReused() throws Exception {
        Path key = dir.resolve("keys/host_key");
        KeyPair first = HostKeys.loadOrGenerate(key);
        assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(key))).isEqualTo("rw-------");
        assertThat(Files.readString(Path.of(key + ".pub"))).startsWith("ssh-ed25519 ");
        assertThat(HostKeys.fingerprint(HostKeys.loadOrGenerate(key))).isEqualTo(HostKeys.fingerprint(first));
    }

    /** Servers started at the same moment on a missing key file must all end up with one key. */
    @Test
    void concurrentFirstStartsAgreeOnOneKey() throws Exception {
        for (int round = 0; round < 20; round++) {
            Path key = dir.resolve("round-" + round + "/host_key");
            int n = 8;
            CyclicBarrier start = new CyclicBarrier(n);
            ExecutorService pool = Executors.newFixedThreadPool(n);
            try {
                List<Future<String>> results = new ArrayList<>();
                for (int i = 0; i < n; i++) {
                    Callable<String> c = () -> {
                        start.await();
                        return HostKeys.fingerprint(HostKeys.loadOrGenerate(key));
                    };
                    results.add(pool.submit(c));
                }
                Set<String> fingerprints = new java.util.HashSet<>();
                for (Future<String> f : results) {
                    fingerprints.add(f.get());
                }
                assertThat(fingerprints).hasSize(1);
                assertThat(fingerprints).containsExactly(HostKeys.fingerprint(HostKeys.loadOrGenerate(key)));
                try (var files = Files.list(key.getParent())) {
                    assertThat(files.map(p -> p.getFileName().toString()).collect(Collectors.toSet()))
                            .as("no temporary files left").containsExactlyInAnyOrder("host_key", "host_key.pub");
                }
            } finally {
                pool.shutdownNow();
            }
        }
    }

    @Test
    void anUnreadableKeyIsNeverReplaced() throws Exception {
        Path key = dir.resolve("host_key");
        Files.writeString(key, "not a key\n");
        assertThatThrownBy(() -> HostKeys.loadOrGenerate(key)).isInstanceOf(IOException.class)
                .hasMessageContaining("move it away");
        assertThat(Files.readString(key)).isEqualTo("not a key\n");
    }
}
