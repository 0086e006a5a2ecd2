package io.vmgate.image.oci;

import io.vmgate.text.Json;
import io.vmgate.image.TestTar;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import java.util.zip.GZIPOutputStream;

/**
 * OCI images written by hand for tests: layers (plain, gzip, zstd), configs, image layouts, OCI
 * archives and docker archives, including ones no honest tool would write. What skopeo and the
 * registry then carry in the end-to-end tests.
 */
public final class TestImages {
    private TestImages() {}

    public enum Compression { NONE, GZIP, ZSTD }

    /** A layer's blob and what a manifest and config say of it. */
    public record Layer(byte[] blob, String mediaType, String digest, String diffId) {
        public long size() {
            return blob.length;
        }
    }

    public static Layer layer(byte[] tar, Compression c) throws IOException {
        byte[] blob = switch (c) {
            case NONE -> tar;
            case GZIP -> {
                ByteArrayOutputStream b = new ByteArrayOutputStream();
                try (GZIPOutputStream z = new GZIPOutputStream(b)) {
                    z.write(tar);
                }
                yield b.toByteArray();
            }
            case ZSTD -> com.github.luben.zstd.Zstd.compress(tar, 3);
        };
        String type = "application/vnd.oci.image.layer.v1.tar" + switch (c) {
            case NONE -> "";
            case GZIP -> "+gzip";
            case ZSTD -> "+zstd";
        };
        return new Layer(blob, type, sha256(blob), sha256(tar));
    }

    /** An image config: platform, how it runs, and the layers' diff_ids. */
    public static byte[] config(String arch, List<String> env, String workdir, String user, List<String> entrypoint, List<String> cmd,
            List<Layer> layers) {
        Map<String, Object> c = new LinkedHashMap<>();
        c.put("Env", env);
        if (workdir != null) {
            c.put("WorkingDir", workdir);
        }
        if (user != null) {
            c.put("User", user);
        }
        if (entrypoint != null) {
            c.put("Entrypoint", entrypoint);
        }
        if (cmd != null) {
            c.put("Cmd", cmd);
        }
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("architecture", arch);
        m.put("os", "linux");
        m.put("config", c);
        m.put("rootfs", Map.of("type", "layers", "diff_ids", layers.stream().map(Layer::diffId).toList()));
        return Json.write(m).getBytes(StandardCharsets.UTF_8);
    }

