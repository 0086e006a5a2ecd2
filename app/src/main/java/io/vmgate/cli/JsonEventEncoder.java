package io.vmgate.cli;

import ch.qos.logback.classic.spi.ILoggingEvent;
import ch.qos.logback.classic.spi.ThrowableProxyUtil;
import ch.qos.logback.core.encoder.EncoderBase;
import io.vmgate.text.Json;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.Map;
import java.util.Set;

/**
 * {@code --log-format json}: one JSON object per line,
 * {@code {"timestamp":"2026-12-01T16:35:38.123Z","level":"INFO","event":"vm_ready","sid":"3fa2c1d0","vm":"ssh-3fa2c1d0","ms":123,...}}:
 * the event's fields at the top level ({@link LogEvent}), then {@code logger}, {@code message} (text
 * that is not fields, if any) and {@code error} (an exception's stack trace, if any). A field named
 * like one of those keys is written with a trailing underscore ({@code level_}).
 */
public final class JsonEventEncoder extends EncoderBase<ILoggingEvent> {
    static final Set<String> RESERVED = Set.of("timestamp", "level", "event", "sid", "logger", "message", "error");
    private static final DateTimeFormatter TIME = DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss.SSSXXX").withZone(ZoneOffset.UTC);

    @Override
    public byte[] headerBytes() {
        return null;
    }

    @Override
    public byte[] encode(ILoggingEvent e) {
        LogEvent ev = LogEvent.of(e);
        StringBuilder b = new StringBuilder(256).append('{');
        field(b, "timestamp", TIME.format(Instant.ofEpochMilli(e.getTimeStamp())), true);
        field(b, "level", e.getLevel().toString(), false);
        field(b, "event", ev.name(), false);
        String sid = e.getMDCPropertyMap().get("sid");
        if (sid != null) {
            field(b, "sid", sid, false);
        }
        for (Map.Entry<String, Object> f : ev.fields().entrySet()) {
            String key = RESERVED.contains(f.getKey()) ? f.getKey() + "_" : f.getKey();
            field(b, key, f.getValue(), false);
        }
        field(b, "logger", e.getLoggerName(), false);
        if (ev.message() != null) {
            field(b, "message", ev.message(), false);
        }
        if (e.getThrowableProxy() != null) {
            field(b, "error", ThrowableProxyUtil.asString(e.getThrowableProxy()), false);
        }
        return b.append("}\n").toString().getBytes(StandardCharsets.UTF_8);
    }

    private static void field(StringBuilder b, String key, Object value, boolean first) {
        if (!first) {
            b.append(',');
        }
        Json.quote(b, key);
        b.append(':');
        if (value instanceof Double d && !Double.isFinite(d) || value instanceof Float f && !Float.isFinite(f)) {
            value = value.toString();
        }
        Json.write(b, value);
    }

    @Override
    public byte[] footerBytes() {
        return null;
    }
}
