package io.vmgate.image;

import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.zip.GZIPOutputStream;

/**
 * Assembles the default initramfs from an {@link ImagePlan} and the agent binary:
 *
 * <pre>
 * /init                          the agent (PID 1)
 * /etc/vmgate/modules            absolute .ko paths, one per line, in load order
 * /etc/vmgate/modules.disk       the same for what only a VM with disks loads (virtio_blk)
 * /etc/vmgate/modules.net        the same for a VM with a network device (loaded after those)
 * /lib/modules/&lt;release&gt;/...     those .ko files
 * /rootfs/...                    the busybox userland: the root the user sees (overlay lower layer)
 *                                unless the VM has a root filesystem disk, and vmgate's own tools
 *                                (/run/vmgate/tools in the guest) in every VM
 * </pre>
 *
 * No root privileges are needed: ownership, modes and device nodes exist only as cpio headers.
 */
public final class ImageBuilder {
    /** Bumped whenever the layout or the content rules change, so cached images are rebuilt. */
    public static final int FORMAT_VERSION = 3; // 2: modules.disk and the tools; 3: modules.net
    /** Where the guest has OpenSSH's sftp-server, wherever it came from on the host (the SSH layer runs this). */
    public static final String SFTP_SERVER = "/usr/lib/openssh/sftp-server";

    private static final List<String> ROOT_DIRS = List.of("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys",
            "dev", "run", "home", "mnt", "var");

    /** The busybox userland's users: root, and nobody for what should not be root. */
    public static final String PASSWD = """
            root:x:0:0:root:/root:/bin/sh
            nobody:x:65534:65534:nobody:/nonexistent:/bin/false
            """;
    public static final String GROUP = """
            root:x:0:
            nogroup:x:65534:
            """;

    private final ImagePlan plan;
    private final byte[] agent;
    private Manifest rootManifest;

    public ImageBuilder(ImagePlan plan, byte[] agent) {
        this.plan = plan;
        this.agent = agent.clone();
    }

    /** Sizes of what {@link #writeInitrd} wrote. */
    public record InitrdSizes(long cpioBytes, long fileBytes) {}

    /** Writes the initramfs to {@code file}, gzip'd or plain (the kernel accepts both). */
    public InitrdSizes writeInitrd(Path file, boolean gzip) throws IOException, ImageException {
        try (OutputStream raw = new BufferedOutputStream(Files.newOutputStream(file), 1 << 16)) {
            long cpio;
            if (gzip) {
                GZIPOutputStream gz = new GZIPOutputStream(raw, 1 << 16);
                cpio = writeInitramfs(gz);
                gz.finish();
            } else {
                cpio = writeInitramfs(raw);
            }
            raw.flush();
            return new InitrdSizes(cpio, Files.size(file));
        }
    }

    /** What the busybox userland holds (/rootfs of the initramfs), once an initramfs has been written. */
    public Manifest rootManifest() {
        if (rootManifest == null) {
            throw new IllegalStateException("no initramfs written yet");
        }
        return rootManifest;
    }

    /** Writes the uncompressed cpio archive; returns its size. The stream is left open. */
    public long writeInitramfs(OutputStream out) throws IOException, ImageException {
        CpioWriter cpio = new CpioWriter(out);
        Manifest.Builder root = new Manifest.Builder().add("", FsEntry.directory("", 0755, 0, 0, 0));
        cpio.onEntry(e -> {
            if (e.path().startsWith("rootfs/")) {
                String p = e.path().substring("rootfs/".length());
                root.add(p, new FsEntry(p, e.type(), e.mode(), e.uid(), e.gid(), e.size(), e.mtime(), e.linkTarget(), e.devMajor(),
                        e.devMinor(), e.xattrs()));
            }
        });
        cpio.file("init", 0755, agent);

        // The kernel opens /dev/console for PID 1 before anything is mounted.
        cpio.directory("dev", 0755).charDevice("dev/console", 0600, 5, 1);
        cpio.directory("proc", 0755).directory("sys", 0755).directory("run", 0755);

        String release = plan.kernel().release();
        StringBuilder list = new StringBuilder();
        for (String m : plan.modules()) {
            String inImage = "/lib/modules/" + release + "/" + m;
            list.append(inImage).append('\n');
            cpio.file(inImage, 0644, plan.modulesDir().resolve(m));
        }
        cpio.file("etc/vmgate/modules", 0644, bytes(list.toString()));
        StringBuilder disk = new StringBuilder();
        for (String m : plan.diskModules()) {
            String inImage = "/lib/modules/" + release + "/" + m;
            disk.append(inImage).append('\n');
            cpio.file(inImage, 0644, plan.modulesDir().resolve(m));
        }
        cpio.file("etc/vmgate/modules.disk", 0644, bytes(disk.toString()));
        StringBuilder net = new StringBuilder();
        for (String m : plan.netModules()) {
            String inImage = "/lib/modules/" + release + "/" + m;
            net.append(inImage).append('\n');
            cpio.file(inImage, 0644, plan.modulesDir().resolve(m));
        }
        cpio.file("etc/vmgate/modules.net", 0644, bytes(net.toString()));

        writeRootfs(cpio, "rootfs/");
        cpio.finish();
        rootManifest = root.build();
        return cpio.size();
    }

