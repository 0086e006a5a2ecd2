package io.vmgate.image.oci;

import io.vmgate.image.ImageException;
import io.vmgate.image.RootfsBuilder;
import io.vmgate.image.RootfsImage;
import io.vmgate.image.RootfsSource;
import io.vmgate.image.RootfsStore;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.function.Consumer;
import java.util.function.LongConsumer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * OCI images into the root filesystem store: {@code vmgate image import} and {@code vmgate image
 * pull}. An image is resolved (its linux/amd64 manifest, its config), its blobs are brought into
 * the shared {@link BlobStore} (each verified; one already there is not fetched again), and its
 * layers are applied in order by the store's atomic build ({@link RootfsStore#build}), which
 * leaves nothing in the store unless the whole image was applied and checked. The image keeps its
 * config's Env, WorkingDir, User, Entrypoint and Cmd ({@link io.vmgate.image.ImageDefaults}).
 *
 * <pre>{@code
 * OciImages oci = new OciImages(cacheRoot, OciImages.Options.defaults(), System.err::println);
 * RootfsImage alpine = oci.pull("alpine:3.20", Optional.empty());          // named "alpine-3.20"
 * RootfsImage mine = oci.importImage("oci-archive:/tmp/app.tar:v1", "app");
 * }</pre>
 */
public final class OciImages {
    private static final Logger log = LoggerFactory.getLogger(OciImages.class);
    /** Bumped when the way an image is made from its layers changes: part of every image's key. */
    static final int FORMAT_VERSION = 1;

    /**
     * How images are imported and pulled.
     *
     * @param maxBytes           the largest image accepted, uncompressed (all layers' tars together)
     * @param maxEntries         the most tar entries accepted (all layers together)
     * @param allowDeviceNodes   keep device nodes (written into the image file, never created on the host); else refuse the image
     * @param insecureRegistries hosts ({@code HOST} or {@code HOST:PORT}) spoken to in plain HTTP besides loopback ones
     * @param parallelDownloads  layers fetched at once
     * @param environment        where {@code REGISTRY_AUTH_FILE}, {@code DOCKER_CONFIG} and {@code HOME} are looked up
     */
    public record Options(long maxBytes, long maxEntries, boolean allowDeviceNodes, Set<String> insecureRegistries, int parallelDownloads,
            Map<String, String> environment) {
        public static final long DEFAULT_MAX_BYTES = LayerApplier.Limits.DEFAULT_MAX_BYTES;
        public static final long DEFAULT_MAX_ENTRIES = LayerApplier.Limits.DEFAULT_MAX_ENTRIES;

        public Options {
            insecureRegistries = Set.copyOf(insecureRegistries);
            environment = Map.copyOf(environment);
            if (maxBytes < 1 || maxEntries < 1 || parallelDownloads < 1) {
                throw new IllegalArgumentException("limits must be positive");
            }
        }

        /** 8 GiB, a million entries, no device nodes, no insecure registries, 3 downloads at once, this process's environment. */
        public static Options defaults() {
            return new Options(DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, false, Set.of(), 3, System.getenv());
        }

        public Options withMaxBytes(long v) {
            return new Options(v, maxEntries, allowDeviceNodes, insecureRegistries, parallelDownloads, environment);
        }

        public Options withMaxEntries(long v) {
            return new Options(maxBytes, v, allowDeviceNodes, insecureRegistries, parallelDownloads, environment);
        }

        public Options withAllowDeviceNodes(boolean v) {
            return new Options(maxBytes, maxEntries, v, insecureRegistries, parallelDownloads, environment);
        }

        public Options withInsecureRegistries(Set<String> v) {
            return new Options(maxBytes, maxEntries, allowDeviceNodes, v, parallelDownloads, environment);
        }

        public Options withEnvironment(Map<String, String> v) {
            return new Options(maxBytes, maxEntries, allowDeviceNodes, insecureRegistries, parallelDownloads, v);
        }

        LayerApplier.Limits limits() {
            return new LayerApplier.Limits(maxBytes, maxEntries, allowDeviceNodes);
        }
    }

    private final RootfsStore store;
    private final BlobStore blobs;
    private final Options options;
    private final Consumer<String> progress;
    private Duration stall = RegistryClient.DEFAULT_STALL;

    public OciImages(Path cacheRoot, Options options, Consumer<String> progress) {
        this.store = new RootfsStore(cacheRoot);
        this.blobs = new BlobStore(cacheRoot);
        this.options = options;
        this.progress = progress;
    }

