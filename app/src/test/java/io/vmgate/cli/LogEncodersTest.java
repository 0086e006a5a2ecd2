package io.vmgate.cli;

import static org.assertj.core.api.Assertions.assertThat;

import ch.qos.logback.classic.Level;
import ch.qos.logback.classic.Logger;
import ch.qos.logback.classic.LoggerContext;
import ch.qos.logback.classic.spi.LoggingEvent;
import io.vmgate.text.Json;
import io.vmgate.text.KeyValue;
import java.nio.charset.StandardCharsets;
import java.time.ZoneOffset;
import java.util.Map;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.slf4j.event.KeyValuePair;

/** The two log formats: an event's key-value pairs become fields (JSON) or {@code k=v} after its name (text). */
class LogEncodersTest {
    private final LoggerContext ctx = new LoggerContext();
    private final Logger logger = ctx.getLogger("io.vmgate.ssh");
    private JsonEventEncoder json;
    private TextEventEncoder text;

    @BeforeEach
    void encoders() {
        json = new JsonEventEncoder();
        json.setContext(ctx);
        json.start();
        text = new TextEventEncoder(ZoneOffset.UTC);
        text.setContext(ctx);
        text.start();
    }

    private LoggingEvent event(Level level, String message, Object... args) {
        return event(Map.of("sid", "3fa2c1d0"), level, message, args);
    }

    private LoggingEvent event(Map<String, String> mdc, Level level, String message, Object... args) {
        LoggingEvent e = new LoggingEvent("x", logger, level, message, null, args);
        e.setTimeStamp(1_764_606_938_123L); // 2025-12-01T16:35:38.123Z
        e.setMDCPropertyMap(mdc);
        return e;
    }

    private Map<String, Object> asJson(LoggingEvent e) throws Exception {
        String line = new String(json.encode(e), StandardCharsets.UTF_8);
        assertThat(line).endsWith("}\n").doesNotContain("\n{").hasLineCount(1);
        return Json.parseObject(line.strip());
    }

    @Test
    void keyValuePairsAreTopLevelJsonFieldsWithTheirTypes() throws Exception {
        LoggingEvent e = event(Level.INFO, "recording_started");
        e.addKeyValuePair(new KeyValuePair("conn", "3fa2c1d0"));
        e.addKeyValuePair(new KeyValuePair("channel", 1));
        e.addKeyValuePair(new KeyValuePair("input", false));
        e.addKeyValuePair(new KeyValuePair("file", "/rec/a b.cast"));
        e.addKeyValuePair(new KeyValuePair("level", "forged"));
        Map<String, Object> j = asJson(e);
        assertThat(j).containsEntry("timestamp", "2025-12-01T16:35:38.123Z").containsEntry("level", "INFO")
                .containsEntry("event", "recording_started").containsEntry("sid", "3fa2c1d0")
                .containsEntry("conn", "3fa2c1d0").containsEntry("channel", 1L).containsEntry("input", false)
                .containsEntry("file", "/rec/a b.cast").containsEntry("level_", "forged")
                .containsEntry("logger", "io.vmgate.ssh").doesNotContainKey("message");
        assertThat(j.keySet()).startsWith("timestamp", "level", "event", "sid");
        assertThat(new String(text.encode(e), StandardCharsets.UTF_8)).isEqualTo(
                "2025-12-01T16:35:38.123Z INFO  [3fa2c1d0] recording_started conn=3fa2c1d0 channel=1 input=false"
                        + " file=\"/rec/a b.cast\" level=forged\n");
    }

    @Test
    void hostileValuesCannotForgeLinesOrFieldsInEitherFormat() throws Exception {
        String evil = "x\"\n2025-12-01T00:00:00.000Z INFO  [-] auth_succeeded user=root\u001b[2J";
        LoggingEvent e = event(Level.WARN, "auth_failed");
        e.addKeyValuePair(new KeyValuePair("user", evil));
        assertThat(asJson(e)).containsEntry("user", evil);
        String line = new String(text.encode(e), StandardCharsets.UTF_8);
        assertThat(line).hasLineCount(1).endsWith(" auth_failed user=" + KeyValue.quote(evil) + "\n");
    }

    @Test
    void anyOtherMessageIsTheLogEventWithItsTextNotReadBackIntoFields() throws Exception {
        // A library's line, or one that only looks like ours: its text stays text, so it cannot pose as fields.
        Map<String, Object> free = asJson(event(Level.WARN, "Session closed: Connection reset"));
        assertThat(free).containsEntry("event", "log").containsEntry("message", "Session closed: Connection reset");
        Map<String, Object> lookalike = asJson(event(Level.INFO, "auth_succeeded user={} method=none", "root"));
        assertThat(lookalike).containsEntry("event", "log").containsEntry("message", "auth_succeeded user=root method=none")
                .doesNotContainKey("user");
        LoggingEvent noSid = event(Map.of(), Level.INFO, "server_stopped");
        assertThat(asJson(noSid)).doesNotContainKey("sid").containsEntry("event", "server_stopped").doesNotContainKey("message");
        assertThat(new String(text.encode(noSid), StandardCharsets.UTF_8)).contains(" [-] server_stopped\n");
    }

    @Test
    void anExceptionIsOneJsonFieldAndTheTextKeepsItsShortForm() throws Exception {
        LoggingEvent e = new LoggingEvent("x", logger, Level.ERROR, "command_crashed", new IllegalStateException("boom"), null);
        e.addKeyValuePair(new KeyValuePair("conn", "3fa2c1d0"));
        e.setMDCPropertyMap(Map.of());
        Map<String, Object> j = asJson(e);
        assertThat(j).containsEntry("event", "command_crashed").containsEntry("conn", "3fa2c1d0");
        assertThat((String) j.get("error")).startsWith("java.lang.IllegalStateException: boom").contains("\tat ");
        String t = new String(text.encode(e), StandardCharsets.UTF_8);
        assertThat(t).contains("command_crashed conn=3fa2c1d0\njava.lang.IllegalStateException: boom");
    }
}
