package io.vmgate.ssh;

import io.vmgate.record.Asciicast;
import io.vmgate.record.Recordings;
import java.io.FilterOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.time.Instant;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * One channel's recording: an {@link Asciicast} in the server's {@link Recordings} directory, with
 * the channel's streams tapped (output always, stderr as output too, input only when the operator
 * asked for it), its resizes and its exit status as a marker. Failing to record never fails the
 * channel: the problem is logged and the command runs unrecorded.
 */
@SuppressWarnings("try") // MDC scopes: try-with-resources for the side effect
final class ChannelRecording implements AutoCloseable {
    /** The guest's login shell, for the header's {@code SHELL} (the Sandbox API runs logins as {@code /bin/sh -l}). */
    static final String GUEST_SHELL = "/bin/sh";

    private final Asciicast cast;
    private final boolean input;

    private ChannelRecording(Asciicast cast, boolean input) {
        this.cast = cast;
        this.input = input;
    }

    /**
     * Starts recording a command on {@code channel}, or returns null when the server does not record
     * (or the file cannot be created: logged as {@code recording_failed}).
     *
     * @param command the exec line, {@code sftp}, or null for the login shell
     */
    static ChannelRecording start(SessionChannel channel, String command) {
        Connection conn = channel.conn;
        Recordings recordings = conn.recordings;
        if (recordings == null) {
            return null;
        }
        SessionChannel.Terminal t = channel.terminal();
        Map<String, String> env = new LinkedHashMap<>();
        env.put("TERM", t.term());
        env.put("SHELL", GUEST_SHELL);
        Asciicast.Header header = new Asciicast.Header(t.cols(), t.rows(), Instant.now(),
                command != null ? command : GUEST_SHELL + " -l",
                "vmgate conn " + conn.id + " channel " + channel.number + " user " + conn.user() + " from " + conn.remote, env);
        Asciicast cast;
        try {
            cast = recordings.start(conn.id, channel.number, header, new Asciicast.Listener() {
                @Override
                public void capReached(long cap) {
                    try (var s = conn.scope()) {
                        Events.log.atWarn().setMessage("recording_truncated").addKeyValue("conn", conn.id)
                                .addKeyValue("channel", channel.number).addKeyValue("max_bytes", cap).log();
                    }
                }

                @Override
                public void failed(IOException e) {
                    try (var s = conn.scope()) {
                        Events.log.atWarn().setMessage("recording_failed").addKeyValue("conn", conn.id)
                                .addKeyValue("channel", channel.number).addKeyValue("error", e.toString()).log();
                    }
                }
            });
        } catch (IOException | RuntimeException e) {
            Events.log.atWarn().setMessage("recording_failed").addKeyValue("conn", conn.id)
                    .addKeyValue("channel", channel.number).addKeyValue("error", e.toString()).log();
            return null;
        }
        Events.log.atInfo().setMessage("recording_started").addKeyValue("conn", conn.id)
                .addKeyValue("channel", channel.number).addKeyValue("file", cast.file().toString()).log();
        return new ChannelRecording(cast, recordings.input());
    }

    /** {@code out} (the channel's stdout, or its terminal), recording what goes through it. */
    OutputStream output(OutputStream out) {
        return new Tap(out, cast::output);
    }

    /** {@code err} (the channel's stderr), recording what goes through it as output too. */
    OutputStream errorOutput(OutputStream err) {
        return new Tap(err, cast::errorOutput);
    }

    /** {@code stdin} (the guest process's), recording what goes through it when input is recorded. */
    OutputStream input(OutputStream stdin) {
        return input ? new Tap(stdin, cast::input) : stdin;
    }

    void resize(int cols, int rows) {
        cast.resize(cols, rows);
    }

    /** The command's end: an {@code m} marker, {@code exit-status 3} or {@code exit-signal KILL}. */
    void exit(String marker) {
        cast.marker(marker);
    }

    /** Writes what is left and closes the file. */
    @Override
    public void close() {
        cast.close();
    }

    private interface Sink {
        void accept(byte[] b, int off, int len);
    }

    /** Records each write, then passes it on unchanged. */
    private static final class Tap extends FilterOutputStream {
        private final Sink sink;

        Tap(OutputStream out, Sink sink) {
            super(out);
            this.sink = sink;
        }

        @Override
        public void write(int b) throws IOException {
            sink.accept(new byte[] {(byte) b}, 0, 1);
            out.write(b);
        }

        @Override
        public void write(byte[] b, int off, int len) throws IOException {
            sink.accept(b, off, len);
            out.write(b, off, len);
        }
    }
}
