/**
 * The text formats vmgate writes and reads besides its own wire: JSON values ({@link io.vmgate.text.Json}),
 * the {@code key=value} fields of log events ({@link io.vmgate.text.KeyValue}) and durations as
 * operators write them ({@link io.vmgate.text.Durations}). Depends on nothing but the JDK.
 */
package io.vmgate.text;
