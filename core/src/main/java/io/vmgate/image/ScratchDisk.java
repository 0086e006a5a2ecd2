package io.vmgate.image;

import java.io.IOException;
import java.nio.file.Path;

/** A VM's own writable disk (see {@code --scratch-disk}): an empty ext4 the agent mounts as the overlay's upper layer. */
public final class ScratchDisk {
    /** The file in a VM's runtime directory, and in a snapshot template beside its state. */
    public static final String FILE = "scratch.ext4";

    private ScratchDisk() {}

    /** Makes a sparse, empty ext4 of {@code mib} MiB at {@code file} (about 10 ms, whatever the size). */
    public static void create(Path file, int mib) throws ImageException {
        try {
            Ext4.blank(file, mib);
        } catch (IOException e) {
            throw new ImageException("cannot make the scratch disk " + file + ": " + e.getMessage(), e);
        }
    }
}
