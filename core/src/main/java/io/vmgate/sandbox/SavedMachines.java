package io.vmgate.sandbox;

import io.vmgate.vm.qemu.MachineStates;
import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.attribute.BasicFileAttributes;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.OptionalInt;
import java.util.OptionalLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The limits on saved machines ({@code --max-saved}, {@code --saved-disk-quota}): after a user's
 * machine is saved, the least recently saved machines of other users are evicted until the rest
 * fit. The one just saved is never evicted for others; only when it alone is larger than the quota
 * is it not kept. A saved machine is its {@link MachineStates#STATE} file in a home directory; its
 * size is that file's (its memory links share the template's pages). A home locked by a VM (a
 * resume under way) is skipped.
 */
final class SavedMachines {
    private static final Logger log = LoggerFactory.getLogger(SavedMachines.class);

    /** One saved machine: its home directory, its size, when it was saved (its last use). */
    record Saved(Path dir, long bytes, Instant savedAt) {}

    /** A saved machine to remove and why: {@code max_saved}, {@code saved_disk_quota} or {@code alone_exceeds_quota}. */
    record Eviction(Saved machine, String reason) {}

    private SavedMachines() {}

    /**
     * Which of {@code all} to evict once {@code justSaved} (a directory among them, or null) has
     * been saved, least recently saved first; empty limits are unlimited.
     */
    static List<Eviction> evictions(List<Saved> all, Path justSaved, OptionalInt maxSaved, OptionalLong quotaBytes) {
        List<Eviction> out = new ArrayList<>();
        List<Saved> kept = new ArrayList<>();
        for (Saved s : all) {
            if (s.dir().equals(justSaved) && quotaBytes.isPresent() && s.bytes() > quotaBytes.getAsLong()) {
                out.add(new Eviction(s, "alone_exceeds_quota"));
            } else {
                kept.add(s);
            }
        }
        List<Saved> others = kept.stream().filter(s -> !s.dir().equals(justSaved))
                .sorted(Comparator.comparing(Saved::savedAt)).toList();
        long total = kept.stream().mapToLong(Saved::bytes).sum();
        int count = kept.size();
        for (Saved oldest : others) {
            boolean tooMany = maxSaved.isPresent() && count > maxSaved.getAsInt();
            boolean tooBig = quotaBytes.isPresent() && total > quotaBytes.getAsLong();
            if (!tooMany && !tooBig) {
                break;
            }
            out.add(new Eviction(oldest, tooMany ? "max_saved" : "saved_disk_quota"));
            count--;
            total -= oldest.bytes();
        }
        return out;
    }

    /** The saved machines in the home directories under {@code root}. */
    static List<Saved> scan(Path root) throws IOException {
        List<Saved> out = new ArrayList<>();
        try (DirectoryStream<Path> dirs = Files.newDirectoryStream(root)) {
            for (Path dir : dirs) {
                Path state = dir.resolve(MachineStates.STATE);
                BasicFileAttributes a;
                try {
                    a = Files.readAttributes(state, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
                } catch (IOException e) {
                    continue; // none saved there (or gone meanwhile)
                }
                if (a.isRegularFile()) {
                    out.add(new Saved(dir, a.size(), a.lastModifiedTime().toInstant()));
                }
            }
        }
        return out;
    }

    /**
     * Applies the limits after a save into {@code justSaved} (whose home the caller holds): each
     * eviction logged ({@code machine_evicted}), or skipped when a VM holds that home.
     */
    static void enforce(Path root, Path justSaved, OptionalInt maxSaved, OptionalLong quotaBytes) {
        if (maxSaved.isEmpty() && quotaBytes.isEmpty()) {
            return;
        }
        List<Eviction> evictions;
        try {
            evictions = evictions(scan(root), justSaved, maxSaved, quotaBytes);
        } catch (IOException e) {
            log.atWarn().setMessage("machine_eviction_failed").addKeyValue("dir", root).addKeyValue("error", e.toString()).log();
            return;
        }
        for (Eviction e : evictions) {
            Path dir = e.machine().dir();
            try {
                if (dir.equals(justSaved)) {
                    MachineStates.discard(dir);
                } else {
                    SavedMachineRemoval r = discardIfIdle(dir);
                    if (r == SavedMachineRemoval.RUNNING) {
                        log.atInfo().setMessage("machine_eviction_skipped").addKeyValue("dir", dir.getFileName())
                                .addKeyValue("reason", "in_use").log();
                    }
                    if (r != SavedMachineRemoval.REMOVED) {
                        continue; // in use, or gone meanwhile (resumed, or removed by the operator)
                    }
                }
                log.atInfo().setMessage("machine_evicted").addKeyValue("dir", dir.getFileName())
                        .addKeyValue("bytes", e.machine().bytes()).addKeyValue("saved_at", e.machine().savedAt())
                        .addKeyValue("reason", e.reason()).log();
            } catch (IOException x) {
                log.atWarn().setMessage("machine_eviction_failed").addKeyValue("dir", dir.getFileName())
                        .addKeyValue("error", x.toString()).log();
            }
        }
    }

    /**
     * Discards the machine saved in home directory {@code dir} under the home's lock, the one a VM
     * holds while it has the home ({@link HomeStore#open}): {@link SavedMachineRemoval#RUNNING} when
     * a VM holds it, {@link SavedMachineRemoval#NONE_SAVED} when there is no such home or no machine
     * saved in it.
     */
    static SavedMachineRemoval discardIfIdle(Path dir) throws IOException {
        HomeStore.Lock lock;
        try {
            lock = HomeStore.tryLock(dir, false);
        } catch (NoSuchFileException e) {
            return SavedMachineRemoval.NONE_SAVED; // never opened: no home, so no machine
        }
        if (lock == null) {
            return SavedMachineRemoval.RUNNING;
        }
        try (lock) {
            if (!MachineStates.exists(dir)) {
                return SavedMachineRemoval.NONE_SAVED;
            }
            MachineStates.discard(dir);
            return SavedMachineRemoval.REMOVED;
        }
    }
}
