package io.vmgate.image.oci;

import io.vmgate.text.Json;
import io.vmgate.image.FsEntry;
import io.vmgate.image.TarReader;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.function.LongConsumer;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The places an image is imported from, named as skopeo names them: {@code oci:DIR[:TAG]} (an OCI
 * image layout), {@code oci-archive:FILE[:TAG]} (a tar of one), {@code docker-archive:FILE[:REF]}
 * (what {@code docker save} and {@code podman save} write). Each yields a resolved image whose
 * blobs are all in the blob store, verified.
 */
final class Sources {
    static final String REF_NAME = "org.opencontainers.image.ref.name";
    private static final int MAX_SMALL_FILE = 4 << 20;
    private static final Pattern BLOB_PATH = Pattern.compile("blobs/(sha256|sha512)/([0-9a-f]+)");
    private static final Pattern CONFIG_NAME = Pattern.compile("(?:.*/)?([0-9a-f]{64})\\.json");

    private Sources() {}

    /** A parsed {@code TRANSPORT:PATH[:REF]}. */
    record Spec(String transport, Path path, Optional<String> ref) {
        static Spec parse(String source) throws OciException {
            int colon = source.indexOf(':');
            String transport = colon < 0 ? "" : source.substring(0, colon);
            if (!List.of("oci", "oci-archive", "docker-archive").contains(transport)) {
                throw new OciException("'" + Digest.printable(source) + "' is not an import source: use oci:DIR[:TAG], oci-archive:FILE[:TAG]"
                        + " or docker-archive:FILE[:NAME:TAG] (to fetch from a registry: vmgate image pull REF)");
            }
            String rest = source.substring(colon + 1);
            int c = rest.indexOf(':'); // as skopeo: the path ends at the first colon
            String path = c < 0 ? rest : rest.substring(0, c);
            Optional<String> ref = c < 0 ? Optional.empty() : Optional.of(rest.substring(c + 1)).filter(s -> !s.isEmpty());
            if (path.isEmpty()) {
                throw new OciException("'" + Digest.printable(source) + "': no path after " + transport + ":");
            }
            return new Spec(transport, Path.of(path).toAbsolutePath().normalize(), ref);
        }

        String describe() {
            return transport + ":" + path + ref.map(r -> ":" + r).orElse("");
        }
    }

    // ---- oci:DIR[:TAG]

    /** An OCI image layout directory: its index.json and the blobs under blobs/ALG/HEX, copied into the store as needed. */
    static Resolution.Found layout(Spec spec, BlobStore store) throws OciException {
        Path dir = spec.path();
        String what = spec.describe();
        if (!Files.isDirectory(dir)) {
            throw new OciException(what + ": " + dir + " is not a directory");
        }
        checkLayoutVersion(readSmall(dir.resolve("oci-layout"), what, "oci-layout"), what);
        byte[] index = readSmall(dir.resolve("index.json"), what, "index.json");
        Resolution.Fetcher f = new Resolution.Fetcher() {
            @Override
            public byte[] manifest(Descriptor d, String w) throws OciException {
                blob(d, w, n -> { });
                return Resolution.read(store, d.digest(), Document.MAX_BYTES, what);
            }

            @Override
            public void blob(Descriptor d, String w, LongConsumer progress) throws OciException {
                if (store.has(d.digest(), d.size())) {
                    return;
                }
                Path file = dir.resolve("blobs").resolve(d.digest().algorithm()).resolve(d.digest().hex());
                try (InputStream in = Files.newInputStream(file)) {
                    store.put(d.digest(), d.size(), in, progress);
                } catch (NoSuchFileException e) {
                    throw new OciException(what + ": " + w + " (blob " + d.digest() + ") is missing from the layout");
                } catch (OciException e) {
                    throw new OciException(what + ": " + w + ": " + e.getMessage(), e);
                } catch (IOException e) {
                    throw new OciException(what + ": cannot copy " + w + " into the blob store: " + e.getMessage(), e);
                }
            }

            @Override
            public BlobStore store() {
                return store;
            }
        };
        return fromIndex(index, spec, f);
    }

