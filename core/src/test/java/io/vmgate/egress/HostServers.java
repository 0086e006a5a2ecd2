package io.vmgate.egress;

import com.sun.net.httpserver.HttpServer;
import com.sun.net.httpserver.HttpsConfigurator;
import com.sun.net.httpserver.HttpsServer;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * Real servers on the host's loopback for egress tests: an HTTP server (the JDK's) that answers
 * {@code /hello} with a line naming its port, {@code /bytes?n=N} with N bytes and {@code /upload}
 * with the size of what it was sent; the same over HTTPS with a certificate of a {@link TestCa};
 * and a TCP echo server. Each on a free port; {@link #close()} stops them all.
 */
public final class HostServers implements AutoCloseable {
    final HttpServer http;
    final HttpsServer https;
    final ServerSocket echo;
    private final ExecutorService pool = Executors.newCachedThreadPool();

    public HostServers(TestCa ca) throws Exception {
        http = serve(HttpServer.create(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), 50));
        https = HttpsServer.create(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), 50);
        https.setHttpsConfigurator(new HttpsConfigurator(ca.server()));
        serve(https);
        echo = new ServerSocket(0, 50, InetAddress.getLoopbackAddress());
        pool.execute(this::echoLoop);
    }

    private <T extends HttpServer> T serve(T server) {
        server.createContext("/hello", x -> {
            byte[] body = ("hello from the host on port " + server.getAddress().getPort() + " via " + x.getRequestURI() + "\n")
                    .getBytes(StandardCharsets.UTF_8);
            x.getResponseHeaders().add("Content-Type", "text/plain");
            x.sendResponseHeaders(200, body.length);
            try (OutputStream o = x.getResponseBody()) {
                o.write(body);
            }
        });
        server.createContext("/bytes", x -> {
            long n = Long.parseLong(x.getRequestURI().getQuery().substring(2));
            x.sendResponseHeaders(200, n);
            byte[] chunk = new byte[256 * 1024];
            try (OutputStream o = x.getResponseBody()) {
                for (long left = n; left > 0; left -= chunk.length) {
                    o.write(chunk, 0, (int) Math.min(left, chunk.length));
                }
            }
        });
        server.createContext("/upload", x -> {
            long n = 0;
            try (InputStream in = x.getRequestBody()) {
                byte[] buf = new byte[65536];
                for (int r; (r = in.read(buf)) > 0; ) {
                    n += r;
                }
            }
            byte[] body = ("received " + n + " bytes\n").getBytes(StandardCharsets.UTF_8);
            x.sendResponseHeaders(200, body.length);
            try (OutputStream o = x.getResponseBody()) {
                o.write(body);
            }
        });
        server.setExecutor(pool);
        server.start();
        return server;
    }

    public int httpPort() {
        return http.getAddress().getPort();
    }

    public int httpsPort() {
        return https.getAddress().getPort();
    }

    public int echoPort() {
        return echo.getLocalPort();
    }

    /** Serves the files under {@code dir} at {@code prefix} over HTTP and HTTPS (a git repository's dumb HTTP protocol, say). */
    public void serveFiles(String prefix, Path dir) {
        for (HttpServer server : List.of(http, https)) {
            server.createContext(prefix, x -> {
                Path f = dir.resolve(x.getRequestURI().getPath().substring(prefix.length()).replaceFirst("^/+", "")).normalize();
                if (!f.startsWith(dir) || !Files.isRegularFile(f)) {
                    x.sendResponseHeaders(404, -1);
                    x.close();
                    return;
                }
                x.sendResponseHeaders(200, Files.size(f));
                try (OutputStream o = x.getResponseBody()) {
                    Files.copy(f, o);
                }
            });
        }
    }

    private void echoLoop() {
        while (!echo.isClosed()) {
            try {
                Socket s = echo.accept();
                pool.execute(() -> {
                    try (s) {
                        s.getInputStream().transferTo(s.getOutputStream());
                    } catch (IOException ignored) {
                        // the client went away
                    }
                });
            } catch (IOException e) {
                return;
            }
        }
    }

    @Override
    public void close() throws IOException {
        http.stop(0);
        https.stop(0);
        echo.close();
        pool.shutdownNow();
    }
}
