package io.vmgate.agent;

import java.util.List;

/**
 * Who a guest process runs as: uid, primary gid and exactly these supplementary groups (the
 * agent calls setgroups, setgid, setuid). The host resolves names; the guest never looks them up.
 */
public record Credentials(int uid, int gid, List<Integer> groups) {
    /** root, with no supplementary groups: what every process ran as before protocol version 2. */
    public static final Credentials ROOT = new Credentials(0, 0, List.of());

    public Credentials {
        groups = List.copyOf(groups);
        check(uid, "uid");
        check(gid, "gid");
        if (groups.size() > Protocol.MAX_GROUPS) {
            throw new IllegalArgumentException(groups.size() + " supplementary groups; the limit is " + Protocol.MAX_GROUPS);
        }
        for (int g : groups) {
            check(g, "group");
        }
    }

    /** Ids are unsigned 32-bit on the wire; 0xFFFFFFFF (-1 here) means "unchanged" to setuid, so it is no id. */
    private static void check(int id, String what) {
        if (id == -1) {
            throw new IllegalArgumentException(what + " 4294967295 is not an id");
        }
    }

    public boolean isRoot() {
        return uid == 0;
    }
}
