package io.vmgate.control;

import io.vmgate.text.Json;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.ConnectException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

/** Sends one request to a server's control socket and returns its response ({@code docs/control.md}). */
public final class ControlClient {
    private ControlClient() {}

    /**
     * @throws IOException when no server answers on {@code socket}, saying so in the operator's terms
     */
    public static Map<String, Object> request(Path socket, Map<String, Object> request) throws IOException {
        if (!Files.exists(socket)) {
            throw new IOException("no control socket at " + socket + ": is vmgate serve running with this state"
                    + " directory? (--control-socket PATH names another)");
        }
        try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            try {
                ch.connect(UnixDomainSocketAddress.of(socket));
            } catch (ConnectException e) {
                throw new IOException("nothing answers on the control socket " + socket
                        + " (left by a server that is gone; the next vmgate serve replaces it)", e);
            }
            OutputStream out = Channels.newOutputStream(ch);
            out.write((Json.write(request) + "\n").getBytes(StandardCharsets.UTF_8));
            out.flush();
            BufferedReader in = new BufferedReader(new InputStreamReader(Channels.newInputStream(ch), StandardCharsets.UTF_8));
            String line = in.readLine();
            if (line == null) {
                throw new IOException("the server closed the control socket without an answer");
            }
            try {
                return Json.parseObject(line);
            } catch (Json.JsonException e) {
                throw new IOException("the server's answer is not JSON: " + e.getMessage(), e);
            }
        } catch (java.nio.file.AccessDeniedException | SecurityException e) {
            throw new IOException("not allowed to use the control socket " + socket + ": " + e.getMessage(), e);
        }
    }
}
