package io.vmgate.image;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.NavigableMap;
import java.util.Optional;
import java.util.TreeMap;
import java.util.zip.GZIPInputStream;
import java.util.zip.GZIPOutputStream;

/**
 * What a root filesystem image holds, path by path (type, mode, owner, size, symlink target,
 * inode), written beside the image when it is built. The host answers questions about the
 * guest's files from it without mounting anything: does the user's shell exist, where does
 * {@code /bin/sh} lead, is there an sftp-server. Also what tests compare a built image against.
 *
 * <p>File format ({@code manifest.gz}): one line per path, sorted, tab-separated:
 * {@code TYPE MODE UID GID SIZE INODE PATH [TARGET]} with TYPE one of {@code f d l c b p}, MODE
 * octal permission bits, INODE a number shared by hard links, PATH absolute ("/" is the root),
 * and backslash, tab and line breaks in PATH and TARGET written as {@code \\ \t \n \r}.
 */
public final class Manifest {
    public static final String FILE = "manifest.gz";
    private static final int MAX_SYMLINKS = 40; // as the kernel's path walk

    /** One path of the tree. {@code type} is f, d, l, c, b or p. */
    public record Entry(char type, int mode, long uid, long gid, long size, long inode, String target) {
        public boolean isDirectory() {
            return type == 'd';
        }

        public boolean isFile() {
            return type == 'f';
        }

        /** A regular file someone may execute (any x bit), as exec needs. */
        public boolean isExecutableFile() {
            return type == 'f' && (mode & 0111) != 0;
        }
    }

    private final NavigableMap<String, Entry> entries; // relative paths, "" is the root

    private Manifest(NavigableMap<String, Entry> entries) {
        this.entries = Collections.unmodifiableNavigableMap(entries);
    }

    /** Paths (relative, "" for the root) to entries, sorted. */
    public NavigableMap<String, Entry> entries() {
        return entries;
    }

    public Optional<Entry> entry(String relativePath) {
        return Optional.ofNullable(entries.get(relativePath));
    }

    /**
     * Resolves an absolute guest path as the guest's kernel would, following symlinks in every
     * component (absolute targets from the image's root, ".." never above it). Returns the
     * relative path of what it names, or empty if that does not exist (or loops).
     */
    public Optional<String> resolve(String guestPath) {
        List<String> todo = new ArrayList<>(List.of(guestPath.split("/")));
        List<String> at = new ArrayList<>();
        int links = 0;
        while (!todo.isEmpty()) {
            String part = todo.remove(0);
            if (part.isEmpty() || part.equals(".")) {
                continue;
            }
            if (part.equals("..")) {
                if (!at.isEmpty()) {
                    at.remove(at.size() - 1);
                }
                continue;
            }
            String parent = String.join("/", at);
            Entry pe = entries.get(parent);
            if (pe == null || !pe.isDirectory()) {
                return Optional.empty();
            }
            String here = parent.isEmpty() ? part : parent + "/" + part;
            Entry e = entries.get(here);
            if (e == null) {
                return Optional.empty();
            }
            if (e.type() == 'l') {
                if (++links > MAX_SYMLINKS) {
                    return Optional.empty();
                }
                List<String> next = new ArrayList<>(List.of(e.target().split("/")));
                next.addAll(todo);
                todo = next;
                if (e.target().startsWith("/")) {
                    at.clear();
                }
                continue;
            }
            at.add(part);
        }
        return Optional.of(String.join("/", at));
    }

    /** The entry a guest path leads to, symlinks followed. */
    public Optional<Entry> lookup(String guestPath) {
        return resolve(guestPath).flatMap(this::entry);
    }

    public void write(Path file) throws IOException {
        try (Writer w = new OutputStreamWriter(new GZIPOutputStream(Files.newOutputStream(file), 1 << 16), StandardCharsets.UTF_8)) {
            StringBuilder line = new StringBuilder(128);
            for (Map.Entry<String, Entry> me : entries.entrySet()) {
                Entry e = me.getValue();
                line.setLength(0);
                line.append(e.type()).append('\t').append(Integer.toOctalString(e.mode())).append('\t').append(e.uid())
                        .append('\t').append(e.gid()).append('\t').append(e.size()).append('\t').append(e.inode()).append('\t');
                escape(line, "/" + me.getKey());
                if (e.target() != null) {
                    escape(line.append('\t'), e.target());
                }
                w.append(line).append('\n');
            }
        }
    }

