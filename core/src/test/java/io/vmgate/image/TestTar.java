package io.vmgate.image;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/** Hand-made tar archives for tests, including ones no honest tar would write. */
public final class TestTar {
    private final ByteArrayOutputStream out = new ByteArrayOutputStream();

    public TestTar entry(String name, char type, int mode, long uid, long gid, byte[] data, String link) {
        byte[] h = header(name, type, mode, uid, gid, data.length, link);
        out.writeBytes(h);
        out.writeBytes(data);
        out.writeBytes(new byte[(512 - data.length % 512) % 512]);
        return this;
    }

    public TestTar file(String name, String content) {
        return entry(name, '0', 0644, 0, 0, content.getBytes(StandardCharsets.UTF_8), "");
    }

    public TestTar dir(String name) {
        return entry(name, '5', 0755, 0, 0, new byte[0], "");
    }

    public TestTar symlink(String name, String target) {
        return entry(name, '2', 0777, 0, 0, new byte[0], target);
    }

    public TestTar hardlink(String name, String target) {
        return entry(name, '1', 0644, 0, 0, new byte[0], target);
    }

    /** A character ('3') or block ('4') device node. */
    public TestTar device(String name, char type, int major, int minor) {
        byte[] h = header(name, type, 0600, 0, 0, 0, "");
        octal(h, 329, 8, major);
        octal(h, 337, 8, minor);
        java.util.Arrays.fill(h, 148, 156, (byte) ' ');
        long sum = 0;
        for (byte b : h) {
            sum += b & 0xff;
        }
        octal(h, 148, 7, sum);
        h[155] = ' ';
        out.writeBytes(h);
        return this;
    }

    /** A regular file with its mode and owner. */
    public TestTar file(String name, String content, int mode, long uid, long gid) {
        return entry(name, '0', mode, uid, gid, content.getBytes(StandardCharsets.UTF_8), "");
    }

    /** A pax extended header ('x') for the next entry. */
    public TestTar pax(String... records) {
        ByteArrayOutputStream b = new ByteArrayOutputStream();
        for (String r : records) {
            byte[] kv = r.getBytes(StandardCharsets.UTF_8);
            int len = kv.length + 2;
            while (len != kv.length + 2 + String.valueOf(len).length()) {
                len = kv.length + 2 + String.valueOf(len).length();
            }
            b.writeBytes((len + " ").getBytes(StandardCharsets.US_ASCII));
            b.writeBytes(kv);
            b.write('\n');
        }
        return entry("PaxHeaders/x", 'x', 0644, 0, 0, b.toByteArray(), "");
    }

    public TestTar raw(byte[] bytes) {
        out.writeBytes(bytes);
        return this;
    }

    public byte[] end() {
        out.writeBytes(new byte[1024]);
        return out.toByteArray();
    }

    public byte[] unterminated() {
        return out.toByteArray();
    }

    public static byte[] header(String name, char type, int mode, long uid, long gid, long size, String link) {
        byte[] h = new byte[512];
        put(h, 0, 100, name.getBytes(StandardCharsets.UTF_8));
        octal(h, 100, 8, mode);
        octal(h, 108, 8, uid);
        octal(h, 116, 8, gid);
        octal(h, 124, 12, size);
        octal(h, 136, 12, 1_700_000_000L);
        h[156] = (byte) type;
        put(h, 157, 100, link.getBytes(StandardCharsets.UTF_8));
        put(h, 257, 6, "ustar\0".getBytes(StandardCharsets.US_ASCII));
        put(h, 263, 2, "00".getBytes(StandardCharsets.US_ASCII));
        Arrays.fill(h, 148, 156, (byte) ' ');
        long sum = 0;
        for (byte b : h) {
            sum += b & 0xff;
        }
        octal(h, 148, 7, sum);
        h[155] = ' ';
        return h;
    }

    private static void put(byte[] h, int off, int len, byte[] v) {
        System.arraycopy(v, 0, h, off, Math.min(len, v.length));
    }

    private static void octal(byte[] h, int off, int len, long v) {
        String s = String.format("%0" + (len - 1) + "o", v);
        put(h, off, len - 1, s.getBytes(StandardCharsets.US_ASCII));
    }
}
