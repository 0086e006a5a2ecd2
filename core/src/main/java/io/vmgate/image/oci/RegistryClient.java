package io.vmgate.image.oci;

import io.vmgate.text.Json;
import java.io.FilterInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.net.ConnectException;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpConnectTimeoutException;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.HttpTimeoutException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.LongConsumer;
import javax.net.ssl.SSLException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A client of one registry's distribution API (HTTP API v2) over the JDK's HTTP client: manifests
 * and blobs by digest, with the authentication registries ask for ({@code WWW-Authenticate}:
 * a bearer token from the realm they name, anonymously or with the user's credentials, or HTTP
 * Basic), redirects followed by hand (credentials never go to another host, and never from HTTPS
 * down to plain HTTP), and every answer but success turned into a message that names the image,
 * the status and the registry's own error codes.
 *
 * <p>HTTPS always, except for registries on the loopback interface and hosts the operator names
 * with {@code --insecure-registry}, which are spoken to in plain HTTP.
 */
final class RegistryClient {
    private static final Logger log = LoggerFactory.getLogger(RegistryClient.class);
    private static final int MAX_REDIRECTS = 5;
    private static final int MAX_ERROR_BODY = 64 << 10;
    private static final Duration REQUEST_TIMEOUT = Duration.ofSeconds(60);

    /** A transfer with no byte for this long is abandoned: the JDK's client has no read timeout for a body. */
    static final Duration DEFAULT_STALL = Duration.ofSeconds(60);
    private static final ScheduledExecutorService WATCHDOG = Executors.newSingleThreadScheduledExecutor(
            Thread.ofPlatform().daemon().name("oci-stall-watchdog").factory());

    private final HttpClient http;
    private final Credentials credentials;
    private final Set<String> insecure;
    private final Duration stall;
    private final Map<String, String> authorization = new ConcurrentHashMap<>(); // per repository

    RegistryClient(Credentials credentials, Set<String> insecureRegistries) {
        this(credentials, insecureRegistries, DEFAULT_STALL);
    }