    /** Adds the modules to the archive; returns their list as the agent reads it (absolute paths in load order). */
    private String modules(CpioWriter cpio, List<String> modules) throws IOException {
        StringBuilder list = new StringBuilder();
        for (String m : modules) {
            String inImage = "/lib/modules/" + plan.kernel().release() + "/" + m;
            list.append(inImage).append('\n');
            cpio.file(inImage, 0644, plan.modulesDir().resolve(m));
        }
        return list.toString();
    }

    private void writeRootfs(CpioWriter cpio, String r) throws IOException, ImageException {
        for (String d : ROOT_DIRS) {
            cpio.directory(r + d, 0755);
        }
        cpio.directory(r + "root", 0700);
        cpio.directory(r + "tmp", 01777);
        cpio.directory(r + "var/tmp", 01777);

        cpio.file(r + "bin/busybox", 0755, plan.busybox());
        for (String applet : applets(plan.busybox())) {
            if (applet.equals("bin/busybox") || !applet.contains("/")) {
                continue; // itself, and "linuxrc" at the top, which a root filesystem does not want
            }
            cpio.symlink(r + applet, relativeTo(applet, "bin/busybox"));
        }

        cpio.file(r + SFTP_SERVER.substring(1), 0755, plan.sftpServer());
        for (Path lib : plan.libraries()) {
            cpio.file(r + relative(lib), 0755, lib); // same path as on the host: that is where ld.so looks
        }

        cpio.file(r + "etc/passwd", 0644, bytes(PASSWD));
        cpio.file(r + "etc/group", 0644, bytes(GROUP));
        cpio.file(r + "etc/shadow", 0600, bytes("root:*:0:0:99999:7:::\nnobody:*:0:0:99999:7:::\n"));
        cpio.file(r + "etc/nsswitch.conf", 0644, bytes("passwd: files\ngroup: files\nshadow: files\nhosts: files\n"));
        cpio.file(r + "etc/shells", 0644, bytes("/bin/sh\n/bin/ash\n"));
        cpio.file(r + "etc/hostname", 0644, bytes("vmgate\n"));
        cpio.file(r + "etc/hosts", 0644, bytes("127.0.0.1\tlocalhost\n::1\tlocalhost\n"));
        cpio.file(r + "etc/profile", 0644, bytes("""
                export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
                export PS1='\\u@\\h:\\w\\$ '
                umask 022
                """));
        cpio.file(r + "etc/os-release", 0644, bytes("""
                PRETTY_NAME="vmgate default image (busybox)"
                NAME="vmgate"
                ID=vmgate
                VERSION_ID="%d"
                VARIANT="busybox + sftp-server, kernel %s"
                """.formatted(FORMAT_VERSION, plan.kernel().release())));
    }

    /** Applet paths like {@code usr/bin/wc}, as the busybox binary itself reports them. */
    static List<String> applets(Path busybox) throws ImageException {
        try {
            Process p = new ProcessBuilder(busybox.toString(), "--list-full").redirectErrorStream(true).start();
            String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            if (!p.waitFor(30, TimeUnit.SECONDS) || p.exitValue() != 0) {
                p.destroyForcibly();
                throw new ImageException(busybox + " --list-full failed: " + out.strip()
                        + " (is it busybox? install it with `apt-get install busybox-static`)");
            }
            List<String> applets = new ArrayList<>();
            for (String line : out.split("\n")) {
                String a = line.strip();
                if (!a.isEmpty() && !a.startsWith("/") && !a.contains("..")) {
                    applets.add(a);
                }
            }
            if (!applets.contains("bin/sh")) {
                throw new ImageException(busybox + " has no sh applet; install `busybox-static` from Debian");
            }
            return applets;
        } catch (IOException e) {
            throw new ImageException("cannot run " + busybox + ": " + e.getMessage()
                    + " (install it with `apt-get install busybox-static`)", e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new ImageException("interrupted listing busybox applets", e);
        }
    }

    /** The relative symlink target from {@code from} (a file path) to {@code to}, both relative to one root. */
    static String relativeTo(String from, String to) {
        String[] f = from.split("/"), t = to.split("/");
        int common = 0;
        while (common < f.length - 1 && common < t.length - 1 && f[common].equals(t[common])) {
            common++;
        }
        StringBuilder s = new StringBuilder("../".repeat(f.length - 1 - common));
        for (int i = common; i < t.length; i++) {
            s.append(t[i]).append(i < t.length - 1 ? "/" : "");
        }
        return s.toString();
    }

    /** A host path as an archive path under the image root: {@code /usr/lib/x} → {@code usr/lib/x}. */
    private static String relative(Path p) {
        return p.isAbsolute() ? p.getRoot().relativize(p).toString() : p.toString();
    }

    private static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }
}
