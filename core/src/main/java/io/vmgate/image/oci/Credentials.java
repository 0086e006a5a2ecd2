package io.vmgate.image.oci;

import io.vmgate.text.Json;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.Base64;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;

/**
 * Registry credentials as {@code docker login} and {@code podman login} keep them: the file
 * {@code $REGISTRY_AUTH_FILE}, else {@code $DOCKER_CONFIG/config.json}, else
 * {@code ~/.docker/config.json}, whose {@code auths} map a registry to {@code auth}, the base64 of
 * {@code user:password}. Credential helpers ({@code credsStore}, {@code credHelpers}) are not run:
 * a registry found only there is said to be so when it asks for credentials.
 */
final class Credentials {
    /** A user and password (or token) for one registry. */
    record Login(String user, String password) {
        String basicHeader() {
            return "Basic " + Base64.getEncoder().encodeToString((user + ":" + password).getBytes(StandardCharsets.UTF_8));
        }

        @Override
        public String toString() {
            return "Login[" + user + "]"; // never the password
        }
    }

    private final Optional<Path> file;
    private final Map<String, Object> auths;
    private final boolean helpers;

    private Credentials(Optional<Path> file, Map<String, Object> auths, boolean helpers) {
        this.file = file;
        this.auths = auths;
        this.helpers = helpers;
    }

    static Credentials none() {
        return new Credentials(Optional.empty(), Map.of(), false);
    }

    /** The file the environment points at (see the class comment); none when it does not exist. */
    static Credentials fromEnvironment(Map<String, String> env) throws OciException {
        String explicit = env.get("REGISTRY_AUTH_FILE");
        if (explicit != null && !explicit.isEmpty()) {
            return load(Path.of(explicit), true);
        }
        String dockerConfig = env.get("DOCKER_CONFIG");
        if (dockerConfig != null && !dockerConfig.isEmpty()) {
            return load(Path.of(dockerConfig, "config.json"), false);
        }
        String home = env.getOrDefault("HOME", System.getProperty("user.home"));
        return load(Path.of(home, ".docker", "config.json"), false);
    }

    static Credentials load(Path f, boolean mustExist) throws OciException {
        byte[] b;
        try {
            if (Files.size(f) > (1 << 20)) {
                throw new OciException("the registry credentials file " + f + " is larger than 1 MiB");
            }
            b = Files.readAllBytes(f);
        } catch (NoSuchFileException e) {
            if (mustExist) {
                throw new OciException("the registry credentials file " + f + " ($REGISTRY_AUTH_FILE) does not exist");
            }
            return none();
        } catch (IOException e) {
            throw new OciException("cannot read the registry credentials file " + f + ": " + e.getMessage(), e);
        }
        try {
            Map<String, Object> m = JsonFields.parseObject(b);
            boolean helpers = m.get("credsStore") != null || !JsonFields.object(m, "credHelpers").isEmpty();
            return new Credentials(Optional.of(f), JsonFields.object(m, "auths"), helpers);
        } catch (Json.JsonException e) {
            throw new OciException("the registry credentials file " + f + " is not valid JSON: " + e.getMessage());
        }
    }

    /** The login for a registry ({@code docker.io}, {@code 127.0.0.1:5000}), if the file has one. */
    Optional<Login> forRegistry(String registry) throws OciException {
        for (Map.Entry<String, Object> e : auths.entrySet()) {
            if (!normalize(e.getKey()).equals(normalize(registry)) || !(e.getValue() instanceof Map<?, ?> entry)) {
                continue;
            }
            if (entry.get("auth") instanceof String auth && !auth.isEmpty()) {
                String decoded;
                try {
                    decoded = new String(Base64.getDecoder().decode(auth.strip()), StandardCharsets.UTF_8);
                } catch (IllegalArgumentException bad) {
                    throw new OciException("the credentials for " + registry + " in " + file.orElseThrow() + " are not base64");
                }
                int colon = decoded.indexOf(':');
                if (colon <= 0) {
                    throw new OciException("the credentials for " + registry + " in " + file.orElseThrow() + " are not user:password");
                }
                return Optional.of(new Login(decoded.substring(0, colon), decoded.substring(colon + 1)));
            }
            if (entry.get("username") instanceof String u && entry.get("password") instanceof String p) {
                return Optional.of(new Login(u, p));
            }
        }
        return Optional.empty();
    }

    /** Whether the file has a login for the registry (a malformed one counts). */
    boolean forRegistryQuietly(String registry) {
        try {
            return forRegistry(registry).isPresent();
        } catch (OciException e) {
            return true;
        }
    }

    /** Where credentials were looked for, for messages. */
    String describe() {
        return file.map(f -> f + (helpers ? " (its credential helpers are not used by vmgate)" : ""))
                .orElse("~/.docker/config.json or $REGISTRY_AUTH_FILE (none found)");
    }

    /** "https://index.docker.io/v1/", "registry-1.docker.io" and "docker.io" are one registry; schemes and paths do not matter. */
    static String normalize(String key) {
        String k = key.toLowerCase(Locale.ROOT);
        k = k.replaceFirst("^[a-z]+://", "");
        int slash = k.indexOf('/');
        if (slash >= 0) {
            k = k.substring(0, slash);
        }
        return switch (k) {
            case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com" -> "docker.io";
            default -> k;
        };
    }
}
