package io.vmgate.record;

/**
 * Turns one source's bytes (a process's output, in chunks) into the content of a JSON string, in
 * one pass and without decoding to Java characters: valid UTF-8 is copied byte for byte, the JSON
 * specials ({@code "}, {@code \}, control characters, U+2028/U+2029) are escaped, and every
 * ill-formed sequence becomes U+FFFD (one per maximal ill-formed subpart, as the Unicode standard
 * recommends). A sequence cut by the end of a chunk is carried to the next chunk of the same source.
 */
final class Utf8Escaper {
    private static final byte[] REPLACEMENT = {(byte) 0xef, (byte) 0xbf, (byte) 0xbd};
    private static final byte[] HEX = "0123456789abcdef".getBytes(java.nio.charset.StandardCharsets.US_ASCII);
    /** The escape of each ASCII byte that needs one (control characters, {@code "}, {@code \}); null for the others. */
    private static final byte[][] ASCII_ESCAPES = new byte[0x80][];

    static {
        for (int c = 0; c < 0x80; c++) {
            String e = switch (c) {
                case '"' -> "\\\"";
                case '\\' -> "\\\\";
                case '\n' -> "\\n";
                case '\r' -> "\\r";
                case '\t' -> "\\t";
                default -> c < 0x20 ? String.format("\\u%04x", c) : null;
            };
            ASCII_ESCAPES[c] = e == null ? null : e.getBytes(java.nio.charset.StandardCharsets.US_ASCII);
        }
    }

    private final byte[] pending = new byte[3];
    private int pendingLength;

    /** Appends the escaped text of {@code b[off, off+len)}, after what an earlier chunk left pending, to {@code out}. */
    void escape(byte[] b, int off, int len, Bytes out) {
        byte[] d = b;
        int start = off;
        int end = off + len;
        if (pendingLength > 0) {
            d = new byte[pendingLength + len];
            System.arraycopy(pending, 0, d, 0, pendingLength);
            System.arraycopy(b, off, d, pendingLength, len);
            start = 0;
            end = d.length;
            pendingLength = 0;
        }
        int i = start;
        while (i < end) {
            int c = d[i] & 0xff;
            if (c < 0x80) {
                int run = i;
                while (run < end && plain(d[run])) {
                    run++;
                }
                if (run > i) {
                    out.put(d, i, run - i);
                    i = run;
                } else {
                    i = escapeRun(d, i, end, out);
                }
                continue;
            }
            int need;
            int lo = 0x80;
            int hi = 0xbf;
            if (c >= 0xc2 && c <= 0xdf) {
                need = 1;
            } else if (c >= 0xe0 && c <= 0xef) {
                need = 2;
                lo = c == 0xe0 ? 0xa0 : 0x80;
                hi = c == 0xed ? 0x9f : 0xbf;
            } else if (c >= 0xf0 && c <= 0xf4) {
                need = 3;
                lo = c == 0xf0 ? 0x90 : 0x80;
                hi = c == 0xf4 ? 0x8f : 0xbf;
            } else {
                out.put(REPLACEMENT, 0, 3); // a continuation byte or an impossible lead
                i++;
                continue;
            }
            int j = 1;
            boolean cut = false;
            while (j <= need) {
                if (i + j >= end) {
                    cut = true;
                    break;
                }
                int cb = d[i + j] & 0xff;
                if (cb < (j == 1 ? lo : 0x80) || cb > (j == 1 ? hi : 0xbf)) {
                    break;
                }
                j++;
            }
            if (cut) {
                pendingLength = end - i; // at most 3 bytes: the start of a sequence
                System.arraycopy(d, i, pending, 0, pendingLength);
                return;
            }
            if (j <= need) {
                out.put(REPLACEMENT, 0, 3); // ill-formed: its valid prefix is one U+FFFD
                i += j;
                continue;
            }
            if (c == 0xe2 && d[i + 1] == (byte) 0x80 && (d[i + 2] == (byte) 0xa8 || d[i + 2] == (byte) 0xa9)) {
                unicodeEscape(d[i + 2] == (byte) 0xa8 ? 0x2028 : 0x2029, out); // line ends to JavaScript readers
            } else {
                out.put(d, i, need + 1);
            }
            i += need + 1;
        }
    }

    /** Whether a sequence is waiting for the rest of its bytes. */
    boolean hasPending() {
        return pendingLength > 0;
    }

    /** The stream ended inside a sequence: it is one U+FFFD. */
    void finish(Bytes out) {
        if (pendingLength > 0) {
            pendingLength = 0;
            out.put(REPLACEMENT, 0, 3);
        }
    }

    private static boolean plain(byte b) {
        return b >= 0x20 && b != '"' && b != '\\'; // (negative bytes, >= 0x80, are not plain)
    }

    /** Escapes the run of ASCII bytes needing escapes that starts at {@code i}; returns where it ends. */
    private static int escapeRun(byte[] d, int i, int end, Bytes out) {
        int stop = i;
        while (stop < end && d[stop] >= 0 && ASCII_ESCAPES[d[stop]] != null) {
            stop++;
        }
        out.ensure(6 * (stop - i));
        byte[] a = out.a;
        int n = out.n;
        for (int k = i; k < stop; k++) {
            int c = d[k];
            byte[] e = ASCII_ESCAPES[c];
            if (e.length == 6) { // backslash u 0 0 X X, written out: the common case in binary output
                a[n] = '\\';
                a[n + 1] = 'u';
                a[n + 2] = '0';
                a[n + 3] = '0';
                a[n + 4] = HEX[c >> 4];
                a[n + 5] = HEX[c & 0xf];
                n += 6;
            } else {
                a[n] = e[0];
                a[n + 1] = e[1];
                n += 2;
            }
        }
        out.n = n;
        return stop;
    }

    private static void unicodeEscape(int c, Bytes out) {
        out.put('\\').put('u').put(HEX[c >> 12 & 0xf]).put(HEX[c >> 8 & 0xf]).put(HEX[c >> 4 & 0xf]).put(HEX[c & 0xf]);
    }

    /** A growable byte buffer, reused from event to event. */
    static final class Bytes {
        private byte[] a = new byte[64 * 1024];
        private int n;

        Bytes put(int b) {
            ensure(1);
            a[n++] = (byte) b;
            return this;
        }

        Bytes put(byte[] b, int off, int len) {
            ensure(len);
            System.arraycopy(b, off, a, n, len);
            n += len;
            return this;
        }

        Bytes put(String ascii) {
            for (int i = 0; i < ascii.length(); i++) {
                put(ascii.charAt(i));
            }
            return this;
        }

        int length() {
            return n;
        }

        void truncate(int length) {
            n = length;
        }

        byte[] array() {
            return a;
        }

        void clear() {
            n = 0;
            if (a.length > 1 << 20) {
                a = new byte[64 * 1024]; // a huge event passed: do not keep its buffer
            }
        }

        private void ensure(int more) {
            if (n + more > a.length) {
                a = java.util.Arrays.copyOf(a, Math.max(a.length * 2, n + more));
            }
        }
    }
}