    // ---- oci-archive:FILE[:TAG]

    /** A tar of an OCI image layout: streamed once, every blob into the store (verified by the digest its name says). */
    static Resolution.Found ociArchive(Spec spec, BlobStore store, long maxBytes) throws OciException {
        String what = spec.describe();
        Map<String, byte[]> small = new HashMap<>();
        long total = 0;
        try (InputStream in = new java.io.BufferedInputStream(Files.newInputStream(spec.path()), 1 << 16)) {
            TarReader r = new TarReader(in);
            for (FsEntry e; (e = r.next()) != null;) {
                if (e.type() != FsEntry.Type.FILE) {
                    continue;
                }
                total += e.size();
                if (total > maxBytes) {
                    throw new OciException(what + ": the archive holds more than " + LayerApplier.size(maxBytes) + " (--max-size)");
                }
                Matcher m = BLOB_PATH.matcher(e.path());
                if (m.matches()) {
                    Digest d;
                    try {
                        d = new Digest(m.group(1), m.group(2));
                    } catch (IllegalArgumentException bad) {
                        throw new OciException(what + ": " + e.path() + " is not named by a digest");
                    }
                    if (!store.has(d, e.size())) {
                        try {
                            store.put(d, e.size(), r.content(), n -> { });
                        } catch (OciException mismatch) {
                            throw new OciException(what + ": " + e.path() + ": " + mismatch.getMessage(), mismatch);
                        }
                    }
                } else if (e.path().equals("index.json") || e.path().equals("oci-layout")) {
                    if (e.size() > MAX_SMALL_FILE) {
                        throw new OciException(what + ": " + e.path() + " is larger than " + MAX_SMALL_FILE + " bytes");
                    }
                    small.put(e.path(), r.content().readAllBytes());
                }
            }
        } catch (NoSuchFileException e) {
            throw new OciException(what + ": " + spec.path() + " does not exist");
        } catch (TarReader.TarException e) {
            throw new OciException(what + ": not a readable tar archive: " + e.getMessage(), e);
        } catch (IOException e) {
            throw new OciException(what + ": cannot read " + spec.path() + ": " + e.getMessage(), e);
        }
        if (!small.containsKey("index.json")) {
            throw new OciException(what + ": not an OCI archive (no index.json in it)");
        }
        checkLayoutVersion(small.get("oci-layout"), what);
        Resolution.Fetcher f = new Resolution.Fetcher() {
            @Override
            public byte[] manifest(Descriptor d, String w) throws OciException {
                blob(d, w, n -> { });
                return Resolution.read(store, d.digest(), Document.MAX_BYTES, what);
            }

            @Override
            public void blob(Descriptor d, String w, LongConsumer progress) throws OciException {
                if (!store.has(d.digest(), d.size())) {
                    throw new OciException(what + ": " + w + " (blob " + d.digest() + ", " + d.size() + " bytes) is not in the archive");
                }
            }

            @Override
            public BlobStore store() {
                return store;
            }
        };
        return fromIndex(small.get("index.json"), spec, f);
    }

    private static void checkLayoutVersion(byte[] ociLayout, String what) throws OciException {
        if (ociLayout == null) {
            throw new OciException(what + ": not an OCI image layout (no oci-layout file)");
        }
        try {
            String v = JsonFields.string(JsonFields.parseObject(ociLayout), "imageLayoutVersion").orElse("");
            if (!v.startsWith("1.")) {
                throw new OciException(what + ": OCI image layout version '" + Digest.printable(v) + "' is not supported (1.x is)");
            }
        } catch (Json.JsonException e) {
            throw new OciException(what + ": oci-layout is malformed: " + e.getMessage());
        }
    }

