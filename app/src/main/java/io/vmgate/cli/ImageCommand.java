package io.vmgate.cli;

import io.vmgate.image.Image;
import io.vmgate.image.ImageStore;
import java.nio.file.Files;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;

/** {@code vmgate image build|info}. */
@Command(name = "image", description = "Build or describe the default image.", mixinStandardHelpOptions = true,
        subcommands = {ImageCommand.Build.class, ImageCommand.Info.class, ImageCommand.Warm.class, ImageCommand.QemuArgs.class})
final class ImageCommand {

    @Command(name = "build", description = "Build the default image now (it is also built on first use).")
    static final class Build implements Callable<Integer> {
        @Override
        public Integer call() throws Exception {
            Logging.configure(Logging.Format.text, "INFO");
            Image img = ImageStore.atDefaultLocation().defaultImage();
            System.out.println(img.directory());
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
            System.out.println(VmOptions.snapshots(vmOptions.config(), false).ensureTemplate());
            return 0;
        }
    }

    @Command(name = "qemu-args", hidden = true,
            description = "Print, one per line, the QEMU command line vmgate uses for a VM whose runtime directory is DIR.")
    static final class QemuArgs implements Callable<Integer> {
        @picocli.CommandLine.Mixin
        VmOptions vmOptions;

        @picocli.CommandLine.Parameters(index = "0", paramLabel = "DIR")
        java.nio.file.Path dir;

        @picocli.CommandLine.Option(names = "--template", description = "Print the snapshot template's state file and memory file paths on the first two lines, then the restore command line.")
        boolean template;

        @Override
        public Integer call() throws Exception {
            Logging.configure(Logging.Format.text, "WARN");
            io.vmgate.vm.VmConfig c = vmOptions.config();
            var cmd = io.vmgate.vm.qemu.QemuCommand.of(c, new io.vmgate.vm.qemu.RuntimeDir(dir), "bench");
            if (template) {
                var t = VmOptions.snapshots(c, false).ensureTemplate();
                System.out.println(t.state());
                System.out.println(t.memory());
                cmd = cmd.asClone();
            }
            cmd.argv().forEach(System.out::println);
            return 0;
        }
    }

    @Command(name = "info", description = "Show the default image: where it is, its kernel, sizes and content hash.")
    static final class Info implements Callable<Integer> {
        @Override
        public Integer call() throws Exception {
            Logging.configure(Logging.Format.text, "WARN");
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
}
