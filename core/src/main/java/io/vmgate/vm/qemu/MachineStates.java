package io.vmgate.vm.qemu;

import io.vmgate.vm.Vm;
import io.vmgate.vm.VmConfig;
import io.vmgate.vm.VmException;
import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.MappedByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.FileChannel;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.DirectoryStream;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.Arrays;
import java.util.BitSet;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeoutException;
import java.util.function.Consumer;

/**
 * Saved machines ({@code --persist machine}): a VM restored from a copy-on-write template, saved
 * as its device state plus only the guest RAM pages that differ from the template's, and resumed
 * into a new clone of the same template (docs/design.md, "the whole machine").
 *
 * <p>The clone's RAM is a private mapping of the template's memory file, so QEMU's migration sends
 * every page. The stream is filtered as it arrives: a RAM page equal to the template's page at its
 * offset (a zero page over a zero template page) is dropped, unless another version of that page
 * was sent before (precopy resends a page the guest wrote meanwhile); a restore leaves a page it is
 * not sent as the template has it. Everything else is kept as QEMU wrote it. The reader knows
 * QEMU's RAM section framing (migration/ram.c: {@code PAGE}, {@code ZERO}, {@code CONTINUE},
 * {@code EOS}, section footers) and nothing more: anything else in a RAM section fails the save.
 * Proven against this QEMU by {@code MachineDeltaIT}.
 *
 * <p>Files, in a directory of the caller's: {@code machine} (a template state file: header naming
 * the memory file, then the filtered stream) and {@code memory-<hex>}, a hard link to the template's
 * memory file (so a rebuilt template cannot take it away). {@code machine} is written under a
 * temporary name, synced and renamed: a crash leaves the previous state or the new one. Its header
 * names the key of the template the machine descends from; it resumes only under that key (the
 * same image, root filesystem, CPUs, memory, kernel and QEMU binary).
 */
public final class MachineStates {
    public static final String STATE = "machine";
    private static final int PAGE = 4096;
    private static final int SECTION_START = 0x01, SECTION_PART = 0x02, SECTION_END = 0x03, SECTION_FOOTER = 0x7e;
    private static final long FLAG_ZERO = 0x02, FLAG_MEM_SIZE = 0x04, FLAG_PAGE = 0x08, FLAG_EOS = 0x10, FLAG_CONTINUE = 0x20;

    private MachineStates() {}

