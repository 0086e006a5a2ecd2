/** The host side of the agent protocol (docs/protocol.md): frames, messages, and a client that runs guest processes. */
package io.vmgate.agent;
