package io.vmgate.image;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.NavigableMap;
import java.util.NavigableSet;
import java.util.Optional;
import java.util.TreeMap;
import java.util.TreeSet;

/**
 * A root filesystem being assembled from entries (a tar stream, later OCI layers): the tree and
 * every inode's metadata in memory, each regular file's bytes in a numbered file under
 * {@link #dir()}. {@link #script} then writes the whole tree into an empty ext4 image with
 * {@code debugfs}: directories, files, hard links, symlinks, device nodes, then each inode's mode,
 * owner, mtime and xattrs. Nothing needs root, and the entries' names never become host paths:
 * no name is ever resolved on the host (hostile entries cannot reach outside), and the JVM's
 * file-name encoding (ASCII under a POSIX locale) cannot garble or refuse a name.
 *
 * <p>A later entry replaces an earlier one at the same path, as tar and layered images expect;
 * {@link #remove} deletes one (a whiteout). A path's parents must be directories: an entry under
 * a symlink, a file or a device is refused.
 *
 * <p>After {@link #beginLayer()} the entries are an OCI layer's, with container runtimes' rules
 * (containerd's, runc's): a parent that is a symlink is followed, inside the image's root only (an
 * absolute target starts at the image's root, ".." stops there), so {@code etc -> /elsewhere}
 * followed by {@code etc/passwd} writes {@code elsewhere/passwd} of the image, never anything of the
 * host; and whiteouts ({@link #remove}, {@link #clearDirectory}) hide only what earlier layers
 * made, never what the current layer adds, in whatever order its entries come.
 */
final class Staging implements RootfsSource.TreeSink {
    /** One inode; hard links share one node. */
    static final class Node {
        FsEntry entry;      // type is never HARDLINK here: a hard link shares its target's node
        final Path content; // a regular file's bytes, or null
        int names;          // paths that lead to this node

        Node(FsEntry entry, Path content) {
            this.entry = entry;
            this.content = content;
        }
    }

    /** As the kernel's path walk: more symlinks than this on one path is a loop. */
    static final int MAX_SYMLINKS = 40;

    private final Path dir;
    private final long rootMtime;
    private final java.util.function.LongConsumer added;
    private long entries;
    private final NavigableMap<String, Node> tree = new TreeMap<>();
    private long nextContent;
    private NavigableSet<String> layerPaths; // null outside layer mode; else what the current layer added

    /** Creates the content directory, which must not exist. */
    Staging(Path dir, long rootMtime) throws IOException {
        this(dir, rootMtime, n -> { });
    }

    /**
     * Creates the content directory, which must not exist; {@code added} hears the count of entries
     * after each one; directories the staging makes itself get {@code rootMtime}.
     */
    Staging(Path dir, long rootMtime, java.util.function.LongConsumer added) throws IOException {
        this.dir = dir;
        this.rootMtime = rootMtime;
        this.added = added;
        Files.createDirectory(dir);
        put("", new Node(FsEntry.directory("", 0755, 0, 0, rootMtime), null));
    }

    Path dir() {
        return dir;
    }

    /** From now on entries are one more OCI layer's (see the class comment); called before each layer. */
    @Override
    public void beginLayer() {
        layerPaths = new TreeSet<>();
    }

    /** Adds one entry; {@code content} supplies exactly {@code e.size()} bytes of a FILE. */
    @Override
    public void add(FsEntry e, InputStream content) throws IOException, ImageException {
        addEntry(e, content);
        added.accept(++entries);
    }

