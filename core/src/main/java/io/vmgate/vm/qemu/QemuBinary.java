package io.vmgate.vm.qemu;

import io.vmgate.vm.VmException;

import java.io.File;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** Finds QEMU and setpriv, and probes (once per binary) whether QEMU can sandbox itself with seccomp. */
final class QemuBinary {
    private static final Logger log = LoggerFactory.getLogger(QemuBinary.class);
    static final String SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";
    private static final Map<Path, CompletableFuture<Boolean>> SANDBOX_PROBES = new ConcurrentHashMap<>();

    private QemuBinary() {}

    /** An absolute path to an executable QEMU, or a VmException saying how to install one. */
    static Path resolve(String nameOrPath) throws VmException {
        Optional<Path> p = find(nameOrPath);
        if (p.isEmpty()) {
            throw new VmException(nameOrPath.contains("/")
                    ? "QEMU " + nameOrPath + " is not an executable file"
                    : nameOrPath + " not found on PATH: install it with `apt-get install qemu-system-x86`");
        }
        return p.get();
    }

    /** setpriv (util-linux), if present: it gives QEMU its parent-death signal. */
    static Optional<Path> setpriv() {
        return find("setpriv");
    }

    static Optional<Path> find(String nameOrPath) {
        if (nameOrPath.contains("/")) {
            Path p = Path.of(nameOrPath).toAbsolutePath();
            return Files.isRegularFile(p) && Files.isExecutable(p) ? Optional.of(p) : Optional.empty();
        }
        String path = System.getenv().getOrDefault("PATH", "/usr/local/bin:/usr/bin:/bin");
        for (String dir : (path + ":/usr/sbin:/sbin").split(File.pathSeparator)) {
            if (dir.isEmpty()) {
                continue;
            }
            Path p = Path.of(dir, nameOrPath);
            if (Files.isRegularFile(p) && Files.isExecutable(p)) {
                return Optional.of(p);
            }
        }
        return Optional.empty();
    }

    /**
     * Whether {@code -sandbox on,...} works with this QEMU: started once per binary and
     * remembered, so callers can kick it off early and join it when building a command line.
     * The probe really installs the filter (a QEMU with {@code -machine none}, told to quit over
     * QMP on stdin), so a kernel or container without seccomp is caught too.
     */
    static CompletableFuture<Boolean> sandboxSupported(Path qemu) {
        return SANDBOX_PROBES.computeIfAbsent(qemu, q -> CompletableFuture.supplyAsync(() -> rememberedProbe(q),
                r -> Thread.ofVirtual().name("qemu-sandbox-probe").start(r)));
    }

    /**
     * The probe costs a QEMU start (~0.1 s), which every `vmgate run` would otherwise pay before
     * its VM could start: its answer is kept on disk, keyed by the binary's path, size and mtime.
     */
    private static boolean rememberedProbe(Path qemu) {
        Path memo = memo(qemu);
        if (memo != null) {
            try {
                String known = Files.readString(memo).strip();
                if (known.equals("true") || known.equals("false")) {
                    return Boolean.parseBoolean(known);
                }
            } catch (IOException e) {
                // not probed yet
            }
        }
        boolean ok = probeSandbox(qemu);
        if (memo != null) {
            try {
                Files.createDirectories(memo.getParent());
                Files.writeString(memo, Boolean.toString(ok));
            } catch (IOException e) {
                log.atDebug().setMessage("qemu_sandbox_memo_unwritable").addKeyValue("path", memo)
                        .addKeyValue("error", e.toString()).log();
            }
        }
        return ok;
    }

    private static Path memo(Path qemu) {
        try {
            return io.vmgate.image.ImageStore.defaultRoot().resolve("qemu-sandbox-" + Integer.toHexString(
                    (qemu.toRealPath() + " " + Files.size(qemu) + " " + Files.getLastModifiedTime(qemu).toMillis()).hashCode()));
        } catch (IOException e) {
            return null;
        }
    }

    private static boolean probeSandbox(Path qemu) {
        List<String> cmd = new java.util.ArrayList<>();
        setpriv().ifPresent(sp -> cmd.addAll(List.of(sp.toString(), "--pdeathsig", "KILL", "--")));
        cmd.addAll(List.of(qemu.toString(), "-machine", "none", "-nodefaults", "-no-user-config", "-display", "none",
                "-sandbox", SANDBOX, "-qmp", "stdio"));
        try {
            Process p = Spawner.start(new ProcessBuilder(cmd).redirectErrorStream(true));
            try (OutputStream in = p.getOutputStream()) {
                in.write("{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"quit\"}\n".getBytes(StandardCharsets.UTF_8));
            } catch (IOException e) {
                // QEMU already exited: its status says why
            }
            CompletableFuture<byte[]> out = new CompletableFuture<>();
            Thread.ofVirtual().start(() -> {
                try {
                    out.complete(p.getInputStream().readNBytes(64 * 1024));
                } catch (IOException e) {
                    out.complete(new byte[0]);
                }
            });
            if (!p.waitFor(10, TimeUnit.SECONDS)) {
                p.destroyForcibly();
                log.atWarn().setMessage("qemu_sandbox_probe_timeout").addKeyValue("qemu", qemu).log();
                return false;
            }
            boolean ok = p.exitValue() == 0;
            if (!ok) {
                log.atWarn().setMessage("qemu_sandbox_unavailable").addKeyValue("qemu", qemu)
                        .addKeyValue("output", new String(out.getNow(new byte[0]), StandardCharsets.UTF_8).strip()).log();
            }
            return ok;
        } catch (IOException e) {
            log.atWarn().setMessage("qemu_sandbox_probe_failed").addKeyValue("qemu", qemu).addKeyValue("error", e.toString()).log();
            return false;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        }
    }
}
