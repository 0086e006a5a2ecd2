package io.vmgate.image;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;

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
     * Entries written by a producer: tar streams applied in order, later OCI layers with their
     * whiteouts ({@link TreeSink#remove}).
     */
    record Entries(String description, Producer producer) implements RootfsSource {
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
        void remove(String path) throws IOException;

        /** Empties a directory, keeping it (an opaque whiteout {@code .wh..wh..opq}). */
        void clearDirectory(String path) throws IOException;

        /** Applies a whole tar stream, entry by entry. */
        default void addTar(java.io.InputStream tar) throws IOException, ImageException {
            TarReader r = new TarReader(tar);
            for (FsEntry e; (e = r.next()) != null;) {
                add(e, r.content());
            }
        }
    }
}
