package io.vmgate.cli;

import java.util.Map;
import java.util.function.Supplier;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/** Entry point of the {@code vmgate} command. */
@Command(name = "vmgate", mixinStandardHelpOptions = true, version = "vmgate 0.1.0",
        description = "An SSH server that gives every connection its own disposable microVM.")
public final class Main {
    /**
     * The subcommands, in help order. Only the one being invoked is handed to picocli: building
     * the model of every command costs ~0.3 s of interpreted reflection, and `vmgate run` pays
     * start-up on every VM.
     */
    private static final Map<String, Supplier<Object>> SUBCOMMANDS = new java.util.LinkedHashMap<>();

    static {
        SUBCOMMANDS.put("serve", ServeCommand::new);
        SUBCOMMANDS.put("run", RunCommand::new);
        SUBCOMMANDS.put("image", ImageCommand::new);
        SUBCOMMANDS.put("sessions", SessionsCommand::new);
    }

    public static void main(String[] args) {
        LaunchClock.start();
        // Log calls made while logback starts are queued and replayed; SLF4J would say so on stderr.
        System.setProperty("slf4j.internal.verbosity", "ERROR");
        // Logback first, on its own thread: the early VM's classes log, and must not wait for it.
        Logging.initialiseInBackground(initialLogLevel(args));
        EarlyVm.startIfPredictable(args, System.getenv());
        EarlyVm.awaitQemuStarted(java.time.Duration.ofSeconds(1));
        int status;
        try {
            status = execute(args);
        } finally {
            EarlyVm.discardUntaken(); // help, a usage error: whatever was started early goes
        }
        System.exit(status);
    }

    /**
     * {@code run} is quiet unless {@code --verbose} (it sets that itself once parsed); saying so
     * before parsing keeps what its early VM logs meanwhile just as quiet.
     */
    static String initialLogLevel(String[] args) {
        if (args.length == 0 || !args[0].equals("run")) {
            return "WARN";
        }
        for (String a : args) {
            if (a.equals("--")) {
                break;
            }
            if (a.equals("-v") || a.equals("--verbose")) {
                return "INFO";
            }
        }
        return "ERROR";
    }

    static int execute(String[] args) {
        CommandLine cli = commandLine(args);
        try {
            cli.setDefaultValueProvider(ConfigDefaults.from(args, System.getenv()));
        } catch (java.io.IOException e) {
            System.err.println("vmgate: " + e.getMessage());
            return RunCommand.VMGATE_FAILED;
        }
        cli.setExecutionExceptionHandler((e, cmd, parsed) -> {
            System.err.println("vmgate: " + (e.getMessage() != null ? e.getMessage() : e.toString()));
            if (System.getenv("VMGATE_DEBUG") != null) {
                e.printStackTrace();
            }
            return RunCommand.VMGATE_FAILED;
        });
        return cli.execute(args);
    }

    /** The whole tree for help and mistakes; just the invoked subcommand otherwise. */
    static CommandLine commandLine(String[] args) {
        CommandLine cli = new CommandLine(new Main());
        Supplier<Object> only = args.length > 0 ? SUBCOMMANDS.get(args[0]) : null;
        if (only != null) {
            cli.addSubcommand(args[0], only.get());
        } else {
            SUBCOMMANDS.forEach((name, make) -> cli.addSubcommand(name, make.get()));
        }
        return cli;
    }
}
