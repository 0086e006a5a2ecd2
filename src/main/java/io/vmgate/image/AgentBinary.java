package io.vmgate.image;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;

/** Where the guest agent (the image's /init) comes from: the jar, or a file given explicitly. */
public sealed interface AgentBinary {
    /** The agent the build put into the jar ({@code make -C guest/agent}, copied by Maven). */
    String RESOURCE = "/guest/vmgate-agent";

    byte[] read() throws ImageException;

    String describe();

    static AgentBinary classpath() {
        return new Classpath();
    }

    static AgentBinary file(Path path) {
        return new File(path);
    }

    record Classpath() implements AgentBinary {
        @Override
        public byte[] read() throws ImageException {
            try (InputStream in = AgentBinary.class.getResourceAsStream(RESOURCE)) {
                if (in == null) {
                    throw new ImageException("the guest agent is not on the classpath (" + RESOURCE + "): build it with "
                            + "`make -C guest/agent` (needs `apt-get install gcc make`) and rebuild the jar with `mvn package`");
                }
                return in.readAllBytes();
            } catch (IOException e) {
                throw new ImageException("cannot read the guest agent " + RESOURCE + " from the classpath: " + e.getMessage(), e);
            }
        }

        @Override
        public String describe() {
            return "classpath:" + RESOURCE;
        }
    }

    record File(Path path) implements AgentBinary {
        @Override
        public byte[] read() throws ImageException {
            try {
                return Files.readAllBytes(path);
            } catch (NoSuchFileException e) {
                throw new ImageException("guest agent " + path + " not found: build it with `make -C guest/agent`");
            } catch (IOException e) {
                throw new ImageException("cannot read the guest agent " + path + ": " + e.getMessage(), e);
            }
        }

        @Override
        public String describe() {
            return path.toString();
        }
    }
}