    /**
     * Saves {@code vm} (a VM restored from a template or a saved machine) into {@code dir}; the VM
     * is stopped afterwards (QEMU stops it when the migration completes): close it. Returns the
     * state's size in bytes.
     */
    public static long save(Vm vm, Path dir) throws VmException {
        if (!(vm instanceof QemuVm q) || q.restoredFrom() == null) {
            throw new VmException("only a VM restored from a snapshot template can be saved");
        }
        Template from = q.restoredFrom();
        Path memory = from.memory();
        // A template's key is its directory's name (Snapshots); a resumed machine's is in its header.
        String key = from.key().orElseGet(() -> from.state().getParent().getFileName().toString());
        Path link = dir.resolve(memory.getFileName());
        Path tmp = dir.resolve(STATE + ".tmp");
        try {
            if (!Files.exists(link)) {
                try {
                    Files.createLink(link, memory);
                } catch (FileAlreadyExistsException e) {
                    // the same template as last time
                }
            }
            Files.deleteIfExists(tmp);
            // 0600 like everything of a user's (whatever the umask): the state holds what the guest had in memory
            Files.createFile(tmp, java.nio.file.attribute.PosixFilePermissions.asFileAttribute(
                    java.nio.file.attribute.PosixFilePermissions.fromString("rw-------")));
            // The guest is stopped first: the stream is then one pass over a still memory. A running
            // guest saved live (precopy, pages resent as the guest dirties them) crashed in a fork
            // after some resumes (cause not found; docs/design.md). A stopped state loads stopped:
            // resume continues it.
            Qmp qmp = q.qmp();
            Path sock = q.runtimeDir().migrateSocket();
            Duration timeout = Duration.ofSeconds(120);
            qmp.execute("stop", Map.of(), timeout);
            try (ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
                    FileChannel template = FileChannel.open(memory, StandardOpenOption.READ)) {
                server.bind(UnixDomainSocketAddress.of(sock), 1);
                // x-ignore-shared on both ends (the restore sets it): it shapes the stream's block list.
                qmp.execute("migrate-set-capabilities", Map.of("capabilities",
                        List.of(Map.of("capability", "x-ignore-shared", "state", true))), timeout);
                qmp.execute("migrate", Map.of("uri", "unix:" + sock), timeout);
                MappedByteBuffer pages = template.map(FileChannel.MapMode.READ_ONLY, 0, template.size());
                try (SocketChannel in = server.accept();
                        OutputStream out = new BufferedOutputStream(Files.newOutputStream(tmp, StandardOpenOption.WRITE), 1 << 16)) {
                    out.write(Template.header(link.getFileName().toString(), key));
                    filter(new DataInputStream(new BufferedInputStream(Channels.newInputStream(in), 1 << 16)), out, pages);
                }
                Map<String, Object> status = qmp.execute("query-migrate", Map.of(), timeout);
                if (!"completed".equals(status.get("status"))) {
                    throw new VmException("saving the machine failed: migration status " + status);
                }
            }
            try (FileChannel f = FileChannel.open(tmp, StandardOpenOption.WRITE)) {
                f.force(true);
            }
            if (Files.size(tmp) > Template.MAX_STATE_BYTES) {
                throw new VmException("the saved machine is larger than " + (Template.MAX_STATE_BYTES >> 20)
                        + " MiB (its guest wrote that much memory since it started)");
            }
            try {
                Files.move(tmp, dir.resolve(STATE), StandardCopyOption.ATOMIC_MOVE);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(tmp, dir.resolve(STATE), StandardCopyOption.REPLACE_EXISTING);
            }
            try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
                d.force(true);
            } catch (IOException e) {
                // the rename is atomic regardless
            }
            retireMemoryLinks(dir, link.getFileName().toString());
            return Files.size(dir.resolve(STATE));
        } catch (TimeoutException e) {
            deleteQuietly(tmp);
            throw new VmException("saving the machine timed out: " + e.getMessage(), e);
        } catch (IOException e) {
            deleteQuietly(tmp);
            throw new VmException("saving the machine failed: " + e.getMessage(), e);
        } catch (VmException | RuntimeException e) {
            deleteQuietly(tmp);
            throw e;
        }
    }

    /** A saved machine made for another template than the one in use: refused before anything starts; its message names no path. */
    public static final class Mismatch extends VmException {
        Mismatch(String message) {
            super(message);
        }
    }

    /** Whether {@code dir} holds a saved machine. */
    public static boolean exists(Path dir) {
        return Files.isRegularFile(dir.resolve(STATE));
    }

    /**
     * Resumes the machine saved in {@code dir} into a new QEMU with {@code config} (the saved VM's),
     * if it was saved under {@code templateKey} (the key of the template a fresh machine of this
     * config would restore from); else it fails, saying what changed, before starting anything.
     */
    public static QemuVm resume(VmConfig config, String templateKey, String vmId, Path dir, Consumer<Vm.Phase> progress)
            throws VmException {
        Template saved;
        try {
            saved = Template.read(dir.resolve(STATE));
        } catch (IOException e) {
            throw new VmException("the saved machine cannot be read: " + e.getMessage(), e);
        }
        if (saved.key().isEmpty()) {
            throw new Mismatch("the saved machine was written by an older vmgate (it names no template key)");
        }
        if (!saved.key().get().equals(templateKey)) {
            throw new Mismatch("the saved machine was made with another image, root filesystem, CPU count, memory size,"
                    + " kernel or QEMU than this server uses now");
        }
        return QemuVm.restoreStopped(config, vmId, saved, progress);
    }

    /**
     * After a resume: the state is spent (the machine moves on from it), but the memory link stays,
     * the resumed VM's next save needs it (its template may have been rebuilt meanwhile).
     */
    public static void consumed(Path dir) throws IOException {
        Files.deleteIfExists(dir.resolve(STATE));
    }

    /** Removes the saved machine from {@code dir} (its state and memory links); a running resumed VM keeps its mapping. */
    public static void discard(Path dir) throws IOException {
        Files.deleteIfExists(dir.resolve(STATE));
        Files.deleteIfExists(dir.resolve(STATE + ".tmp"));
        retireMemoryLinks(dir, null);
    }

    /** Removes the temporary file of a save that never finished (a crash mid-save); true if there was one. */
    public static boolean discardTemporary(Path dir) throws IOException {
        return Files.deleteIfExists(dir.resolve(STATE + ".tmp"));
    }

    /**
     * Keeps a saved machine that failed to resume, under {@code machine.failed-<suffix>}, for the
     * operator; returns its new name. Only the latest is kept: one set aside before is removed
     * (each can be up to {@link Template#MAX_STATE_BYTES}, and a QEMU upgrade fails every user's).
     */
    public static Path setAside(Path dir, String suffix) throws IOException {
        Path aside = dir.resolve(STATE + ".failed-" + suffix);
        Files.move(dir.resolve(STATE), aside, StandardCopyOption.REPLACE_EXISTING);
        try (DirectoryStream<Path> s = Files.newDirectoryStream(dir, STATE + ".failed-*")) {
            for (Path p : s) {
                if (!p.equals(aside)) {
                    Files.deleteIfExists(p);
                }
            }
        }
        return aside;
    }

    private static void retireMemoryLinks(Path dir, String keep) throws IOException {
        try (DirectoryStream<Path> s = Files.newDirectoryStream(dir, "memory-*")) {
            for (Path p : s) {
                if (!p.getFileName().toString().equals(keep)) {
                    Files.deleteIfExists(p);
                }
            }
        }
    }

    private static void deleteQuietly(Path p) {
        try {
            Files.deleteIfExists(p);
        } catch (IOException e) {
            // best effort: a leftover temporary is replaced by the next save
        }
    }

    /**
     * Copies a migration stream from {@code in} to {@code out} without the RAM pages the template
     * already has. Everything before the RAM section's start, and from the first section that is
     * not the RAM section on, is copied as it is; RAM records are re-encoded (a dropped record may
     * have named the block the next one continues).
     */
    static void filter(DataInputStream in, OutputStream out, MappedByteBuffer template) throws IOException {
        copyUntilRamSection(in, out);
        int ramSection = -1;
        String[] current = {null}, lastOut = {null};
        BitSet sent = new BitSet();
        while (true) {
            in.mark(16);
            int type = in.read();
            if (type < 0) {
                return;
            }
            if (type == SECTION_START && ramSection < 0) {
                ramSection = in.readInt();
                byte[] id = in.readNBytes(in.readUnsignedByte());
                if (!Arrays.equals(id, "ram".getBytes())) {
                    throw new IOException("expected the ram section first, found " + new String(id));
                }
                int instance = in.readInt(), version = in.readInt();
                out.write(ByteBuffer.allocate(17).put((byte) type).putInt(ramSection).put((byte) 3).put("ram".getBytes())
                        .putInt(instance).putInt(version).array());
                copySetup(in, out);
                footer(in, out, ramSection);
            } else if ((type == SECTION_PART || type == SECTION_END) && ramSection >= 0) {
                int id = in.readInt();
                if (id != ramSection) {
                    in.reset();
                    break;
                }
                out.write(type);
                out.write(ByteBuffer.allocate(4).putInt(id).array());
                pages(in, out, template, current, lastOut, sent);
                footer(in, out, ramSection);
            } else {
                in.reset();
                break;
            }
        }
        in.transferTo(out); // the devices' state and the end of the stream
    }

    /** Copies until the RAM section's start (0x01, a section id, then "ram" as a length-prefixed string), which stays unread. */
    private static void copyUntilRamSection(DataInputStream in, OutputStream out) throws IOException {
        byte[] window = new byte[9];
        int n = 0;
        long copied = 0;
        while (true) {
            in.mark(9);
            int got = in.readNBytes(window, 0, 9);
            if (got < 9) {
                throw new IOException("no ram section in the migration stream");
            }
            if (copied >= 8 && window[0] == SECTION_START && window[5] == 3 && window[6] == 'r' && window[7] == 'a' && window[8] == 'm') {
                in.reset();
                return;
            }
            in.reset();
            out.write(in.readUnsignedByte());
            copied++;
            if (++n > (1 << 20)) {
                throw new IOException("no ram section in the first MiB of the migration stream");
            }
        }
    }

    /** The setup: total size | MEM_SIZE, then each block (name, length, and its address with x-ignore-shared), then EOS. */
    private static void copySetup(DataInputStream in, OutputStream out) throws IOException {
        long head = in.readLong();
        if ((head & FLAG_MEM_SIZE) == 0) {
            throw new IOException("unexpected ram setup flags 0x" + Long.toHexString(head & (PAGE - 1)));
        }
        write8(out, head);
        long total = head & ~(PAGE - 1L), seen = 0;
        while (seen < total) {
            int n = in.readUnsignedByte();
            byte[] name = in.readNBytes(n);
            long len = in.readLong();
            long addr = in.readLong(); // there because x-ignore-shared is on (no postcopy: no page size)
            out.write(n);
            out.write(name);
            write8(out, len);
            write8(out, addr);
            seen += len;
        }
        long eos = in.readLong();
        if (eos != FLAG_EOS) {
            throw new IOException("expected EOS after the ram setup, got 0x" + Long.toHexString(eos));
        }
        write8(out, eos);
    }

    private static void pages(DataInputStream in, OutputStream out, MappedByteBuffer template, String[] current, String[] lastOut,
            BitSet sent) throws IOException {
        byte[] page = new byte[PAGE], tpage = new byte[PAGE];
        String templateBlock = QemuCommand.MEMORY_ID;
        while (true) {
            long header = in.readLong();
            long flags = header & (PAGE - 1L), offset = header & ~(PAGE - 1L);
            if (flags == FLAG_EOS) {
                write8(out, header);
                return;
            }
            if ((flags & FLAG_CONTINUE) == 0) {
                current[0] = new String(in.readNBytes(in.readUnsignedByte()));
            } else if (current[0] == null) {
                throw new IOException("a RAM record continues a block never named");
            }
            String block = current[0];
            long kind = flags & ~FLAG_CONTINUE;
            boolean zero = kind == FLAG_ZERO;
            if (zero) {
                in.readUnsignedByte();
            } else if (kind == FLAG_PAGE) {
                in.readFully(page);
            } else {
                throw new IOException("a RAM record this reader does not know: flags 0x" + Long.toHexString(flags));
            }
            if (block.equals(templateBlock) && offset + PAGE <= template.capacity()) {
                template.get((int) offset, tpage);
                int index = (int) (offset / PAGE);
                boolean same = zero ? isZero(tpage) : Arrays.equals(page, tpage);
                if (same && !sent.get(index)) {
                    continue;
                }
                sent.set(index);
            }
            boolean cont = block.equals(lastOut[0]);
            write8(out, offset | kind | (cont ? FLAG_CONTINUE : 0));
            if (!cont) {
                byte[] name = block.getBytes();
                out.write(name.length);
                out.write(name);
                lastOut[0] = block;
            }
            if (zero) {
                out.write(0);
            } else {
                out.write(page);
            }
        }
    }

    private static void footer(DataInputStream in, OutputStream out, int section) throws IOException {
        in.mark(8);
        if (in.read() == SECTION_FOOTER) {
            int id = in.readInt();
            if (id != section) {
                throw new IOException("footer for section " + id + " inside section " + section);
            }
            out.write(SECTION_FOOTER);
            out.write(ByteBuffer.allocate(4).putInt(id).array());
        } else {
            in.reset();
        }
    }

    private static boolean isZero(byte[] b) {
        for (byte x : b) {
            if (x != 0) {
                return false;
            }
        }
        return true;
    }

    private static void write8(OutputStream out, long v) throws IOException {
        out.write(ByteBuffer.allocate(8).putLong(v).array());
    }
}
