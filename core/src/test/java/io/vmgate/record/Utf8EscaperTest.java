package io.vmgate.record;

import static org.assertj.core.api.Assertions.assertThat;

import io.vmgate.text.Json;
import java.nio.charset.StandardCharsets;
import java.util.Random;
import org.junit.jupiter.api.Test;

/** Bytes to JSON string content in one pass: valid UTF-8 kept, however it is chunked; anything else U+FFFD, never broken JSON. */
class Utf8EscaperTest {
    /** Escapes {@code data} cut into chunks at the given points, then parses the result as a JSON string. */
    private static String roundTrip(byte[] data, int... cuts) throws Exception {
        Utf8Escaper x = new Utf8Escaper();
        Utf8Escaper.Bytes out = new Utf8Escaper.Bytes();
        out.put('"');
        int from = 0;
        for (int cut : cuts) {
            x.escape(data, from, cut - from, out);
            from = cut;
        }
        x.escape(data, from, data.length - from, out);
        x.finish(out);
        out.put('"');
        return (String) Json.parse(new String(out.array(), 0, out.length(), StandardCharsets.UTF_8));
    }

    private static byte[] bytes(int... b) {
        byte[] r = new byte[b.length];
        for (int i = 0; i < b.length; i++) {
            r[i] = (byte) b[i];
        }
        return r;
    }

    @Test
    void validTextSurvivesAnyChunkingAndSpecialsAreEscaped() throws Exception {
        String s = "plain \"quoted\" back\\slash\n\r\t\u0000\u001b[1mé€😀\u2028\u2029\u007f end";
        byte[] b = s.getBytes(StandardCharsets.UTF_8);
        for (int cut = 0; cut <= b.length; cut++) {
            assertThat(roundTrip(b, cut)).isEqualTo(s);
        }
        assertThat(roundTrip(b, 10, 11, 12, 30, 31, 32, 33)).isEqualTo(s);
    }

    @Test
    void illFormedBytesBecomeOneReplacementPerMaximalSubpart() throws Exception {
        assertThat(roundTrip(bytes(0xff, 'x'))).isEqualTo("\ufffdx");
        assertThat(roundTrip(bytes(0x80, 0x80))).isEqualTo("\ufffd\ufffd");                  // lone continuations
        assertThat(roundTrip(bytes(0xc0, 0xaf))).isEqualTo("\ufffd\ufffd");                  // overlong
        assertThat(roundTrip(bytes(0xe2, 0x82, 'x'))).isEqualTo("\ufffdx");                  // cut short, then ASCII
        assertThat(roundTrip(bytes(0xed, 0xa0, 0x80))).isEqualTo("\ufffd\ufffd\ufffd");      // a surrogate
        assertThat(roundTrip(bytes(0xf4, 0x90, 0x80, 0x80))).isEqualTo("\ufffd\ufffd\ufffd\ufffd"); // beyond U+10FFFF
        assertThat(roundTrip(bytes('a', 0xe2, 0x82))).isEqualTo("a\ufffd");                  // the stream ends inside one
        assertThat(roundTrip(bytes(0xe2, 0x82, 0xac), 1)).isEqualTo("€");                    // split, joined
    }

    @Test
    void randomBytesAlwaysGiveValidJsonWithTheCharactersTheJdkReads() throws Exception {
        Random r = new Random(16);
        for (int round = 0; round < 2000; round++) {
            byte[] b = new byte[r.nextInt(40)];
            r.nextBytes(b);
            String got = roundTrip(b, b.length / 2);
            // The JDK's decoder agrees on every real character; it may count U+FFFDs differently in
            // some ill-formed cases (e.g. ED A0: one for the JDK, two by the standard's recommendation).
            assertThat(got.replace("\ufffd", "")).as("bytes %s", java.util.HexFormat.of().formatHex(b))
                    .isEqualTo(new String(b, StandardCharsets.UTF_8).replace("\ufffd", ""));
        }
        for (int round = 0; round < 500; round++) {
            StringBuilder t = new StringBuilder();
            for (int i = r.nextInt(30); i > 0; i--) {
                t.appendCodePoint(r.nextInt(4) == 0 ? r.nextInt(0x20) : r.nextInt(0x10ffff + 1));
            }
            String valid = new String(t.toString().getBytes(StandardCharsets.UTF_8), StandardCharsets.UTF_8); // lone surrogates out
            byte[] b = valid.getBytes(StandardCharsets.UTF_8);
            assertThat(roundTrip(b, r.nextInt(b.length + 1))).isEqualTo(valid);
        }
    }
}
