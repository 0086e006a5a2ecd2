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

    /** SHA-256 of {@link #read()}, hex: part of the image cache key. */
    default String sha256() throws ImageException {
        return ImageKey.sha256Hex(read());
    }

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

        /** The digest make wrote beside the agent, when the jar has it (saves hashing 0.9 MB per start). */
        @Override
        public String sha256() throws ImageException {
            try (InputStream in = AgentBinary.class.getResourceAsStream(RESOURCE + ".sha256")) {
                String hex = in == null ? "" : new String(in.readAllBytes(), java.nio.charset.StandardCharsets.US_ASCII).strip();
                if (hex.matches("[0-9a-f]{64}")) {
                    return hex;
                }
            } catch (IOException e) {
                // fall through to hashing the agent itself
            }
            return AgentBinary.super.sha256();
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
