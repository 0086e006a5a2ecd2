package io.vmgate.vm.qemu;

import io.vmgate.vm.VmConfig;
import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.time.Instant;
import java.util.Comparator;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** Where per-VM runtime directories live, how they are made, and how a crashed server's leftovers are reaped. */
public final class RuntimeDirs {
    private static final Logger log = LoggerFactory.getLogger(RuntimeDirs.class);
    private static final Set<PosixFilePermission> OWNER_ONLY = PosixFilePermissions.fromString("rwx------");
    private static final Pattern VM_ID = Pattern.compile("[A-Za-z0-9][A-Za-z0-9._-]{0,63}");
    /** A directory without a pid file may be one being created right now; only older ones are debris. */
    private static final Duration UNOWNED_GRACE = Duration.ofMinutes(1);

    private RuntimeDirs() {}

    public static Path defaultRoot() {
        return VmConfig.defaultRuntimeRoot();
    }

    static Path defaultRoot(Map<String, String> env, long uid) {
        return VmConfig.defaultRuntimeRoot(env, uid);
    }

    static long uid() {
        return VmConfig.uid();
    }

    static boolean isValidVmId(String id) {
        return id != null && VM_ID.matcher(id).matches();
    }

    /**
     * Creates the root if needed (mode 0700) and checks it is a real directory we own: under /tmp
     * anyone could have created it first, as a symlink or with loose permissions.
     */
    static void ensureRoot(Path root) throws IOException {
        try {
            Files.createDirectories(root.getParent() == null ? root : root.getParent());
            Files.createDirectory(root, PosixFilePermissions.asFileAttribute(OWNER_ONLY));
        } catch (FileAlreadyExistsException e) {
            // checked below
        }
        if (!Files.isDirectory(root, LinkOption.NOFOLLOW_LINKS)) {
            throw new IOException(root + " exists but is not a directory");
        }
        long owner = ((Number) Files.getAttribute(root, "unix:uid", LinkOption.NOFOLLOW_LINKS)).longValue();
        long me = uid();
        if (me >= 0 && owner != me) {
            throw new IOException(root + " belongs to uid " + owner + ", not to this user (uid " + me
                    + "); set VMGATE_RUNTIME_DIR to a directory of your own");
        }
        Set<PosixFilePermission> perms = Files.getPosixFilePermissions(root, LinkOption.NOFOLLOW_LINKS);
        if (perms.contains(PosixFilePermission.GROUP_WRITE) || perms.contains(PosixFilePermission.OTHERS_WRITE)) {
            Files.setPosixFilePermissions(root, OWNER_ONLY);
        }
    }

    /** Makes {@code <root>/<vmId>} (mode 0700); fails if it exists. */
    static RuntimeDir create(Path root, String vmId) throws IOException {
        if (!isValidVmId(vmId)) {
            throw new IllegalArgumentException("bad VM id '" + vmId + "': use 1-64 of [A-Za-z0-9._-], not starting with . or -");
        }
        ensureRoot(root);
        RuntimeDir dir = new RuntimeDir(root.resolve(vmId));
        int longest = dir.consoleSocket().toString().getBytes(java.nio.charset.StandardCharsets.UTF_8).length;
        if (longest > RuntimeDir.MAX_SOCKET_PATH) {
            throw new IOException("runtime directory path too long for Unix sockets (" + dir.consoleSocket() + " is "
                    + longest + " bytes, the limit is " + RuntimeDir.MAX_SOCKET_PATH + "); set VMGATE_RUNTIME_DIR to a shorter path");
        }
        Files.createDirectory(dir.path(), PosixFilePermissions.asFileAttribute(OWNER_ONLY));
        return dir;
    }

    /**
     * Kills the QEMUs of servers that died without cleaning up, and removes their directories.
     * A QEMU is signalled only if its pid still names the process recorded at spawn (same start
     * time), so a recycled pid is never hit. Directories of live servers are left alone.
     *
     * @return how many directories were removed
     */
    public static int reapStale(Path root) {
        if (!Files.isDirectory(root, LinkOption.NOFOLLOW_LINKS)) {
            return 0;
        }
        int reaped = 0;
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(root)) {
            for (Path p : ds) {
                if (Files.isDirectory(p, LinkOption.NOFOLLOW_LINKS) && reapOne(new RuntimeDir(p))) {
                    reaped++;
                }
            }
        } catch (IOException e) {
            log.atWarn().setMessage("vm_reap_failed").addKeyValue("root", root).addKeyValue("error", e.toString()).log();
        }
        return reaped;
    }

    private static boolean reapOne(RuntimeDir dir) {
        String vm = dir.path().getFileName().toString();
        RuntimeDir.Owners o;
        try {
            o = dir.readOwners();
        } catch (NoSuchFileException e) {
            if (olderThan(dir.path(), UNOWNED_GRACE)) {
                deleteQuietly(dir.path());
                log.atInfo().setMessage("vm_reaped").addKeyValue("vm", vm).addKeyValue("reason", "no_pid_file").log();
                return true;
            }
            return false;
        } catch (IOException e) {
            log.atWarn().setMessage("vm_reap_skipped").addKeyValue("vm", vm).addKeyValue("error", e.getMessage()).log();
            return false;
        }
        if (ProcStat.isSameProcess(o.ownerPid(), o.ownerStart())) {
            return false; // its server (maybe this one) is alive and responsible for it
        }
        if (o.qemuPid() > 0 && ProcStat.isSameProcess(o.qemuPid(), o.qemuStart())) {
            Optional<ProcessHandle> h = ProcessHandle.of(o.qemuPid());
            h.ifPresent(ProcessHandle::destroyForcibly);
            h.ifPresent(ph -> {
                try {
                    ph.onExit().get(5, java.util.concurrent.TimeUnit.SECONDS);
                } catch (Exception e) {
                    log.atWarn().setMessage("vm_reap_kill_slow").addKeyValue("vm", vm).addKeyValue("pid", o.qemuPid()).log();
                }
            });
            log.atInfo().setMessage("vm_reaped").addKeyValue("vm", vm).addKeyValue("qemu_pid", o.qemuPid())
                    .addKeyValue("owner_pid", o.ownerPid()).addKeyValue("reason", "owner_dead").log();
        } else {
            log.atInfo().setMessage("vm_reaped").addKeyValue("vm", vm).addKeyValue("owner_pid", o.ownerPid())
                    .addKeyValue("reason", "owner_dead").addKeyValue("qemu", "gone").log();
        }
        deleteQuietly(dir.path());
        return true;
    }

    private static boolean olderThan(Path p, Duration age) {
        try {
            FileTime t = Files.getLastModifiedTime(p, LinkOption.NOFOLLOW_LINKS);
            return t.toInstant().isBefore(Instant.now().minus(age));
        } catch (IOException e) {
            return false;
        }
    }

    /** Removes a tree without following symlinks; never throws. */
    static void deleteQuietly(Path p) {
        try (Stream<Path> s = Files.walk(p)) {
            for (Path q : s.sorted(Comparator.reverseOrder()).toList()) {
                try {
                    Files.deleteIfExists(q);
                } catch (IOException e) {
                    log.atDebug().setMessage("delete_failed").addKeyValue("path", q).addKeyValue("error", e.toString()).log();
                }
            }
        } catch (NoSuchFileException e) {
            // already gone
        } catch (IOException | java.io.UncheckedIOException e) {
            log.atWarn().setMessage("delete_failed").addKeyValue("path", p).addKeyValue("error", e.toString()).log();
        }
    }
}
