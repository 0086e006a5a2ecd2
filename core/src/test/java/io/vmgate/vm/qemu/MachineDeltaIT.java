package io.vmgate.vm.qemu;

import static org.assertj.core.api.Assertions.assertThat;

import io.vmgate.vm.Vm;
import io.vmgate.vm.VmConfig;
import java.io.BufferedOutputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.FileChannel;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The premise of the {@code --persist machine} design (docs/design.md) on this QEMU: a VM restored
 * from a copy-on-write template can be saved as its device state plus only the RAM pages that
 * differ from the template's, and resumed from that into a new clone of the same template, its
 * processes still running. The clone's RAM is a private mapping, so QEMU's migration sends every
 * page; the host drops those equal to the template's page at the same offset (and zero pages over
 * zero template pages) unless another version of that page went before (precopy sends a page
 * again when the guest writes it meanwhile), and a restore leaves a page it is not sent as the
 * template has it.
 *
 * <p>An experiment kept as a test, not product code: the stream reader here knows QEMU 7.2's RAM
 * section framing only as far as this needs, and says so when it meets something else.
 */
class MachineDeltaIT {
    private static final int PAGE = 4096;
    // QEMU's migration stream (migration/savevm.c, migration/ram.c in 7.2)
    private static final int SECTION_START = 0x01, SECTION_PART = 0x02, SECTION_END = 0x03, SECTION_FOOTER = 0x7e;
    private static final long FLAG_ZERO = 0x02, FLAG_MEM_SIZE = 0x04, FLAG_PAGE = 0x08, FLAG_EOS = 0x10, FLAG_CONTINUE = 0x20;

    @TempDir
    Path templates;
    Path root;

    @BeforeAll
    static void image() throws Exception {
        QemuVmIT.buildImage();
    }

    @BeforeEach
    void runtimeRoot() throws IOException {
        root = Files.createTempDirectory(Path.of("/tmp"), "vmgate-it-");
    }

    @AfterEach
    void nothingLeft() throws IOException {
        try (Stream<Path> s = Files.list(root)) {
            assertThat(s.toList()).as("runtime directories left behind").isEmpty();
        }
        Files.delete(root);
    }

    @Test
    void aSavedDeltaResumesTheMachineWithItsProcesses() throws Exception {
        VmConfig c = VmConfig.defaults(QemuVmIT.image).withRuntimeRoot(root).withBootTimeout(Duration.ofSeconds(90));
        Snapshots snapshots = new Snapshots(c, templates, false);
        Template t = snapshots.ensureTemplate();
        Path full = templates.resolve("full.stream");
        long counted;
        long t0;
        try (Vm vm = snapshots.launch("delta-src")) {
            assertThat(SnapshotsIT.restored(vm)).isTrue();
            SnapshotsIT.sh(vm, "echo kept > /tmp/marker; (i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done)"
                    + " </dev/null >/dev/null 2>&1 &");
            Thread.sleep(1500);
            counted = Long.parseLong(SnapshotsIT.sh(vm, "cat /tmp/count"));
            t0 = System.nanoTime();
            migrate((QemuVm) vm, full);
        }
        long saveMs = (System.nanoTime() - t0) / 1_000_000;

        Path dir = Files.createDirectories(templates.resolve("saved"));
        Path memory = dir.resolve(t.memory().getFileName());
        Files.createLink(memory, t.memory());
        t0 = System.nanoTime();
        byte[] delta = filter(full, t.memory());
        long filterMs = (System.nanoTime() - t0) / 1_000_000;
        Path state = dir.resolve("state");
        Files.write(state, concat(Template.header(memory.getFileName().toString()), delta));
        System.out.printf("machine_delta full_bytes=%d delta_bytes=%d save_ms=%d filter_ms=%d%n", Files.size(full), delta.length,
                saveMs, filterMs);
        assertThat((long) delta.length).as("the delta is a small part of the stream").isLessThan(Files.size(full) / 4);

        t0 = System.nanoTime();
        try (QemuVm resumed = QemuVm.restore(c, "delta-dst", Template.read(state), p -> { })) {
            System.out.printf("machine_resumed ms=%d%n", (System.nanoTime() - t0) / 1_000_000);
            assertThat(SnapshotsIT.sh(resumed, "cat /tmp/marker")).isEqualTo("kept");
            long after = Long.parseLong(SnapshotsIT.sh(resumed, "cat /tmp/count"));
            Thread.sleep(1000);
            long later = Long.parseLong(SnapshotsIT.sh(resumed, "cat /tmp/count"));
            assertThat(after).as("the counter kept its value").isGreaterThanOrEqualTo(counted);
            assertThat(later).as("and its process runs on").isGreaterThan(after);
            long privateKib = privateDirtyKib(resumed.pid().getAsLong());
            System.out.printf("machine_resumed_private_kib=%d%n", privateKib);
            assertThat(privateKib).as("the resumed clone wrote only the delta into its copy-on-write RAM").isLessThan(32 << 10);
        }
        // a clone of the same template that was not given the delta knows nothing of it
        try (Vm fresh = snapshots.launch("delta-fresh")) {
            assertThat(SnapshotsIT.sh(fresh, "cat /tmp/marker 2>/dev/null || echo none")).isEqualTo("none");
        }
    }

