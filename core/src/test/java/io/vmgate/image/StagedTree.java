package io.vmgate.image;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.TreeMap;

/**
 * A build's staging tree without the ext4 step: what tests of the OCI layer applier (and its
 * fuzzer) feed through {@link #sink()} and then read back, path by path.
 */
public final class StagedTree {
    private final Staging staging;

    public StagedTree(Path contentDir) throws IOException {
        this.staging = new Staging(contentDir, 0);
    }

    /** What a producer (the OCI layer applier) writes into. */
    public RootfsSource.TreeSink sink() {
        return staging;
    }

    /**
     * The tree as path → description: {@code d 755 0:0}, {@code f 644 0:0 =CONTENT #inode},
     * {@code l -> TARGET}, {@code c 1:3}; inodes numbered by first appearance so hard links show.
     */
    public Map<String, String> describe() throws IOException {
        Map<String, String> out = new TreeMap<>();
        Map<Staging.Node, Integer> inodes = new java.util.IdentityHashMap<>();
        for (Map.Entry<String, Staging.Node> e : staging.tree().entrySet()) {
            Staging.Node n = e.getValue();
            FsEntry f = n.entry;
            String owner = " " + Integer.toOctalString(f.mode()) + " " + f.uid() + ":" + f.gid();
            int ino = inodes.computeIfAbsent(n, k -> inodes.size() + 1);
            out.put(e.getKey(), switch (f.type()) {
                case DIRECTORY -> "d" + owner;
                case FILE -> "f" + owner + " =" + new String(Files.readAllBytes(n.content), StandardCharsets.UTF_8) + " #" + ino;
                case SYMLINK -> "l -> " + f.linkTarget();
                case CHAR_DEVICE, BLOCK_DEVICE -> (f.type() == FsEntry.Type.CHAR_DEVICE ? "c " : "b ") + f.devMajor() + ":" + f.devMinor();
                case FIFO -> "p" + owner;
                case HARDLINK -> "h?";
            });
        }
        return out;
    }

    /** Regular files' contents and what they are, without modes and inodes: what the model of the OCI rules predicts. */
    public Map<String, String> shape() throws IOException {
        Map<String, String> out = new TreeMap<>();
        for (Map.Entry<String, String> e : describe().entrySet()) {
            String v = e.getValue();
            out.put(e.getKey(), v.startsWith("f") ? "f" + v.substring(v.indexOf(" =") + 1, v.lastIndexOf(" #")) : v.startsWith("d") ? "d" : v);
        }
        return out;
    }

    /** Paths of the content directory, for checking that nothing was written anywhere else. */
    public Path contentDir() {
        return staging.dir();
    }
}
