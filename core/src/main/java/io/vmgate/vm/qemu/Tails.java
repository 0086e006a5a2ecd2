package io.vmgate.vm.qemu;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

/** Last lines of logs for error messages, with control characters neutralised (guest output can hold escape sequences). */
final class Tails {
    private Tails() {}

    static String lastLines(String text, int lines) {
        String t = sanitize(text.replace("\r\n", "\n").replace('\r', '\n'));
        while (t.endsWith("\n")) {
            t = t.substring(0, t.length() - 1);
        }
        int idx = t.length();
        for (int i = 0; i < lines && idx > 0; i++) {
            idx = t.lastIndexOf('\n', idx - 1);
            if (idx < 0) {
                idx = 0;
                break;
            }
        }
        String s = t.substring(idx);
        return s.startsWith("\n") ? s.substring(1) : s;
    }

    /** The last {@code lines} lines of a file, reading at most its last 16 KiB; "" if unreadable. */
    static String lastLines(Path file, int lines) {
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "r")) {
            long len = f.length();
            int n = (int) Math.min(len, 16 * 1024);
            byte[] b = new byte[n];
            f.seek(len - n);
            f.readFully(b);
            return lastLines(new String(b, StandardCharsets.UTF_8), lines);
        } catch (IOException e) {
            return "";
        }
    }

    static String sanitize(String s) {
        StringBuilder b = new StringBuilder(s.length());
        s.codePoints().forEach(c -> {
            if (c == '\n' || c == '\t' || (c >= 0x20 && c != 0x7f && !(c >= 0x80 && c < 0xa0))) {
                b.appendCodePoint(c);
            } else {
                b.append(String.format("\\x%02x", c & 0xff));
            }
        });
        return b.toString();
    }

    /** Indents a block for quoting inside a message; "(empty)" for nothing. */
    static String indent(String block) {
        if (block.isBlank()) {
            return "    (empty)";
        }
        return "    " + block.replace("\n", "\n    ");
    }
}
