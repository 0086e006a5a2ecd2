package io.vmgate.vm.qemu;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.regex.Pattern;

/**
 * One published snapshot template: the guest's memory file and QEMU's saved device state
 * (docs/templates.md). A template never changes once published: a new one gets a new memory file,
 * and a replaced one is only unlinked, so clones that map it keep running.
 *
 * <p>The state file starts with a small header naming its memory file, so the pair is published
 * by one rename of the state file:
 * <pre>
 * vmgate-template 3\n
 * memory memory-&lt;hex&gt;\n
 * \n
 * &lt;QEMU's migration stream, device state only&gt;
 * </pre>
 */
public final class Template {
    static final String MAGIC = "vmgate-template 3\n";
    /** Far above a device-state stream (~60 KB), far below trouble: a state file is read whole. */
    static final int MAX_STATE_BYTES = 64 << 20;
    private static final Pattern MEMORY_NAME = Pattern.compile("memory-[0-9a-f]{1,64}");

    private final Path state;
    private final Path memory;
    private final byte[] stream;

    private Template(Path state, Path memory, byte[] stream) {
        this.state = state;
        this.memory = memory;
        this.stream = stream;
    }

    /** The state file (header + QEMU's device state). */
    public Path state() {
        return state;
    }

    /** The guest memory file the state belongs to, beside the state file. */
    public Path memory() {
        return memory;
    }

    /**
     * The scratch disk as it was when the memory was saved (only for VMs with a scratch disk):
     * {@code scratch-<hex>.ext4} beside the memory file {@code memory-<hex>}, so the pair is
     * published, and retired, together.
     */
    public Path scratch() {
        return scratchFor(memory);
    }

    static Path scratchFor(Path memoryFile) {
        return memoryFile.resolveSibling("scratch-" + memoryFile.getFileName().toString().substring("memory-".length()) + ".ext4");
    }

    /** QEMU's migration stream, to be fed to a clone's {@code migrate-incoming}. */
    byte[] stream() {
        return stream;
    }

    /** The header for a state file whose memory file is {@code memoryName}. */
    static byte[] header(String memoryName) {
        if (!MEMORY_NAME.matcher(memoryName).matches()) {
            throw new IllegalArgumentException("bad memory file name " + memoryName);
        }
        return (MAGIC + "memory " + memoryName + "\n\n").getBytes(StandardCharsets.US_ASCII);
    }

    /**
     * Reads a state file. Throws {@link java.nio.file.NoSuchFileException} when there is none, and
     * {@link Corrupt} when it is not one of ours (wrong version, garbage, a memory name that is
     * not a plain file name in the same directory).
     */
    static Template read(Path stateFile) throws IOException {
        byte[] all;
        try (InputStream in = Files.newInputStream(stateFile)) {
            all = in.readNBytes(MAX_STATE_BYTES + 1);
        }
        if (all.length > MAX_STATE_BYTES) {
            throw new Corrupt(stateFile + " is larger than " + MAX_STATE_BYTES + " bytes");
        }
        byte[] magic = MAGIC.getBytes(StandardCharsets.US_ASCII);
        if (all.length < magic.length || !Arrays.equals(all, 0, magic.length, magic, 0, magic.length)) {
            throw new Corrupt(stateFile + " is not a vmgate template of this version (no '" + MAGIC.strip() + "' header)");
        }
        int lineStart = magic.length;
        int nl = indexOf(all, (byte) '\n', lineStart, 7 + 64 + 8);
        String line = nl < 0 ? "" : new String(all, lineStart, nl - lineStart, StandardCharsets.US_ASCII);
        if (!line.startsWith("memory ") || !MEMORY_NAME.matcher(line.substring(7)).matches()
                || nl + 1 >= all.length || all[nl + 1] != '\n') {
            throw new Corrupt(stateFile + " has a malformed header (expected 'memory memory-<hex>' and an empty line)");
        }
        Path memory = stateFile.resolveSibling(line.substring(7));
        return new Template(stateFile, memory, Arrays.copyOfRange(all, nl + 2, all.length));
    }

    private static int indexOf(byte[] b, byte v, int from, int maxLen) {
        for (int i = from; i < Math.min(b.length, from + maxLen); i++) {
            if (b[i] == v) {
                return i;
            }
        }
        return -1;
    }

    /** A state file that is not a template of this version. */
    static final class Corrupt extends IOException {
        Corrupt(String message) {
            super(message);
        }
    }

    @Override
    public String toString() {
        return state.toString();
    }
}
