package io.vmgate.agent;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * What to run in the guest: the program, its argv, extra environment, working directory, a PTY
 * or not (null), and the credentials it runs with.
 *
 * @param executable  the program to execute, looked up in the guest's PATH if it has no '/';
 *                    null means {@code argv.get(0)}. Differs from argv[0] for a login shell
 *                    ({@code /bin/bash} with argv[0] {@code -bash}).
 * @param cwd         null: /root, or / when the user cannot enter /root
 * @param credentials uid, gid and supplementary groups (see {@link Credentials#ROOT})
 */
public record ProcessSpec(String executable, List<String> argv, Map<String, String> env, String cwd, PtySpec pty,
        Credentials credentials) {

    public ProcessSpec {
        argv = List.copyOf(argv);
        if (argv.isEmpty()) {
            throw new IllegalArgumentException("argv is empty");
        }
        if (executable != null && executable.isEmpty()) {
            throw new IllegalArgumentException("executable is empty (null means argv[0])");
        }
        env = java.util.Collections.unmodifiableMap(new LinkedHashMap<>(env));
        Objects.requireNonNull(credentials, "credentials");
    }

    /** As root, running argv[0]. */
    public ProcessSpec(List<String> argv, Map<String, String> env, String cwd, PtySpec pty) {
        this(null, argv, env, cwd, pty, Credentials.ROOT);
    }

    public static ProcessSpec exec(List<String> argv) {
        return new ProcessSpec(argv, Map.of(), null, null);
    }

    /** {@code sh -c command}, the way sshd runs an exec request. */
    public static ProcessSpec shellCommand(String command) {
        return exec(List.of("/bin/sh", "-c", command));
    }

    /** The program the guest executes: {@link #executable()} or argv[0]. */
    public String program() {
        return executable != null ? executable : argv.get(0);
    }

    public ProcessSpec withEnv(Map<String, String> extra) {
        var merged = new LinkedHashMap<>(env);
        merged.putAll(extra);
        return new ProcessSpec(executable, argv, merged, cwd, pty, credentials);
    }

    public ProcessSpec withPty(PtySpec pty) {
        return new ProcessSpec(executable, argv, env, cwd, pty, credentials);
    }

    public ProcessSpec withCwd(String cwd) {
        return new ProcessSpec(executable, argv, env, cwd, pty, credentials);
    }

    public ProcessSpec withCredentials(Credentials credentials) {
        return new ProcessSpec(executable, argv, env, cwd, pty, credentials);
    }
}
