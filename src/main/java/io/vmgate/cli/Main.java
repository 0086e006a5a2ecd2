package io.vmgate.cli;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/** Entry point of the {@code vmgate} command. */
@Command(name = "vmgate", mixinStandardHelpOptions = true, version = "vmgate 0.1.0",
        description = "An SSH server that gives every connection its own disposable microVM.",
        subcommands = {ServeCommand.class, RunCommand.class, ImageCommand.class})
public final class Main {

    public static void main(String[] args) {
        CommandLine cli = new CommandLine(new Main());
        try {
            cli.setDefaultValueProvider(ConfigDefaults.from(args, System.getenv()));
        } catch (java.io.IOException e) {
            System.err.println("vmgate: " + e.getMessage());
            System.exit(RunCommand.VMGATE_FAILED);
        }
        cli.setExecutionExceptionHandler((e, cmd, parsed) -> {
            System.err.println("vmgate: " + (e.getMessage() != null ? e.getMessage() : e.toString()));
            if (System.getenv("VMGATE_DEBUG") != null) {
                e.printStackTrace();
            }
            return RunCommand.VMGATE_FAILED;
        });
        System.exit(cli.execute(args));
    }
}
