package io.vmgate.image.oci;

import java.util.Optional;
import java.util.regex.Pattern;

/**
 * An image reference as {@code docker pull} reads it: {@code [REGISTRY/]REPOSITORY[:TAG][@DIGEST]}.
 * Without a registry (no '.' or ':' in the first component, and not {@code localhost}) it is
 * Docker Hub's, whose one-word repositories live under {@code library/}: {@code ubuntu} is
 * {@code docker.io/library/ubuntu:latest}, served by {@code registry-1.docker.io}.
 *
 * @param registry   as written ({@code docker.io}, {@code 127.0.0.1:5000}), lowercase host
 * @param repository e.g. {@code library/ubuntu}
 * @param tag        {@code latest} unless given; ignored for fetching when a digest is given
 */
public record ImageReference(String registry, String repository, String tag, Optional<Digest> digest) {
    public static final String DOCKER_HUB = "docker.io";
    private static final Pattern COMPONENT = Pattern.compile("[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*");
    private static final Pattern TAG = Pattern.compile("[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}");
    private static final Pattern HOST = Pattern.compile("(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
            + "|\\[[0-9A-Fa-f:.]+\\])(?::[0-9]{1,5})?");

    /** Parses a reference; throws {@link IllegalArgumentException} saying what is wrong with it. */
    public static ImageReference parse(String ref) {
        String s = ref.strip();
        if (s.isEmpty() || s.length() > 512) {
            throw new IllegalArgumentException("'" + Digest.printable(ref) + "' is not an image reference");
        }
        Optional<Digest> digest = Optional.empty();
        int at = s.indexOf('@');
        if (at >= 0) {
            digest = Optional.of(Digest.parse(s.substring(at + 1)));
            s = s.substring(0, at);
        }
        String registry = DOCKER_HUB;
        int slash = s.indexOf('/');
        if (slash > 0) {
            String first = s.substring(0, slash);
            if (first.contains(".") || first.contains(":") || first.equals("localhost") || first.startsWith("[")) {
                registry = first;
                s = s.substring(slash + 1);
            }
        }
        if (!HOST.matcher(registry).matches()) {
            throw new IllegalArgumentException("'" + Digest.printable(registry) + "' in '" + Digest.printable(ref) + "' is not a registry host[:port]");
        }
        registry = registry.toLowerCase(java.util.Locale.ROOT);
        if (registry.equals("index.docker.io") || registry.equals("registry-1.docker.io")) {
            registry = DOCKER_HUB;
        }
        String tag = "latest";
        int colon = s.lastIndexOf(':');
        if (colon >= 0 && s.indexOf('/', colon) < 0) {
            tag = s.substring(colon + 1);
            s = s.substring(0, colon);
            if (!TAG.matcher(tag).matches()) {
                throw new IllegalArgumentException("'" + Digest.printable(tag) + "' in '" + Digest.printable(ref) + "' is not a tag");
            }
        }
        if (registry.equals(DOCKER_HUB) && !s.contains("/")) {
            s = "library/" + s;
        }
        for (String c : s.split("/", -1)) {
            if (!COMPONENT.matcher(c).matches()) {
                throw new IllegalArgumentException("'" + Digest.printable(ref) + "' is not an image reference: '" + Digest.printable(c)
                        + "' is not a repository name component (lowercase letters, digits, and . _ - between them)");
            }
        }
        if (s.length() > 255) {
            throw new IllegalArgumentException("the repository name in '" + Digest.printable(ref) + "' is longer than 255 characters");
        }
        return new ImageReference(registry, s, tag, digest);
    }

    /** The host (and port) the distribution API is served on: Docker Hub's is {@code registry-1.docker.io}. */
    public String apiHost() {
        return registry.equals(DOCKER_HUB) ? "registry-1.docker.io" : registry;
    }

    /** The host without a port, for the loopback check and messages. */
    public String hostName() {
        String h = apiHost();
        if (h.startsWith("[")) {
            return h.substring(1, h.indexOf(']'));
        }
        int colon = h.lastIndexOf(':');
        return colon >= 0 ? h.substring(0, colon) : h;
    }

    /** What to ask the registry's manifests endpoint for: the digest if given, else the tag. */
    public String manifestReference() {
        return digest.map(Digest::toString).orElse(tag);
    }

    /**
     * A store name for the image when the user gives none: the repository's last component, with
     * the tag unless it is {@code latest} ({@code ubuntu}, {@code ubuntu-22.04}).
     */
    public String defaultName() {
        String last = repository.substring(repository.lastIndexOf('/') + 1);
        String n = (tag.equals("latest") ? last : last + "-" + tag)
                .toLowerCase(java.util.Locale.ROOT).replaceAll("[^a-z0-9._-]", "-");
        return n.length() > 64 ? n.substring(0, 64) : n;
    }

    @Override
    public String toString() {
        return registry + "/" + repository + ":" + tag + digest.map(d -> "@" + d).orElse("");
    }
}
