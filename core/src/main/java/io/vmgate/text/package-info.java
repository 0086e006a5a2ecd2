/**
 * The text formats vmgate writes and reads besides its own wire: JSON values ({@link io.vmgate.text.Json})
 * and the {@code key=value} fields of log events ({@link io.vmgate.text.KeyValue}). Depends on nothing
 * but the JDK.
 */
package io.vmgate.text;