    /** Private_Dirty of the guest RAM mapping (the template's memory file) in QEMU's smaps. */
    private static long privateDirtyKib(long pid) throws IOException {
        long kib = 0;
        boolean ram = false;
        for (String line : Files.readAllLines(Path.of("/proc/" + pid + "/smaps"))) {
            if (line.matches("^[0-9a-f]+-[0-9a-f]+ .*")) {
                ram = line.contains("/memory-");
            } else if (ram && line.startsWith("Private_Dirty:")) {
                kib += Long.parseLong(line.replaceAll("\\D", ""));
            }
        }
        return kib;
    }

    /** Like a template save (x-ignore-shared on both ends, for the same block list), but the clone's private RAM is sent too. */
    private static void migrate(QemuVm vm, Path out) throws Exception {
        Qmp qmp = vm.qmp();
        Path sock = vm.runtimeDir().migrateSocket();
        Duration timeout = Duration.ofSeconds(120);
        try (ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            server.bind(UnixDomainSocketAddress.of(sock), 1);
            qmp.execute("migrate-set-capabilities", Map.of("capabilities",
                    List.of(Map.of("capability", "x-ignore-shared", "state", true))), timeout);
            qmp.execute("migrate", Map.of("uri", "unix:" + sock), timeout);
            try (SocketChannel in = server.accept(); FileChannel f = FileChannel.open(out, StandardOpenOption.CREATE_NEW,
                    StandardOpenOption.WRITE)) {
                ByteBuffer buf = ByteBuffer.allocate(1 << 20);
                while (in.read(buf.clear()) >= 0) {
                    buf.flip();
                    while (buf.hasRemaining()) {
                        f.write(buf);
                    }
                }
            }
            assertThat(qmp.execute("query-migrate", Map.of(), timeout).get("status")).isEqualTo("completed");
        }
    }

