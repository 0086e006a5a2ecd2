package io.vmgate.ssh;

import static org.assertj.core.api.Assertions.assertThat;

import ch.qos.logback.classic.Level;
import ch.qos.logback.classic.Logger;
import ch.qos.logback.classic.spi.ILoggingEvent;
import ch.qos.logback.core.read.ListAppender;
import io.vmgate.text.EventText;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.function.BooleanSupplier;
import java.util.function.Consumer;
import java.util.function.Predicate;
import org.slf4j.LoggerFactory;

/** A {@link VmgateSshServer} on a free loopback port whose "VMs" are stdio agents, plus its log events. */
final class TestServer implements AutoCloseable {
    final StdioAgentVm.Launcher launcher = new StdioAgentVm.Launcher();
    final VmgateSshServer server;
    final Path dir;
    final ServerConfig config;
    private final ListAppender<ILoggingEvent> events = new ListAppender<>();
    private final Logger logger = (Logger) LoggerFactory.getLogger("io.vmgate.ssh");

    private TestServer(Path dir, Consumer<ServerConfig.Builder> tweak) throws Exception {
        this.dir = dir;
        ServerConfig.Builder b = ServerConfig.builder(launcher, dir.resolve("state/host_ed25519_key")).port(0);
        tweak.accept(b);
        this.config = b.build();
        events.start();
        logger.addAppender(events);
        logger.setLevel(Level.INFO);
        this.server = new VmgateSshServer(config);
        server.start();
    }

    static TestServer start(Path dir) throws Exception {
        return new TestServer(dir, b -> { });
    }

    static TestServer start(Path dir, Consumer<ServerConfig.Builder> tweak) throws Exception {
        return new TestServer(dir, tweak);
    }

    int port() {
        return server.port();
    }

    SshClientHelper ssh() {
        return SshClientHelper.forPort(port());
    }

    /** The server's own events (logger {@code io.vmgate.ssh}, not MINA's lines from our subclasses). */
    List<ILoggingEvent> events() {
        synchronized (events) {
            return events.list.stream().filter(e -> e.getLoggerName().equals("io.vmgate.ssh")).toList();
        }
    }

    /** Each event as the text log writes it: {@code event key=value ...} ({@link EventText#line}). */
    List<String> lines() {
        return events().stream().map(EventText::line).toList();
    }

    /** The number of events so far: pass it to {@link #awaitEvent} to look only at later ones. */
    int mark() {
        return events().size();
    }

    List<ILoggingEvent> eventsSince(int mark) {
        List<ILoggingEvent> all = events();
        return all.subList(Math.min(mark, all.size()), all.size());
    }

    /** Waits (up to 20 s) for a log event after {@code mark} matching the predicate, failing the test otherwise. */
    ILoggingEvent awaitEvent(int mark, Predicate<ILoggingEvent> p, String what) {
        await(() -> eventsSince(mark).stream().anyMatch(p),
                () -> what + "; events: " + eventsSince(mark).stream().map(EventText::line).toList());
        return eventsSince(mark).stream().filter(p).findFirst().orElseThrow();
    }

    /** Waits for an event named {@code name} with the {@code fields} ({@code key=value ...}, maybe none) after {@code mark}. */
    ILoggingEvent awaitEvent(int mark, String name, String fields) {
        return awaitEvent(mark, e -> EventText.matches(e, name, fields), "log event " + name + " with " + fields);
    }

    /** Every VM launched so far is closed and no slot is held. */
    void awaitAllVmsDestroyed() {
        await(() -> server.liveSessions() == 0 && launcher.launched.stream().allMatch(v -> v.isClosed() && !v.isAlive()),
                () -> "all VMs destroyed (live=" + server.liveSessions() + ")");
    }

    static void await(BooleanSupplier condition, String what) {
        await(condition, () -> what);
    }

    /** Polls the condition for up to 20 s; the description is computed only if it times out. */
    static void await(BooleanSupplier condition, java.util.function.Supplier<String> what) {
        long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("timed out waiting for: " + what.get());
            }
            try {
                Thread.sleep(20);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new AssertionError("interrupted waiting for: " + what.get());
            }
        }
    }

    @Override
    public void close() {
        try {
            server.stop();
            for (StdioAgentVm vm : launcher.launched) {
                assertThat(vm.isClosed()).as("VM %s closed after stop()", vm.id()).isTrue();
                vm.close();
            }
        } finally {
            logger.detachAppender(events);
        }
    }
}
