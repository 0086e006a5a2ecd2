package io.vmgate.agent;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** What to run in the guest: argv, extra environment, working directory, and a PTY or not (null). */
public record ProcessSpec(List<String> argv, Map<String, String> env, String cwd, PtySpec pty) {

    public ProcessSpec {
        argv = List.copyOf(argv);
        if (argv.isEmpty()) {
            throw new IllegalArgumentException("argv is empty");
        }
        env = java.util.Collections.unmodifiableMap(new LinkedHashMap<>(env));
    }

    public static ProcessSpec exec(List<String> argv) {
        return new ProcessSpec(argv, Map.of(), null, null);
    }

    /** {@code sh -c command}, the way sshd runs an exec request. */
    public static ProcessSpec shellCommand(String command) {
        return exec(List.of("/bin/sh", "-c", command));
    }

    public ProcessSpec withEnv(Map<String, String> extra) {
        var merged = new LinkedHashMap<>(env);
        merged.putAll(extra);
        return new ProcessSpec(argv, merged, cwd, pty);
    }

    public ProcessSpec withPty(PtySpec pty) {
        return new ProcessSpec(argv, env, cwd, pty);
    }
}