    private void addEntry(FsEntry e, InputStream content) throws IOException, ImageException {
        if (layerPaths != null) {
            String p = resolveParents(e.path());
            if (e.type() == FsEntry.Type.HARDLINK) {
                String target = resolveParents(e.linkTarget());
                e = new FsEntry(p, e.type(), e.mode(), e.uid(), e.gid(), e.size(), e.mtime(), target, e.devMajor(), e.devMinor(), e.xattrs());
            } else if (!p.equals(e.path())) {
                e = new FsEntry(p, e.type(), e.mode(), e.uid(), e.gid(), e.size(), e.mtime(), e.linkTarget(), e.devMajor(), e.devMinor(),
                        e.xattrs());
            }
            for (String q = p; !q.isEmpty() && layerPaths.add(q); q = parentOf(q)) {
                // the path and its parents are this layer's now: whiteouts of this layer spare them
            }
        }
        String p = e.path();
        if (p.isEmpty()) {
            if (e.type() != FsEntry.Type.DIRECTORY) {
                throw new ImageException("the root entry is a " + e.type() + ", not a directory");
            }
            tree.get("").entry = e;
            return;
        }
        ensureParents(p, e.mtime());
        Node existing = tree.get(p);
        if (existing != null && existing.entry.type() == FsEntry.Type.DIRECTORY && e.type() == FsEntry.Type.DIRECTORY) {
            existing.entry = e; // a directory again: new metadata, same children
            return;
        }
        Node node;
        switch (e.type()) {
            case FILE -> {
                Path f = dir.resolve(Long.toString(nextContent++));
                long n;
                try (var out = Files.newOutputStream(f, java.nio.file.StandardOpenOption.CREATE_NEW, java.nio.file.StandardOpenOption.WRITE)) {
                    n = content.transferTo(out);
                }
                if (n != e.size()) {
                    Files.delete(f);
                    throw new ImageException(p + ": " + n + " bytes of content, the entry says " + e.size());
                }
                node = new Node(e, f);
            }
            case HARDLINK -> {
                node = tree.get(e.linkTarget());
                if (node == null) {
                    throw new ImageException(p + ": hard link to " + e.linkTarget() + ", which is not (or no longer) in the tree");
                }
                if (node.entry.type() != FsEntry.Type.FILE) {
                    throw new ImageException(p + ": hard link to the " + node.entry.type() + " " + e.linkTarget() + " is not supported");
                }
                if (e.linkTarget().equals(p)) {
                    return; // a link to itself: nothing changes
                }
            }
            default -> node = new Node(e, null);
        }
        if (existing != null) {
            remove(p);
        }
        put(p, node);
    }

    /**
     * Removes a path and, for a directory, everything below it. Absent paths are ignored. In layer
     * mode, what the current layer added stays (with the directories above it).
     */
    @Override
    public void remove(String path) throws IOException, ImageException {
        String p = FsEntry.normalize(path);
        if (p.isEmpty()) {
            throw new IllegalArgumentException("cannot remove the root");
        }
        if (layerPaths != null) {
            p = resolveParents(p);
        }
        Node n = tree.get(p);
        if (n == null) {
            return;
        }
        List<String> gone = new ArrayList<>(List.of(p));
        if (n.entry.type() == FsEntry.Type.DIRECTORY) {
            gone.addAll(tree.subMap(p + "/", true, p + "0", false).keySet()); // '0' sorts right after '/'
        }
        if (layerPaths != null) {
            gone.removeAll(layerPaths.subSet(p, true, p + "0", false)); // this layer's own, and the parents they need
        }
        for (String g : gone) {
            Node x = tree.remove(g);
            if (--x.names == 0 && x.content != null) {
                Files.deleteIfExists(x.content);
            }
        }
    }

    /** Removes everything below a directory, keeping the directory (an OCI opaque whiteout). */
    @Override
    public void clearDirectory(String path) throws IOException, ImageException {
        String p = FsEntry.normalize(path);
        if (layerPaths != null && !p.isEmpty()) {
            p = resolveParents(p);
            Node n = tree.get(p);
            if (n != null && n.entry.type() == FsEntry.Type.SYMLINK) {
                p = resolveParents(p + "/x"); // the directory a symlink leads to
                p = p.lastIndexOf('/') < 0 ? "" : p.substring(0, p.lastIndexOf('/'));
            }
        }
        String prefix = p.isEmpty() ? "" : p + "/";
        for (String child : List.copyOf(p.isEmpty() ? tree.tailMap("", false).keySet() : tree.subMap(prefix, true, p + "0", false).keySet())) {
            if (tree.containsKey(child) && child.indexOf('/', prefix.length()) < 0) {
                remove(child);
            }
        }
    }

    /**
     * Makes a directory (root-owned, 0755, and its missing parents) unless the path, symlinks
     * followed inside the tree, already leads to something: what a container runtime does for an
     * image's WorkingDir. An existing entry is left exactly as it is.
     */
    @Override
    public void ensureDirectory(String path) throws ImageException {
        long mtime = rootMtime;
        String p = FsEntry.normalize(path);
        if (p.isEmpty()) {
            return;
        }
        String viaLast = resolveParents(p + "/x"); // follows the last component too
        String real = viaLast.substring(0, viaLast.length() - 2);
        if (real.isEmpty() || tree.containsKey(real)) {
            return;
        }
        ensureParents(real, mtime);
        put(real, new Node(FsEntry.directory(real, 0755, 0, 0, mtime), null));
    }

