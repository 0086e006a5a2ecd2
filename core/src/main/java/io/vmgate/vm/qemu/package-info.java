/**
 * The QEMU driver behind {@link io.vmgate.vm.VmLauncher}: the command line, QMP, per-VM runtime
 * directories and their reaping, console capture, and snapshot templates restored into fresh QEMUs.
 */
package io.vmgate.vm.qemu;
