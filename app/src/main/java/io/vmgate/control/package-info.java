/**
 * The local control socket of {@code vmgate serve} (a Unix socket only its owner may use): JSON
 * lines to list and end live sessions, as {@code docs/control.md} specifies; the server side and
 * the client {@code vmgate sessions} uses.
 */
package io.vmgate.control;