    /**
     * The path with every parent component's symlinks followed inside the tree, as a chroot would
     * (absolute targets from the root, ".." never above it); the last component is kept as it is.
     * Components that do not exist yet are kept as they are (they become directories).
     */
    String resolveParents(String path) throws ImageException {
        List<String> todo = new ArrayList<>(List.of(path.split("/")));
        if (todo.isEmpty()) {
            return path;
        }
        String last = todo.remove(todo.size() - 1);
        List<String> at = new ArrayList<>();
        int links = 0;
        boolean missing = false; // below a component that does not exist, nothing can be a symlink
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
            at.add(part);
            Node n = missing ? null : tree.get(String.join("/", at));
            if (n == null) {
                missing = true;
            } else if (n.entry.type() == FsEntry.Type.SYMLINK) {
                if (++links > MAX_SYMLINKS) {
                    throw new ImageException(FsEntry.printable(path) + ": too many levels of symbolic links");
                }
                String target = n.entry.linkTarget();
                at.remove(at.size() - 1);
                if (target.startsWith("/")) {
                    at.clear();
                }
                List<String> next = new ArrayList<>(List.of(target.split("/")));
                next.addAll(todo);
                todo = next;
            }
        }
        if (last.equals("..") || last.equals(".")) {
            throw new ImageException(FsEntry.printable(path) + ": ends in '" + last + "'");
        }
        at.add(last);
        String out = String.join("/", at);
        return out.equals(path) ? path : FsEntry.normalize(out);
    }

    private static String parentOf(String p) {
        int slash = p.lastIndexOf('/');
        return slash < 0 ? "" : p.substring(0, slash);
    }

    private void put(String path, Node n) {
        n.names++;
        tree.put(path, n);
    }

    /** Missing parents are made as root-owned 0755 directories, as tar does; a parent that is not a directory is refused. */
    private void ensureParents(String p, long mtime) throws ImageException {
        int slash = p.lastIndexOf('/');
        String parent = slash < 0 ? "" : p.substring(0, slash);
        Node n = tree.get(parent);
        if (n != null) {
            if (n.entry.type() != FsEntry.Type.DIRECTORY) {
                throw new ImageException(p + ": its parent " + parent + " is a " + n.entry.type() + ", not a directory");
            }
            return;
        }
        ensureParents(parent, mtime);
        put(parent, new Node(FsEntry.directory(parent, 0755, 0, 0, mtime), null));
    }

    /** Every path and its node, parents before children. */
    NavigableMap<String, Node> tree() {
        return java.util.Collections.unmodifiableNavigableMap(tree);
    }

    /**
     * debugfs commands that build the tree in an empty ext4: every name first (parents before
     * children; debugfs makes each in its current directory, taking the argument as one name),
     * then each inode's mode (with the type bits), owner, mtime, link count and extended
     * attributes, once per inode. Xattr values go to files in {@code valueDir}.
     */
    List<String> script(Path valueDir) throws IOException {
        List<String> cmds = new ArrayList<>();
        Map<Node, String> firstName = new IdentityHashMap<>();
        List<Node> inodes = new ArrayList<>(); // in tree order, for a script that is the same every time
        String cwd = "/";
        for (Map.Entry<String, Node> me : tree.entrySet()) {
            String path = me.getKey();
            Node n = me.getValue();
            if (path.isEmpty()) {
                firstName.put(n, "/");
                inodes.add(n);
                continue;
            }
            int slash = path.lastIndexOf('/');
            String parent = "/" + (slash < 0 ? "" : path.substring(0, slash)), name = quote(path.substring(slash + 1));
            if (!parent.equals(cwd)) {
                cmds.add("cd " + quote(parent));
                cwd = parent;
            }
            String first = firstName.putIfAbsent(n, "/" + path);
            if (first != null) {
                cmds.add("ln " + quote(first) + " " + name); // another name of a file already written
                continue;
            }
            inodes.add(n);
            FsEntry e = n.entry;
            cmds.add(switch (e.type()) {
                case DIRECTORY -> "mkdir " + name;
                case FILE -> "write " + quote(n.content.toString()) + " " + name;
                case SYMLINK -> "symlink " + name + " " + quote(e.linkTarget());
                case FIFO -> "mknod " + name + " p";
                case CHAR_DEVICE, BLOCK_DEVICE -> "mknod " + name + (e.type() == FsEntry.Type.CHAR_DEVICE ? " c " : " b ")
                        + e.devMajor() + " " + e.devMinor();
                case HARDLINK -> throw new IllegalStateException("a hard link has no node of its own");
            });
        }
        cmds.add("cd /");
        int values = 0;
        for (Node n : inodes) {
            FsEntry e = n.entry;
            String name = firstName.get(n), q = quote(name);
            cmds.add("sif " + q + " mode 0" + Integer.toOctalString(e.type().typeBits | e.mode()));
            cmds.add("sif " + q + " uid " + e.uid());
            cmds.add("sif " + q + " gid " + e.gid());
            cmds.add("sif " + q + " mtime @" + e.mtime());
            if (n.names > 1 && e.type() == FsEntry.Type.FILE) {
                cmds.add("sif " + q + " links_count " + n.names); // ln does not count
            }
            for (Map.Entry<String, byte[]> x : e.xattrs().entrySet()) {
                if (!x.getKey().matches("[A-Za-z0-9._-]{1,200}")) {
                    throw new IOException(name + ": extended attribute name '" + FsEntry.printable(x.getKey()) + "' is not supported");
                }
                Path value = valueDir.resolve("xattr-" + values++);
                Files.write(value, x.getValue());
                cmds.add("ea_set -f " + quote(value.toString()) + " " + q + " " + x.getKey());
            }
        }
        return cmds;
    }

    /** debugfs (libss) quoting: inside double quotes, a doubled quote is one quote; a line break cannot be said. */
    static String quote(String s) {
        if (s.indexOf('\n') >= 0 || s.indexOf('\r') >= 0 || s.indexOf('\0') >= 0) {
            throw new IllegalArgumentException("'" + FsEntry.printable(s) + "' contains a line break or NUL");
        }
        return '"' + s.replace("\"", "\"\"") + '"';
    }

    /** The tree as a manifest (what the image holds, for lookups without mounting it). */
    Manifest manifest() {
        Manifest.Builder b = new Manifest.Builder();
        for (Map.Entry<String, Node> me : tree.entrySet()) {
            b.add(me.getKey(), me.getValue().entry, me.getValue());
        }
        return b.build();
    }

    /** A regular file's bytes by guest path (symlinks resolved in the tree), e.g. /etc/passwd; empty if it is not one. */
    Optional<byte[]> read(Manifest m, String guestPath) throws IOException {
        Optional<String> real = m.resolve(guestPath);
        Node n = real.map(tree::get).orElse(null);
        if (n == null || n.content == null) {
            return Optional.empty();
        }
        if (Files.size(n.content) > (16 << 20)) {
            throw new IOException(guestPath + " is larger than 16 MiB");
        }
        return Optional.of(Files.readAllBytes(n.content));
    }

    /** What mke2fs must make room for: data blocks (4 KiB) and inodes. */
    Ext4.Sizing sizing() {
        Map<Node, Boolean> seen = new IdentityHashMap<>();
        Map<String, Long> dirBytes = new java.util.HashMap<>();
        long blocks = 0, inodes = 0;
        for (Map.Entry<String, Node> me : tree.entrySet()) {
            String p = me.getKey();
            if (!p.isEmpty()) {
                String parent = p.lastIndexOf('/') < 0 ? "" : p.substring(0, p.lastIndexOf('/'));
                int name = p.length() - parent.length();
                dirBytes.merge(parent, 8L + ((name + 3) & ~3), Long::sum);
            }
            if (seen.put(me.getValue(), Boolean.TRUE) != null) {
                continue;
            }
            inodes++;
            blocks += Ext4.blocksFor(me.getValue().entry);
        }
        for (long bytes : dirBytes.values()) {
            blocks += (bytes + Ext4.BLOCK - 1) / Ext4.BLOCK;
        }
        return new Ext4.Sizing(blocks, inodes);
    }
}
