package io.vmgate.vm.qemu;

import java.util.Map;

/** An asynchronous QMP event such as {@code STOP}, {@code SHUTDOWN} or {@code MIGRATION}. */
public record QmpEvent(String name, Map<String, Object> data, long timestampMicros) {
    public QmpEvent {
        data = data == null ? Map.of() : data;
    }
}