    /** For tests: how long a transfer may go without a byte before it is abandoned (default 60 s). */
    OciImages stallTimeout(Duration d) {
        this.stall = d;
        return this;
    }

    public BlobStore blobStore() {
        return blobs;
    }

    /**
     * Imports {@code oci:DIR[:TAG]}, {@code oci-archive:FILE[:TAG]} or {@code docker-archive:FILE[:NAME:TAG]}
     * and names it {@code name}.
     */
    public RootfsImage importImage(String source, String name) throws ImageException {
        checkName(name);
        Sources.Spec spec = Sources.Spec.parse(source);
        try (BlobStore.Lease ignored = lease()) {
            progress.accept("reading " + spec.describe());
            Resolution.Found found = switch (spec.transport()) {
                case "oci" -> Sources.layout(spec, blobs);
                case "oci-archive" -> Sources.ociArchive(spec, blobs, options.maxBytes());
                default -> Sources.dockerArchive(spec, blobs, options.maxBytes());
            };
            fetchLayers(found.image(), found.fetcher(), spec.describe(), false); // a layout's are copied in (verified); an archive's are there
            return build(found.image(), name);
        }
    }

    /** Pulls a reference ({@code ubuntu}, {@code 127.0.0.1:5000/app:v1}) and names it {@code name}, or by its repository and tag. */
    public RootfsImage pull(String reference, Optional<String> name) throws ImageException {
        ImageReference ref;
        try {
            ref = ImageReference.parse(reference);
        } catch (IllegalArgumentException e) {
            throw new OciException(e.getMessage());
        }
        String n = name.orElse(ref.defaultName());
        checkName(n);
        RegistryClient client = new RegistryClient(Credentials.fromEnvironment(options.environment()), options.insecureRegistries(), stall);
        try (BlobStore.Lease ignored = lease()) {
            progress.accept("pulling " + ref);
            RegistryClient.Fetched top = client.manifest(ref, ref.manifestReference(), "the manifest " + ref.manifestReference());
            keep(top.digest(), top.body(), ref.toString());
            Resolution.Fetcher f = new Resolution.Fetcher() {
                @Override
                public byte[] manifest(Descriptor d, String what) throws OciException {
                    RegistryClient.Fetched m = client.manifest(ref, d.digest().toString(), what);
                    keep(m.digest(), m.body(), ref.toString());
                    return m.body();
                }

                @Override
                public void blob(Descriptor d, String what, LongConsumer p) throws OciException {
                    if (!blobs.has(d.digest(), d.size())) {
                        client.blob(ref, d, blobs, what, p);
                    }
                }

                @Override
                public BlobStore store() {
                    return blobs;
                }
            };
            Resolution.Resolved r = Resolution.resolve(ref.toString(), top.body(), top.contentType(), top.digest(), f);
            fetchLayers(r, f, ref.toString(), true);
            return build(r, n);
        }
    }

    private BlobStore.Lease lease() throws OciException {
        try {
            return blobs.lease();
        } catch (IOException e) {
            throw new OciException("cannot lock the blob store " + blobs.dir() + ": " + e.getMessage(), e);
        }
    }

    /** Keeps a fetched manifest in the blob store, so the image's blobs are all there. */
    private void keep(Digest d, byte[] body, String what) throws OciException {
        if (blobs.has(d, body.length)) {
            return;
        }
        try (InputStream in = new ByteArrayInputStream(body)) {
            blobs.put(d, body.length, in, n -> { });
        } catch (IOException e) {
            throw new OciException(what + ": cannot write to the blob store " + blobs.dir() + ": " + e.getMessage(), e);
        }
    }

    private void checkSize(Resolution.Resolved r) throws OciException {
        if (r.bytes() > options.maxBytes()) {
            throw new OciException(r.source() + ": its layers are " + LayerApplier.size(r.bytes()) + " compressed, more than the "
                    + LayerApplier.size(options.maxBytes()) + " allowed (--max-size)");
        }
    }

