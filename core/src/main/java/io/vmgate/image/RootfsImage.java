package io.vmgate.image;

import java.io.IOException;
import java.io.Reader;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.time.Instant;
import java.util.Arrays;
import java.util.List;
import java.util.Optional;
import java.util.Properties;

/**
 * A root filesystem as a read-only ext4 image in the store ({@code <cache>/rootfs/<id>/}),
 * attached to a VM as a read-only virtio-blk disk and shared by every VM of that image through
 * the host's page cache. Never modified once built: a changed source is a new id, and the id is
 * part of every snapshot template's key.
 *
 * @param id        the store's key: a digest of the disk (built from entries) or of the host tree's metadata
 * @param source    where it came from ({@link RootfsSource#describe()})
 * @param usedBytes blocks in use inside the filesystem (the disk file is sparse: about what it takes on the host)
 * @param defaults  how the image wants its processes run (an OCI image's Env, WorkingDir, User, Entrypoint, Cmd)
 * @param blobs     digests ({@code sha256:...}) of the content-addressed blobs the image was made from (an OCI
 *                  image's manifest, config and layers): {@code image prune} keeps those while the image stays
 */
public record RootfsImage(String id, Path directory, String source, Instant created, long usedBytes, long files,
        Optional<String> sftpServer, ImageDefaults defaults, List<String> blobs) {
    public static final String PROPERTIES_FILE = "rootfs.properties";
    public static final String FS_TYPE = "ext4";

    public RootfsImage {
        blobs = List.copyOf(blobs);
    }

    /** An image without run defaults or blobs (a directory's, Debian's). */
    public RootfsImage(String id, Path directory, String source, Instant created, long usedBytes, long files, Optional<String> sftpServer) {
        this(id, directory, source, created, usedBytes, files, sftpServer, ImageDefaults.NONE, List.of());
    }

    public Path disk() {
        return directory.resolve(RootfsBuilder.DISK_FILE);
    }

    public String fsType() {
        return FS_TYPE;
    }

    /** The image's files, users and groups as the host knows them. */
    public GuestRoot root() throws ImageException {
        return GuestRoot.load(directory, "image " + shortId() + " (" + source + ")");
    }

    public String shortId() {
        return id.substring(0, Math.min(12, id.length()));
    }

    /** Loads a complete image directory; anything missing is an error naming the directory. */
    public static RootfsImage load(Path dir) throws ImageException {
        Properties p = new Properties();
        try (Reader r = Files.newBufferedReader(dir.resolve(PROPERTIES_FILE), StandardCharsets.UTF_8)) {
            p.load(r);
        } catch (NoSuchFileException e) {
            throw new ImageException(dir + " is not a root filesystem image (no " + PROPERTIES_FILE + ")");
        } catch (IOException | IllegalArgumentException e) {
            throw new ImageException("cannot read " + dir.resolve(PROPERTIES_FILE) + ": " + e.getMessage(), e);
        }
        try {
            RootfsImage img = new RootfsImage(p.getProperty("id"), dir, p.getProperty("source", "?"),
                    Instant.parse(p.getProperty("created")), Long.parseLong(p.getProperty("used_bytes", "0")),
                    Long.parseLong(p.getProperty("files", "0")), Optional.ofNullable(p.getProperty("sftp_server")).filter(s -> !s.isEmpty()),
                    ImageDefaults.read(dir), Arrays.stream(p.getProperty("blobs", "").split(",")).filter(s -> !s.isEmpty()).toList());
            if (img.id() == null || !Files.isRegularFile(img.disk())) {
                throw new ImageException(dir + " is incomplete (no id or no " + RootfsBuilder.DISK_FILE + "): remove it with `vmgate image prune`");
            }
            return img;
        } catch (RuntimeException e) {
            throw new ImageException(dir.resolve(PROPERTIES_FILE) + " is malformed: " + e.getMessage(), e);
        }
    }

    void write() throws IOException {
        Properties p = new Properties();
        p.setProperty("id", id);
        p.setProperty("format", Integer.toString(RootfsBuilder.FORMAT_VERSION));
        p.setProperty("fs", FS_TYPE);
        p.setProperty("source", source);
        p.setProperty("created", created.toString());
        p.setProperty("used_bytes", Long.toString(usedBytes));
        p.setProperty("files", Long.toString(files));
        p.setProperty("sftp_server", sftpServer.orElse(""));
        p.setProperty("blobs", String.join(",", blobs));
        defaults.write(directory);
        try (Writer w = Files.newBufferedWriter(directory.resolve(PROPERTIES_FILE), StandardCharsets.UTF_8)) {
            p.store(w, "vmgate root filesystem image, built by io.vmgate.image.RootfsStore");
        }
    }
}