    public static Manifest read(Path file) throws ImageException {
        NavigableMap<String, Entry> m = new TreeMap<>();
        try (BufferedReader r = new BufferedReader(new InputStreamReader(new GZIPInputStream(Files.newInputStream(file), 1 << 16),
                StandardCharsets.UTF_8))) {
            for (String line; (line = r.readLine()) != null;) {
                String[] f = line.split("\t", -1);
                if (f.length < 7 || f[0].length() != 1 || !f[6].startsWith("/")) {
                    throw new ImageException(file + ": malformed line '" + FsEntry.printable(line) + "'");
                }
                String path = unescape(f[6]).substring(1);
                m.put(path, new Entry(f[0].charAt(0), Integer.parseInt(f[1], 8), Long.parseLong(f[2]), Long.parseLong(f[3]),
                        Long.parseLong(f[4]), Long.parseLong(f[5]), f.length > 7 ? unescape(f[7]) : null));
            }
        } catch (NoSuchFileException e) {
            throw new ImageException(file + " is missing: the image is incomplete; rebuild it");
        } catch (IOException | NumberFormatException e) {
            throw new ImageException("cannot read " + file + ": " + e.getMessage(), e);
        }
        if (!m.containsKey("")) {
            throw new ImageException(file + " has no entry for the root directory");
        }
        return new Manifest(m);
    }

    private static void escape(StringBuilder b, String s) {
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '\\' -> b.append("\\\\");
                case '\t' -> b.append("\\t");
                case '\n' -> b.append("\\n");
                case '\r' -> b.append("\\r");
                default -> b.append(c);
            }
        }
    }

    private static String unescape(String s) {
        StringBuilder b = new StringBuilder(s.length());
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '\\' && i + 1 < s.length()) {
                char n = s.charAt(++i);
                b.append(switch (n) {
                    case 't' -> '\t';
                    case 'n' -> '\n';
                    case 'r' -> '\r';
                    default -> n;
                });
            } else {
                b.append(c);
            }
        }
        return b.toString();
    }

    /** Collects entries; hard links are paths added with the same identity object. */
    public static final class Builder {
        private final NavigableMap<String, Entry> entries = new TreeMap<>();
        private final Map<Object, Long> inodes = new java.util.HashMap<>();
        private final Map<Object, Long> identityInodes = new IdentityHashMap<>();

        /** Adds a path whose inode is known by {@code inode} (equal keys are one inode: dev+ino of a walk). */
        public Builder add(String relativePath, FsEntry e, Object inode) {
            long ino = inodes.computeIfAbsent(inode, k -> (long) inodes.size() + identityInodes.size() + 1);
            return put(relativePath, e, ino);
        }

        /** Adds a path; paths added with the very same FsEntry instance are hard links of one inode. */
        public Builder add(String relativePath, FsEntry e) {
            long ino = identityInodes.computeIfAbsent(e, k -> (long) inodes.size() + identityInodes.size() + 1);
            return put(relativePath, e, ino);
        }

        private Builder put(String path, FsEntry e, long ino) {
            char t = switch (e.type()) {
                case FILE, HARDLINK -> 'f';
                case DIRECTORY -> 'd';
                case SYMLINK -> 'l';
                case CHAR_DEVICE -> 'c';
                case BLOCK_DEVICE -> 'b';
                case FIFO -> 'p';
            };
            entries.put(path, new Entry(t, e.mode(), e.uid(), e.gid(), e.size(), ino,
                    e.type() == FsEntry.Type.SYMLINK ? e.linkTarget() : null));
            return this;
        }

        public Manifest build() {
            return new Manifest(new TreeMap<>(entries));
        }
    }
}