    /** The image of a layout's index.json the tag names (or its only one). */
    private static Resolution.Found fromIndex(byte[] indexJson, Spec spec, Resolution.Fetcher f) throws OciException {
        String what = spec.describe();
        Document doc = Document.parse(indexJson, Optional.of(MediaTypes.OCI_INDEX), what + " (index.json)");
        if (!(doc instanceof Document.Index index)) {
            throw new OciException(what + ": index.json is not an image index");
        }
        List<String> tags = index.manifests().stream().map(d -> d.annotations().get(REF_NAME)).filter(t -> t != null).toList();
        Descriptor chosen;
        if (spec.ref().isPresent()) {
            chosen = index.manifests().stream().filter(d -> spec.ref().get().equals(d.annotations().get(REF_NAME))).findFirst()
                    .orElseThrow(() -> new OciException(what + ": no image tagged '" + Digest.printable(spec.ref().get()) + "' in it (tags: "
                            + (tags.isEmpty() ? "none" : String.join(", ", tags)) + ")"));
        } else if (index.manifests().size() == 1) {
            chosen = index.manifests().get(0);
        } else {
            throw new OciException(what + ": it holds " + index.manifests().size() + " images: name one with " + spec.transport() + ":"
                    + spec.path() + ":TAG (tags: " + (tags.isEmpty() ? "none" : String.join(", ", tags)) + ")");
        }
        if (chosen.platform().isPresent() && !chosen.platform().get().runsHere() && MediaTypes.MANIFESTS.contains(chosen.mediaType())) {
            throw new OciException(what + ": the image tagged " + chosen.annotations().getOrDefault(REF_NAME, "(untagged)") + " is for "
                    + chosen.platform().get() + "; vmgate's guests run " + Platform.LINUX_AMD64);
        }
        byte[] top = f.manifest(chosen, "the manifest " + chosen.digest().shortForm());
        return new Resolution.Found(Resolution.resolve(what, top, Optional.of(chosen.mediaType()).filter(s -> !s.isEmpty()), chosen.digest(), f), f);
    }

    // ---- docker-archive:FILE[:NAME:TAG | :@N]

