package io.vmgate.record;

import java.io.IOException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.regex.Pattern;

/**
 * A directory of recordings: one asciicast file per channel, named
 * {@code <UTC time>-<connection id>-ch<channel>.cast} (e.g. {@code 20261201T163538.123Z-3fa2c1d0-ch1.cast}),
 * mode 0600, in a directory made 0700 if it did not exist.
 *
 * <pre>{@code
 * Recordings r = Recordings.open(Path.of("/var/log/vmgate/sessions"), false, 0);
 * try (Asciicast a = r.start("3fa2c1d0", 1, header, Asciicast.Listener.NONE)) { a.output(bytes, 0, n); }
 * }</pre>
 *
 * @param directory where the files go
 * @param input     record what users type ({@code i} events) too; off by default, as it holds passwords
 * @param cap       the most bytes one recording may hold (0: no cap)
 */
public record Recordings(Path directory, boolean input, long cap) {
    private static final DateTimeFormatter NAME_TIME = DateTimeFormatter.ofPattern("yyyyMMdd'T'HHmmss.SSS'Z'").withZone(ZoneOffset.UTC);
    private static final Pattern SAFE = Pattern.compile("[A-Za-z0-9._-]{1,64}");

    public Recordings {
        directory = directory.toAbsolutePath().normalize();
        if (cap != 0 && cap < Asciicast.MIN_CAP) {
            throw new IllegalArgumentException("the recording size limit must be at least " + Asciicast.MIN_CAP + " bytes, not " + cap);
        }
    }

    /**
     * Checks (creating it, mode 0700, if missing) that {@code directory} is a directory we can write to.
     *
     * @throws IOException naming the directory and what is wrong with it
     */
    public static Recordings open(Path directory, boolean input, long cap) throws IOException {
        Recordings r = new Recordings(directory, input, cap);
        Path d = r.directory();
        try {
            Files.createDirectories(d.getParent());
            Files.createDirectory(d, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
        } catch (FileAlreadyExistsException e) {
            // checked below
        } catch (IOException e) {
            throw new IOException("cannot create the recording directory " + d + ": " + e.getMessage(), e);
        }
        if (!Files.isDirectory(d, LinkOption.NOFOLLOW_LINKS)) {
            throw new IOException("the recording directory " + d + " is not a directory");
        }
        if (!Files.isWritable(d)) {
            throw new IOException("the recording directory " + d + " is not writable");
        }
        return r;
    }

    /** The file name for a channel's recording started at {@code time}. */
    public String fileName(Instant time, String connectionId, int channel) {
        if (!SAFE.matcher(connectionId).matches()) {
            throw new IllegalArgumentException("bad connection id for a file name: " + connectionId);
        }
        return NAME_TIME.format(time) + "-" + connectionId + "-ch" + channel + ".cast";
    }

    /** Starts a channel's recording (the header's timestamp names the file). */
    public Asciicast start(String connectionId, int channel, Asciicast.Header header, Asciicast.Listener listener) throws IOException {
        return Asciicast.create(directory.resolve(fileName(header.timestamp(), connectionId, channel)), header, cap, listener);
    }
}
