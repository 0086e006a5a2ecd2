package io.vmgate.image.oci;

import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.function.LongConsumer;

/**
 * From a manifest or index to an image that can be built: an index is narrowed to its linux/amd64
 * manifest, the manifest's config is fetched and read, and the layers are listed with the
 * digests their uncompressed tars must have. The same for registries and layouts: a
 * {@link Fetcher} says where manifests and blobs come from.
 */
final class Resolution {
    private static final int MAX_NESTING = 4;

    private Resolution() {}

    /** Where an image's manifests and blobs come from; everything it yields is verified against its digest. */
    interface Fetcher {
        /** The bytes of a manifest or index, checked against the descriptor's digest (and kept in the blob store). */
        byte[] manifest(Descriptor d, String what) throws OciException;

        /** Makes sure the blob is in the blob store, checked against its digest and size. */
        void blob(Descriptor d, String what, LongConsumer progress) throws OciException;

        /** The blob store everything lands in. */
        BlobStore store();
    }

    /** A resolved image and where its blobs come from (its layers may not be in the blob store yet). */
    record Found(Resolved image, Fetcher fetcher) {}

    /** One layer to apply: its blob and the digest of its uncompressed tar (from the config). */
    record Layer(Digest digest, long size, Optional<Digest> diffId) {}

    /**
     * An image ready to build once its layers are fetched.
     *
     * @param source for messages and {@code image ls}: where it came from
     * @param id     what identifies its content: the manifest's digest (a docker archive: its config's)
     * @param blobs  every blob it was made from: manifests, config, layers
     */
    record Resolved(String source, Digest id, ImageConfig config, List<Layer> layers, List<Digest> blobs) {
        Resolved {
            layers = List.copyOf(layers);
            blobs = List.copyOf(blobs);
        }

        long bytes() {
            return layers.stream().mapToLong(Layer::size).sum();
        }
    }

    /**
     * Resolves a manifest or index whose bytes are {@code top} (digest {@code topDigest}): the
     * linux/amd64 manifest, its config (fetched), its layers (not fetched yet).
     */
    static Resolved resolve(String source, byte[] top, Optional<String> contentType, Digest topDigest, Fetcher f) throws OciException {
        List<Digest> blobs = new ArrayList<>(List.of(topDigest));
        Document doc = Document.parse(top, contentType, source);
        Digest manifestDigest = topDigest;
        for (int depth = 0; doc instanceof Document.Index index; depth++) {
            if (depth >= MAX_NESTING) {
                throw new OciException(source + ": indexes nested deeper than " + MAX_NESTING);
            }
            Descriptor d = pick(index, source);
            byte[] body = f.manifest(d, "the linux/amd64 manifest " + d.digest().shortForm());
            doc = Document.parse(body, Optional.of(d.mediaType()).filter(s -> !s.isEmpty()), source + "@" + d.digest().shortForm());
            blobs.add(d.digest());
            manifestDigest = d.digest();
        }
        Document.Manifest m = (Document.Manifest) doc;
        f.blob(m.config(), "the image config " + m.config().digest().shortForm(), n -> { });
        blobs.add(m.config().digest());
        ImageConfig config = ImageConfig.parse(read(f.store(), m.config().digest(), ImageConfig.MAX_BYTES, source), source);
        Platform p = config.platform();
        if (!p.architecture().isEmpty() && !p.runsHere() || !p.os().isEmpty() && !p.os().equals("linux")) {
            throw new OciException(source + ": the image is for " + p + "; vmgate's guests run " + Platform.LINUX_AMD64);
        }
        if (!config.diffIds().isEmpty() && config.diffIds().size() != m.layers().size()) {
            throw new OciException(source + ": the manifest lists " + m.layers().size() + " layers, the config " + config.diffIds().size()
                    + " (rootfs.diff_ids): the image is inconsistent");
        }
        List<Layer> layers = new ArrayList<>();
        for (int i = 0; i < m.layers().size(); i++) {
            Descriptor l = m.layers().get(i);
            layers.add(new Layer(l.digest(), l.size(), config.diffIds().isEmpty() ? Optional.empty() : Optional.of(config.diffIds().get(i))));
            blobs.add(l.digest());
        }
        return new Resolved(source + "@" + manifestDigest, manifestDigest, config, layers, blobs);
    }

    static byte[] read(BlobStore store, Digest d, int max, String source) throws OciException {
        try {
            return store.read(d, max);
        } catch (java.io.IOException e) {
            throw new OciException(source + ": cannot read blob " + d.shortForm() + " from the blob store: " + e.getMessage(), e);
        } catch (OciException e) {
            throw new OciException(source + ": " + e.getMessage(), e);
        }
    }

    /** The index entry vmgate's guests can run: linux/amd64, plain or v1 before later variants. */
    static Descriptor pick(Document.Index index, String source) throws OciException {
        List<Descriptor> ms = index.manifests();
        if (ms.size() == 1 && ms.get(0).platform().isEmpty()) {
            return ms.get(0); // an unannotated single image (a layout's index.json): its config says the platform
        }
        Optional<Descriptor> best = Optional.empty();
        for (Descriptor d : ms) {
            if (d.platform().isEmpty() || !d.platform().get().runsHere()) {
                continue;
            }
            String v = d.platform().get().variant();
            if (v.isEmpty() || v.equals("v1")) {
                return d;
            }
            best = best.or(() -> Optional.of(d));
        }
        if (best.isPresent()) {
            return best.get();
        }
        List<String> have = ms.stream().map(d -> d.platform().map(Platform::toString).orElse("unknown"))
                .filter(s -> !s.equals("unknown/unknown")).distinct().toList();
        throw new OciException(source + ": no " + Platform.LINUX_AMD64 + " image in it (it has " + (have.isEmpty() ? "none with a platform"
                : String.join(", ", have)) + "); vmgate's guests run " + Platform.LINUX_AMD64);
    }
}
