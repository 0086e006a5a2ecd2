package io.vmgate.image;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * Where the default image's ingredients live on the host (Debian paths by default; tests and
 * other distributions can point elsewhere).
 *
 * @param bootDir     holds {@code vmlinuz-<release>} kernels (linux-image-cloud-amd64)
 * @param modulesRoot holds {@code <release>/modules.dep} and the modules
 * @param busybox     a static busybox (busybox-static)
 * @param sftpServer  OpenSSH's sftp-server (openssh-sftp-server), copied with its libraries
 * @param agent       the guest agent that becomes /init
 */
public record ImageSources(Path bootDir, Path modulesRoot, Path busybox, Path sftpServer, AgentBinary agent) {

    /** The flavour whose kernel has virtio as small modules and boots quickly. */
    private static final Pattern KERNEL = Pattern.compile("vmlinuz-(.+-cloud-amd64)");

    public static ImageSources debian() {
        return new ImageSources(Path.of("/boot"), Path.of("/lib/modules"), Path.of("/bin/busybox"),
                Path.of("/usr/lib/openssh/sftp-server"), AgentBinary.classpath());
    }

    public ImageSources withAgent(AgentBinary a) {
        return new ImageSources(bootDir, modulesRoot, busybox, sftpServer, a);
    }

    /** A kernel image and its release string (the name of its modules directory). */
    public record Kernel(Path path, String release) {}

    /** The newest {@code vmlinuz-*-cloud-amd64}: a directory listing, no file is read. */
    public Kernel newestKernel() throws ImageException {
        List<Kernel> found = new ArrayList<>();
        try (Stream<Path> s = Files.list(bootDir)) {
            for (Path p : (Iterable<Path>) s::iterator) {
                Matcher m = KERNEL.matcher(p.getFileName().toString());
                if (m.matches()) {
                    found.add(new Kernel(p, m.group(1)));
                }
            }
        } catch (IOException e) {
            // an unreadable or missing /boot is the same problem to the user: no kernel
        }
        return found.stream()
                .max(Comparator.comparing(Kernel::release, ImageSources::compareVersions))
                .orElseThrow(() -> new ImageException("kernel not found (no " + bootDir + "/vmlinuz-*-cloud-amd64): "
                        + "install it with `apt-get install linux-image-cloud-amd64`"));
    }

    /** Compares "6.1.0-56-cloud-amd64" and "6.1.0-9-cloud-amd64" by their numbers, not as text. */
    static int compareVersions(String a, String b) {
        String[] x = a.split("[.\\-+~]"), y = b.split("[.\\-+~]");
        for (int i = 0; i < Math.min(x.length, y.length); i++) {
            boolean nx = x[i].matches("\\d{1,18}"), ny = y[i].matches("\\d{1,18}");
            int c = nx && ny ? Long.compare(Long.parseLong(x[i]), Long.parseLong(y[i])) : x[i].compareTo(y[i]);
            if (c != 0) {
                return c;
            }
        }
        return Integer.compare(x.length, y.length);
    }
}
