package example;

import io.vmgate.exec.Command;
import io.vmgate.exec.ExecResult;
import io.vmgate.exec.Execution;
import io.vmgate.sandbox.Sandbox;
import io.vmgate.sandbox.SandboxOptions;
import io.vmgate.sandbox.SshAccess;
import java.io.ByteArrayInputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.util.List;

/** The vmgate Sandbox API on one page. */
public final class HelloSandbox {
    public static void main(String[] args) throws Exception {
        // A fresh microVM: restored from a snapshot template, gone (with everything written in it) at close().
        try (Sandbox sandbox = Sandbox.start(SandboxOptions.builder().memoryMib(256).build())) {

            // Run a command to its end: exit status, stdout and stderr. A non-zero exit is a result, not an error.
            ExecResult uname = sandbox.run(Command.of("uname", "-r"));
            System.out.println("guest kernel: " + uname.out().strip() + " (exit status " + uname.exitCode() + ")");

            // A line for the guest's shell, with environment and a working directory.
            ExecResult shell = sandbox.run(Command.shell("echo \"$GREETING from $(pwd)\"; exit 3").env("GREETING", "hi").cwd("/tmp"));
            System.out.println("shell said: " + shell.out().strip() + " (exit status " + shell.exitCode() + ")");

            // Stream: write to stdin, read stdout as it comes.
            Execution rev = sandbox.exec(Command.of("rev"));
            try (OutputStream in = rev.stdin()) {
                in.write("stressed\n".getBytes(StandardCharsets.UTF_8));
            }
            System.out.println("rev said: " + new String(rev.stdout().readAllBytes(), StandardCharsets.UTF_8).strip()
                    + " (" + rev.waitFor() + ")");

            // Files in and out.
            sandbox.upload(new ByteArrayInputStream("some data\n".getBytes(StandardCharsets.UTF_8)), "/tmp/data.txt");
            System.out.println("wc said: " + sandbox.run("wc -c < /tmp/data.txt").out().strip() + " bytes");

            // An SSH endpoint for this sandbox, used with the real OpenSSH client.
            try (SshAccess ssh = sandbox.enableSsh()) {
                List<String> command = ssh.command("echo hello over ssh from $(hostname)");
                System.out.println("$ " + String.join(" ", command));
                int status = new ProcessBuilder(command).inheritIO().start().waitFor();
                System.out.println("ssh exit status: " + status);
                if (status != 0) {
                    System.exit(1);
                }
            }
        }
    }
}
