package io.vmgate.cli;

import io.vmgate.exec.Command;
import io.vmgate.exec.Execution;
import io.vmgate.exec.ExitStatus;
import io.vmgate.exec.Pty;
import io.vmgate.exec.Pump;
import io.vmgate.exec.Waiting;
import io.vmgate.sandbox.Sandbox;
import io.vmgate.sandbox.SandboxException;
import io.vmgate.sandbox.Sandboxes;
import java.io.FileOutputStream;
import java.io.FileDescriptor;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeoutException;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/** {@code vmgate run}: one command, a piped list of commands, or an interactive shell, in a fresh VM. */
@picocli.CommandLine.Command(name = "run", description = {
        "Run a command in a fresh microVM and exit with its status (128+N if killed by signal N).",
        "With no command: stdin not a terminal -> run its newline-separated commands in one shell,",
        "stopping at the first failure; stdin a terminal -> an interactive shell.",
        "Exit status 125 means vmgate itself failed (the message says why); 124 means --timeout expired."},
        mixinStandardHelpOptions = true)
final class RunCommand implements java.util.concurrent.Callable<Integer> {
    static final int VMGATE_FAILED = 125;
    static final int TIMED_OUT = 124;

    @Mixin
    VmOptions vmOptions;

    @Option(names = "--timeout", paramLabel = "SEC", description = "Kill the command after SEC seconds (exit 124).")
    Integer timeoutSeconds;

    @Option(names = {"-t", "--tty"}, description = "Give the command a terminal even when stdin is not one.")
    boolean tty;

    @Option(names = {"-e", "--env"}, paramLabel = "NAME=VALUE", description = "Set a variable in the guest (repeatable).")
    List<String> env = new ArrayList<>();

    @Option(names = {"-v", "--verbose"}, description = "Print per-phase timings to stderr.")
    boolean verbose;

    @Parameters(arity = "0..*", paramLabel = "CMD", description = "The command and its arguments (after --).")
    List<String> command = new ArrayList<>();

    private final OutputStream stdout = new FileOutputStream(FileDescriptor.out);
    private final OutputStream stderr = new FileOutputStream(FileDescriptor.err);

    @Override
    public Integer call() throws Exception {
        // Phases before the sandbox is ready are printed once it is, in time order: its QEMU may
        // have started (EarlyVm) before the options were even parsed.
        List<Sandbox.Phase> startup = new ArrayList<>();
        startup.add(new Sandbox.Phase("jvm_main", LaunchClock.mainEntered()));
        startup.add(new Sandbox.Phase("options_parsed", System.nanoTime()));
        Logging.configure(Logging.Format.text, verbose ? "INFO" : "ERROR");
        boolean stdinIsTerminal = Terminal.isTerminal(0);
        Command cmd = null;
        boolean feedStdin = true;
        int[] size = null;
        Map<String, String> extraEnv = parseEnv(env);
        Sandbox sandbox;
        try (Sandboxes engine = Sandboxes.builder(vmOptions.options()).abandonStartsOnExit()
                .buildProgress(ImageCommand.progress("rootfs")).build()) {
            // No command: the image's own (an OCI image's Entrypoint + Cmd, stdin passed on), else commands
            // from stdin, else a login shell.
            if (!command.isEmpty() || !engine.imageCommand().isEmpty()) {
                cmd = Command.of(command.isEmpty() ? engine.imageCommand() : command);
                tty |= command.isEmpty() && stdinIsTerminal;
            } else if (!stdinIsTerminal) {
                String input = new String(System.in.readAllBytes(), StandardCharsets.UTF_8);
                cmd = Command.of(CommandList.argv(input));
                feedStdin = false;
            } else {
                cmd = Command.login();
                tty = true;
            }
            cmd = cmd.env(extraEnv);
            if (tty) {
                size = stdinIsTerminal ? Terminal.size() : null;
                String term = System.getenv().getOrDefault("TERM", "xterm");
                cmd = cmd.pty(Pty.of(term, size != null ? size[0] : 0, size != null ? size[1] : 0));
            }
            EarlyVm.Taken early = EarlyVm.take(engine, vmId());
            if (early != null) {
                startup.add(new Sandbox.Phase("image_ready", early.imageReadyNanos()));
                sandbox = early.sandbox();
            } else {
                startup.add(new Sandbox.Phase("image_ready", System.nanoTime()));
                sandbox = engine.start(vmId(), phase -> { });
            }
        } catch (SandboxException e) {
            // Stopped by a signal mid-boot: the boot was abandoned on purpose, and the JVM exits with 128+N.
            return e.abandoned() ? VMGATE_FAILED : fail(e.getMessage());
        }
        Thread teardownOnExit = new Thread(sandbox::close, "vm-teardown");
        try {
            Runtime.getRuntime().addShutdownHook(teardownOnExit);
        } catch (IllegalStateException shuttingDown) {
            sandbox.close(); // a signal came while the sandbox started: the JVM exits with that signal's status
            return VMGATE_FAILED;
        }
        try {
            if (verbose) {
                startup.addAll(sandbox.startup());
                startup.sort(java.util.Comparator.comparingLong(Sandbox.Phase::nanoTime));
                startup.forEach(p -> phase(p.name(), p.nanoTime()));
            }
            return runIn(sandbox, cmd, feedStdin, size != null && stdinIsTerminal);
        } finally {
            sandbox.close();
            phase("teardown_done");
            try {
                Runtime.getRuntime().removeShutdownHook(teardownOnExit);
            } catch (IllegalStateException ignored) {
                // already shutting down: the hook runs anyway
            }
        }
    }

