package io.vmgate.image;

import java.io.IOException;
import java.io.Reader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.List;
import java.util.Properties;

/**
 * A bootable image: a kernel, an initramfs whose /init is the agent, and the kernel command line
 * that goes with them. Its busybox userland is the guest's root unless the VM also has a
 * {@link RootfsImage}; either way it is mounted at {@link #TOOLS_DIR} in the guest.
 *
 * @param contentHash     identifies the image's content (the cache key for built images); snapshots
 *                        taken from one image must never be restored into another
 * @param toolsSftpServer the argv that runs the initramfs's own sftp-server in any guest root
 *                        (empty for a hand-made image that does not say)
 */
public record Image(Path directory, Path kernel, Path initrd, String kernelRelease, String cmdline, String contentHash,
        List<String> toolsSftpServer) {

    /** Where the agent mounts the initramfs's userland (busybox, sftp-server) in every guest, read-only. */
    public static final String TOOLS_DIR = "/run/vmgate/tools";

    public Image {
        toolsSftpServer = List.copyOf(toolsSftpServer);
    }

    public Image(Path directory, Path kernel, Path initrd, String kernelRelease, String cmdline, String contentHash) {
        this(directory, kernel, initrd, kernelRelease, cmdline, contentHash, List.of());
    }

    public static final String KERNEL_FILE = "vmlinuz";
    /** The uncompressed kernel extracted from vmlinuz, booted via PVH (faster under TCG). */
    public static final String PVH_KERNEL_FILE = "vmlinux";
    public static final String INITRD_FILE = "initrd.img";
    public static final String PROPERTIES_FILE = "image.properties";

    /**
     * Measured under TCG with the Debian cloud kernel (see the report in DESIGN notes):
     * {@code console=ttyS0} keeps a console for diagnostics, {@code quiet} stops printk crawling
     * through the emulated UART, {@code panic=-1} with QEMU's -no-reboot turns a guest panic into
     * QEMU exiting, and {@code cryptomgr.notests} skips the crypto self-tests (~0.4 s of a 3 s boot).
     * Measured and left out for lack of effect: mitigations=off, no_timer_check, nokaslr, lpj=,
     * i8042.* (no PS/2 probe delay on microvm). The clock hint TCG needs ({@code tsc_early_khz=})
     * depends on the host, so QEMU's command line adds it, not the image.
     */
    public static final String DEFAULT_CMDLINE = "console=ttyS0 quiet panic=-1 cryptomgr.notests";

    /**
     * Loads an image directory ({@code --image DIR}): {@code vmlinuz} (or {@code vmlinux}, an ELF
     * kernel with a PVH entry) and {@code initrd.img}, and optionally {@code image.properties} with
     * {@code cmdline=}, {@code kernel_release=}, {@code kernel_file=} and {@code key=}.
     */
    public static Image load(Path dir) throws ImageException {
        if (!Files.isDirectory(dir)) {
            throw new ImageException("image directory " + dir + " does not exist");
        }
        Properties props = readProperties(dir.resolve(PROPERTIES_FILE));
        String kernelName = props.getProperty("kernel_file",
                !Files.exists(dir.resolve(KERNEL_FILE)) && Files.exists(dir.resolve(PVH_KERNEL_FILE)) ? PVH_KERNEL_FILE : KERNEL_FILE);
        if (kernelName.contains("/")) {
            throw new ImageException("bad kernel_file in " + dir.resolve(PROPERTIES_FILE) + ": " + kernelName);
        }
        Path kernel = dir.resolve(kernelName), initrd = dir.resolve(INITRD_FILE);
        for (Path p : List.of(kernel, initrd)) {
            if (!Files.isRegularFile(p)) {
                throw new ImageException("image directory " + dir + " has no " + p.getFileName()
                        + " (an image is a directory holding " + KERNEL_FILE + " and " + INITRD_FILE + ")");
            }
            if (!Files.isReadable(p)) {
                throw new ImageException(p + " is not readable by this user");
            }
        }
        String hash = props.getProperty("key");
        if (hash == null) {
            // A hand-made image: identify it the way the cache identifies host inputs, not by hashing 20+ MB.
            hash = ImageKey.compute("loaded", List.of(kernel, initrd));
        }
        String tools = props.getProperty("tools_sftp_server", "");
        return new Image(dir, kernel, initrd, props.getProperty("kernel_release", "unknown"),
                props.getProperty("cmdline", DEFAULT_CMDLINE).strip(), hash, tools.isEmpty() ? List.of() : List.of(tools.split("\t")));
    }

    /**
     * What the built-in busybox userland holds (files, users), as saved with a built image; empty
     * for a hand-made image directory that has no manifest.
     */
    public java.util.Optional<GuestRoot> root() throws ImageException {
        if (!Files.isRegularFile(directory.resolve(Manifest.FILE))) {
            return java.util.Optional.empty();
        }
        return java.util.Optional.of(GuestRoot.load(directory, "the built-in image"));
    }

    static Properties readProperties(Path file) throws ImageException {
        Properties props = new Properties();
        try (Reader r = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
            props.load(r);
        } catch (NoSuchFileException e) {
            // optional
        } catch (IOException | IllegalArgumentException e) {
            throw new ImageException("cannot read " + file + ": " + e.getMessage(), e);
        }
        return props;
    }
}
