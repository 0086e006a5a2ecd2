package io.vmgate.image;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Who uses a directory of the cache (an image, a root filesystem image, a snapshot template):
 * every process that launches VMs from it leaves a marker {@code <dir>/.users/<pid>-<start>} for
 * its lifetime, so {@code image rm} and {@code image prune} can refuse to take it away from a
 * running server or VM, even one that has no VM at this moment. The marker names the process by
 * pid and start time, as the runtime directories' pid files do: a marker whose process is gone
 * (or whose pid now names another process) is stale, whatever killed it.
 */
public final class ImageUsers {
    private static final Logger log = LoggerFactory.getLogger(ImageUsers.class);
    static final String DIR = ".users";
    private static final Pattern MARKER = Pattern.compile("(\\d+)-(\\d+)");
    private static final Set<Path> HELD = ConcurrentHashMap.newKeySet();

    private ImageUsers() {}

    /** Marks {@code dir} as used by this process until it exits. Idempotent; cheap after the first call. */
    public static void hold(Path dir) {
        Path abs = dir.toAbsolutePath().normalize();
        if (HELD.contains(abs)) {
            return;
        }
        synchronized (HELD) {
            if (!HELD.add(abs)) {
                return;
            }
            try {
                Path users = Files.createDirectories(abs.resolve(DIR));
                Path marker = users.resolve(self());
                if (!Files.exists(marker)) {
                    Files.createFile(marker);
                }
                marker.toFile().deleteOnExit(); // a SIGKILLed process leaves it: stale by its start time
            } catch (IOException e) {
                log.atWarn().setMessage("image_use_not_recorded").addKeyValue("dir", abs).addKeyValue("error", e.getMessage())
                        .addKeyValue("note", "image rm/prune cannot see that this process uses it").log();
            }
        }
    }

    /** Live processes that hold {@code dir}; stale markers are removed on the way. */
    public static List<Long> live(Path dir) {
        List<Long> pids = new ArrayList<>();
        Path users = dir.resolve(DIR);
        if (!Files.isDirectory(users)) {
            return pids;
        }
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(users)) {
            for (Path m : ds) {
                Matcher mm = MARKER.matcher(m.getFileName().toString());
                if (!mm.matches()) {
                    continue;
                }
                long pid = Long.parseLong(mm.group(1)), start = Long.parseLong(mm.group(2));
                if (startMillis(pid).map(s -> s == start).orElse(false)) {
                    pids.add(pid);
                } else {
                    Files.deleteIfExists(m);
                }
            }
        } catch (IOException | NumberFormatException e) {
            log.atWarn().setMessage("image_users_unreadable").addKeyValue("dir", dir).addKeyValue("error", e.getMessage()).log();
        }
        return pids;
    }

    /** "pid 1234 (vmgate serve ...)" for messages. */
    public static String describe(long pid) {
        return "pid " + pid + ProcessHandle.of(pid).flatMap(h -> h.info().commandLine())
                .map(c -> " (" + (c.length() > 120 ? c.substring(0, 120) + "..." : c) + ")").orElse("");
    }

    private static String self() {
        return marker(ProcessHandle.current().pid());
    }

    /** The marker's name for a process: its pid and start time. */
    static String marker(long pid) {
        return pid + "-" + startMillis(pid).orElse(0L);
    }

    private static Optional<Long> startMillis(long pid) {
        return ProcessHandle.of(pid).flatMap(h -> h.info().startInstant()).map(java.time.Instant::toEpochMilli);
    }
}
