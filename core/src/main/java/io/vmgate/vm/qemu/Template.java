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
 * [key &lt;64 hex digits&gt;\n]
 * \n
 * &lt;QEMU's migration stream, device state only&gt;
 * </pre>
 * The optional {@code key} line names the template key (see {@link Snapshots}) a saved machine
 * descends from: a machine resumes only where that key is still the one in use.
 */
public final class Template {
    static final String MAGIC = "vmgate-template 3\n";
    /** Far above a device-state stream (~60 KB), far below trouble: a state file is read whole. */
    static final int MAX_STATE_BYTES = 64 << 20;
    private static final Pattern MEMORY_NAME = Pattern.compile("memory-[0-9a-f]{1,64}");
    private static final Pattern KEY = Pattern.compile("[0-9a-f]{64}");

    private final Path state;
    private final Path memory;
    private final String key;
    private final byte[] stream;

    private Template(Path state, Path memory, String key, byte[] stream) {
        this.state = state;
        this.memory = memory;
        this.key = key;
        this.stream = stream;
    }

    /** The template key this state was saved under, when its header names one (saved machines do). */
    java.util.Optional<String> key() {
        return java.util.Optional.ofNullable(key);
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
        return header(memoryName, null);
    }

    /** The header for a state file whose memory file is {@code memoryName}, saved under template key {@code key} (null: none). */
    static byte[] header(String memoryName, String key) {
        if (!MEMORY_NAME.matcher(memoryName).matches()) {
            throw new IllegalArgumentException("bad memory file name " + memoryName);
        }
        if (key != null && !KEY.matcher(key).matches()) {
            throw new IllegalArgumentException("bad template key " + key);
        }
        return (MAGIC + "memory " + memoryName + "\n" + (key != null ? "key " + key + "\n" : "") + "\n")
                .getBytes(StandardCharsets.US_ASCII);
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
        if (!line.startsWith("memory ") || !MEMORY_NAME.matcher(line.substring(7)).matches() || nl + 1 >= all.length) {
            throw new Corrupt(stateFile + " has a malformed header (expected 'memory memory-<hex>', 'key <hex>' and an empty line)");
        }
        Path memory = stateFile.resolveSibling(line.substring(7));
        String key = null;
        if (all[nl + 1] != '\n') {
            int start = nl + 1;
            nl = indexOf(all, (byte) '\n', start, 4 + 64 + 1);
            String keyLine = nl < 0 ? "" : new String(all, start, nl - start, StandardCharsets.US_ASCII);
            if (!keyLine.startsWith("key ") || !KEY.matcher(keyLine.substring(4)).matches() || nl + 1 >= all.length
                    || all[nl + 1] != '\n') {
                throw new Corrupt(stateFile + " has a malformed header (expected 'memory memory-<hex>', 'key <hex>' and an empty line)");
            }
            key = keyLine.substring(4);
        }
        return new Template(stateFile, memory, key, Arrays.copyOfRange(all, nl + 2, all.length));
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
