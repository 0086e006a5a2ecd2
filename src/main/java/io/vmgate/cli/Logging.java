package io.vmgate.cli;

import ch.qos.logback.classic.Level;
import ch.qos.logback.classic.LoggerContext;
import ch.qos.logback.classic.encoder.JsonEncoder;
import ch.qos.logback.classic.encoder.PatternLayoutEncoder;
import ch.qos.logback.classic.spi.ILoggingEvent;
import ch.qos.logback.core.ConsoleAppender;
import ch.qos.logback.core.encoder.Encoder;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Log set-up: events go to stderr as text ({@code time level [sid] event key=value...})
 * or as one JSON object per line. The session id travels in the MDC key {@code sid}.
 */
public final class Logging {
    private Logging() {}

    public enum Format { text, json }

    static void configure(Format format, String level) {
        LoggerContext ctx = (LoggerContext) LoggerFactory.getILoggerFactory();
        ctx.reset();
        configure(ctx, format, level);
    }

    static void configure(LoggerContext ctx, Format format, String level) {
        Encoder<ILoggingEvent> encoder;
        if (format == Format.json) {
            JsonEncoder json = new JsonEncoder();
            json.setWithSequenceNumber(false);
            json.setWithNanoseconds(false);
            json.setWithContext(false);
            encoder = json;
        } else {
            PatternLayoutEncoder text = new PatternLayoutEncoder();
            text.setPattern("%d{yyyy-MM-dd'T'HH:mm:ss.SSSXXX} %-5level [%X{sid:--}] %msg%n%ex{short}");
            encoder = text;
        }
        encoder.setContext(ctx);
        encoder.start();
        ConsoleAppender<ILoggingEvent> out = new ConsoleAppender<>();
        out.setContext(ctx);
        out.setName("stderr");
        out.setTarget("System.err");
        out.setEncoder(encoder);
        out.start();
        ch.qos.logback.classic.Logger root = ctx.getLogger(Logger.ROOT_LOGGER_NAME);
        root.setLevel(Level.toLevel(level, Level.INFO));
        root.addAppender(out);
        // MINA is chatty at INFO about things our own events already say.
        ctx.getLogger("org.apache.sshd").setLevel(Level.WARN);
        // MINA's own lines from our subclasses of its classes: same treatment.
        ctx.getLogger("io.vmgate.ssh.VmChannelSession").setLevel(Level.WARN);
        ctx.getLogger("io.vmgate.ssh.Channels").setLevel(Level.WARN);
    }
}