    /**
     * What {@code docker save} / {@code podman save} / skopeo write: a tar with {@code manifest.json}
     * listing each image's config file and layer tars. Files are stored by the digest of their
     * bytes as they stream past; the config is checked against its name where the name is a
     * digest, and every layer against the config's {@code rootfs.diff_ids} when it is applied.
     */
    static Resolution.Found dockerArchive(Spec spec, BlobStore store, long maxBytes) throws OciException {
        String what = spec.describe();
        Map<String, Digest> files = new HashMap<>();
        Map<String, Long> sizes = new HashMap<>();
        Map<String, String> links = new HashMap<>();
        byte[] manifestJson = null;
        long total = 0;
        try (InputStream in = new java.io.BufferedInputStream(Files.newInputStream(spec.path()), 1 << 16)) {
            TarReader r = new TarReader(in);
            for (FsEntry e; (e = r.next()) != null;) {
                switch (e.type()) {
                    case SYMLINK -> links.put(e.path(), e.linkTarget());
                    case HARDLINK -> links.put(e.path(), "/" + e.linkTarget());
                    case FILE -> {
                        total += e.size();
                        if (total > maxBytes) {
                            throw new OciException(what + ": the archive holds more than " + LayerApplier.size(maxBytes) + " (--max-size)");
                        }
                        if (e.path().equals("manifest.json")) {
                            if (e.size() > MAX_SMALL_FILE) {
                                throw new OciException(what + ": manifest.json is larger than " + MAX_SMALL_FILE + " bytes");
                            }
                            manifestJson = r.content().readAllBytes();
                        } else if (e.path().endsWith(".tar") || e.path().endsWith(".json") || e.path().startsWith("blobs/")) {
                            files.put(e.path(), store.putComputed(r.content(), maxBytes, what + ": " + e.path()));
                            sizes.put(e.path(), e.size());
                        }
                    }
                    default -> { }
                }
            }
        } catch (NoSuchFileException e) {
            throw new OciException(what + ": " + spec.path() + " does not exist");
        } catch (TarReader.TarException e) {
            throw new OciException(what + ": not a readable tar archive: " + e.getMessage(), e);
        } catch (IOException e) {
            throw new OciException(what + ": cannot read " + spec.path() + ": " + e.getMessage(), e);
        }
        if (manifestJson == null) {
            throw new OciException(what + ": not a docker archive (no manifest.json in it)");
        }
        Map<String, Object> entry = dockerEntry(manifestJson, spec, what);
        try {
            String configPath = JsonFields.string(entry, "Config").orElseThrow(() -> new OciException(what + ": manifest.json names no Config"));
            Digest configDigest = file(configPath, files, links, what);
            Matcher named = CONFIG_NAME.matcher(configPath);
            Matcher blobNamed = BLOB_PATH.matcher(FsEntry.normalize(configPath));
            Optional<String> nameHex = named.matches() ? Optional.of(named.group(1)) : blobNamed.matches() ? Optional.of(blobNamed.group(2))
                    : Optional.empty();
            if (nameHex.isPresent() && !nameHex.get().equals(configDigest.hex())) {
                throw new OciException(what + ": digest mismatch: the config " + configPath + " has the digest " + configDigest);
            }
            ImageConfig config = ImageConfig.parse(Resolution.read(store, configDigest, ImageConfig.MAX_BYTES, what), what);
            Platform p = config.platform();
            if (!p.architecture().isEmpty() && !p.runsHere() || !p.os().isEmpty() && !p.os().equals("linux")) {
                throw new OciException(what + ": the image is for " + p + "; vmgate's guests run " + Platform.LINUX_AMD64);
            }
            List<String> layerPaths = JsonFields.strings(entry, "Layers");
            if (config.diffIds().size() != layerPaths.size()) {
                throw new OciException(what + ": manifest.json lists " + layerPaths.size() + " layers, the config's rootfs.diff_ids "
                        + config.diffIds().size() + ": the layers cannot be checked");
            }
            List<Resolution.Layer> layers = new ArrayList<>();
            List<Digest> blobs = new ArrayList<>(List.of(configDigest));
            for (int i = 0; i < layerPaths.size(); i++) {
                Digest d = file(layerPaths.get(i), files, links, what);
                layers.add(new Resolution.Layer(d, store.path(d).toFile().length(), Optional.of(config.diffIds().get(i))));
                blobs.add(d);
            }
            Resolution.Fetcher present = new Resolution.Fetcher() {
                @Override
                public byte[] manifest(Descriptor d, String w) throws OciException {
                    throw new OciException(what + ": a docker archive has no manifests");
                }

                @Override
                public void blob(Descriptor d, String w, LongConsumer progress) throws OciException {
                    if (!store.has(d.digest(), -1)) {
                        throw new OciException(what + ": " + w + " left the blob store while it was imported");
                    }
                }

                @Override
                public BlobStore store() {
                    return store;
                }
            };
            return new Resolution.Found(new Resolution.Resolved(what + "@" + configDigest, configDigest, config, layers, blobs), present);
        } catch (Json.JsonException | IllegalArgumentException e) {
            throw new OciException(what + ": malformed manifest.json: " + e.getMessage());
        }
    }

