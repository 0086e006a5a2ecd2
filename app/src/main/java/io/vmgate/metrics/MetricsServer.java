package io.vmgate.metrics;

import com.sun.net.httpserver.HttpExchange;
import io.prometheus.metrics.exporter.httpserver.HTTPServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.function.Supplier;

/**
 * The HTTP endpoint of {@code --metrics-listen}: {@code /metrics} (Prometheus text format),
 * {@code /healthz} (200 while the process answers) and {@code /readyz} (200 when a new session
 * can be served, else 503 with the reasons, one per line). Anything else is 404.
 */
public final class MetricsServer implements AutoCloseable {
    private final HTTPServer http;

    private MetricsServer(HTTPServer http) {
        this.http = http;
    }

    /**
     * Listens on {@code host:port} (port 0: a free one).
     *
     * @param notReady what keeps the server from being ready (empty: ready)
     * @throws IOException when the address cannot be bound, naming it
     */
    public static MetricsServer start(String host, int port, Metrics metrics, Supplier<List<String>> notReady) throws IOException {
        try {
            HTTPServer http = HTTPServer.builder()
                    .inetAddress(InetAddress.getByName(host))
                    .port(port)
                    .registry(metrics.registry())
                    .registerHealthHandler(false)
                    .defaultHandler(exchange -> handle(exchange, notReady))
                    .buildAndStart();
            return new MetricsServer(http);
        } catch (IOException e) {
            throw new IOException("cannot serve metrics on " + host + " port " + port + ": " + e.getMessage(), e);
        }
    }

    private static void handle(HttpExchange exchange, Supplier<List<String>> notReady) throws IOException {
        try (exchange) {
            String path = exchange.getRequestURI().getPath();
            switch (path) {
                case "/healthz" -> respond(exchange, 200, "ok\n");
                case "/readyz" -> {
                    List<String> why = notReady.get();
                    respond(exchange, why.isEmpty() ? 200 : 503, why.isEmpty() ? "ready\n" : String.join("\n", why) + "\n");
                }
                default -> respond(exchange, 404, "not found: try /metrics, /healthz or /readyz\n");
            }
        }
    }

    private static void respond(HttpExchange exchange, int status, String body) throws IOException {
        byte[] b = body.getBytes(StandardCharsets.UTF_8);
        exchange.getResponseHeaders().set("Content-Type", "text/plain; charset=utf-8");
        boolean head = "HEAD".equals(exchange.getRequestMethod());
        exchange.sendResponseHeaders(status, head ? -1 : b.length);
        if (!head) {
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(b);
            }
        }
    }

    /** The port listened on. */
    public int port() {
        return http.getPort();
    }

    @Override
    public void close() {
        http.close();
    }
}