    /** Fetches the layers not in the blob store yet, a few at once, with progress per layer. */
    private void fetchLayers(Resolution.Resolved r, Resolution.Fetcher f, String what, boolean announceCached) throws OciException {
        checkSize(r);
        List<Resolution.Layer> layers = r.layers();
        long missing = layers.stream().filter(l -> !blobs.has(l.digest(), l.size())).mapToLong(Resolution.Layer::size).sum();
        progress.accept(r.id().shortForm() + " (" + r.config().platform() + "): " + layers.size() + " layers, "
                + LayerApplier.size(r.bytes()) + (missing == r.bytes() || !announceCached ? "" : ", " + LayerApplier.size(missing) + " of it to fetch"));
        ExecutorService pool = Executors.newFixedThreadPool(options.parallelDownloads(), Thread.ofPlatform().daemon().name("oci-fetch-", 0).factory());
        try {
            List<Future<?>> jobs = new ArrayList<>();
            for (int i = 0; i < layers.size(); i++) {
                Resolution.Layer l = layers.get(i);
                String label = "layer " + (i + 1) + "/" + layers.size() + " " + l.digest().shortForm();
                if (blobs.has(l.digest(), l.size())) {
                    if (announceCached) {
                        progress.accept(label + ": already in the blob store (" + LayerApplier.size(l.size()) + ")");
                    }
                    continue;
                }
                jobs.add(pool.submit(() -> {
                    long t0 = System.nanoTime();
                    long[] last = {t0};
                    f.blob(new Descriptor("", l.digest(), l.size(), Optional.empty(), Map.of()), label, n -> {
                        long now = System.nanoTime();
                        if (now - last[0] >= 1_000_000_000L && n < l.size()) {
                            last[0] = now;
                            progress.accept(label + ": " + LayerApplier.size(n) + " of " + LayerApplier.size(l.size()));
                        }
                    });
                    progress.accept(label + (announceCached ? ": fetched " : ": stored ") + LayerApplier.size(l.size()) + " in "
                            + String.format("%.1f s", (System.nanoTime() - t0) / 1e9));
                    return null;
                }));
            }
            for (Future<?> j : jobs) {
                try {
                    j.get();
                } catch (ExecutionException e) {
                    pool.shutdownNow(); // the other transfers stop, and leave nothing
                    if (e.getCause() instanceof OciException oe) {
                        throw oe;
                    }
                    throw new OciException(what + ": fetching a layer failed: " + e.getCause(), e.getCause());
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new OciException(what + ": interrupted", e);
                }
            }
        } finally {
            pool.shutdownNow();
        }
    }

    /** Applies the layers in the store's atomic build; the image is found again by its key if it was made before. */
    private RootfsImage build(Resolution.Resolved r, String name) throws ImageException {
        checkSize(r);
        String key = Digest.sha256(("vmgate-oci format=" + FORMAT_VERSION + " rootfs-format=" + RootfsBuilder.FORMAT_VERSION + " image=" + r.id()
                + " devices=" + options.allowDeviceNodes()).getBytes(StandardCharsets.UTF_8)).hex();
        LayerApplier.Budget budget = new LayerApplier.Budget(options.limits());
        List<Resolution.Layer> layers = r.layers();
        RootfsSource.Producer producer = sink -> {
            for (int i = 0; i < layers.size(); i++) {
                Resolution.Layer l = layers.get(i);
                String what = r.source() + ": layer " + (i + 1) + "/" + layers.size() + " " + l.digest().shortForm();
                progress.accept("applying layer " + (i + 1) + "/" + layers.size() + " " + l.digest().shortForm() + " ("
                        + LayerApplier.size(l.size()) + ")");
                try (InputStream in = blobs.open(l.digest())) {
                    LayerApplier.apply(in, what, Optional.of(l.digest()), l.diffId(), sink, budget);
                }
            }
            Optional<String> workdir = r.config().defaults().workdir();
            if (workdir.isPresent()) {
                sink.ensureDirectory(workdir.get()); // as container runtimes make it when an image lacks it
            }
        };
        List<String> blobList = r.blobs().stream().map(Digest::toString).distinct().toList();
        RootfsImage img = store.build(name, new RootfsSource.Entries(r.source(), Optional.of(key), r.config().defaults(), blobList, producer),
                progress);
        log.atInfo().setMessage("oci_image_stored").addKeyValue("name", name).addKeyValue("source", r.source())
                .addKeyValue("id", img.shortId()).addKeyValue("layers", layers.size())
                .addKeyValue("uncompressed_bytes", budget.bytes).log();
        return img;
    }

    private static void checkName(String name) throws ImageException {
        if (!RootfsStore.isValidName(name)) {
            throw new ImageException("'" + Digest.printable(String.valueOf(name)) + "' is not an image name: use 1-64 of [a-z0-9._-], "
                    + "starting with a letter or digit");
        }
    }
}
