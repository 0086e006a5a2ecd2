/** Runs microVMs: the QEMU driver (command line, QMP, runtime directories, teardown) behind the {@link io.vmgate.vm.Vm} interface. */
package io.vmgate.vm;
