package io.vmgate.image;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Optional;

/** Where a root filesystem image comes from. */
public sealed interface RootfsSource {

    /** How the image's properties and {@code image ls} name the source. */
    String describe();

    /** A tree on the host, any Linux root filesystem, read in place and never modified. */
    record Directory(Path dir) implements RootfsSource {
        public String describe() {
            return "dir:" + dir.toAbsolutePath().normalize();
        }
    }

    /**
     * Debian built by {@code mmdebstrap} from the host's Debian repositories.
     *
     * @param suite   e.g. {@code bookworm}
     * @param include packages beyond {@link DebianBootstrap#PACKAGES}
     */
    record Debian(String suite, List<String> include) implements RootfsSource {
        public Debian {
            include = List.copyOf(include);
        }

        public String describe() {
            return "debian:" + suite + (include.isEmpty() ? "" : " +" + String.join(",", include));
        }
    }

    /**
     * Entries written by a producer: tar streams applied in order, OCI layers with their whiteouts
     * ({@link TreeSink#remove}).
     *
     * @param key      when the same key always means the same tree (an OCI manifest's digest and the
     *                 import's options), a 64-hex-digit id under which the image is found again instead
     *                 of rebuilt; empty: every build is new
     * @param defaults how the image wants its processes run, kept with it
     * @param blobs    digests of the blobs it is made from, kept by {@code prune} while it stays
     */
    record Entries(String description, Optional<String> key, ImageDefaults defaults, List<String> blobs, Producer producer)
            implements RootfsSource {
        public Entries {
            blobs = List.copyOf(blobs);
            if (key.isPresent() && !key.get().matches("[0-9a-f]{64}")) {
                throw new IllegalArgumentException("an image key is 64 lowercase hex digits, not '" + key.get() + "'");
            }
        }

        public Entries(String description, Producer producer) {
            this(description, Optional.empty(), ImageDefaults.NONE, List.of(), producer);
        }

        public String describe() {
            return description;
        }
    }

    /** Writes a tree's entries into a sink. */
    @FunctionalInterface
    interface Producer {
        void produce(TreeSink sink) throws IOException, ImageException;
    }

    /** What a producer writes into: entries (later ones replace earlier ones) and removals. */
    interface TreeSink {
        void add(FsEntry entry, java.io.InputStream content) throws IOException, ImageException;

        /** Removes a path and everything below it (a whiteout {@code .wh.NAME}); absent paths are ignored. */
        void remove(String path) throws IOException, ImageException;

        /** Empties a directory, keeping it (an opaque whiteout {@code .wh..wh..opq}). */
        void clearDirectory(String path) throws IOException, ImageException;

        /**
         * What follows is one more OCI layer: a parent that is a symlink is followed inside the
         * image's root (as container runtimes do), and whiteouts spare what this layer adds.
         */
        void beginLayer();

        /**
         * Makes a root-owned 0755 directory (with missing parents) unless the path, symlinks
         * followed, already leads to something; an existing entry is left as it is. For an OCI
         * image's WorkingDir, which container runtimes make when it is missing.
         */
        void ensureDirectory(String path) throws ImageException;

        /** Applies a whole tar stream, entry by entry. */
        default void addTar(java.io.InputStream tar) throws IOException, ImageException {
            TarReader r = new TarReader(tar);
            for (FsEntry e; (e = r.next()) != null;) {
                add(e, r.content());
            }
        }
    }
}
