package io.vmgate.image.oci;

import io.vmgate.text.Json;
import java.util.Map;
import java.util.Optional;

/**
 * A reference to a blob: its media type, digest and size, as manifests and indexes list them
 * (an index's entries also say their platform).
 */
record Descriptor(String mediaType, Digest digest, long size, Optional<Platform> platform, Map<String, String> annotations) {
    Descriptor {
        annotations = Map.copyOf(annotations);
        if (size < 0) {
            throw new IllegalArgumentException("negative size " + size + " for " + digest);
        }
    }

    static Descriptor parse(Map<String, Object> m) throws Json.JsonException {
        String mediaType = JsonFields.string(m, "mediaType").orElse("");
        String digest = JsonFields.string(m, "digest").orElseThrow(() -> new Json.JsonException("a descriptor has no digest"));
        long size = JsonFields.number(m, "size").orElseThrow(() -> new Json.JsonException("a descriptor has no size"));
        Map<String, Object> p = JsonFields.object(m, "platform");
        Optional<Platform> platform = p.isEmpty() ? Optional.empty()
                : Optional.of(new Platform(JsonFields.string(p, "os").orElse(""), JsonFields.string(p, "architecture").orElse(""),
                        JsonFields.string(p, "variant").orElse("")));
        Map<String, String> annotations = new java.util.LinkedHashMap<>();
        for (Map.Entry<String, Object> e : JsonFields.object(m, "annotations").entrySet()) {
            if (e.getValue() instanceof String s) {
                annotations.put(e.getKey(), s);
            }
        }
        try {
            return new Descriptor(mediaType, Digest.parse(digest), size, platform, annotations);
        } catch (IllegalArgumentException e) {
            throw new Json.JsonException(e.getMessage());
        }
    }
}
