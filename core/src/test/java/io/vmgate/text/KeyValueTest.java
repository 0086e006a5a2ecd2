package io.vmgate.text;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** key=value fields: hostile values cannot forge fields or lines, and a line reads back into its fields. */
class KeyValueTest {
    @Test
    void harmlessValuesAreBareOthersQuotedAndEscaped() {
        assertThat(KeyValue.quote("root")).isEqualTo("root");
        assertThat(KeyValue.quote(42)).isEqualTo("42");
        assertThat(KeyValue.quote(null)).isEqualTo("-");
        assertThat(KeyValue.quote("")).isEqualTo("\"\"");
        assertThat(KeyValue.quote("a b")).isEqualTo("\"a b\"");
        assertThat(KeyValue.quote("x user=root")).isEqualTo("\"x user=root\"");
        assertThat(KeyValue.quote("evil\nINFO auth_succeeded user=root")).isEqualTo("\"evil\\nINFO auth_succeeded user=root\"");
        assertThat(KeyValue.quote("q\"\\\t\r\u0001\u007f")).isEqualTo("\"q\\\"\\\\\\t\\r\\x01\\x7f\"");
        assertThat(KeyValue.quote("é")).isEqualTo("\"é\"");
        assertThat(KeyValue.quote("x".repeat(300))).isEqualTo("\"" + "x".repeat(200) + "...\"");
    }

    @Test
    void aLineOfFieldsReadsBackIntoTheSameValues() {
        Map<String, String> written = new LinkedHashMap<>();
        written.put("conn", "3fa2c1d0");
        written.put("user", "evil\n\"user\"=root \\ \u0001");
        written.put("remote", "127.0.0.1:5000");
        written.put("empty", "");
        written.put("reason", "the VM stopped: x=1");
        StringBuilder line = new StringBuilder();
        written.forEach((k, v) -> line.append(line.isEmpty() ? "" : " ").append(k).append('=').append(KeyValue.quote(v)));
        assertThat(KeyValue.parse(line.toString())).containsExactlyEntriesOf(written);
    }

    @Test
    void textThatIsNotAllFieldsIsNotFields() {
        assertThat(KeyValue.parse("")).isEmpty();
        assertThat(KeyValue.parse("a=1 b=two")).containsExactly(Map.entry("a", "1"), Map.entry("b", "two"));
        assertThat(KeyValue.parse("a=1 free text")).isNull();
        assertThat(KeyValue.parse("a=\"unterminated")).isNull();
        assertThat(KeyValue.parse("a=\"x\"y")).isNull();
        assertThat(KeyValue.parse("reason=\"half\" quoted\"")).isNull();
        assertThat(KeyValue.parse("=1")).isNull();
        assertThat(KeyValue.parse("a=\"\\x4")).isNull();
    }
}
