package io.vmgate.image.oci;

import io.vmgate.image.FsEntry;
import io.vmgate.image.ImageException;
import io.vmgate.image.RootfsSource;
import io.vmgate.image.TarReader;
import java.io.BufferedInputStream;
import java.io.FilterInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.security.MessageDigest;
import java.util.Optional;
import org.apache.commons.compress.compressors.gzip.GzipCompressorInputStream;
import org.apache.commons.compress.compressors.zstandard.ZstdCompressorInputStream;

/**
 * Applies OCI layers, bottom first, to a root filesystem being built: each layer's tar (plain,
 * gzip or zstd, recognised by its first bytes) is read entry by entry by {@link TarReader} and
 * handed to the build's {@link RootfsSource.TreeSink}, with the OCI whiteouts turned into removals:
 * {@code DIR/.wh.NAME} removes {@code DIR/NAME} of the layers below, {@code DIR/.wh..wh..opq}
 * empties {@code DIR} of what the layers below put there. Nothing is ever written to a host path:
 * the sink keeps the tree in memory and file contents under numbered names.
 *
 * <p>Layers are not trusted. Paths with "..", NUL or line breaks are refused by the reader; a
 * parent that is a symlink is followed inside the image only (the sink's layer mode); the
 * uncompressed bytes and the entries of the whole image are capped ({@link Limits}), so a zip bomb
 * stops at the cap; device nodes are refused unless allowed; and each layer's compressed bytes and
 * uncompressed tar are checked against the digests the manifest and the config give, so a layer
 * that is not exactly the image's fails the build (which then leaves nothing in the store).
 */
final class LayerApplier {
    private static final String WHITEOUT = ".wh.";
    private static final String OPAQUE = ".wh..wh..opq";

    /**
     * What one image may cost.
     *
     * @param maxBytes         uncompressed tar bytes of all layers together
     * @param maxEntries       tar entries of all layers together
     * @param allowDeviceNodes keep character and block device nodes (written into the image file by
     *                         debugfs, never created on the host); else a layer with one is refused
     */
    record Limits(long maxBytes, long maxEntries, boolean allowDeviceNodes) {
        static final long DEFAULT_MAX_BYTES = 8L << 30;
        static final long DEFAULT_MAX_ENTRIES = 1_000_000;
        /** Characters of names and link targets, all entries together: what the tree costs in memory. */
        static final long MAX_NAME_CHARS = 256L << 20;

        static Limits defaults() {
            return new Limits(DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, false);
        }
    }

    /** What the image has used so far of its {@link Limits}. */
    static final class Budget {
        final Limits limits;
        long bytes;
        long entries;
        long nameChars;

        Budget(Limits limits) {
            this.limits = limits;
        }
    }

    private LayerApplier() {}

    /**
     * Applies one layer.
     *
     * @param what       for messages: "image X: layer 2/5 sha256:..."
     * @param blobDigest the compressed blob's digest, checked over every byte read
     * @param diffId     the uncompressed tar's digest from the config, checked over every byte
     */
    static void apply(InputStream blob, String what, Optional<Digest> blobDigest, Optional<Digest> diffId, RootfsSource.TreeSink sink,
            Budget budget) throws IOException, ImageException {
        MessageDigest blobMd = blobDigest.map(Digest::newMessageDigest).orElse(null);
        InputStream raw = new BufferedInputStream(blobMd == null ? blob : new java.security.DigestInputStream(blob, blobMd), 1 << 16);
        MessageDigest tarMd = diffId.map(Digest::newMessageDigest).orElse(null);
        try (InputStream tar = decompressed(raw, what)) {
            Capped capped = new Capped(tar, budget, what);
            InputStream counted = tarMd == null ? capped : new java.security.DigestInputStream(capped, tarMd);
            sink.beginLayer();
            TarReader r = new TarReader(counted);
            for (FsEntry e; (e = r.next()) != null;) {
                if (++budget.entries > budget.limits.maxEntries()) {
                    throw new OciException(what + ": more than " + budget.limits.maxEntries() + " entries in the image (--max-entries)");
                }
                budget.nameChars += e.path().length() + (e.linkTarget() == null ? 0 : e.linkTarget().length());
                if (budget.nameChars > Limits.MAX_NAME_CHARS) {
                    throw new OciException(what + ": the image's names add up to more than " + Limits.MAX_NAME_CHARS + " characters");
                }
                entry(e, r, what, sink, budget.limits);
            }
            counted.transferTo(java.io.OutputStream.nullOutputStream()); // the end-of-archive blocks, padding: part of the digest
            raw.transferTo(java.io.OutputStream.nullOutputStream());     // whatever the decompressor left (a trailer)
        } catch (TarReader.TarException e) {
            throw new OciException(what + ": " + e.getMessage(), e);
        } catch (ImageException e) {
            throw e instanceof OciException ? e : new OciException(what + ": " + e.getMessage(), e);
        } catch (IOException e) {
            if (e.getCause() instanceof OciException oe) {
                throw oe; // the cap, thrown through the decompressor
            }
            throw new OciException(what + ": cannot read the layer: " + e.getMessage(), e);
        }
        if (tarMd != null) {
            Digest got = diffId.get().of(tarMd);
            if (!got.equals(diffId.get())) {
                throw new OciException(what + ": digest mismatch: the uncompressed layer is " + got + ", the image config says "
                        + diffId.get());
            }
        }
        if (blobMd != null) {
            Digest got = blobDigest.get().of(blobMd);
            if (!got.equals(blobDigest.get())) {
                throw new OciException(what + ": digest mismatch: the layer is " + got + ", the manifest says " + blobDigest.get());
            }
        }
    }

