package io.vmgate.cli;

import io.vmgate.agent.ExitStatus;
import io.vmgate.agent.GuestProcess;
import io.vmgate.agent.ProcessSpec;
import io.vmgate.agent.PtySpec;
import io.vmgate.vm.Vm;
import io.vmgate.vm.VmConfig;
import io.vmgate.vm.VmException;
import java.io.FileOutputStream;
import java.io.FileDescriptor;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/** {@code vmgate run}: one command, a piped list of commands, or an interactive shell, in a fresh VM. */
@Command(name = "run", description = {
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
        // Phases before the VM is ready are printed once it is, in time order: its QEMU may have
        // started (EarlyVm) before the options were even parsed.
        List<Vm.Phase> startup = new ArrayList<>();
        startup.add(new Vm.Phase("jvm_main", LaunchClock.mainEntered()));
        startup.add(new Vm.Phase("options_parsed", System.nanoTime()));
        Logging.configure(Logging.Format.text, verbose ? "INFO" : "ERROR");
        boolean stdinIsTerminal = Terminal.isTerminal(0);
        ProcessSpec spec;
        boolean feedStdin = true;
        if (!command.isEmpty()) {
            spec = ProcessSpec.exec(command);
        } else if (!stdinIsTerminal) {
            String input = new String(System.in.readAllBytes(), StandardCharsets.UTF_8);
            spec = ProcessSpec.exec(CommandList.argv(input));
            feedStdin = false;
        } else {
            spec = ProcessSpec.exec(List.of("/bin/sh", "-l"));
            tty = true;
        }
        spec = spec.withEnv(parseEnv(env));
        int[] size = null;
        if (tty) {
            size = stdinIsTerminal ? Terminal.size() : null;
            String term = System.getenv().getOrDefault("TERM", "xterm");
            spec = spec.withPty(PtySpec.of(term, size != null ? size[0] : 0, size != null ? size[1] : 0));
        }

        Vm vm;
        try {
            VmConfig config = vmOptions.config();
            EarlyVm.Taken early = EarlyVm.take(config, vmOptions.noSnapshot, vmId());
            if (early != null) {
                startup.add(new Vm.Phase("image_ready", early.imageReadyNanos()));
                vm = early.vm();
            } else {
                startup.add(new Vm.Phase("image_ready", System.nanoTime()));
                vm = AbortableBoot.launch(VmOptions.launcher(config, vmOptions.noSnapshot, false), vmId(), phase -> { });
            }
        } catch (VmException e) {
            // Stopped by a signal mid-boot: the boot was abandoned on purpose, and the JVM exits with 128+N.
            return AbortableBoot.stopping() ? VMGATE_FAILED : fail(e.getMessage());
        }
        Thread teardownOnExit = new Thread(vm::close, "vm-teardown");
        try {
            Runtime.getRuntime().addShutdownHook(teardownOnExit);
        } catch (IllegalStateException shuttingDown) {
            vm.close(); // a signal came while the VM started: the JVM exits with that signal's status
            return VMGATE_FAILED;
        }
        try {
            if (verbose) {
                startup.addAll(vm.phases());
                startup.sort(java.util.Comparator.comparingLong(Vm.Phase::nanoTime));
                startup.forEach(p -> phase(p.name(), p.nanoTime()));
            }
            return runIn(vm, spec, feedStdin, size != null && stdinIsTerminal);
        } finally {
            vm.close();
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

    private int runIn(Vm vm, ProcessSpec spec, boolean feedStdin, boolean interactive) throws Exception {
        GuestProcess p;
        try {
            p = vm.agent().start(spec);
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
                Thread.ofVirtual().name("stdin-pump").start(() -> pump(System.in, p.stdin(), true));
            } else {
                closeQuietly(p.stdin());
            }
            CompletableFuture<Void> out = CompletableFuture.runAsync(() -> pump(p.stdout(), stdout, false), Thread::startVirtualThread);
            CompletableFuture<Void> err = CompletableFuture.runAsync(() -> pump(p.stderr(), stderr, false), Thread::startVirtualThread);
            CompletableFuture<ExitStatus> exit = p.exit();
            // A VM that dies ends the wait too: exit() fails when the agent connection drops.
            vm.exited().thenRun(() -> exit.completeExceptionally(new IOException("the VM stopped unexpectedly")));
            ExitStatus status;
            try {
                status = timeoutSeconds == null ? exit.get() : exit.get(timeoutSeconds, TimeUnit.SECONDS);
            } catch (TimeoutException e) {
                p.kill();
                Terminal.restore(savedTerminal);
                savedTerminal = null;
                return fail("the command did not finish within " + timeoutSeconds + " s and was killed", TIMED_OUT);
            } catch (ExecutionException e) {
                Terminal.restore(savedTerminal);
                savedTerminal = null;
                return fail(e.getCause().getMessage() + "\n" + vm.diagnostics());
            }
            CompletableFuture.allOf(out, err).get(10, TimeUnit.SECONDS);
            phase("exit");
            return status.shellCode();
        } finally {
            Terminal.restore(savedTerminal);
        }
    }

    private static void pump(InputStream in, OutputStream out, boolean closeOut) {
        byte[] buf = new byte[32 * 1024];
        try {
            int n;
            while ((n = in.read(buf)) >= 0) {
                out.write(buf, 0, n);
                out.flush();
            }
        } catch (IOException ignored) {
            // the other side is gone; the exit path reports why
        } finally {
            if (closeOut) {
                closeQuietly(out);
            }
        }
    }

    private static void closeQuietly(OutputStream out) {
        try {
            out.close();
        } catch (IOException ignored) {
            // nothing to do
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