    /**
     * The stream without the RAM pages the template already has. Everything before the RAM
     * section's start and from the first non-RAM section on is copied as it is; RAM records are
     * re-encoded (a dropped record may have named the block the next one continues).
     */
    static byte[] filter(Path stream, Path templateMemory) throws IOException {
        byte[] all = Files.readAllBytes(stream);
        int start = ramSectionStart(all);
        ByteArrayOutputStream out = new ByteArrayOutputStream(1 << 20);
        out.write(all, 0, start);
        DataInputStream in = new DataInputStream(new java.io.ByteArrayInputStream(all, start, all.length - start));
        try (FileChannel tf = FileChannel.open(templateMemory, StandardOpenOption.READ)) {
            var template = tf.map(FileChannel.MapMode.READ_ONLY, 0, tf.size());
            int ramSection = -1;
            String[] last = {null};
            String[] current = {null}; // CONTINUE refers to the block of the last record sent, across sections
            java.util.BitSet sent = new java.util.BitSet(); // template pages already sent once: every later version must follow
            while (true) {
                in.mark(16);
                int type = in.readUnsignedByte();
                if (type == SECTION_START && ramSection < 0) {
                    ramSection = in.readInt();
                    String id = new String(in.readNBytes(in.readUnsignedByte()));
                    if (!id.equals("ram")) {
                        throw new IOException("expected the ram section first, found " + id);
                    }
                    int instance = in.readInt(), version = in.readInt();
                    ByteBuffer h = ByteBuffer.allocate(13).put((byte) type).putInt(ramSection).put((byte) 3);
                    out.write(h.array(), 0, 6);
                    out.write("ram".getBytes());
                    out.write(ByteBuffer.allocate(8).putInt(instance).putInt(version).array());
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
                    pages(in, out, template, current, last, sent);
                    footer(in, out, ramSection);
                } else {
                    in.reset();
                    break;
                }
            }
        }
        out.write(in.readAllBytes()); // device state and the end of the stream
        return out.toByteArray();
    }

    /** The RAM section's start: 0x01, its id, then "ram" as a length-prefixed string. */
    private static int ramSectionStart(byte[] b) throws IOException {
        byte[] ram = {3, 'r', 'a', 'm'};
        for (int i = 8; i + 9 < b.length; i++) {
            if (b[i] == SECTION_START && Arrays.equals(b, i + 5, i + 9, ram, 0, 4)) {
                return i;
            }
        }
        throw new IOException("no ram section in the stream");
    }

    /** The setup: total size | MEM_SIZE, then each block (name, length, and its address with x-ignore-shared), then EOS. */
    private static void copySetup(DataInputStream in, OutputStream out) throws IOException {
        long head = in.readLong();
        if ((head & FLAG_MEM_SIZE) == 0) {
            throw new IOException("unexpected ram setup flags " + Long.toHexString(head));
        }
        write8(out, head);
        long total = head & ~(PAGE - 1L);
        long seen = 0;
        while (seen < total) {
            int n = in.readUnsignedByte();
            byte[] name = in.readNBytes(n);
            long len = in.readLong();
            long addr = in.readLong(); // present because x-ignore-shared is on (no postcopy: no page size)
            System.out.printf("machine_delta_block name=%s bytes=%d%n", new String(name), len);
            out.write(n);
            out.write(name);
            write8(out, len);
            write8(out, addr);
            seen += len;
        }
        long eos = in.readLong();
        if (eos != FLAG_EOS) {
            throw new IOException("expected EOS after the ram setup, got " + Long.toHexString(eos));
        }
        write8(out, eos);
    }

    private static void pages(DataInputStream in, OutputStream out, java.nio.MappedByteBuffer template, String[] current,
            String[] lastOut, java.util.BitSet sent) throws IOException {
        byte[] page = new byte[PAGE];
        byte[] tpage = new byte[PAGE];
        while (true) {
            long header = in.readLong();
            long flags = header & (PAGE - 1L);
            long offset = header & ~(PAGE - 1L);
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
            boolean templateBlock = block.equals("/objects/" + QemuCommand.MEMORY_ID) || block.equals(QemuCommand.MEMORY_ID);
            if (templateBlock && offset + PAGE <= template.capacity()) {
                template.get((int) offset, tpage);
                boolean same = zero ? isZero(tpage) : Arrays.equals(page, tpage);
                int index = (int) (offset / PAGE);
                if (same && !sent.get(index)) {
                    continue; // the template has it and no other version was sent: a restore leaves it so
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
        if (in.readUnsignedByte() == SECTION_FOOTER) {
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

    private static byte[] concat(byte[] a, byte[] b) {
        byte[] r = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, r, a.length, b.length);
        return r;
    }
}
