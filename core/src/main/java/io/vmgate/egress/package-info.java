/**
 * Egress: the allowlist language, and the host end of the guest's HTTP proxy, which resolves
 * names on the host, applies the policy and limits, opens the connections a guest may make, and
 * logs every decision.
 */
package io.vmgate.egress;
