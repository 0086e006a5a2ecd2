package io.vmgate.image;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

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
import org.junit.jupiter.api.BeforeAll;
import io.vmgate.vm.qemu.RuntimeRoot;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/**
 * Root filesystem images in real QEMU VMs: a host directory and a Debian build attached as the
 * read-only root disk, the guest user's credentials and home, vmgate's own sftp-server in an
 * image without one, writes gone with the VM, and a scratch disk larger than the guest's RAM,
 * cold-booted and restored from snapshot templates.
 *
 * <p>The Debian image takes a few minutes to build: it is built once into
 * {@code $VMGATE_CACHE/it} under a name keyed by what goes into it, and reused while that key
 * holds.
 */
class RootfsIT {
    static Image image;
    static RootfsStore store;   // this run's: host trees' images, removed at the end
    static RootfsStore kept;    // the Debian image's, kept between runs
    static Path templates;
    @RegisterExtension
    final RuntimeRoot runtime = new RuntimeRoot("vmgate-it-");

    @BeforeAll
    static void images() throws Exception {
        assumeTrue(Stream.of(System.getenv("PATH").split(":")).anyMatch(d -> Files.isExecutable(Path.of(d, VmConfig.DEFAULT_QEMU))),
                "QEMU not installed");
        assumeTrue(RootfsBuilder.uidOf() == 0, "the fixture needs root (chown)");
        Path home = Path.of(System.getProperty("vmgate.home", "."));
        AgentBinary agent = AgentBinary.class.getResource(AgentBinary.RESOURCE) != null ? AgentBinary.classpath()
                : AgentBinary.file(home.resolve("guest/agent/build/vmgate-agent"));
        image = new ImageStore(home.resolve("target/it-image-cache")).image(ImageSources.debian().withAgent(agent));
        kept = new RootfsStore(ImageStore.defaultRoot().resolve("it"));
        store = new RootfsStore(Files.createTempDirectory("vmgate-it-store-"));
        templates = Files.createTempDirectory("vmgate-it-templates-");
    }

    @AfterAll
    static void dropTemplates() throws IOException {
        if (templates != null) {
            ImageStore.deleteTree(templates);
            ImageStore.deleteTree(store.imagesDir().getParent());
        }
    }


    VmConfig config(RootfsImage rootfs) {
        return VmConfig.defaults(image).withRuntimeRoot(runtime.path()).withBootTimeout(Duration.ofSeconds(90)).withRootfs(rootfs);
    }

    @Test
    void aHostDirectoryKeepsOwnersHardLinksAndUsersInTheGuest() throws Exception {
        Path tree = busyboxTree(Files.createTempDirectory("vmgate-it-tree-"));
        try {
            RootfsImage img = store.build("it-dir", new RootfsSource.Directory(tree), line -> { });
            assertThat(store.forDirectory(tree, line -> { }).id()).as("unchanged tree, same image").isEqualTo(img.id());
            VmConfig cfg = config(img);
            GuestLogin rootLogin = GuestLogin.resolve(cfg);
            GuestLogin alice = GuestLogin.resolve(cfg.withGuestUser("alice"));
            assertThat(alice.cwd()).isEqualTo("/home/alice");
            assertThatThrownBy(() -> GuestLogin.resolve(cfg.withGuestUser("bob"))).isInstanceOf(VmException.class)
                    .hasMessageContaining("no user 'bob'").hasMessageContaining("alice");
            assertThatThrownBy(() -> GuestLogin.resolve(cfg.withGuestUser("zed"))).hasMessageContaining("the shell of user zed, /bin/zsh, is not in");
            assertThatThrownBy(() -> GuestLogin.resolve(cfg.withWorkdir("/nope"))).hasMessageContaining("/nope is not a directory");
            assertThat(rootLogin.sftpServer().getFirst()).as("no sftp-server in the tree: vmgate's own")
                    .startsWith(Image.TOOLS_DIR + "/lib64/ld-linux");

            try (QemuVm vm = QemuVm.boot(cfg, "it-rootfs-dir")) {
                assertThatThrownBy(() -> store.remove("it-dir")).as("image rm while this process runs a VM of it")
                        .hasMessageContaining("image it-dir is in use by pid " + ProcessHandle.current().pid());
                String[] st = run(vm, rootLogin.command("stat -c '%u %g %h %i' /data/owned /data/link", null, Map.of())).out().split("\n");
                assertThat(st[0]).startsWith("1234 5678 2 ");
                assertThat(st[1]).isEqualTo(st[0]);
                assertThat(run(vm, rootLogin.command("cat /proc/mounts | grep -c ' / overlay'; touch /etc/x && echo writable", null, Map.of())).out())
                        .isEqualTo("1\nwritable\n");

                Result a = run(vm, alice.command("id -u; id -G; echo \"$HOME|$USER|$LOGNAME|$SHELL|$MAIL|$PATH\"; pwd; touch ~/mine && echo ok; "
                        + "touch /etc/y 2>&1 || echo refused", null, Map.of("LANG", "C.UTF-8")));
                assertThat(a.out()).isEqualTo("1000\n1000 27\n/home/alice|alice|alice|/bin/sh|/var/mail/alice|/usr/local/bin:/usr/bin:/bin:/usr/games\n"
                        + "/home/alice\nok\ntouch: /etc/y: Permission denied\nrefused\n");

                // sftp in an image without sftp-server: vmgate's own, through its own loader, as alice
                GuestProcess sftp = vm.agent().start(alice.sftp(Map.of()));
                OutputStream in = sftp.stdin();
                in.write(new byte[] {0, 0, 0, 5, 1, 0, 0, 0, 3}); // SSH_FXP_INIT version 3
                in.flush();
                DataInputStream out = new DataInputStream(sftp.stdout());
                int len = out.readInt();
                assertThat(len).isBetween(5, 4096);
                assertThat(out.readUnsignedByte()).as("SSH_FXP_VERSION").isEqualTo(2);
                assertThat(out.readInt()).isEqualTo(3);
                in.close();
                assertThat(sftp.exit().get(30, TimeUnit.SECONDS).code()).isZero();
            }
        } finally {
            ImageStore.deleteTree(tree);
        }
    }

