package io.vmgate.vm;

import io.vmgate.agent.Credentials;
import io.vmgate.agent.ProcessSpec;
import io.vmgate.agent.PtySpec;
import io.vmgate.image.GuestRoot;
import io.vmgate.image.GuestUser;
import io.vmgate.image.Image;
import io.vmgate.image.ImageDefaults;
import io.vmgate.image.ImageException;
import io.vmgate.image.RootfsImage;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * How a front end starts processes in a VM as the guest user, the way sshd does: a login shell
 * whose argv[0] is "-bash" (so /etc/profile runs), commands through the user's shell with
 * {@code -c}, the environment sshd sets (HOME, USER, LOGNAME, SHELL, PATH, MAIL), the user's
 * uid, gid and groups, and the working directory. Resolved once from the image at start-up
 * ({@link #resolve}), so a missing user, shell or working directory is an error before any VM
 * boots; the specs it makes are plain {@link ProcessSpec}s.
 *
 * @param cwd        {@code --workdir}, else the image's own working directory (an OCI image's
 *                   {@code WorkingDir}), else the user's home if the image has it, else "/" (as sshd
 *                   falls back when it cannot enter the home)
 * @param sftpServer the argv for the {@code sftp} subsystem: the image's own sftp-server, or
 *                   vmgate's from {@link Image#TOOLS_DIR} when the image has none
 * @param imageEnv   the image's own environment (an OCI image's {@code Env}): on top of sshd's,
 *                   under the client's
 */
public record GuestLogin(GuestUser user, String cwd, List<String> sftpServer, Map<String, String> imageEnv) {
    /** sshd's defaults on Debian (its _PATH_STDPATH and the root variant). */
    static final String ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    static final String USER_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games";
    private static final String FALLBACK_SFTP = "/usr/lib/openssh/sftp-server";

    public GuestLogin {
        sftpServer = List.copyOf(sftpServer);
        imageEnv = java.util.Collections.unmodifiableMap(new LinkedHashMap<>(imageEnv));
    }

    /** A login without an environment of the image's own. */
    public GuestLogin(GuestUser user, String cwd, List<String> sftpServer) {
        this(user, cwd, sftpServer, Map.of());
    }

    /**
     * The login {@code config} describes: its {@link VmConfig#guestUser()} looked up in the root
     * filesystem's /etc/passwd and /etc/group, with a shell that exists there, and its
     * {@link VmConfig#workdir()} checked to be a directory there.
     */
    public static GuestLogin resolve(VmConfig config) throws VmException {
        try {
            Optional<GuestRoot> root = config.rootfs().isPresent() ? Optional.of(config.rootfs().get().root()) : config.image().root();
            if (root.isEmpty()) { // a hand-made --image DIR: nothing to check against, only root makes sense
                if (!config.guestUser().equals("root")) {
                    throw new VmException("the image " + config.image().directory() + " has no manifest of its files, so its users are "
                            + "unknown: only --guest-user root works with it");
                }
                return new GuestLogin(GuestUser.ROOT, config.workdir().orElse("/root"), tools(config.image()));
            }
            GuestRoot r = root.get();
            GuestUser u = r.user(config.guestUser());
            ImageDefaults defaults = config.rootfs().map(RootfsImage::defaults).orElse(ImageDefaults.NONE);
            Optional<String> workdir = config.workdir().or(defaults::workdir);
            String cwd;
            if (workdir.isPresent()) {
                cwd = workdir.get();
                if (!r.isDirectory(cwd)) {
                    throw new VmException("the working directory " + cwd + (config.workdir().isEmpty() ? " (the image's WorkingDir)" : "")
                            + " is not a directory in " + r.describe());
                }
            } else {
                cwd = r.isDirectory(u.home()) ? u.home() : "/";
            }
            List<String> sftp = r.sftpServer().map(List::of).orElseGet(() -> tools(config.image()));
            return new GuestLogin(u, cwd, sftp, defaults.environment());
        } catch (ImageException e) {
            throw new VmException(e.getMessage(), e);
        }
    }

    private static List<String> tools(Image image) {
        return image.toolsSftpServer().isEmpty() ? List.of(FALLBACK_SFTP) : image.toolsSftpServer();
    }

    public Credentials credentials() {
        return new Credentials((int) user.uid(), (int) user.gid(), user.groups().stream().map(Long::intValue).toList());
    }

    /** What sshd puts in a session's environment, then the image's own, before the client's own variables. */
    public Map<String, String> environment() {
        Map<String, String> env = new LinkedHashMap<>();
        env.put("USER", user.name());
        env.put("LOGNAME", user.name());
        env.put("HOME", user.home());
        env.put("PATH", user.isRoot() ? ROOT_PATH : USER_PATH);
        env.put("MAIL", "/var/mail/" + user.name());
        env.put("SHELL", user.shell());
        env.putAll(imageEnv);
        return env;
    }

    /** An interactive login shell (an SSH "shell" request): argv[0] is "-" + the shell's name. */
    public ProcessSpec shell(PtySpec pty, Map<String, String> clientEnv) {
        return spec(List.of("-" + shellName()), pty, clientEnv);
    }

    /** A command line run by the user's shell with {@code -c} (an SSH "exec" request). */
    public ProcessSpec command(String commandLine, PtySpec pty, Map<String, String> clientEnv) {
        return spec(List.of(shellName(), "-c", commandLine), pty, clientEnv);
    }

    /** A program run directly, without a shell ({@code vmgate run -- argv}), as this user, in {@link #cwd()}. */
    public ProcessSpec exec(List<String> argv, PtySpec pty, Map<String, String> clientEnv) {
        return new ProcessSpec(null, argv, merged(clientEnv), cwd, pty, credentials());
    }

    /** The {@code sftp} subsystem: sftp-server as the user, in the user's home, no terminal. */
    public ProcessSpec sftp(Map<String, String> clientEnv) {
        return new ProcessSpec(null, sftpServer, merged(clientEnv), cwd, null, credentials());
    }

    private ProcessSpec spec(List<String> argv, PtySpec pty, Map<String, String> clientEnv) {
        return new ProcessSpec(user.shell(), argv, merged(clientEnv), cwd, pty, credentials());
    }

    private Map<String, String> merged(Map<String, String> clientEnv) {
        Map<String, String> env = environment();
        env.putAll(clientEnv);
        return env;
    }

    private String shellName() {
        String s = user.shell();
        return s.substring(s.lastIndexOf('/') + 1);
    }
}
