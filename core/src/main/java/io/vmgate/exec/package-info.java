/**
 * Running a command in a guest: the values and streams that the Sandbox API, {@code vmgate run} and
 * the SSH front door share ({@link io.vmgate.exec.Command}, {@link io.vmgate.exec.Execution},
 * {@link io.vmgate.exec.ExitStatus}), and the one stream bridge ({@link io.vmgate.exec.Pump}).
 * Depends on nothing but the JDK.
 */
package io.vmgate.exec;
