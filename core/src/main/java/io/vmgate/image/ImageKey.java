package io.vmgate.image;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.attribute.BasicFileAttributes;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Instant;
import java.util.HexFormat;
import java.util.List;

/**
 * Cache keys: a SHA-256 over a description string (format version, agent digest, command line)
 * and each host input's path, size and mtime. Stat-based on purpose: it runs on every start, and
 * a package upgrade always changes size or mtime.
 */
final class ImageKey {
    private ImageKey() {}

    static String compute(String description, List<Path> inputs) throws ImageException {
        MessageDigest md = sha256();
        md.update(description.getBytes(StandardCharsets.UTF_8));
        md.update((byte) '\n');
        for (Path p : inputs) {
            md.update((p + "\t" + stat(p) + "\n").getBytes(StandardCharsets.UTF_8));
        }
        return HexFormat.of().formatHex(md.digest());
    }

    /** "size\tmtime" or "missing". */
    static String stat(Path p) throws ImageException {
        try {
            BasicFileAttributes a = Files.readAttributes(p, BasicFileAttributes.class);
            Instant t = a.lastModifiedTime().toInstant();
            return a.size() + "\t" + t.getEpochSecond() + "." + String.format("%09d", t.getNano());
        } catch (NoSuchFileException e) {
            return "missing";
        } catch (IOException e) {
            throw new ImageException("cannot stat " + p + ": " + e.getMessage(), e);
        }
    }

    static String sha256Hex(byte[] data) {
        return HexFormat.of().formatHex(sha256().digest(data));
    }

    private static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("every JDK has SHA-256", e);
        }
    }
}
