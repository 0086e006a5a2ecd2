package io.vmgate.image;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** Reads inodes of an ext4 image with the real debugfs (read-only): what a test checks a built image against. */
final class Ext4Inspector {
    private final Path image;

    Ext4Inspector(Path image) {
        this.image = image;
    }

    /** One inode as debugfs shows it. */
    record Inode(long number, String type, int mode, long uid, long gid, int links, long size, String device,
            Map<String, String> xattrs, String fastLink) {}

    Inode stat(String path) throws IOException, InterruptedException {
        String out = debugfs("stat " + Staging.quote(path));
        if (!out.contains("Inode:")) {
            throw new IOException("debugfs stat " + path + ": " + out);
        }
        Map<String, String> xattrs = new LinkedHashMap<>();
        Matcher x = Pattern.compile("^  (\\S+) \\(\\d+\\) = (.*)$", Pattern.MULTILINE).matcher(out);
        while (x.find()) {
            xattrs.put(x.group(1), x.group(2).strip().replace(" ", ""));
        }
        return new Inode(num(out, "Inode:\\s+(\\d+)"), find(out, "Type: (\\S+( special)?)"), Integer.parseInt(find(out, "Mode:\\s+(\\d+)"), 8),
                num(out, "User:\\s+(\\d+)"), num(out, "Group:\\s+(\\d+)"), (int) num(out, "Links: (\\d+)"), num(out, "Size: (\\d+)"),
                findOr(out, "Device major/minor number: (\\S+)", ""), xattrs, findOr(out, "Fast link dest: \"(.*)\"", null));
    }

    /** A regular file's (or slow symlink's) bytes. */
    String cat(String path) throws IOException, InterruptedException {
        return debugfs("cat " + Staging.quote(path));
    }

    /** Names in a directory, without . and .. */
    List<String> ls(String path) throws IOException, InterruptedException {
        List<String> names = new ArrayList<>();
        for (String n : debugfs("ls -p " + Staging.quote(path)).split("\n")) {
            String[] f = n.split("/");
            if (f.length >= 6 && !f[5].equals(".") && !f[5].equals("..")) {
                names.add(f[5]);
            }
        }
        return names;
    }

    String features() throws IOException, InterruptedException, ImageException {
        Process p = new ProcessBuilder(Ext4.tool("dumpe2fs"), "-h", image.toString()).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        p.waitFor(30, TimeUnit.SECONDS);
        return find(out, "Filesystem features:\\s+(.*)");
    }

    int fsck() throws IOException, InterruptedException, ImageException {
        Process p = new ProcessBuilder(Ext4.tool("e2fsck"), "-fn", image.toString()).redirectErrorStream(true).start();
        p.getInputStream().readAllBytes();
        p.waitFor(60, TimeUnit.SECONDS);
        return p.exitValue();
    }

    private String debugfs(String request) throws IOException, InterruptedException {
        Process p;
        try {
            p = new ProcessBuilder(Ext4.tool("debugfs"), "-R", request, image.toString()).redirectError(ProcessBuilder.Redirect.DISCARD).start();
        } catch (ImageException e) {
            throw new IOException(e);
        }
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        p.waitFor(30, TimeUnit.SECONDS);
        return out;
    }

    private static long num(String s, String re) {
        return Long.parseLong(find(s, re));
    }

    private static String find(String s, String re) {
        Matcher m = Pattern.compile(re).matcher(s);
        if (!m.find()) {
            throw new AssertionError("no " + re + " in:\n" + s);
        }
        return m.group(1);
    }

    private static String findOr(String s, String re, String dflt) {
        Matcher m = Pattern.compile(re).matcher(s);
        return m.find() ? m.group(1) : dflt;
    }
}
