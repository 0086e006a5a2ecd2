package io.vmgate.exec;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * What to run in a guest, as a value: an argv, a line for the guest user's shell, the user's login
 * shell, or the guest's SFTP server; with extra environment, a working directory, and a terminal or
 * pipes. The guest decides what {@link Kind#SHELL}, {@link Kind#LOGIN} and {@link Kind#SFTP} mean
 * (the guest user's shell from its image), the way sshd does. Immutable: each {@code with} method
 * returns a copy.
 *
 * <pre>{@code
 * Command.of("uname", "-r")
 * Command.shell("make -j2 && make test").cwd("/src").env("CI", "1")
 * Command.login().pty(Pty.of("xterm-256color", 24, 80))
 * }</pre>
 *
 * @param kind how the guest finds the program
 * @param argv the program and its arguments ({@link Kind#ARGV}); empty for the other kinds
 * @param line the shell line ({@link Kind#SHELL}); empty for the other kinds
 * @param env  variables added to (or replacing) the guest's login environment
 * @param cwd  the working directory, or null for the guest user's home
 * @param pty  a terminal for the process, or null for separate stdin, stdout and stderr pipes
 */
public record Command(Kind kind, List<String> argv, String line, Map<String, String> env, String cwd, Pty pty) {

    /** How the guest finds the program. */
    public enum Kind {
        /** {@code argv[0]}, looked up in PATH when it has no '/'. */
        ARGV,
        /** The guest user's shell with {@code -c line}, as sshd runs an exec request. */
        SHELL,
        /** The guest user's login shell, as sshd runs a shell request. */
        LOGIN,
        /** The guest's SFTP server, as sshd runs the {@code sftp} subsystem. */
        SFTP
    }

    public Command {
        Objects.requireNonNull(kind, "kind");
        argv = List.copyOf(argv);
        line = line == null ? "" : line;
        env = java.util.Collections.unmodifiableMap(new LinkedHashMap<>(env));
        if (kind == Kind.ARGV && argv.isEmpty()) {
            throw new IllegalArgumentException("a command needs at least a program name");
        }
        if (kind != Kind.ARGV && !argv.isEmpty()) {
            throw new IllegalArgumentException(kind + " takes no argv");
        }
        if (line.indexOf('\0') >= 0 || argv.stream().anyMatch(a -> a.indexOf('\0') >= 0)) {
            throw new IllegalArgumentException("a command cannot contain a NUL byte");
        }
        for (String name : env.keySet()) {
            if (name.isEmpty() || name.indexOf('=') >= 0 || name.indexOf('\0') >= 0) {
                throw new IllegalArgumentException("bad environment variable name '" + name + "'");
            }
        }
    }

    public static Command of(String... argv) {
        return of(List.of(argv));
    }

    public static Command of(List<String> argv) {
        return new Command(Kind.ARGV, argv, "", Map.of(), null, null);
    }

    /** {@code line} run by the guest user's shell, as {@code ssh host 'line'} runs it. */
    public static Command shell(String line) {
        return new Command(Kind.SHELL, List.of(), Objects.requireNonNull(line, "line"), Map.of(), null, null);
    }

    /** The guest user's login shell, as {@code ssh host} starts it. */
    public static Command login() {
        return new Command(Kind.LOGIN, List.of(), "", Map.of(), null, null);
    }

    /** The guest's SFTP server speaking on stdin and stdout, as the {@code sftp} subsystem runs it. */
    public static Command sftp() {
        return new Command(Kind.SFTP, List.of(), "", Map.of(), null, null);
    }

    public Command env(String name, String value) {
        return env(Map.of(name, value));
    }

    /** A copy with these variables added (later ones win). */
    public Command env(Map<String, String> vars) {
        Map<String, String> merged = new LinkedHashMap<>(env);
        merged.putAll(vars);
        return new Command(kind, argv, line, merged, cwd, pty);
    }

    public Command cwd(String dir) {
        return new Command(kind, argv, line, env, dir, pty);
    }

    public Command pty(Pty terminal) {
        return new Command(kind, argv, line, env, cwd, terminal);
    }

    /** For logs: what runs, without the environment. */
    @Override
    public String toString() {
        return switch (kind) {
            case ARGV -> String.join(" ", argv);
            case SHELL -> "shell: " + line;
            case LOGIN -> "login shell";
            case SFTP -> "sftp server";
        } + (pty != null ? " (pty)" : "");
    }
}
