package io.vmgate.cli;

import ch.qos.logback.classic.pattern.ThrowableProxyConverter;
import ch.qos.logback.classic.spi.ILoggingEvent;
import ch.qos.logback.core.encoder.EncoderBase;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.ZoneId;
import java.time.format.DateTimeFormatter;
import java.util.List;

/**
 * {@code --log-format text}: {@code 2026-12-01T16:35:38.123+00:00 INFO  [sid] event key=value ...},
 * one line per event: its name (the message), then its key-value pairs, each value quoted when
 * needed ({@link io.vmgate.text.KeyValue#quote}); an exception follows as its first line and frame.
 */
public final class TextEventEncoder extends EncoderBase<ILoggingEvent> {
    private static final DateTimeFormatter TIME = DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss.SSSXXX");
    private final ZoneId zone;
    private final ThrowableProxyConverter throwable = new ThrowableProxyConverter();

    public TextEventEncoder() {
        this(ZoneId.systemDefault());
    }

    TextEventEncoder(ZoneId zone) {
        this.zone = zone;
    }

    @Override
    public void start() {
        throwable.setOptionList(List.of("short"));
        throwable.setContext(getContext());
        throwable.start();
        super.start();
    }

    @Override
    public byte[] headerBytes() {
        return null;
    }

    @Override
    public byte[] encode(ILoggingEvent e) {
        StringBuilder b = new StringBuilder(160);
        TIME.formatTo(Instant.ofEpochMilli(e.getTimeStamp()).atZone(zone), b);
        String level = e.getLevel().toString();
        b.append(' ').append(level);
        for (int i = level.length(); i < 5; i++) {
            b.append(' ');
        }
        String sid = e.getMDCPropertyMap().get("sid");
        b.append(" [").append(sid == null ? "-" : sid).append("] ");
        b.append(e.getFormattedMessage()).append(LogEvent.pairsAsText(e)).append('\n');
        if (e.getThrowableProxy() != null) {
            b.append(throwable.convert(e));
        }
        return b.toString().getBytes(StandardCharsets.UTF_8);
    }

    @Override
    public byte[] footerBytes() {
        return null;
    }
}
