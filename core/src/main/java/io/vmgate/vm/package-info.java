/**
 * The VM launcher contract ({@link io.vmgate.vm.Vm}, {@link io.vmgate.vm.VmLauncher}, {@link io.vmgate.vm.VmConfig})
 * and the launcher decorators that work with any VMM: the warm pool and abandoning launches on JVM exit.
 */
package io.vmgate.vm;