    @Test
    void debianInTheGuest() throws Exception {
        RootfsImage debian = debian();
        VmConfig cfg = config(debian);
        GuestLogin login = GuestLogin.resolve(cfg);
        assertThat(login.sftpServer()).containsExactly("/usr/lib/openssh/sftp-server");
        Snapshots snapshots = new Snapshots(cfg, templates, false);
        try (Vm vm = snapshots.launch("it-debian-1")) {
            Result r = run(vm, login.command("bash --version | head -1; python3 -c 'print(6*7)'; apt-get --version | head -1; "
                    + "stat -c %U:%G:%a /etc/shadow; stat -c %a /usr/bin/passwd; "
                    + "python3 -c \"import os; print(os.getxattr('/usr/bin/ping', 'security.capability').hex()[:8])\"; "
                    + "echo one > /root/mark; cat /etc/hostname", null, Map.of()));
            assertThat(r.out().split("\n")).satisfiesExactly(
                    l -> assertThat(l).startsWith("GNU bash, version 5."),
                    l -> assertThat(l).isEqualTo("42"),
                    l -> assertThat(l).startsWith("apt "),
                    l -> assertThat(l).isEqualTo("root:shadow:640"),
                    l -> assertThat(l).isEqualTo("4755"),
                    l -> assertThat(l).isEqualTo("01000002"),
                    l -> assertThat(l).isEqualTo("vmgate"));
            // a login shell: argv[0] "-bash", so bash reads /etc/profile
            GuestProcess sh = vm.agent().start(login.shell(null, Map.of()));
            sh.stdin().write("echo \"$0\"; shopt login_shell; echo \"$PATH\"; pwd\n".getBytes(StandardCharsets.UTF_8));
            sh.stdin().close();
            assertThat(new String(sh.stdout().readAllBytes(), StandardCharsets.UTF_8))
                    .isEqualTo("-bash\nlogin_shell    \ton\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n/root\n");
        }
        try (Vm vm = snapshots.launch("it-debian-2")) {
            assertThat(run(vm, login.command("test -e /root/mark && echo kept || echo gone", null, Map.of())).out())
                    .as("a write in one VM is gone in the next").isEqualTo("gone\n");
            ProcessSpec nobody = GuestLogin.resolve(cfg.withGuestUser("nobody")).exec(List.of("id", "-u"), null, Map.of());
            assertThat(run(vm, nobody).out()).isEqualTo("65534\n");
        }
    }