    private static void entry(FsEntry e, TarReader r, String what, RootfsSource.TreeSink sink, Limits limits)
            throws IOException, ImageException {
        try {
            apply(e, r, what, sink, limits);
        } catch (IllegalArgumentException bad) {
            throw new OciException(what + ": " + bad.getMessage(), bad);
        }
    }

    private static void apply(FsEntry e, TarReader r, String what, RootfsSource.TreeSink sink, Limits limits)
            throws IOException, ImageException {
        String path = e.path();
        int slash = path.lastIndexOf('/');
        String dir = slash < 0 ? "" : path.substring(0, slash), name = path.substring(slash + 1);
        if (path.contains("/.wh..wh.") && !name.equals(OPAQUE) || (path.startsWith(".wh..wh.") && !path.equals(OPAQUE))) {
            return; // aufs's own bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not part of the tree
        }
        if (name.equals(OPAQUE)) {
            sink.clearDirectory(dir);
            return;
        }
        if (name.startsWith(WHITEOUT)) {
            String gone = name.substring(WHITEOUT.length());
            if (gone.isEmpty() || gone.equals(".") || gone.equals("..")) {
                throw new OciException(what + ": malformed whiteout '" + FsEntry.normalize(path) + "'");
            }
            sink.remove(dir.isEmpty() ? gone : dir + "/" + gone);
            return;
        }
        if (e.type().isDevice() && !limits.allowDeviceNodes()) {
            throw new OciException(what + ": /" + path + " is a " + (e.type() == FsEntry.Type.CHAR_DEVICE ? "character" : "block")
                    + " device node (" + e.devMajor() + ":" + e.devMinor() + "): device nodes are refused unless --allow-device-nodes"
                    + " (they are written into the image file, never created on this host)");
        }
        if (path.isEmpty() && e.type() != FsEntry.Type.DIRECTORY) {
            throw new OciException(what + ": the layer's root entry is a " + e.type() + ", not a directory");
        }
        sink.add(e, r.content());
    }

    /** The layer's tar: gzip and zstd recognised by their magic numbers, anything else read as tar (whose checksums then decide). */
    private static InputStream decompressed(InputStream in, String what) throws IOException, OciException {
        in.mark(8);
        byte[] magic = in.readNBytes(6);
        in.reset();
        if (magic.length >= 2 && (magic[0] & 0xff) == 0x1f && (magic[1] & 0xff) == 0x8b) {
            return new GzipCompressorInputStream(in, true);
        }
        if (magic.length >= 4 && (magic[0] & 0xff) == 0x28 && (magic[1] & 0xff) == 0xb5 && (magic[2] & 0xff) == 0x2f
                && (magic[3] & 0xff) == 0xfd) {
            return new ZstdCompressorInputStream(in);
        }
        if (magic.length >= 6 && (magic[0] & 0xff) == 0xfd && magic[1] == '7' && magic[2] == 'z' && magic[3] == 'X') {
            throw new OciException(what + ": xz-compressed layers are not supported (tar, gzip and zstd are)");
        }
        if (magic.length >= 3 && magic[0] == 'B' && magic[1] == 'Z' && magic[2] == 'h') {
            throw new OciException(what + ": bzip2-compressed layers are not supported (tar, gzip and zstd are)");
        }
        return in;
    }

    /** Counts the uncompressed bytes against the image's cap, stopping a zip bomb at the cap. */
    private static final class Capped extends FilterInputStream {
        private final Budget budget;
        private final String what;

        Capped(InputStream in, Budget budget, String what) {
            super(in);
            this.budget = budget;
            this.what = what;
        }

        @Override
        public int read() throws IOException {
            byte[] one = new byte[1];
            return read(one, 0, 1) < 0 ? -1 : one[0] & 0xff;
        }

        @Override
        public int read(byte[] b, int off, int len) throws IOException {
            int n = super.read(b, off, len);
            if (n > 0) {
                budget.bytes += n;
                if (budget.bytes > budget.limits.maxBytes()) {
                    throw new IOException(new OciException(what + ": the image is larger than " + size(budget.limits.maxBytes())
                            + " uncompressed (--max-size): refused (a zip bomb, or an image that needs a larger --max-size)"));
                }
            }
            return n;
        }

        @Override
        public long skip(long n) throws IOException {
            return read(new byte[(int) Math.min(n, 8192)], 0, (int) Math.min(n, 8192)) < 0 ? 0 : Math.min(n, 8192);
        }
    }

    static String size(long bytes) {
        return bytes >= (1L << 30) && bytes % (1L << 30) == 0 ? (bytes >> 30) + " GiB"
                : bytes >= (1 << 20) ? String.format("%.1f MiB", bytes / 1048576.0)
                : bytes >= 1024 ? String.format("%.1f KiB", bytes / 1024.0) : bytes + " bytes";
    }
}
