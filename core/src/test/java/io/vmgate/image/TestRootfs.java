package io.vmgate.image;

import io.vmgate.agent.GuestProcess;
import io.vmgate.agent.ProcessSpec;
import io.vmgate.vm.GuestLogin;
import io.vmgate.vm.Vm;
import io.vmgate.vm.VmConfig;
import io.vmgate.vm.VmException;
import io.vmgate.vm.qemu.QemuVm;
import io.vmgate.vm.qemu.Snapshots;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** Root filesystems for tests, shared with the application's end-to-end tests (the core test jar). */
public final class TestRootfs {
    private TestRootfs() {}

    /**
     * A busybox root filesystem tree: root and alice (uid 1000, in group sudo 27), a user zed whose
     * shell is missing, {@code /data/owned} owned by 1234:5678 with a hard link {@code /data/link}.
     * Needs root (chown).
     */
    public static Path busyboxTree(Path t) throws Exception {
        for (String d : List.of("bin", "etc", "data", "root", "home/alice", "tmp", "proc", "sys", "dev", "run", "var/mail")) {
            Files.createDirectories(t.resolve(d));
        }
        Files.copy(Path.of("/bin/busybox"), t.resolve("bin/busybox"));
        Process p = new ProcessBuilder("/bin/busybox", "--list").start();
        for (String applet : new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).split("\n")) {
            if (!applet.isBlank() && !applet.equals("busybox")) {
                Files.createSymbolicLink(t.resolve("bin").resolve(applet.strip()), Path.of("busybox"));
            }
        }
        p.waitFor();
        Files.writeString(t.resolve("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n"
                + "zed:x:1001:1001::/home/zed:/bin/zsh\n");
        Files.writeString(t.resolve("etc/group"), "root:x:0:\nalice:x:1000:\nsudo:x:27:alice\nzed:x:1001:\n");
        Files.writeString(t.resolve("data/owned"), "owned");
        RootfsBuilderTest.sh("chown", "1234:5678", t.resolve("data/owned").toString());
        Files.createLink(t.resolve("data/link"), t.resolve("data/owned"));
        RootfsBuilderTest.sh("chown", "1000:1000", t.resolve("home/alice").toString());
        RootfsBuilderTest.sh("chmod", "0700", t.resolve("home/alice").toString());
        RootfsBuilderTest.sh("chmod", "1777", t.resolve("tmp").toString());
        return t;
    }

    /**
     * The Debian image for these tests (bookworm with tmux): built once (a few minutes) and kept in
     * the test store under a name that changes with what goes into it.
     */
    private static final RootfsSource.Debian DEBIAN = new RootfsSource.Debian("bookworm", List.of("tmux"));

    public static RootfsImage debian() throws Exception {
        String key = ImageKey.sha256Hex(("format=" + RootfsBuilder.FORMAT_VERSION + " " + DebianBootstrap.command(
                DEBIAN)).getBytes(StandardCharsets.UTF_8)).substring(0, 12);
        String name = "it-debian-" + key;
        RootfsStore kept = new RootfsStore(ImageStore.defaultRoot().resolve("it"));
        Files.createDirectories(kept.namesDir());
        try (FileChannel ch = FileChannel.open(kept.namesDir().resolve(".it-debian.lock"), StandardOpenOption.CREATE, StandardOpenOption.WRITE);
                FileLock ignored = ch.lock()) {
            if (kept.idOf(name).isPresent()) {
                return kept.get(name);
            }
            RootfsImage img = kept.build(name, DEBIAN, line -> System.err.println("it-debian: " + line));
            for (String old : kept.names().keySet()) { // images of keys gone by
                if (old.startsWith("it-debian-") && !old.equals(name)) {
                    try {
                        kept.remove(old);
                    } catch (ImageException e) {
                        System.err.println("it-debian: keeping " + old + ": " + e.getMessage()); // another test run uses it
                    }
                }
            }
            return img;
        }
    }
}
