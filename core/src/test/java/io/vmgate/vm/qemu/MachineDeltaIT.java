package io.vmgate.vm.qemu;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.vmgate.vm.Vm;
import io.vmgate.vm.VmConfig;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;

/**
 * Saved machines with real QEMU ({@link MachineStates}): a VM restored from a copy-on-write template
 * is saved as its device state plus the RAM pages that differ from the template's, and resumed
 * into a new clone of the same template with its processes running; three times over, each resume
 * keeping every change (the e2b failure mode: the second resume losing them), each resumed clone
 * costing only its delta in private memory.
 */
class MachineDeltaIT {
    static final int CYCLES = Integer.getInteger("machine.cycles", 3);
    @TempDir
    Path templates;
    @RegisterExtension
    final RuntimeRoot runtime = new RuntimeRoot("vmgate-it-");

    @BeforeAll
    static void image() throws Exception {
        QemuVmIT.buildImage();
    }


    @Test
    void aSavedMachineResumesWithItsProcessesThreeTimes() throws Exception {
        VmConfig c = VmConfig.defaults(QemuVmIT.image).withRuntimeRoot(runtime.path()).withBootTimeout(Duration.ofSeconds(90));
        Snapshots snapshots = new Snapshots(c, templates, false);
        Template t = snapshots.ensureTemplate();
        Path saved = Files.createDirectories(templates.resolve("saved"));
        long counted;
        Vm vm = snapshots.launch("machine-0");
        try {
            SnapshotsIT.sh(vm, "echo kept > /tmp/marker; (i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done)"
                    + " </dev/null >/dev/null 2>&1 &");
            Thread.sleep(1000);
            counted = Long.parseLong(SnapshotsIT.sh(vm, "cat /tmp/count"));
        } catch (Exception e) {
            vm.close();
            throw e;
        }
        for (int cycle = 1; cycle <= CYCLES; cycle++) {
            long t0 = System.nanoTime();
            long bytes;
            try {
                SnapshotsIT.sh(vm, "echo " + cycle + " >> /tmp/marker");
                bytes = MachineStates.save(vm, saved);
            } finally {
                vm.close();
            }
            long saveMs = (System.nanoTime() - t0) / 1_000_000;
            assertThat(bytes).as("the delta, not the guest's memory").isLessThan(16L << 20);
            t0 = System.nanoTime();
            vm = MachineStates.resume(c, snapshots.key(), "machine-" + cycle, saved, p -> { });
            try {
                System.out.printf("machine_cycle=%d state_bytes=%d save_ms=%d resume_ms=%d%n", cycle, bytes, saveMs,
                        (System.nanoTime() - t0) / 1_000_000);
                assertThat(SnapshotsIT.sh(vm, "cat /tmp/marker")).isEqualTo("kept\n" + String.join("\n",
                        java.util.stream.IntStream.rangeClosed(1, cycle).mapToObj(Integer::toString).toList()));
                long after = Long.parseLong(SnapshotsIT.sh(vm, "cat /tmp/count"));
                Thread.sleep(500);
                long later = Long.parseLong(SnapshotsIT.sh(vm, "cat /tmp/count"));
                assertThat(after).as("the counter kept its value").isGreaterThanOrEqualTo(counted);
                assertThat(later).as("and its process runs on").isGreaterThan(after);
                counted = later;
                long privateKib = privateDirtyKib(((QemuVm) vm).pid().getAsLong());
                System.out.printf("machine_cycle=%d private_kib=%d%n", cycle, privateKib);
                assertThat(privateKib).as("the resumed clone wrote only the delta into its copy-on-write RAM").isLessThan(32 << 10);
            } catch (Exception | AssertionError e) {
                System.out.println("machine_failed cycle=" + cycle + "\n" + vm.diagnostics());
                vm.close();
                throw e;
            }
        }
        vm.close();
        // a clone of the same template that was not given the state knows nothing of it
        try (Vm fresh = snapshots.launch("machine-fresh")) {
            assertThat(SnapshotsIT.sh(fresh, "cat /tmp/marker 2>/dev/null || echo none")).isEqualTo("none");
        }
        // a machine resumes only under the template key it was saved under (another image, QEMU, memory size...)
        assertThatThrownBy(() -> MachineStates.resume(c, "f".repeat(64), "machine-other", saved, p -> { }))
                .isInstanceOf(io.vmgate.vm.VmException.class).hasMessageContaining("another image");
        // the state names a link to the template's memory: a rebuilt template cannot take it away
        assertThat(Files.isSameFile(saved.resolve(t.memory().getFileName()), t.memory())).isTrue();
        MachineStates.discard(saved);
        try (Stream<Path> s = Files.list(saved)) {
            assertThat(s.toList()).isEmpty();
        }
    }

    /** Private_Dirty of the guest RAM mapping (the template's memory file) in QEMU's smaps. */
    static long privateDirtyKib(long pid) throws IOException {
        long kib = 0;
        boolean ram = false;
        for (String line : Files.readAllLines(Path.of("/proc/" + pid + "/smaps"))) {
            if (line.matches("^[0-9a-f]+-[0-9a-f]+ .*")) {
                ram = line.contains("/memory-");
            } else if (ram && line.startsWith("Private_Dirty:")) {
                kib += Long.parseLong(line.replaceAll("\\D", ""));
            }
        }
        return kib;
    }
}
