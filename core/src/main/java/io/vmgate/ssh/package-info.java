/**
 * The SSH front door (Apache MINA SSHD): auth and policy, session channels with OpenSSH's
 * semantics, limits and timeouts, each connection running its commands in a guest it gets from a
 * {@link io.vmgate.ssh.GuestSource} (for {@code vmgate serve}, a fresh sandbox per connection).
 */
package io.vmgate.ssh;