    static String vmId() {
        return "run-" + ProcessHandle.current().pid();
    }

    private int runIn(Sandbox sandbox, Command cmd, boolean feedStdin, boolean interactive) throws Exception {
        Execution p;
        try {
            p = sandbox.exec(cmd);
        } catch (IOException e) {
            return fail("cannot start the command: " + e.getMessage());
        }
        phase("command_started");
        String savedTerminal = interactive ? Terminal.enterRaw() : null;
        try {
            if (interactive) {
                Signals.onWindowChange(() -> {
                    int[] s = Terminal.size();
                    if (s != null) {
                        try {
                            p.resize(s[0], s[1]);
                        } catch (IOException ignored) {
                            // the VM is going away; the exit path reports it
                        }
                    }
                });
            } else {
                Signals.forward(List.of("INT", "TERM", "HUP", "QUIT"), name -> {
                    try {
                        p.signal(name);
                    } catch (IOException ignored) {
                        // nothing to signal any more
                    }
                });
            }
            if (feedStdin) {
                Pump.copy(System.in, p.stdin()).name("stdin-pump").closeTargetAtEnd().start();
            } else {
                p.stdin().close();
            }
            CompletableFuture<Long> out = Pump.copy(p.stdout(), stdout).name("stdout-pump").start();
            CompletableFuture<Long> err = Pump.copy(p.stderr(), stderr).name("stderr-pump").start();
            ExitStatus status;
            try {
                status = timeoutSeconds == null ? p.waitFor() : p.waitFor(Duration.ofSeconds(timeoutSeconds));
            } catch (TimeoutException e) {
                p.kill();
                Terminal.restore(savedTerminal);
                savedTerminal = null;
                return fail("the command did not finish within " + timeoutSeconds + " s and was killed", TIMED_OUT);
            } catch (IOException e) {
                // The VM died (the message says how) or vmgate lost it.
                Terminal.restore(savedTerminal);
                savedTerminal = null;
                return fail(e.getMessage() + "\n" + sandbox.diagnostics());
            }
            Waiting.await(CompletableFuture.allOf(out, err), Duration.ofSeconds(10));
            phase("exit");
            return status.shellCode();
        } finally {
            Terminal.restore(savedTerminal);
        }
    }

    private static Map<String, String> parseEnv(List<String> pairs) {
        var map = new java.util.LinkedHashMap<String, String>();
        for (String kv : pairs) {
            int eq = kv.indexOf('=');
            if (eq <= 0) {
                throw new picocli.CommandLine.ParameterException(new picocli.CommandLine(new RunCommand()),
                        "--env needs NAME=VALUE, got: " + kv);
            }
            map.put(kv.substring(0, eq), kv.substring(eq + 1));
        }
        return map;
    }

    private int fail(String message) {
        return fail(message, VMGATE_FAILED);
    }

    private int fail(String message, int code) {
        System.err.println("vmgate: " + message);
        System.err.flush();
        return code;
    }

    private void phase(String name) {
        phase(name, System.nanoTime());
    }

    private void phase(String name, long at) {
        if (verbose) {
            System.err.printf("vmgate: %-16s %7.1f ms%n", name, LaunchClock.millisSinceLaunch(at));
        }
    }
}
