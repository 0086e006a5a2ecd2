package io.vmgate.text;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** JSON as vmgate writes it (recordings, logs, the control socket) and reads it (the control socket). */
class JsonTest {
    @Test
    void stringsAreEscapedSoTheOutputIsValidJsonAndUtf8() {
        assertThat(Json.quote("plain")).isEqualTo("\"plain\"");
        assertThat(Json.quote("q\"b\\n\nr\rt\t")).isEqualTo("\"q\\\"b\\\\n\\nr\\rt\\t\"");
        assertThat(Json.quote("\u0000\u001b[1m\u007f")).isEqualTo("\"\\u0000\\u001b[1m\u007f\"");
        assertThat(Json.quote("\u2028\u2029")).isEqualTo("\"\\u2028\\u2029\"");
        assertThat(Json.quote("é😀")).isEqualTo("\"é😀\"");
        // A lone surrogate cannot be encoded as UTF-8: escaped instead.
        assertThat(Json.quote("a\ud83db")).isEqualTo("\"a\\ud83db\"");
        assertThat(Json.quote("a\ude00")).isEqualTo("\"a\\ude00\"");
    }

    @Test
    void whatIsWrittenParsesBack() throws Exception {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("s", "x\"\n\u0001é😀");
        m.put("n", 42L);
        m.put("b", true);
        m.put("z", null);
        m.put("l", List.of(1L, "two"));
        assertThat(Json.parseObject(Json.write(m))).isEqualTo(m);
    }

    @Test
    void hostileInputIsAnErrorNeverACrash() {
        assertThatThrownBy(() -> Json.parse("[".repeat(10_000))).isInstanceOf(Json.JsonException.class);
        assertThatThrownBy(() -> Json.parse("{\"a\":1} x")).isInstanceOf(Json.JsonException.class);
        assertThatThrownBy(() -> Json.parse("1".repeat(100))).isInstanceOf(Json.JsonException.class);
        assertThatThrownBy(() -> Json.parseObject("[]")).isInstanceOf(Json.JsonException.class);
        assertThatThrownBy(() -> Json.parse("\"\\u12\"")).isInstanceOf(Json.JsonException.class);
    }
}