    /** The manifest.json entry the reference names (NAME:TAG or @N), or the only one. */
    @SuppressWarnings("unchecked")
    private static Map<String, Object> dockerEntry(byte[] manifestJson, Spec spec, String what) throws OciException {
        List<Object> entries;
        try {
            if (!(JsonFields.parse(manifestJson) instanceof List<?> l) || l.isEmpty()) {
                throw new OciException(what + ": manifest.json lists no image");
            }
            entries = (List<Object>) l;
        } catch (Json.JsonException e) {
            throw new OciException(what + ": manifest.json is not valid JSON: " + e.getMessage());
        }
        List<Map<String, Object>> maps = new ArrayList<>();
        Map<String, Integer> byTag = new LinkedHashMap<>();
        for (Object o : entries) {
            if (!(o instanceof Map<?, ?> m)) {
                throw new OciException(what + ": manifest.json holds something that is not an image entry");
            }
            maps.add((Map<String, Object>) m);
            try {
                for (String t : JsonFields.strings((Map<String, Object>) m, "RepoTags")) {
                    byTag.putIfAbsent(t, maps.size() - 1);
                }
            } catch (Json.JsonException e) {
                throw new OciException(what + ": manifest.json: " + e.getMessage());
            }
        }
        if (spec.ref().isEmpty()) {
            if (maps.size() != 1) {
                throw new OciException(what + ": it holds " + maps.size() + " images: name one with docker-archive:" + spec.path()
                        + ":NAME:TAG or :@N (tags: " + String.join(", ", byTag.keySet()) + ")");
            }
            return maps.get(0);
        }
        String ref = spec.ref().get();
        if (ref.startsWith("@")) {
            try {
                return maps.get(Integer.parseInt(ref.substring(1)));
            } catch (NumberFormatException | IndexOutOfBoundsException e) {
                throw new OciException(what + ": no image number " + Digest.printable(ref.substring(1)) + " (it holds " + maps.size() + ")");
            }
        }
        for (String candidate : List.of(ref, "docker.io/library/" + ref, "docker.io/" + ref, "localhost/" + ref)) {
            if (byTag.containsKey(candidate)) {
                return maps.get(byTag.get(candidate));
            }
        }
        throw new OciException(what + ": no image tagged '" + Digest.printable(ref) + "' in it (tags: " + String.join(", ", byTag.keySet()) + ")");
    }

    /** The digest of an archive file named in manifest.json, symlinks (docker's shared layers) followed inside the archive. */
    private static Digest file(String name, Map<String, Digest> files, Map<String, String> links, String what) throws OciException {
        String p;
        try {
            p = FsEntry.normalize(name);
        } catch (IllegalArgumentException e) {
            throw new OciException(what + ": manifest.json names '" + Digest.printable(name) + "': " + e.getMessage());
        }
        for (int hops = 0; links.containsKey(p); hops++) {
            if (hops > 16) {
                throw new OciException(what + ": " + name + " is a loop of links");
            }
            String t = links.get(p);
            String dir = p.contains("/") ? p.substring(0, p.lastIndexOf('/')) : "";
            String joined = t.startsWith("/") ? t : (dir.isEmpty() ? t : dir + "/" + t);
            p = normalizeInArchive(joined, what);
        }
        Digest d = files.get(p);
        if (d == null) {
            throw new OciException(what + ": " + name + ", which manifest.json names, is not in the archive");
        }
        return d;
    }

    /** A path inside the archive with ".." resolved, never above its top. */
    private static String normalizeInArchive(String p, String what) throws OciException {
        List<String> parts = new ArrayList<>();
        for (String c : p.split("/")) {
            if (c.isEmpty() || c.equals(".")) {
                continue;
            }
            if (c.equals("..")) {
                if (parts.isEmpty()) {
                    throw new OciException(what + ": a link in the archive leads outside it");
                }
                parts.remove(parts.size() - 1);
            } else {
                parts.add(c);
            }
        }
        return String.join("/", parts);
    }

    private static byte[] readSmall(Path f, String what, String name) throws OciException {
        try {
            if (Files.size(f) > MAX_SMALL_FILE) {
                throw new OciException(what + ": " + name + " is larger than " + MAX_SMALL_FILE + " bytes");
            }
            return Files.readAllBytes(f);
        } catch (NoSuchFileException e) {
            if (name.equals("oci-layout")) {
                return null;
            }
            throw new OciException(what + ": not an OCI image layout (no " + name + ")");
        } catch (IOException e) {
            throw new OciException(what + ": cannot read " + f + ": " + e.getMessage(), e);
        }
    }

}
