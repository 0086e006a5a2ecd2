package io.vmgate.cli;

import io.vmgate.image.Image;
import io.vmgate.image.ImageException;
import io.vmgate.image.ImageStore;
import io.vmgate.image.ImageUsers;
import io.vmgate.image.RootfsImage;
import io.vmgate.image.RootfsSource;
import io.vmgate.image.RootfsStore;
import io.vmgate.sandbox.Sandboxes;
import io.vmgate.sandbox.CachePruner;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.ZoneId;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.function.Consumer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/** {@code vmgate image build|import|pull|ls|rm|prune|info|warm}: the built-in image and the named root filesystem images. */
@Command(name = "image", description = "Build, list and remove images.", mixinStandardHelpOptions = true,
        subcommands = {ImageCommand.Build.class, OciCommands.Import.class, OciCommands.Pull.class, ImageCommand.Ls.class,
                ImageCommand.Rm.class, ImageCommand.Prune.class, ImageCommand.Info.class, ImageCommand.Warm.class, ImageCommand.QemuArgs.class})
final class ImageCommand {
    private static final DateTimeFormatter WHEN = DateTimeFormatter.ofPattern("yyyy-MM-dd HH:mm").withZone(ZoneId.systemDefault());

    /** Progress on stderr, one line per step, prefixed with what is being built and the seconds since the start. */
    static Consumer<String> progress(String what) {
        long t0 = System.nanoTime();
        return line -> System.err.printf("vmgate: %s: [%4ds] %s%n", what, (System.nanoTime() - t0) / 1_000_000_000L, line);
    }

    @Command(name = "build", description = "Build an image: the built-in one (default), Debian, or a host directory.",
            subcommands = {Build.Debian.class, Build.Dir.class})
    static final class Build implements Callable<Integer> {
        @Override
        public Integer call() throws Exception {
            Logging.configure(Logging.Format.text, "INFO");
            Image img = ImageStore.atDefaultLocation().defaultImage();
            System.out.println(img.directory());
            return 0;
        }

        @Command(name = "debian", description = "Build a Debian userland with mmdebstrap from Debian's repositories "
                + "(bash, coreutils, python3, git, curl, apt, sftp-server and the like); a few minutes, no VM needed.")
        static final class Debian implements Callable<Integer> {
            @Option(names = "--name", paramLabel = "NAME", defaultValue = "debian", description = "Image name (default: ${DEFAULT-VALUE}).")
            String name;

            @Option(names = "--include", paramLabel = "PKG,...", split = ",", description = "More packages to install.")
            List<String> include = new ArrayList<>();

            @Option(names = "--suite", paramLabel = "SUITE", defaultValue = "bookworm", description = "Debian suite (default: ${DEFAULT-VALUE}).")
            String suite;

            @Override
            public Integer call() throws ImageException {
                Logging.configure(Logging.Format.text, "WARN");
                long t0 = System.nanoTime();
                RootfsImage img = RootfsStore.atDefaultLocation().build(name, new RootfsSource.Debian(suite, include), progress(name));
                System.err.printf("vmgate: %s: built in %.0f s%n", name, (System.nanoTime() - t0) / 1e9);
                System.out.println(img.directory());
                return 0;
            }
        }

        @Command(name = "dir", description = "Make an image of a root filesystem tree on this host (read, never modified).")
        static final class Dir implements Callable<Integer> {
            @Parameters(index = "0", paramLabel = "DIR")
            Path dir;

            @Option(names = "--name", paramLabel = "NAME", required = true, description = "Image name.")
            String name;

            @Override
            public Integer call() throws ImageException {
                Logging.configure(Logging.Format.text, "WARN");
                RootfsImage img = RootfsStore.atDefaultLocation().build(name, new RootfsSource.Directory(dir), progress(name));
                System.out.println(img.directory());
                return 0;
            }
        }
    }

