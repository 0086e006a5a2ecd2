/**
 * Session recordings in asciinema's asciicast v2 format: one file per channel, written off the
 * session's threads, with an optional size cap ({@link io.vmgate.record.Recordings},
 * {@link io.vmgate.record.Asciicast}). Depends on nothing but the JDK (and {@code io.vmgate.text}).
 * The format as vmgate writes it: {@code docs/recording.md}.
 */
package io.vmgate.record;
