package io.vmgate.image;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Everything the default image is made of, resolved on this host: which kernel, which module
 * files in which order, which binaries and libraries. Resolving runs ldd and reads modules.dep,
 * so the store only does it when its fast up-to-date check fails.
 *
 * @param modules     paths relative to {@code modulesDir}, in load order
 * @param diskModules loaded after {@code modules} only by a VM with disks (a root filesystem image
 *                    or a scratch disk), so the busybox default does not pay for them
 * @param netModules  loaded after those only by a VM with a network device ({@code --net open})
 * @param libraries   what sftp-server loads, named as the loader names them (same path in the image)
 */
public record ImagePlan(ImageSources.Kernel kernel, Path modulesDir, List<String> modules, List<String> diskModules, List<String> netModules,
        Path busybox, Path sftpServer, List<Path> libraries) {

    /** What the agent needs: virtio-mmio transport, the virtio-serial port, and overlayfs for the root. */
    public static final List<String> MODULES = List.of("virtio_mmio", "virtio_console", "overlay");
    /** What disks need beyond that: the virtio block driver (ext4 is built into the cloud kernel). */
    public static final List<String> DISK_MODULES = List.of("virtio_blk");

    /**
     * What a VM with a network device (--net open) needs besides; loaded only then (the agent
     * reads /etc/vmgate/modules.net when the kernel command line has vmgate.net=), so that
     * VMs without one do not pay for it at boot.
     */
    public static final List<String> NET_MODULES = List.of("virtio_net");

    public ImagePlan {
        modules = List.copyOf(modules);
        diskModules = List.copyOf(diskModules);
        netModules = List.copyOf(netModules);
        libraries = List.copyOf(libraries);
    }

    public static ImagePlan discover(ImageSources src, ImageSources.Kernel kernel) throws ImageException {
        if (!Files.isReadable(kernel.path())) {
            throw new ImageException("kernel " + kernel.path() + " is not readable by this user (Debian installs kernels "
                    + "mode 0600). Build the image cache once as root, or make the kernel readable: "
                    + "`sudo dpkg-statoverride --update --add root root 0644 " + kernel.path() + " && sudo chmod 0644 "
                    + kernel.path() + "`, or pass --image DIR");
        }
        Path modulesDir = src.modulesRoot().resolve(kernel.release());
        List<String> modules = KernelModules.resolve(modulesDir, MODULES);
        List<String> diskModules = new ArrayList<>(KernelModules.resolve(modulesDir,
                java.util.stream.Stream.concat(MODULES.stream(), DISK_MODULES.stream()).toList()));
        diskModules.removeAll(modules);
        List<String> netModules = KernelModules.resolve(modulesDir, NET_MODULES).stream().filter(m -> !modules.contains(m)).toList();
        for (List<String> list : List.of(modules, diskModules, netModules)) {
            for (String m : list) {
                requireReadable(modulesDir.resolve(m), "linux-image-cloud-amd64");
            }
        }
        requireReadable(src.busybox(), "busybox-static");
        if (!SharedLibraries.of(src.busybox()).isEmpty()) {
            // The guest has only sftp-server's libraries; a dynamic busybox might not find its own.
            throw new ImageException(src.busybox() + " is dynamically linked: the image needs the static one, "
                    + "install it with `apt-get install busybox-static`");
        }
        requireReadable(src.sftpServer(), "openssh-sftp-server");
        List<Path> libs = SharedLibraries.of(src.sftpServer());
        for (Path lib : libs) {
            requireReadable(lib, "libc6");
        }
        return new ImagePlan(kernel, modulesDir, modules, diskModules, netModules, src.busybox(), src.sftpServer(), libs);
    }

    /**
     * How to run the image's own sftp-server from {@code /run/vmgate/tools} in any guest root (see
     * docs/protocol.md): through the tools' own dynamic loader, with only the tools' libraries, so
     * it works whatever C library the user's image has (or none). Empty when sftp-server is static.
     */
    public List<String> toolsSftpServer() {
        Path loader = libraries.stream().filter(l -> l.getFileName().toString().startsWith("ld-linux")).findFirst().orElse(null);
        String tools = Image.TOOLS_DIR;
        if (loader == null) {
            return List.of(tools + ImageBuilder.SFTP_SERVER);
        }
        String dirs = libraries.stream().filter(l -> !l.equals(loader)).map(l -> tools + l.getParent())
                .distinct().collect(java.util.stream.Collectors.joining(":"));
        return List.of(tools + loader, "--inhibit-cache", "--library-path", dirs, tools + ImageBuilder.SFTP_SERVER);
    }

    /** The host files whose (path, size, mtime) decide whether a cached image is still current. */
    public List<Path> inputs() {
        List<Path> in = new ArrayList<>();
        in.add(kernel.path());
        in.add(modulesDir.resolve("modules.dep"));
        in.add(modulesDir.resolve("modules.builtin"));
        modules.forEach(m -> in.add(modulesDir.resolve(m)));
        diskModules.forEach(m -> in.add(modulesDir.resolve(m)));
        netModules.forEach(m -> in.add(modulesDir.resolve(m)));
        in.add(busybox);
        in.add(sftpServer);
        in.addAll(libraries);
        return in;
    }

    private static void requireReadable(Path p, String pkg) throws ImageException {
        if (!Files.exists(p)) {
            throw new ImageException(p + " not found: install it with `apt-get install " + pkg + "`");
        }
        if (!Files.isReadable(p)) {
            throw new ImageException(p + " is not readable by this user; check its permissions (package " + pkg + ")");
        }
    }
}
