package io.vmgate.agent;

import com.code_intelligence.jazzer.junit.FuzzTest;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.nio.channels.Channels;
import java.nio.channels.ReadableByteChannel;

/**
 * Coverage-guided fuzzing of the host's decoder with Jazzer: whatever bytes a guest sends,
 * decoding yields messages or an IOException (ProtocolException, EOFException), never another
 * exception, an OutOfMemoryError or a hang. ./test.sh runs it for a bounded time
 * (JAZZER_FUZZ=1); a plain `mvn test` replays the saved inputs only. Longer runs:
 * scripts/fuzz.sh.
 */
class FrameFuzzTest {

    @FuzzTest(maxDuration = "20s")
    void decoderSurvivesAnyBytes(byte[] input) {
        ReadableByteChannel in = Channels.newChannel(new ByteArrayInputStream(input));
        try {
            Frame f;
            while ((f = Frame.read(in)) != null) {
                try {
                    Message m = Message.decode(f);
                    // A message that decoded must encode to the same frame.
                    Frame again = m.encode();
                    if (again.type() != f.type() || again.id() != f.id()) {
                        throw new AssertionError("re-encoding changed the header of " + m);
                    }
                } catch (ProtocolException e) {
                    // a bad message: dropped, the stream goes on
                }
            }
        } catch (IOException e) {
            // framing error or truncation: the connection ends, as docs/protocol.md says
        }
    }
}
