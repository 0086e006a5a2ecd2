package io.vmgate.image.oci;

import io.vmgate.text.Json;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * What a manifest digest can lead to: an index (a multi-platform image: one manifest per
 * platform) or an image manifest (a config and layers). Only OCI image-spec v1 and Docker's
 * schema 2 are read; everything else is refused by name.
 */
sealed interface Document {
    /** The largest manifest or index accepted (real ones are a few KiB). */
    int MAX_BYTES = 4 << 20;

    String mediaType();

    /** An image index or a Docker manifest list. */
    record Index(String mediaType, List<Descriptor> manifests) implements Document {
        public Index {
            manifests = List.copyOf(manifests);
        }
    }

    /** An image manifest: the config blob and the layers, bottom first. */
    record Manifest(String mediaType, Descriptor config, List<Descriptor> layers) implements Document {
        public Manifest {
            layers = List.copyOf(layers);
        }
    }

    /**
     * Parses a manifest or index. {@code contentType} is what the registry said (or empty); the
     * document's own {@code mediaType} wins when it has one, and a document without either is
     * recognised by its shape, as the OCI spec allows.
     *
     * @param what for messages: which image and which digest
     */
    static Document parse(byte[] body, Optional<String> contentType, String what) throws OciException {
        if (body.length > MAX_BYTES) {
            throw new OciException(what + ": the manifest is " + body.length + " bytes, more than the " + MAX_BYTES + " accepted");
        }
        Map<String, Object> m;
        try {
            m = JsonFields.parseObject(body);
        } catch (Json.JsonException e) {
            throw new OciException(what + ": the manifest is not valid JSON (" + e.getMessage() + ")");
        }
        try {
            String declared = JsonFields.string(m, "mediaType").orElse(contentType.map(c -> c.split(";")[0].strip()).orElse(""));
            long schema = JsonFields.number(m, "schemaVersion").orElse(0L);
            if (MediaTypes.DOCKER_SCHEMA1.contains(declared) || schema == 1) {
                throw new OciException(what + ": Docker image manifest schema 1 is not supported (deprecated since 2017): "
                        + "push the image again with a current docker, podman or skopeo");
            }
            if (schema != 2) {
                throw new OciException(what + ": unsupported manifest (schemaVersion " + schema + ", media type '"
                        + Digest.printable(declared) + "')");
            }
            String type = declared;
            if (type.isEmpty() || type.equals("application/json")) { // OCI documents may leave mediaType out
                type = m.containsKey("manifests") ? MediaTypes.OCI_INDEX : m.containsKey("layers") ? MediaTypes.OCI_MANIFEST : "";
            }
            if (MediaTypes.INDEXES.contains(type)) {
                List<Descriptor> ds = new java.util.ArrayList<>();
                for (Map<String, Object> d : JsonFields.objects(m, "manifests")) {
                    ds.add(Descriptor.parse(d));
                }
                return new Index(type, ds);
            }
            if (MediaTypes.MANIFESTS.contains(type)) {
                Descriptor config = Descriptor.parse(JsonFields.object(m, "config"));
                if (!config.mediaType().isEmpty() && !MediaTypes.CONFIGS.contains(config.mediaType())) {
                    throw new OciException(what + ": not a container image: its config is of type '" + Digest.printable(config.mediaType())
                            + "' (an artifact such as a Helm chart or a signature?)");
                }
                List<Descriptor> layers = new java.util.ArrayList<>();
                for (Map<String, Object> d : JsonFields.objects(m, "layers")) {
                    Descriptor l = Descriptor.parse(d);
                    if (!l.mediaType().isEmpty() && !MediaTypes.LAYERS.contains(l.mediaType())) {
                        throw new OciException(what + ": layer " + l.digest().shortForm() + " is of unsupported type '"
                                + Digest.printable(l.mediaType()) + "' (tar, tar+gzip and tar+zstd layers are supported)");
                    }
                    layers.add(l);
                }
                return new Manifest(type, config, layers);
            }
            throw new OciException(what + ": unsupported manifest type '" + Digest.printable(type) + "' (supported: "
                    + String.join(", ", MediaTypes.INDEXES) + ", " + String.join(", ", MediaTypes.MANIFESTS) + ")");
        } catch (Json.JsonException e) {
            throw new OciException(what + ": malformed manifest: " + e.getMessage());
        }
    }
}
