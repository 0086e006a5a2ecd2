package io.vmgate.vm.qemu;

import static org.assertj.core.api.Assertions.assertThat;

import io.vmgate.agent.GuestProcess;
import io.vmgate.agent.ProcessSpec;
import io.vmgate.vm.Vm;
import io.vmgate.vm.VmConfig;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;

/**
 * Copy-on-write templates with real QEMU: VMs restored from one template share its memory file
 * but never each other's writes, the file itself never changes, and replacing the template
 * while VMs run from it leaves them working.
 */
class SnapshotsIT {
    @TempDir
    Path templates;
    @RegisterExtension
    final RuntimeRoot runtime = new RuntimeRoot("vmgate-it-");

    @BeforeAll
    static void image() throws Exception {
        QemuVmIT.buildImage();
    }


    VmConfig config() {
        return VmConfig.defaults(QemuVmIT.image).withRuntimeRoot(runtime.path()).withBootTimeout(Duration.ofSeconds(60));
    }

    static String sh(Vm vm, String script) throws Exception {
        GuestProcess p = vm.agent().start(ProcessSpec.shellCommand(script));
        p.stdin().close();
        String out = new String(p.stdout().readAllBytes(), StandardCharsets.UTF_8);
        String err = new String(p.stderr().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.exit().get(60, TimeUnit.SECONDS).code()).as("%s: %s%s", script, out, err).isZero();
        return out.strip();
    }

    static String sha256(Path f) throws Exception {
        MessageDigest d = MessageDigest.getInstance("SHA-256");
        try (InputStream in = Files.newInputStream(f)) {
            byte[] buf = new byte[1 << 20];
            int n;
            while ((n = in.read(buf)) > 0) {
                d.update(buf, 0, n);
            }
        }
        return HexFormat.of().formatHex(d.digest());
    }

    static boolean restored(Vm vm) {
        return vm.phases().stream().anyMatch(p -> p.name().equals("agent_restored"));
    }

    /** The lines of QEMU's memory map that map {@code file}. */
    static List<String> mappings(Vm vm, Path file) throws IOException {
        long pid = ((QemuVm) vm).pid().orElseThrow();
        return Files.readAllLines(Path.of("/proc", Long.toString(pid), "maps")).stream()
                .filter(l -> l.contains(file.getFileName().toString())).toList();
    }

    @Test
    void twoClonesOfOneTemplateNeverSeeEachOthersWrites() throws Exception {
        Snapshots snapshots = new Snapshots(config(), templates, false);
        Template t = snapshots.ensureTemplate();
        String before = sha256(t.memory());
        try (Vm a = snapshots.launch("it-clone-a"); Vm b = snapshots.launch("it-clone-b")) {
            assertThat(restored(a)).as("a restored, not cold-booted").isTrue();
            assertThat(restored(b)).as("b restored, not cold-booted").isTrue();
            assertThat(mappings(a, t.memory())).as("a maps the template's file").isNotEmpty();
            assertThat(mappings(b, t.memory())).as("b maps the template's file").isNotEmpty();

            // Files in tmpfs live in guest RAM: 8 MiB of random pages in each, written one after the other.
            String hashA = sh(a, "head -c 8388608 /dev/urandom > /tmp/mine; echo a > /tmp/who; md5sum < /tmp/mine");
            assertThat(sh(b, "cat /tmp/who 2>/dev/null || echo none; ls /tmp")).as("b sees nothing of a's").isEqualTo("none");
            String hashB = sh(b, "head -c 8388608 /dev/urandom > /tmp/mine; echo b > /tmp/who; md5sum < /tmp/mine");
            assertThat(hashB).isNotEqualTo(hashA);
            assertThat(sh(a, "cat /tmp/who; md5sum < /tmp/mine")).isEqualTo("a\n" + hashA);
            assertThat(sh(b, "cat /tmp/who; md5sum < /tmp/mine")).isEqualTo("b\n" + hashB);
            // Kernel memory too: a hostname set in one is not the other's.
            sh(a, "hostname only-a");
            assertThat(sh(b, "hostname")).isEqualTo(QemuVm.HOSTNAME);
        }
        assertThat(sha256(t.memory())).as("the template's memory file is unchanged by its clones").isEqualTo(before);
    }

    @Test
    void aTemplateReplacedWhileClonesRunLeavesThemIntact() throws Exception {
        Snapshots snapshots = new Snapshots(config(), templates, false);
        Template old = snapshots.ensureTemplate();
        try (Vm a = snapshots.launch("it-old-a"); Vm b = snapshots.launch("it-old-b")) {
            sh(a, "echo kept-a > /tmp/x");
            sh(b, "echo kept-b > /tmp/x");

            // Replace it: a new build writes a new memory file and unlinks the old one.
            Files.delete(old.state());
            Template fresh = snapshots.ensureTemplate();
            assertThat(fresh.memory()).isNotEqualTo(old.memory());
            assertThat(old.memory()).as("the old memory file is unlinked").doesNotExist();
            assertThat(mappings(a, old.memory())).as("a still maps the old (deleted) file").isNotEmpty()
                    .allMatch(l -> l.endsWith("(deleted)"));

            // The running clones keep working, memory intact, and can still start processes.
            assertThat(sh(a, "cat /tmp/x; head -c 4194304 /dev/zero | md5sum")).startsWith("kept-a\n");
            assertThat(sh(b, "cat /tmp/x; ls /bin/sh")).isEqualTo("kept-b\n/bin/sh");
            try (Vm c = snapshots.launch("it-new-c")) {
                assertThat(restored(c)).as("c restored from the new template").isTrue();
                assertThat(mappings(c, fresh.memory())).isNotEmpty();
                assertThat(sh(c, "cat /tmp/x 2>/dev/null || echo none")).isEqualTo("none");
            }
            assertThat(sh(a, "cat /tmp/x")).isEqualTo("kept-a");
        }
        try (Stream<Path> s = Files.list(templates.resolve(snapshots.key()))) {
            assertThat(s.map(p -> p.getFileName().toString()).filter(n -> n.startsWith("memory-")).toList())
                    .as("only the current memory file remains").hasSize(1);
        }
    }

    @Test
    void aCorruptStateFallsBackToAColdBootAndIsRebuiltOnTheNextLaunch() throws Exception {
        Snapshots snapshots = new Snapshots(config(), templates, false);
        Template t = snapshots.ensureTemplate();
        byte[] header = Template.header(t.memory().getFileName().toString());
        Files.write(t.state(), TemplateTest.concat(header, "not a QEMU stream".getBytes(StandardCharsets.US_ASCII)));
        try (Vm cold = snapshots.launch("it-corrupt")) {
            assertThat(restored(cold)).as("QEMU rejected the state: a cold boot instead").isFalse();
            assertThat(sh(cold, "echo ok")).isEqualTo("ok");
        }
        assertThat(t.state()).as("the bad template is discarded").doesNotExist();
        try (Vm again = snapshots.launch("it-rebuilt")) {
            assertThat(restored(again)).as("rebuilt and restored").isTrue();
        }
        // A state naming a memory file that is gone: the same fallback.
        Template rebuilt = snapshots.ensureTemplate();
        Files.write(rebuilt.state(), Template.header("memory-0"));
        try (Vm cold = snapshots.launch("it-nomemory")) {
            assertThat(restored(cold)).isFalse();
        }
        assertThat(rebuilt.state()).doesNotExist();
    }
}