    @Test
    void aScratchDiskHoldsMoreThanTheGuestsMemory() throws Exception {
        Path tree = busyboxTree(Files.createTempDirectory("vmgate-it-tree-"));
        try {
            VmConfig cfg = config(store.forDirectory(tree, line -> { })).withMemoryMib(256).withScratchMib(2048);
            GuestLogin login = GuestLogin.resolve(cfg);
            String write = "dd if=/dev/zero of=/root/big bs=1M count=512 2>/dev/null && dd if=/dev/zero of=/tmp/big bs=1M count=64 "
                    + "2>/dev/null && sync && ls -l /root/big | awk '{print $5}' && test ! -e /root/other && echo fresh; touch /root/other";
            Snapshots snapshots = new Snapshots(cfg, templates, false);
            for (String id : List.of("it-scratch-1", "it-scratch-2")) { // the first builds the template, both are restored
                try (Vm vm = snapshots.launch(id)) {
                    Result r = run(vm, login.command(write, null, Map.of()));
                    assertThat(r.out()).as(r.err()).isEqualTo("536870912\nfresh\n");
                    assertThat(vm.phases()).extracting(Vm.Phase::name).contains("agent_restored");
                }
            }
            assertThat(Files.size(snapshots.ensureTemplate().scratch())).isEqualTo(2048L << 20); // sparse: its size, not its blocks
            try (QemuVm vm = QemuVm.boot(cfg, "it-scratch-cold")) {
                assertThat(run(vm, login.command(write, null, Map.of())).out()).isEqualTo("536870912\nfresh\n");
                assertThat(vm.runtimeDir().path().resolve(ScratchDisk.FILE)).isRegularFile();
            }
            try (QemuVm vm = QemuVm.boot(config(cfg.rootfs().orElseThrow()).withMemoryMib(256), "it-tmpfs")) {
                Result r = run(vm, login.command("dd if=/dev/zero of=/root/big bs=1M count=512", null, Map.of()));
                assertThat(r.code()).as("without the scratch disk the same write does not fit").isNotZero();
                assertThat(r.err()).contains("No space left on device");
            }
        } finally {
            ImageStore.deleteTree(tree);
        }
    }

    @Test
    void aFailingMmdebstrapNamesTheImageAndTheCauseAndLeavesNothing() throws Exception {
        assertThatThrownBy(() -> store.build("broken", new RootfsSource.Debian("bookworm", List.of("no-such-package-vmgate")), line -> { }))
                .hasMessageStartingWith("image broken: mmdebstrap failed (exit ")
                .hasMessageContaining("no-such-package-vmgate");
        try (Stream<Path> s = Files.list(store.imagesDir())) {
            assertThat(s.filter(p -> p.getFileName().toString().startsWith(RootfsStore.TMP_PREFIX)).toList()).isEmpty();
        }
        assertThat(store.idOf("broken")).isEmpty();
        assertThatThrownBy(() -> store.build("bad", new RootfsSource.Debian("bookworm", List.of("--mode=root")), line -> { }))
                .hasMessageContaining("is not a Debian package name");
    }

    /** A small root filesystem: static busybox, root and alice, a file owned by 1234:5678 with a hard link. */
    static Path busyboxTree(Path t) throws Exception {
        return TestRootfs.busyboxTree(t);
    }

    static RootfsImage debian() throws Exception {
        return TestRootfs.debian();
    }

    record Result(int code, String out, String err) {}

    /** Runs a command to its end, at most 5 minutes (a guest that stops answering fails the test with its console and QEMU's stderr). */
    static Result run(Vm vm, ProcessSpec spec) throws Exception {
        GuestProcess p = vm.agent().start(spec);
        p.stdin().close();
        CompletableFuture<String> err = CompletableFuture.supplyAsync(() -> read(p.stderr()));
        CompletableFuture<String> out = CompletableFuture.supplyAsync(() -> read(p.stdout()));
        try {
            return new Result(p.exit().get(300, TimeUnit.SECONDS).code(), out.get(30, TimeUnit.SECONDS), err.get(30, TimeUnit.SECONDS));
        } catch (java.util.concurrent.TimeoutException e) {
            throw new AssertionError("the guest command did not finish within 5 minutes: " + String.join(" ", spec.argv())
                    + "\nVM diagnostics:\n" + vm.diagnostics(), e);
        }
    }

    private static String read(InputStream in) {
        try {
            ByteArrayOutputStream b = new ByteArrayOutputStream();
            in.transferTo(b);
            return b.toString(StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }
}
