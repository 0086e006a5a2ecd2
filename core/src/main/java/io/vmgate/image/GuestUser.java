package io.vmgate.image;

import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Optional;
import java.util.Set;

/**
 * A user of the guest image as its /etc/passwd and /etc/group describe it: what a login needs
 * (credentials, home, shell), resolved on the host before any VM starts.
 *
 * @param groups the supplementary groups, primary gid first, as initgroups(3) would set them
 */
public record GuestUser(String name, long uid, long gid, List<Long> groups, String home, String shell) {
    /** The user of an image without /etc/passwd. */
    public static final GuestUser ROOT = new GuestUser("root", 0, 0, List.of(0L), "/root", "/bin/sh");
    static final int MAX_GROUPS = 256;

    public GuestUser {
        groups = List.copyOf(groups);
    }

    public boolean isRoot() {
        return uid == 0;
    }

    /**
     * Finds {@code name} in passwd(5) text and its groups in group(5) text (which may be absent).
     * Malformed lines of other users are ignored, as libc does; the user's own must be sound.
     */
    static Optional<GuestUser> parse(String passwd, String group, String name) throws ImageException {
        for (String line : passwd.split("\n")) {
            String[] f = line.split(":", -1);
            if (f.length < 7 || !f[0].equals(name)) {
                continue;
            }
            long uid = id(f[2], "uid", name), gid = id(f[3], "gid", name);
            Set<Long> groups = new LinkedHashSet<>();
            groups.add(gid);
            for (String g : (group == null ? "" : group).split("\n")) {
                String[] gf = g.split(":", -1);
                if (gf.length >= 4 && !gf[2].isEmpty() && List.of(gf[3].split(",")).contains(name)) {
                    try {
                        groups.add(id(gf[2], "gid of group " + gf[0], name));
                    } catch (ImageException e) {
                        // another group's bad line: libc skips it too
                    }
                }
            }
            if (groups.size() > MAX_GROUPS) {
                throw new ImageException("user " + name + " is in " + groups.size() + " groups; at most " + MAX_GROUPS + " are supported");
            }
            String home = f[5].isEmpty() ? "/" : f[5];
            String shell = f[6].isEmpty() ? "/bin/sh" : f[6]; // passwd(5): an empty shell means /bin/sh
            return Optional.of(new GuestUser(name, uid, gid, new ArrayList<>(groups), home, shell));
        }
        return Optional.empty();
    }

    /** The first user of passwd text with this uid, as {@link #parse} reads them. */
    static Optional<GuestUser> byUid(String passwd, String group, long uid) throws ImageException {
        for (String line : passwd.split("\n")) {
            String[] f = line.split(":", -1);
            if (f.length >= 7 && f[2].equals(Long.toString(uid))) {
                return parse(passwd, group, f[0]);
            }
        }
        return Optional.empty();
    }

    /** A group's gid by name from group(5) text. */
    static Optional<Long> groupId(String group, String name) throws ImageException {
        for (String g : group.split("\n")) {
            String[] gf = g.split(":", -1);
            if (gf.length >= 3 && gf[0].equals(name)) {
                return Optional.of(id(gf[2], "gid of group " + name, name));
            }
        }
        return Optional.empty();
    }

    /** Names of the users in passwd text that have a real shell, for "did you mean" messages. */
    static List<String> loginNames(String passwd) {
        List<String> names = new ArrayList<>();
        for (String line : passwd.split("\n")) {
            String[] f = line.split(":", -1);
            if (f.length >= 7 && !f[6].endsWith("nologin") && !f[6].endsWith("/false") && !f[6].endsWith("/sync")) {
                names.add(f[0]);
            }
        }
        return names;
    }

    private static long id(String s, String what, String user) throws ImageException {
        try {
            long v = Long.parseLong(s);
            if (v < 0 || v > FsEntry.MAX_ID) {
                throw new NumberFormatException();
            }
            return v;
        } catch (NumberFormatException e) {
            throw new ImageException("user " + user + ": " + what + " '" + FsEntry.printable(s) + "' in the image is not a valid id");
        }
    }
}
