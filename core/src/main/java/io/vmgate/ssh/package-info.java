/** The SSH front door: Apache MINA SSHD, auth and policy, and one fresh microVM per SSH connection. */
package io.vmgate.ssh;