    @Command(name = "ls", description = "List the images: name, source, size, when built, snapshot templates.")
    static final class Ls implements Callable<Integer> {
        @Override
        public Integer call() throws ImageException {
            Logging.configure(Logging.Format.text, "WARN");
            Path cache = ImageStore.defaultRoot();
            RootfsStore store = new RootfsStore(cache);
            List<CachePruner.Template> templates = new CachePruner(cache).templates();
            Map<String, String> names = store.names();
            int width = Math.max(12, names.keySet().stream().mapToInt(String::length).max().orElse(0));
            String fmt = "%-" + width + "s %-44s %9s  %-16s %9s  %-8s  %s%n";
            System.out.printf(fmt, "NAME", "SOURCE", "SIZE", "CREATED", "TEMPLATES", "IN USE", "COMMAND");
            ImageStore.atDefaultLocation().lastResolved().ifPresent(img -> {
                long n = templates.stream().filter(t -> t.rootfsId().isEmpty() && t.imageKey().map(img.contentHash()::equals).orElse(false)).count();
                long size = size(img.kernel()) + size(img.initrd());
                System.out.printf(fmt, "(built-in)", "busybox, kernel " + img.kernelRelease(), mib(size), created(img.directory()), n,
                        users(img.directory()), "-");
            });
            for (RootfsImage img : store.images()) {
                List<String> its = names.entrySet().stream().filter(e -> e.getValue().equals(img.id())).map(Map.Entry::getKey).toList();
                long n = templates.stream().filter(t -> t.rootfsId().map(img.id()::equals).orElse(false)).count();
                String name = its.isEmpty() ? "-" : String.join(",", its);
                System.out.printf(fmt, name, cut(img.source(), 44) + "", mib(img.usedBytes()), WHEN.format(img.created()), n,
                        users(img.directory()) + (its.isEmpty() ? "  id " + img.shortId() : ""),
                        img.defaults().command().isEmpty() ? "-" : cut(OciCommands.command(img.defaults().command()), 40));
            }
            return 0;
        }

        private static String users(Path dir) {
            List<Long> pids = ImageUsers.live(dir);
            return pids.isEmpty() ? "-" : "pid " + String.join(",", pids.stream().map(String::valueOf).toList());
        }

        private static String created(Path dir) {
            try {
                return WHEN.format(Files.getLastModifiedTime(dir).toInstant());
            } catch (java.io.IOException e) {
                return "?";
            }
        }
    }

    @Command(name = "rm", description = "Remove named images (refused while a server or VM uses one).")
    static final class Rm implements Callable<Integer> {
        @Parameters(arity = "1..*", paramLabel = "NAME")
        List<String> names;

        @Override
        public Integer call() throws ImageException {
            Logging.configure(Logging.Format.text, "WARN");
            RootfsStore store = RootfsStore.atDefaultLocation();
            for (String n : names) {
                var removed = store.remove(n);
                System.out.println(removed.map(p -> "removed " + n + " (" + p + ")").orElse("removed the name " + n
                        + " (its image is still named otherwise)"));
            }
            return 0;
        }
    }

    @Command(name = "prune", description = "Remove images and snapshot templates that no name refers to and nothing running uses.")
    static final class Prune implements Callable<Integer> {
        @Option(names = "--dry-run", description = "Only say what would be removed.")
        boolean dryRun;

        @Override
        public Integer call() throws ImageException {
            Logging.configure(Logging.Format.text, "WARN");
            CachePruner pruner = new CachePruner(ImageStore.defaultRoot());
            List<CachePruner.Removal> done = dryRun ? pruner.plan() : pruner.prune();
            long bytes = 0;
            for (CachePruner.Removal r : done) {
                System.out.println((dryRun ? "would remove " : "removed ") + r.what() + ": " + r.path());
                bytes += r.bytes();
            }
            System.out.println((dryRun ? "would free " : "freed ") + mib(bytes) + " (" + done.size() + " items)");
            return 0;
        }
    }

    @Command(name = "warm", description = "Build the snapshot template for these VM options now (it is also built on first use).")
    static final class Warm implements Callable<Integer> {
        @picocli.CommandLine.Mixin
        VmOptions vmOptions;

