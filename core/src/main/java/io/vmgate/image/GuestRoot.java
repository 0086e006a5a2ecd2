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
     * The user {@code name}, with a shell that exists in the image. Errors name the image and say
     * what is missing: the user, or their shell.
     */
    public GuestUser user(String name) throws ImageException {
        GuestUser u;
        if (passwd.isEmpty()) {
            if (!name.equals("root")) {
                throw new ImageException(describe + " has no /etc/passwd, so it has no user " + name + " (only root can log in)");
            }
            u = GuestUser.ROOT;
        } else {
            u = GuestUser.parse(passwd.get(), group.orElse(""), name).orElseThrow(() -> new ImageException(
                    "no user '" + name + "' in the /etc/passwd of " + describe + " (users with a shell: "
                            + String.join(", ", GuestUser.loginNames(passwd.get()).stream().limit(12).toList()) + ")"));
        }
        Optional<Manifest.Entry> shell = manifest.lookup(u.shell());
        if (shell.isEmpty() || !shell.get().isExecutableFile()) {
            throw new ImageException("the shell of user " + name + ", " + u.shell() + ", is " + (shell.isEmpty() ? "not in " : "not an executable file in ")
                    + describe + " (install it in the image, or change the user's shell in its /etc/passwd)");
        }
        return u;
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
