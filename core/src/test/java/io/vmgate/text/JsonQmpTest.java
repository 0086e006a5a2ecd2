package io.vmgate.text;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.math.BigInteger;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;

class JsonQmpTest {
    @Test
    void parsesQmpMessages() throws Exception {
        Map<String, Object> greeting = Json.parseObject("""
                {"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2"}, "capabilities": ["oob"]}}""");
        assertThat(greeting).containsKey("QMP");
        Map<?, ?> qmp = (Map<?, ?>) greeting.get("QMP");
        assertThat(qmp.get("capabilities")).isEqualTo(List.of("oob"));
        assertThat(((Map<?, ?>) ((Map<?, ?>) qmp.get("version")).get("qemu")).get("major")).isEqualTo(7L);

        Map<String, Object> ev = Json.parseObject("{\"timestamp\": {\"seconds\": 1795334540, \"microseconds\": 561647},"
                + " \"event\": \"SHUTDOWN\", \"data\": {\"guest\": false, \"reason\": \"host-qmp-quit\"}}\r\n");
        assertThat(ev.get("event")).isEqualTo("SHUTDOWN");
        assertThat(((Map<?, ?>) ev.get("data")).get("guest")).isEqualTo(false);
    }

    @Test
    void scalarsAndEscapes() throws Exception {
        assertThat(Json.parse("null")).isNull();
        assertThat(Json.parse(" true ")).isEqualTo(true);
        assertThat(Json.parse("-12")).isEqualTo(-12L);
        assertThat(Json.parse("18446744073709551615")).isEqualTo(new BigInteger("18446744073709551615"));
        assertThat(Json.parse("1.5e3")).isEqualTo(1500.0);
        assertThat(Json.parse("\"a\\\"b\\\\c\\/d\\n\\u00e9\\ud83d\\ude00\"")).isEqualTo("a\"b\\c/d\né😀");
        assertThat(Json.parse("[]")).isEqualTo(List.of());
        assertThat(Json.parse("{}")).isEqualTo(Map.of());
    }

    @Test
    void writesWhatItReads() throws Exception {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("execute", "migrate");
        m.put("arguments", Map.of("uri", "exec:cat > \"state\"\n\u0001"));
        m.put("id", 7L);
        m.put("list", List.of(true, false, 1, 2.5));
        m.put("none", null);
        String s = Json.write(m);
        assertThat(s).doesNotContain("\n").startsWith("{\"execute\":\"migrate\"");
        Map<String, Object> back = Json.parseObject(s);
        assertThat(back.get("arguments")).isEqualTo(Map.of("uri", "exec:cat > \"state\"\n\u0001"));
        assertThat(back.get("list")).isEqualTo(List.of(true, false, 1L, 2.5));
        assertThat(back).containsEntry("none", null);
    }

    @Test
    void garbageIsAnErrorNotACrash() {
        for (String bad : List.of("", "{", "}", "[1,]", "{\"a\"}", "{\"a\":}", "{a:1}", "\"unterminated", "tru", "nul",
                "01", "-", "1.", ".5", "1e", "--1", "\"\\x\"", "\"\\u12\"", "\"\u0001\"", "[1 2]", "{} {}", "\"a\" x",
                "{\"a\":1,}", "NaN", "Infinity", "\\u0000")) {
            assertThatThrownBy(() -> Json.parse(bad)).as(bad).isInstanceOf(Json.JsonException.class);
        }
        assertThatThrownBy(() -> Json.parseObject("[1]")).isInstanceOf(Json.JsonException.class);
    }

    @Test
    void deepNestingIsRefusedWithoutStackOverflow() {
        String deep = "[".repeat(100_000) + "]".repeat(100_000);
        assertThatThrownBy(() -> Json.parse(deep)).isInstanceOf(Json.JsonException.class).hasMessageContaining("deeper");
        String deepObj = "{\"a\":".repeat(50_000) + "1" + "}".repeat(50_000);
        assertThatThrownBy(() -> Json.parse(deepObj)).isInstanceOf(Json.JsonException.class);
        assertThat(catchingParse("[".repeat(Json.MAX_DEPTH) + "]".repeat(Json.MAX_DEPTH))).isNull();
    }

    @Test
    void hugeTokensAreBounded() throws Exception {
        String bigString = "\"" + "x".repeat(4 << 20) + "\"";
        assertThat((String) Json.parse(bigString)).hasSize(4 << 20);
        assertThatThrownBy(() -> Json.parse("1".repeat(100_000))).isInstanceOf(Json.JsonException.class)
                .hasMessageContaining("too long");
        assertThat(Json.parse("1e" + "9".repeat(60))).isEqualTo(Double.POSITIVE_INFINITY);
    }

    @Test
    void randomBytesNeverEscapeAsRuntimeExceptions() {
        Random r = new Random(1);
        String alphabet = "{}[]\":,\\ tfn0123456789-+.eEu\u0000\u00ffab";
        for (int i = 0; i < 20_000; i++) {
            StringBuilder b = new StringBuilder();
            int n = r.nextInt(40);
            for (int j = 0; j < n; j++) {
                b.append(alphabet.charAt(r.nextInt(alphabet.length())));
            }
            catchingParse(b.toString());
        }
    }

    /** Parses, swallowing JsonException only: any other exception fails the test. */
    private static Json.JsonException catchingParse(String s) {
        try {
            Json.parse(s);
            return null;
        } catch (Json.JsonException e) {
            return e;
        }
    }
}
