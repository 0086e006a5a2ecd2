/**
 * The Sandbox API: disposable Linux microVMs for Java programs.
 *
 * <pre>{@code
 * try (Sandbox sandbox = Sandbox.start(SandboxOptions.defaults())) {
 *     ExecResult r = sandbox.run(Command.of("uname", "-r"));
 *     System.out.println(r.out() + " exit " + r.exitCode());
 *     sandbox.upload(Path.of("data.csv"), "/tmp/data.csv");
 *     try (SshAccess ssh = sandbox.enableSsh()) {
 *         new ProcessBuilder(ssh.command("ls", "/tmp")).inheritIO().start().waitFor();
 *     }
 * }
 * }</pre>
 *
 * {@link io.vmgate.sandbox.SandboxOptions} says what a sandbox is (image, CPUs, memory, limits);
 * {@link io.vmgate.sandbox.Sandboxes} starts many of one kind (restoring each from a snapshot template,
 * optionally from a warm pool); {@link io.vmgate.sandbox.Sandbox} runs commands
 * ({@link io.vmgate.exec.Command} in, {@link io.vmgate.exec.Execution} or
 * {@link io.vmgate.exec.ExecResult} out), moves files and opens an SSH endpoint. The command line's
 * {@code run} and {@code serve} are built on exactly this.
 */
package io.vmgate.sandbox;
