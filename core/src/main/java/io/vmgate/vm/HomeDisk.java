package io.vmgate.vm;

import java.nio.file.Path;
import java.util.Objects;
import java.util.Optional;

/**
 * A VM's persistent home disk slot ({@code --persist home}): a virtio-blk disk of {@code bytes}
 * the guest agent mounts at the user's home only when the host asks (docs/protocol.md, HOME).
 * A snapshot template is built with the slot empty ({@code file} empty: a placeholder of zeroes in
 * its runtime directory), and every VM restored from it gets a user's file in the same slot; the
 * guest's kernel learnt the disk's size when the template booted, so a user's file must have
 * exactly that size.
 *
 * @param bytes the disk's size (the template's placeholder and every user's file)
 * @param file  the user's filesystem image, attached read-write; empty: the template's placeholder
 */
public record HomeDisk(long bytes, Optional<Path> file) {
    /** ext4 with a journal needs a few MiB for itself; below this a home would hold nothing. */
    public static final long MIN_BYTES = 64L << 20;

    public HomeDisk {
        Objects.requireNonNull(file, "file");
        if (bytes < MIN_BYTES || bytes % (1 << 20) != 0 || bytes > 16L << 40) {
            throw new IllegalArgumentException("a home disk must be a whole number of MiB between 64 MiB and 16 TiB, not "
                    + bytes + " bytes");
        }
    }

    /** The slot a template is built with: a placeholder of zeroes. */
    public static HomeDisk placeholder(long bytes) {
        return new HomeDisk(bytes, Optional.empty());
    }

    /** The same slot with a user's file in it. */
    public HomeDisk with(Path userFile) {
        return new HomeDisk(bytes, Optional.of(userFile));
    }
}