    RegistryClient(Credentials credentials, Set<String> insecureRegistries, Duration stall) {
        this.http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(30)).followRedirects(HttpClient.Redirect.NEVER)
                .version(HttpClient.Version.HTTP_1_1).build();
        this.credentials = credentials;
        this.insecure = Set.copyOf(insecureRegistries);
        this.stall = stall;
    }

    /** A manifest or index as the registry sent it. */
    record Fetched(byte[] body, Optional<String> contentType, Digest digest) {}

    /** Plain HTTP for loopback hosts and those named insecure; HTTPS for everything else. */
    boolean plainHttp(String hostPort, String host) {
        return isLoopback(host) || insecure.contains(hostPort) || insecure.contains(host);
    }

    static boolean isLoopback(String host) {
        String h = host.startsWith("[") ? host.substring(1, host.length() - 1) : host;
        return h.equals("localhost") || h.matches("127(\\.\\d{1,3}){3}") || h.equals("::1") || h.equals("0:0:0:0:0:0:0:1");
    }

    private URI base(ImageReference ref) {
        return URI.create((plainHttp(ref.apiHost(), ref.hostName()) ? "http://" : "https://") + ref.apiHost() + "/v2/");
    }

    /**
     * The manifest (or index) {@code reference} (a tag or a digest) of the image's repository, at
     * most {@link Document#MAX_BYTES}; when {@code reference} is a digest, the body must have it.
     */
    Fetched manifest(ImageReference ref, String reference, String what) throws OciException {
        URI uri = base(ref).resolve(ref.repository() + "/manifests/" + reference);
        HttpResponse<InputStream> r = get(ref, uri, MediaTypes.ACCEPT, what);
        try (InputStream in = r.body()) {
            if (r.statusCode() != 200) {
                throw failure(ref, what, r);
            }
            byte[] body = in.readNBytes(Document.MAX_BYTES + 1);
            if (body.length > Document.MAX_BYTES) {
                throw new OciException(ref + ": " + what + " is larger than " + Document.MAX_BYTES + " bytes");
            }
            Digest digest;
            if (reference.contains(":")) {
                Digest wanted = Digest.parse(reference);
                MessageDigestHolder h = new MessageDigestHolder(wanted);
                digest = h.of(body);
                if (!digest.equals(wanted)) {
                    throw new OciException(ref + ": digest mismatch: " + what + " " + wanted + " has the digest " + digest);
                }
            } else {
                digest = Digest.sha256(body);
                Optional<String> said = r.headers().firstValue("Docker-Content-Digest");
                if (said.isPresent() && said.get().startsWith("sha256:") && !said.get().equals(digest.toString())) {
                    throw new OciException(ref + ": digest mismatch: the registry says " + what + " is " + Digest.printable(said.get())
                            + ", its bytes are " + digest);
                }
            }
            return new Fetched(body, r.headers().firstValue("Content-Type"), digest);
        } catch (IOException e) {
            throw connectionFailed(ref, what, e);
        }
    }

    /** Fetches a blob into the store, checking its size and digest (see {@link BlobStore#put}). */
    void blob(ImageReference ref, Descriptor d, BlobStore store, String what, LongConsumer progress) throws OciException {
        URI uri = base(ref).resolve(ref.repository() + "/blobs/" + d.digest());
        HttpResponse<InputStream> r = get(ref, uri, "*/*", what);
        long[] got = {0};
        AtomicLong lastRead = new AtomicLong(System.nanoTime());
        AtomicBoolean stalled = new AtomicBoolean();
        InputStream body = r.body();
        ScheduledFuture<?> watch = WATCHDOG.scheduleAtFixedRate(() -> {
            if (System.nanoTime() - lastRead.get() > stall.toNanos() && stalled.compareAndSet(false, true)) {
                try {
                    body.close(); // wakes the blocked read with an IOException
                } catch (IOException ignored) {
                    // closing is all we can do
                }
            }
        }, Math.max(1, stall.toMillis() / 4), Math.max(1, stall.toMillis() / 4), TimeUnit.MILLISECONDS);
        try (InputStream in = new FilterInputStream(body) {
            @Override
            public int read(byte[] b, int off, int len) throws IOException {
                int n = super.read(b, off, len);
                lastRead.set(System.nanoTime());
                return n;
            }
        }) {
            if (r.statusCode() != 200) {
                throw failure(ref, what, r);
            }
            store.put(d.digest(), d.size(), in, n -> {
                got[0] = n;
                progress.accept(n);
            });
        } catch (OciException e) {
            throw new OciException(ref + ": " + what + ": " + e.getMessage(), e);
        } catch (IOException e) {
            throw new OciException(ref + ": the connection " + (stalled.get() ? "stalled (no data for " + stall.toSeconds() + " s)" : "dropped")
                    + " while fetching " + what + ", after about " + got[0] + " of its " + d.size() + " bytes (" + describe(e)
                    + "); nothing of it was kept, complete layers were: pull again to resume", e);
        } finally {
            watch.cancel(false);
        }
    }

    /** GET with the repository's authorization, answering one challenge and following redirects. */
    private HttpResponse<InputStream> get(ImageReference ref, URI uri, String accept, String what) throws OciException {
        boolean challenged = false;
        URI at = uri;
        for (int hop = 0; ; ) {
            boolean sameHost = at.getHost().equalsIgnoreCase(uri.getHost()) && at.getPort() == uri.getPort();
            HttpRequest.Builder b = HttpRequest.newBuilder(at).GET().header("Accept", accept).timeout(REQUEST_TIMEOUT)
                    .header("User-Agent", "vmgate");
            String auth = authorization.get(ref.repository());
            if (auth != null && sameHost) {
                b.header("Authorization", auth);
            }
            HttpResponse<InputStream> r;
            try {
                r = http.send(b.build(), HttpResponse.BodyHandlers.ofInputStream());
            } catch (IOException e) {
                throw connectionFailed(ref, what, e);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new OciException(ref + ": interrupted fetching " + what, e);
            }
            int s = r.statusCode();
            if (s == 401 && sameHost && !challenged) {
                challenged = true;
                List<String> challenges = r.headers().allValues("WWW-Authenticate");
                close(r);
                authenticate(ref, Challenge.pick(challenges), what);
                continue;
            }
            if (s == 301 || s == 302 || s == 303 || s == 307 || s == 308) {
                Optional<String> loc = r.headers().firstValue("Location");
                close(r);
                if (loc.isEmpty() || ++hop > MAX_REDIRECTS) {
                    throw new OciException(ref + ": " + what + ": " + (loc.isEmpty() ? "a redirect without a Location" : "too many redirects"));
                }
                URI next;
                try {
                    next = at.resolve(loc.get());
                } catch (IllegalArgumentException e) {
                    throw new OciException(ref + ": " + what + ": the registry redirected to a malformed URL");
                }
                if (next.getHost() == null || next.getScheme() == null || !(next.getScheme().equals("https")
                        || next.getScheme().equals("http") && (at.getScheme().equals("http") && plainHttp(hostPort(next), next.getHost())))) {
                    throw new OciException(ref + ": " + what + ": refused a redirect to " + next.getScheme() + "://" + next.getHost()
                            + " (only HTTPS, or plain HTTP from a plain-HTTP registry to a loopback or --insecure-registry host)");
                }
                log.atDebug().setMessage("oci_redirect").addKeyValue("from", at.getHost()).addKeyValue("to_host", next.getHost()).log();
                at = next;
                continue;
            }
            return r;
        }
    }

    /** Answers a challenge: a bearer token from its realm, or Basic with the user's credentials. */
    private void authenticate(ImageReference ref, Optional<Challenge> challenge, String what) throws OciException {
        Optional<Credentials.Login> login = credentials.forRegistry(ref.registry());
        if (challenge.isEmpty()) {
            throw new OciException(ref + ": the registry answered 401 Unauthorized for " + what + " without a challenge vmgate can answer");
        }
        Challenge c = challenge.get();
        if (c.scheme().equals("basic")) {
            if (login.isEmpty()) {
                throw new OciException(ref + ": the registry needs credentials (401 Unauthorized, Basic) and there are none for "
                        + ref.registry() + " in " + credentials.describe());
            }
            authorization.put(ref.repository(), login.get().basicHeader());
            return;
        }
        String realm = c.params().get("realm");
        if (realm == null || realm.isEmpty()) {
            throw new OciException(ref + ": the registry's bearer challenge names no realm");
        }
        URI realmUri;
        try {
            realmUri = URI.create(realm);
        } catch (IllegalArgumentException e) {
            throw new OciException(ref + ": the registry's token realm '" + Digest.printable(realm) + "' is not a URL");
        }
        if (realmUri.getHost() == null || realmUri.getScheme() == null || !(realmUri.getScheme().equals("https")
                || realmUri.getScheme().equals("http") && plainHttp(hostPort(realmUri), realmUri.getHost()))) {
            throw new OciException(ref + ": refused the token realm " + Digest.printable(realm)
                    + " (tokens are fetched over HTTPS, or plain HTTP only from loopback and --insecure-registry hosts)");
        }
        StringBuilder q = new StringBuilder();
        if (c.params().containsKey("service")) {
            q.append("service=").append(URLEncoder.encode(c.params().get("service"), StandardCharsets.UTF_8));
        }
        String scope = c.params().getOrDefault("scope", "repository:" + ref.repository() + ":pull");
        q.append(q.isEmpty() ? "" : "&").append("scope=").append(URLEncoder.encode(scope, StandardCharsets.UTF_8));
        URI tokenUri = URI.create(realm + (realm.contains("?") ? "&" : "?") + q);
        HttpRequest.Builder b = HttpRequest.newBuilder(tokenUri).GET().timeout(REQUEST_TIMEOUT).header("User-Agent", "vmgate");
        login.ifPresent(l -> b.header("Authorization", l.basicHeader()));
        HttpResponse<InputStream> r;
        try {
            r = http.send(b.build(), HttpResponse.BodyHandlers.ofInputStream());
        } catch (IOException e) {
            throw connectionFailed(ref, "a token from " + realmUri.getHost(), e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new OciException(ref + ": interrupted fetching a token", e);
        }
        try (InputStream in = r.body()) {
            if (r.statusCode() != 200) {
                String errors = errors(in);
                throw new OciException(ref + ": the token service " + realmUri.getHost() + " answered " + status(r.statusCode())
                        + (errors.isEmpty() ? "" : ": " + errors) + (login.isPresent() ? " (with the credentials for " + ref.registry()
                        + " from " + credentials.describe() + ")" : " (no credentials for " + ref.registry() + " in " + credentials.describe() + ")"));
            }
            Map<String, Object> m = JsonFields.parseObject(in.readNBytes(1 << 20));
            String token = JsonFields.string(m, "token").or(() -> stringOrEmpty(m, "access_token")).orElse("");
            if (token.isEmpty() || token.length() > 65536 || token.chars().anyMatch(ch -> ch < 0x21 || ch > 0x7e)) {
                throw new OciException(ref + ": the token service " + realmUri.getHost() + " sent no usable token");
            }
            authorization.put(ref.repository(), "Bearer " + token);
            log.atDebug().setMessage("oci_token").addKeyValue("registry", ref.registry())
                    .addKeyValue("repository", ref.repository()).addKeyValue("with_credentials", login.isPresent()).log();
        } catch (IOException e) {
            throw connectionFailed(ref, "a token from " + realmUri.getHost(), e);
        } catch (Json.JsonException e) {
            throw new OciException(ref + ": the token service " + realmUri.getHost() + " sent malformed JSON: " + e.getMessage());
        }
    }

    private static Optional<String> stringOrEmpty(Map<String, Object> m, String key) {
        try {
            return JsonFields.string(m, key);
        } catch (Json.JsonException e) {
            return Optional.empty();
        }
    }

    /** A non-success answer as a message: the status, what was asked for, the registry's error codes. */
    private OciException failure(ImageReference ref, String what, HttpResponse<InputStream> r) {
        int s = r.statusCode();
        String errors;
        try (InputStream in = r.body()) {
            errors = errors(in);
        } catch (IOException e) {
            errors = "";
        }
        String detail = errors.isEmpty() ? "" : ": " + errors;
        String msg = switch (s) {
            case 401, 403 -> ref + ": access to " + what + " refused (" + status(s) + ")" + detail + ": the repository does not exist, or needs "
                    + (credentials.forRegistryQuietly(ref.registry()) ? "other credentials than those in " + credentials.describe()
                    : "credentials (none for " + ref.registry() + " in " + credentials.describe() + ")");
            case 404 -> ref + ": " + what + " not found (404 Not Found)" + detail;
            case 429 -> ref + ": the registry is rate-limiting this host (429 Too Many Requests)" + detail
                    + r.headers().firstValue("Retry-After").map(v -> "; it asks to retry after " + Digest.printable(v) + " s").orElse("");
            default -> ref + ": the registry answered " + status(s) + " for " + what + detail;
        };
        return new OciException(msg);
    }

    /** The registry's error document ({@code {"errors":[{"code":..,"message":..}]}}) as one line, or the body's first line. */
    private static String errors(InputStream in) throws IOException {
        byte[] b = in.readNBytes(MAX_ERROR_BODY);
        try {
            List<String> out = new ArrayList<>();
            for (Map<String, Object> e : JsonFields.objects(JsonFields.parseObject(b), "errors")) {
                String code = JsonFields.string(e, "code").orElse("");
                String message = JsonFields.string(e, "message").orElse("");
                out.add((code + " " + message).strip());
            }
            return Digest.printable(String.join("; ", out));
        } catch (Json.JsonException notJson) {
            String text = new String(b, StandardCharsets.UTF_8).strip();
            String first = text.lines().findFirst().orElse("");
            return Digest.printable(first.length() > 200 ? first.substring(0, 200) + "..." : first);
        }
    }

    private OciException connectionFailed(ImageReference ref, String what, IOException e) {
        String host = ref.apiHost();
        if (e instanceof ConnectException || e.getCause() instanceof ConnectException) {
            return new OciException(ref + ": cannot connect to " + host + " (" + describe(e) + ")" + (plainHttp(host, ref.hostName()) ? ""
                    : "; vmgate speaks HTTPS to registries other than loopback ones and --insecure-registry " + host), e);
        }
        if (e instanceof SSLException) {
            return new OciException(ref + ": TLS with " + host + " failed (" + describe(e) + "); a plain-HTTP registry needs --insecure-registry "
                    + host, e);
        }
        if (e instanceof HttpConnectTimeoutException || e instanceof HttpTimeoutException) {
            return new OciException(ref + ": " + host + " did not answer in time fetching " + what, e);
        }
        return new OciException(ref + ": the connection to " + host + " failed fetching " + what + " (" + describe(e) + ")", e);
    }

    static String describe(Throwable e) {
        String m = e.getMessage();
        return (m == null || m.isBlank() ? e.getClass().getSimpleName() : Digest.printable(m));
    }

    private static String status(int s) {
        String reason = switch (s) {
            case 400 -> "Bad Request";
            case 401 -> "Unauthorized";
            case 403 -> "Forbidden";
            case 404 -> "Not Found";
            case 405 -> "Method Not Allowed";
            case 429 -> "Too Many Requests";
            case 500 -> "Internal Server Error";
            case 502 -> "Bad Gateway";
            case 503 -> "Service Unavailable";
            case 504 -> "Gateway Timeout";
            default -> "";
        };
        return s + (reason.isEmpty() ? "" : " " + reason);
    }

    private static String hostPort(URI u) {
        return u.getPort() < 0 ? u.getHost() : u.getHost() + ":" + u.getPort();
    }

    private static void close(HttpResponse<InputStream> r) {
        try {
            r.body().close();
        } catch (IOException ignored) {
            // a body we do not read
        }
    }

    /** A digest of a whole byte array with the algorithm of another digest. */
    private record MessageDigestHolder(Digest like) {
        Digest of(byte[] b) {
            var md = like.newMessageDigest();
            md.update(b);
            return like.of(md);
        }
    }
}
