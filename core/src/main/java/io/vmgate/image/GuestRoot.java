package io.vmgate.image;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.List;
import java.util.Optional;

/**
 * What a guest's root filesystem holds, as the host knows it without mounting it: the image's
 * {@link Manifest} and its /etc/passwd and /etc/group, saved beside the image when it was built.
 * Logins are resolved here, at start-up, so that a missing user or shell is an error before any
 * VM boots rather than at the first session.
 */
public record GuestRoot(Manifest manifest, Optional<String> passwd, Optional<String> group, String describe) {
    public static final String PASSWD_FILE = "passwd";
    public static final String GROUP_FILE = "group";

    /** Reads what {@link #save} wrote into an image directory. */
    public static GuestRoot load(Path dir, String describe) throws ImageException {
        return new GuestRoot(Manifest.read(dir.resolve(Manifest.FILE)), text(dir.resolve(PASSWD_FILE)), text(dir.resolve(GROUP_FILE)),
                describe);
    }

    static void save(Path dir, Manifest m, Optional<byte[]> passwd, Optional<byte[]> group) throws IOException {
        m.write(dir.resolve(Manifest.FILE));
        if (passwd.isPresent()) {
            Files.write(dir.resolve(PASSWD_FILE), passwd.get());
        }
        if (group.isPresent()) {
            Files.write(dir.resolve(GROUP_FILE), group.get());
        }
    }

    private static Optional<String> text(Path p) throws ImageException {
        try {
            return Optional.of(Files.readString(p, StandardCharsets.UTF_8));
        } catch (NoSuchFileException e) {
            return Optional.empty();
        } catch (IOException e) {
            throw new ImageException("cannot read " + p + ": " + e.getMessage(), e);
        }
    }

    /**
     * The user a spec names, with a shell that exists in the image. The spec is what
     * {@code --guest-user} and an OCI image's {@code User} say, with container runtimes' meaning:
     * {@code NAME} or {@code UID} (a uid the image's /etc/passwd does not list is that uid with gid 0,
     * home / and /bin/sh), optionally {@code :GROUP} or {@code :GID} for the primary group (a group
     * name from /etc/group); supplementary groups come from /etc/group as for a login. Errors name
     * the image and say what is missing: the user, the group, or the user's shell.
     */
    public GuestUser user(String spec) throws ImageException {
        int colon = spec.indexOf(':');
        String name = colon < 0 ? spec : spec.substring(0, colon);
        Optional<String> groupSpec = colon < 0 ? Optional.empty() : Optional.of(spec.substring(colon + 1));
        Optional<Long> uid = numeric(name);
        GuestUser u;
        if (passwd.isEmpty()) {
            if (uid.isPresent()) {
                u = anonymous(uid.get());
            } else if (!name.equals("root")) {
                throw new ImageException(describe + " has no /etc/passwd, so it has no user " + name + " (only root or a numeric uid can log in)");
            } else {
                u = GuestUser.ROOT;
            }
        } else {
            Optional<GuestUser> found = GuestUser.parse(passwd.get(), group.orElse(""), name);
            if (found.isEmpty() && uid.isPresent()) {
                found = GuestUser.byUid(passwd.get(), group.orElse(""), uid.get());
            }
            if (found.isEmpty() && uid.isPresent()) {
                found = Optional.of(anonymous(uid.get()));
            }
            u = found.orElseThrow(() -> new ImageException(
                    "no user '" + name + "' in the /etc/passwd of " + describe + " (users with a shell: "
                            + String.join(", ", GuestUser.loginNames(passwd.get()).stream().limit(12).toList()) + ")"));
        }
        if (groupSpec.isPresent()) {
            long gid = numeric(groupSpec.get()).isPresent() ? numeric(groupSpec.get()).get()
                    : GuestUser.groupId(group.orElse(""), groupSpec.get()).orElseThrow(() -> new ImageException(
                            "no group '" + groupSpec.get() + "' in the /etc/group of " + describe));
            List<Long> groups = new java.util.ArrayList<>(List.of(gid));
            u.groups().stream().skip(1).filter(g -> g != gid).forEach(groups::add);
            u = new GuestUser(u.name(), u.uid(), gid, groups, u.home(), u.shell());
        }
        Optional<Manifest.Entry> shell = manifest.lookup(u.shell());
        if (shell.isEmpty() || !shell.get().isExecutableFile()) {
            throw new ImageException("the shell of user " + name + ", " + u.shell() + ", is " + (shell.isEmpty() ? "not in " : "not an executable file in ")
                    + describe + " (install it in the image, or change the user's shell in its /etc/passwd)");
        }
        return u;
    }

    /** A uid the image does not list: as container runtimes run it, gid 0, home /, and /bin/sh for vmgate's shells. */
    private static GuestUser anonymous(long uid) {
        return new GuestUser(Long.toString(uid), uid, 0, List.of(0L), "/", "/bin/sh");
    }

    private static Optional<Long> numeric(String s) throws ImageException {
        if (s.isEmpty() || !s.chars().allMatch(Character::isDigit)) {
            return Optional.empty();
        }
        try {
            long v = Long.parseLong(s);
            if (v <= FsEntry.MAX_ID) {
                return Optional.of(v);
            }
        } catch (NumberFormatException e) {
            // too long: out of range below
        }
        throw new ImageException("'" + s + "' is not a valid uid or gid (at most " + FsEntry.MAX_ID + ")");
    }

    /** True if the path leads (symlinks followed) to a directory in the image. */
    public boolean isDirectory(String guestPath) {
        return manifest.lookup(guestPath).map(Manifest.Entry::isDirectory).orElse(false);
    }

    /** The image's own OpenSSH sftp-server, if it has one at a usual place. */
    public Optional<String> sftpServer() {
        return RootfsBuilder.sftpServer(manifest);
    }

    /** Users of the image with a login shell (not nologin or false). */
    public List<String> users() {
        return passwd.map(GuestUser::loginNames).orElse(List.of("root"));
    }
}