        @Override
        public Integer call() throws Exception {
            Logging.configure(Logging.Format.text, "INFO");
            try (Sandboxes engine = Sandboxes.builder(vmOptions.options()).buildProgress(progress("rootfs")).build()) {
                System.out.println(engine.prepare().map(Object::toString).orElse("(no snapshot template: --no-snapshot)"));
            }
            return 0;
        }
    }

    @Command(name = "qemu-args", hidden = true,
            description = "Print, one per line, the QEMU command line vmgate uses for a VM whose runtime directory is DIR.")
    static final class QemuArgs implements Callable<Integer> {
        @picocli.CommandLine.Mixin
        VmOptions vmOptions;

        @Parameters(index = "0", paramLabel = "DIR")
        Path dir;

        @Option(names = "--template", description = "Print the snapshot template's state file and memory file paths on the first two lines, then the restore command line.")
        boolean template;

        @Override
        public Integer call() throws Exception {
            Logging.configure(Logging.Format.text, "WARN");
            try (Sandboxes engine = Sandboxes.create(vmOptions.options())) {
                if (template) {
                    engine.templateFiles().forEach(System.out::println);
                }
                engine.qemuCommandLine(dir, template).forEach(System.out::println);
            }
            return 0;
        }
    }

    @Command(name = "info", description = "Show an image: the built-in one, or a named one.")
    static final class Info implements Callable<Integer> {
        @Parameters(index = "0", arity = "0..1", paramLabel = "NAME")
        String name;

        @Override
        public Integer call() throws Exception {
            Logging.configure(Logging.Format.text, "WARN");
            if (name != null) {
                RootfsImage r = RootfsStore.atDefaultLocation().get(name);
                System.out.println("name:           " + name);
                System.out.println("id:             " + r.id());
                System.out.println("directory:      " + r.directory());
                System.out.println("source:         " + r.source());
                System.out.println("disk:           " + r.disk() + " (" + r.fsType() + ", read-only, " + mib(r.usedBytes()) + " used)");
                System.out.println("files:          " + r.files());
                System.out.println("created:        " + r.created());
                System.out.println("sftp-server:    " + r.sftpServer().orElse("none (vmgate's own is used)"));
                System.out.println("login users:    " + String.join(", ", r.root().users()));
                var d = r.defaults();
                if (!d.isEmpty()) {
                    System.out.println("entrypoint:     " + (d.entrypoint().isEmpty() ? "-" : OciCommands.command(d.entrypoint())));
                    System.out.println("cmd:            " + (d.cmd().isEmpty() ? "-" : OciCommands.command(d.cmd())));
                    System.out.println("user:           " + d.user().orElse("- (root)"));
                    System.out.println("workdir:        " + d.workdir().orElse("-"));
                    d.env().forEach(e -> System.out.println("env:            " + e));
                }
                if (!r.blobs().isEmpty()) {
                    System.out.println("blobs:          " + r.blobs().size() + " (" + r.blobs().getFirst() + " first)");
                }
                return 0;
            }
            Image img = ImageStore.atDefaultLocation().defaultImage();
            System.out.println("directory:      " + img.directory());
            System.out.println("kernel:         " + img.kernel() + " (" + Files.size(img.kernel()) + " bytes)");
            System.out.println("kernel release: " + img.kernelRelease());
            System.out.println("initrd:         " + img.initrd() + " (" + Files.size(img.initrd()) + " bytes)");
            System.out.println("cmdline:        " + img.cmdline());
            System.out.println("content hash:   " + img.contentHash());
            return 0;
        }
    }

    static String mib(long bytes) {
        return bytes >= (10L << 30) ? (bytes >> 30) + " GiB" : ((bytes + (1 << 20) - 1) >> 20) + " MiB";
    }

    private static long size(Path p) {
        try {
            return Files.size(p);
        } catch (java.io.IOException e) {
            return 0;
        }
    }

    private static String cut(String s, int n) {
        return s.length() <= n ? s : s.substring(0, n - 3) + "...";
    }
}