    public static byte[] manifest(byte[] config, List<Layer> layers) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("schemaVersion", 2L);
        m.put("mediaType", MediaTypes.OCI_MANIFEST);
        m.put("config", descriptor(MediaTypes.OCI_CONFIG, sha256(config), config.length));
        List<Object> ls = new ArrayList<>();
        for (Layer l : layers) {
            ls.add(descriptor(l.mediaType(), l.digest(), l.size()));
        }
        m.put("layers", ls);
        return Json.write(m).getBytes(StandardCharsets.UTF_8);
    }

    static Map<String, Object> descriptor(String type, String digest, long size) {
        Map<String, Object> d = new LinkedHashMap<>();
        d.put("mediaType", type);
        d.put("digest", digest);
        d.put("size", size);
        return d;
    }

    /** An index of manifests, each with its platform ("linux/amd64") and, if given, a tag. */
    public static byte[] index(List<byte[]> manifests, List<String> platforms, List<String> tags) {
        List<Object> ms = new ArrayList<>();
        for (int i = 0; i < manifests.size(); i++) {
            Map<String, Object> d = descriptor(MediaTypes.OCI_MANIFEST, sha256(manifests.get(i)), manifests.get(i).length);
            if (platforms.get(i) != null) {
                String[] p = platforms.get(i).split("/");
                d.put("platform", Map.of("os", p[0], "architecture", p[1]));
            }
            if (tags.get(i) != null) {
                d.put("annotations", Map.of(Sources.REF_NAME, tags.get(i)));
            }
            ms.add(d);
        }
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("schemaVersion", 2L);
        m.put("mediaType", MediaTypes.OCI_INDEX);
        m.put("manifests", ms);
        return Json.write(m).getBytes(StandardCharsets.UTF_8);
    }

    /** Writes an OCI image layout with one image, tagged; returns the layout directory. */
    public static Path layout(Path dir, String tag, byte[] config, List<Layer> layers) throws IOException {
        byte[] manifest = manifest(config, layers);
        List<byte[]> blobs = new ArrayList<>(List.of(config, manifest));
        layers.forEach(l -> blobs.add(l.blob()));
        return layout(dir, index(List.of(manifest), java.util.Arrays.asList((String) null), List.of(tag)), blobs);
    }

    /** Writes a layout of these blobs and this index.json. */
    public static Path layout(Path dir, byte[] indexJson, List<byte[]> blobs) throws IOException {
        Path b = Files.createDirectories(dir.resolve("blobs/sha256"));
        for (byte[] blob : blobs) {
            Files.write(b.resolve(sha256(blob).substring(7)), blob);
        }
        Files.writeString(dir.resolve("oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}");
        Files.write(dir.resolve("index.json"), indexJson);
        return dir;
    }

    /** A tar of a layout directory (what skopeo's oci-archive: is). */
    public static Path ociArchive(Path layout, Path file) throws IOException {
        TestTar t = new TestTar();
        try (Stream<Path> s = Files.walk(layout)) {
            for (Path p : s.sorted().toList()) {
                String name = layout.relativize(p).toString();
                if (name.isEmpty()) {
                    continue;
                }
                if (Files.isDirectory(p)) {
                    t.dir(name + "/");
                } else {
                    t.entry(name, '0', 0644, 0, 0, Files.readAllBytes(p), "");
                }
            }
        }
        Files.write(file, t.end());
        return file;
    }

    /** A docker archive as docker save writes it: manifest.json, the config as HEX.json, each layer as ID/layer.tar. */
    public static Path dockerArchive(Path file, String repoTag, byte[] config, List<byte[]> layerTars) throws IOException {
        TestTar t = new TestTar();
        String configName = sha256(config).substring(7) + ".json";
        t.entry(configName, '0', 0644, 0, 0, config, "");
        List<String> layerNames = new ArrayList<>();
        for (int i = 0; i < layerTars.size(); i++) {
            String id = sha256(("layer" + i).getBytes(StandardCharsets.UTF_8)).substring(7);
            t.dir(id + "/");
            t.entry(id + "/layer.tar", '0', 0644, 0, 0, layerTars.get(i), "");
            layerNames.add(id + "/layer.tar");
        }
        Map<String, Object> entry = new LinkedHashMap<>();
        entry.put("Config", configName);
        entry.put("RepoTags", List.of(repoTag));
        entry.put("Layers", layerNames);
        t.entry("manifest.json", '0', 0644, 0, 0, Json.write(List.of(entry)).getBytes(StandardCharsets.UTF_8), "");
        Files.write(file, t.end());
        return file;
    }

    /**
     * A root filesystem with the host's static busybox: /bin/sh and its applets, /etc/passwd with
     * root and a user {@code app} (1000:1000), /etc/group, /tmp, /root.
     */
    public static TestTar busyboxRoot() throws IOException, InterruptedException {
        TestTar t = new TestTar();
        for (String d : List.of("bin/", "etc/", "root/", "proc/", "sys/", "dev/", "run/", "home/")) {
            t.dir(d);
        }
        t.entry("tmp/", '5', 01777, 0, 0, new byte[0], "");
        t.entry("home/app/", '5', 0755, 1000, 1000, new byte[0], "");
        t.entry("bin/busybox", '0', 0755, 0, 0, Files.readAllBytes(Path.of("/bin/busybox")), "");
        Process p = new ProcessBuilder("/bin/busybox", "--list").start();
        for (String applet : new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).split("\n")) {
            if (!applet.isBlank() && !applet.equals("busybox")) {
                t.symlink("bin/" + applet.strip(), "busybox");
            }
        }
        p.waitFor();
        t.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n");
        t.file("etc/group", "root:x:0:\napp:x:1000:\nstaff:x:50:app\n");
        return t;
    }

    public static String sha256(byte[] b) {
        return Digest.sha256(b).toString();
    }
}
