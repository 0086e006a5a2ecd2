package io.vmgate.cli;

import ch.qos.logback.classic.Level;
import ch.qos.logback.classic.LoggerContext;
import ch.qos.logback.classic.spi.ILoggingEvent;
import ch.qos.logback.core.ConsoleAppender;
import ch.qos.logback.core.encoder.Encoder;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Log set-up: events go to stderr as text ({@code time level [sid] event key=value...},
 * {@link TextEventEncoder}) or as one JSON object per line with the event's fields at the top level
 * ({@link JsonEventEncoder}). The session id travels in the MDC key {@code sid}.
 */
public final class Logging {
    private Logging() {}

    public enum Format { text, json }

    private static Thread initialisation;
    private static volatile Format configured;
    /** The level logback starts with, before the command sets its own (see {@link DefaultLogConfigurator}). */
    private static volatile String initialLevel = "WARN";

    /**
     * Starts logback on another core while picocli parses the command line: it costs ~0.1 s
     * of class loading, which {@code vmgate run} would otherwise add to every VM's start.
     * {@code level} applies from the start, also to events logged (and queued by SLF4J) while
     * logback was still starting.
     */
    static synchronized void initialiseInBackground(String level) {
        initialLevel = level;
        if (initialisation == null) {
            initialisation = Thread.ofPlatform().daemon().name("log-init").start(LoggerFactory::getILoggerFactory);
        }
    }

    static void configure(Format format, String level) {
        awaitInitialisation();
        LoggerContext ctx = (LoggerContext) LoggerFactory.getILoggerFactory();
        if (configured == format) {
            ctx.getLogger(Logger.ROOT_LOGGER_NAME).setLevel(Level.toLevel(level, Level.INFO));
            return; // the appender is already the one wanted: building another costs time
        }
        ctx.reset();
        configure(ctx, format, level);
    }

    static String initialLevel() {
        return initialLevel;
    }

    private static void awaitInitialisation() {
        Thread t;
        synchronized (Logging.class) {
            t = initialisation;
        }
        if (t != null) {
            try {
                t.join();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }

    static void configure(LoggerContext ctx, Format format, String level) {
        configured = format;
        Encoder<ILoggingEvent> encoder = format == Format.json ? new JsonEventEncoder() : new TextEventEncoder();
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
