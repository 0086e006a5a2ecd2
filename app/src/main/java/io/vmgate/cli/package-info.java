/** The command line: {@code vmgate serve}, {@code vmgate run}, {@code vmgate image}. */
package io.vmgate.cli;
