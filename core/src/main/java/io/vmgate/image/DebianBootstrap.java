package io.vmgate.image;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import java.util.regex.Pattern;

/**
 * A Debian userland from {@code mmdebstrap}: its tar output streams straight into the image's
 * staging tree (no intermediate tarball), its progress lines go to the caller, and its failure
 * ends the build with its own last words. It fetches from the same Debian repositories apt uses
 * (deb.debian.org with updates and security, mmdebstrap's default for a stable suite).
 */
final class DebianBootstrap {
    /** minbase plus what a person expects on a small server. */
    static final List<String> PACKAGES = List.of("apt", "bash", "coreutils", "procps", "less", "ca-certificates", "curl",
            "git", "python3", "openssh-sftp-server", "openssh-client", "nano", "vim-tiny", "iproute2", "iputils-ping", "netbase",
            "sudo", "file", "xz-utils", "bzip2", "unzip", "bash-completion");
    private static final Pattern PACKAGE = Pattern.compile("[a-z0-9][a-z0-9+.-]*(:[a-z0-9]+)?(=[A-Za-z0-9.+~:-]+)?");
    private static final Pattern SUITE = Pattern.compile("[a-z][a-z0-9-]{1,40}");

    private DebianBootstrap() {}

    /** Packages to install: the defaults and the extras, each checked so nothing reaches mmdebstrap as an option. */
    static List<String> packages(List<String> include) throws ImageException {
        Set<String> all = new LinkedHashSet<>(PACKAGES);
        for (String p : include) {
            for (String q : p.split(",")) {
                String name = q.strip();
                if (name.isEmpty()) {
                    continue;
                }
                if (!PACKAGE.matcher(name).matches()) {
                    throw new ImageException("'" + FsEntry.printable(name) + "' is not a Debian package name");
                }
                all.add(name);
            }
        }
        return List.copyOf(all);
    }

    static List<String> command(RootfsSource.Debian d) throws ImageException {
        if (!SUITE.matcher(d.suite()).matches()) {
            throw new ImageException("'" + FsEntry.printable(d.suite()) + "' is not a Debian suite name (e.g. bookworm)");
        }
        List<String> argv = new ArrayList<>(List.of(mmdebstrap(), "--variant=minbase", "--format=tar",
                "--include=" + String.join(",", packages(d.include())),
                // As Debian's "slim" container images: no man-db in minbase, so man pages and info
                // would only take room, and neither do translations on a server (C.UTF-8) nor docs
                // beyond the copyright files. Kept in the image's dpkg config, so later installs agree.
                "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/info/*",
                "--dpkgopt=path-exclude=/usr/share/groff/*", "--dpkgopt=path-exclude=/usr/share/lintian/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*", "--dpkgopt=path-include=/usr/share/locale/locale.alias",
                "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-include=/usr/share/doc/*/copyright",
                // no fsync per unpacked file: the build is written once into an image, the guests are disposable
                "--dpkgopt=force-unsafe-io",
                "--customize-hook=echo vmgate > \"$1/etc/hostname\"",
                "--customize-hook=printf '127.0.0.1\\tlocalhost vmgate\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n' > \"$1/etc/hosts\"",
                "--customize-hook=rm -f \"$1/etc/resolv.conf\"",
                d.suite(), "-"));
        return argv;
    }

    /** Runs mmdebstrap into {@code sink}; its temporary chroot goes under {@code work} (removed with it). */
    static void run(RootfsSource.Debian d, RootfsSource.TreeSink sink, Path work, Consumer<String> progress)
            throws IOException, ImageException {
        List<String> argv = command(d);
        Path tmp = Files.createDirectories(work.resolve("mmdebstrap-tmp"));
        ProcessBuilder pb = new ProcessBuilder(argv);
        pb.environment().put("TMPDIR", tmp.toString());
        pb.environment().put("LC_ALL", "C.UTF-8");
        Process p;
        try {
            p = pb.start();
        } catch (IOException e) {
            throw new ImageException("cannot run mmdebstrap: " + e.getMessage() + " (install it with `apt-get install mmdebstrap`)", e);
        }
        p.getOutputStream().close();
        Deque<String> last = new ArrayDeque<>();
        Thread errors = Thread.ofPlatform().daemon().name("mmdebstrap-stderr").start(() -> {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(p.getErrorStream(), StandardCharsets.UTF_8))) {
                for (String line; (line = r.readLine()) != null;) {
                    synchronized (last) {
                        last.addLast(line);
                        if (last.size() > 25) {
                            last.removeFirst();
                        }
                    }
                    progress.accept("mmdebstrap: " + line);
                }
            } catch (IOException e) {
                // the process is gone; its exit status says the rest
            }
        });
        try {
            sink.addTar(p.getInputStream());
            p.getInputStream().transferTo(java.io.OutputStream.nullOutputStream()); // anything after the archive
            if (!p.waitFor(30, TimeUnit.MINUTES)) {
                throw new ImageException("mmdebstrap did not finish within 30 minutes");
            }
            errors.join(TimeUnit.SECONDS.toMillis(10));
            if (p.exitValue() != 0) {
                throw new ImageException("mmdebstrap failed (exit " + p.exitValue() + "):\n  " + lastLines(last) + hint());
            }
        } catch (IOException | ImageException e) {
            if (p.isAlive()) {
                p.destroyForcibly();
                try {
                    p.waitFor(30, TimeUnit.SECONDS);
                } catch (InterruptedException ie) {
                    Thread.currentThread().interrupt();
                }
            }
            errors.interrupt();
            if (e instanceof TarReader.TarException && p.exitValue() != 0) {
                // the archive broke because mmdebstrap stopped: its own words are the cause
                throw new ImageException("mmdebstrap failed (exit " + p.exitValue() + "):\n  " + lastLines(last) + hint(), e);
            }
            throw e;
        } catch (InterruptedException e) {
            p.destroyForcibly();
            Thread.currentThread().interrupt();
            throw new ImageException("interrupted while mmdebstrap ran", e);
        }
    }

    private static String lastLines(Deque<String> last) {
        synchronized (last) {
            return last.isEmpty() ? "(no output)" : String.join("\n  ", last);
        }
    }

    private static String hint() {
        long uid = uid();
        return uid == 0 ? "" : "\n(as a non-root user mmdebstrap builds in a user namespace: it needs subordinate ids, "
                + "e.g. `sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 " + System.getProperty("user.name")
                + "`, and unprivileged user namespaces enabled)";
    }

    private static long uid() {
        try {
            return ((Number) Files.getAttribute(Path.of("/proc/self"), "unix:uid")).longValue();
        } catch (IOException | RuntimeException e) {
            return -1;
        }
    }

    private static String mmdebstrap() throws ImageException {
        for (String d : List.of("/usr/bin", "/usr/local/bin", "/bin")) {
            if (Files.isExecutable(Path.of(d, "mmdebstrap"))) {
                return d + "/mmdebstrap";
            }
        }
        throw new ImageException("mmdebstrap not found: install it with `apt-get install mmdebstrap`");
    }
}
