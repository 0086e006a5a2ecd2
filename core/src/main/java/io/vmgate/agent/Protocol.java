package io.vmgate.agent;

/** Constants of docs/protocol.md. */
public final class Protocol {
    private Protocol() {}

    public static final int VERSION = 3;
    public static final int HEADER = 9;               // u32 length + u8 type + u32 id
    public static final int MAX_PAYLOAD = 256 * 1024;
    public static final int INITIAL_WINDOW = 256 * 1024;
    public static final int DATA_CHUNK = 32 * 1024;   // what the host puts in one DATA frame
    public static final int MAX_ARGS = 4096;
    public static final int MAX_ENV = 4096;
    public static final int MAX_GROUPS = 256;
    public static final int MAX_MODES = 256;
    public static final int MAX_ENTROPY = 512;
    public static final int TUNNEL_WINDOW = 512 * 1024; // twice a process stream's: downloads ran ~1.6x faster
    public static final int TUNNEL_CHUNK = 128 * 1024; // what the host puts in one TDATA frame
    public static final int MAX_HOST = 253;            // TOPEN host
    public static final int MAX_REFUSAL = 1024;        // TREFUSED message
    public static final int MAX_HOME_PATH = 4096;      // HOME path

    public static final byte HELLO = 0x01, START = 0x02, STARTED = 0x03, DATA = 0x04, EOF = 0x05,
            WINDOW = 0x06, RESIZE = 0x07, SIGNAL = 0x08, EXIT = 0x09, CLOSE = 0x0A, ERROR = 0x0B,
            CONFIGURE = 0x0C, CONFIGURED = 0x0D;
    /** A persistent home disk, and writing dirty data out before the host tears a VM down. */
    public static final byte HOME = 0x0E, HOME_STATUS = 0x0F, SYNC = 0x10, SYNCED = 0x11;
    /** Egress: the guest's proxy and its tunnels (ids of their own, chosen by the guest). */
    public static final byte EGRESS = 0x20, EGRESS_STATUS = 0x21, TOPEN = 0x22, TOPENED = 0x23, TREFUSED = 0x24,
            TDATA = 0x25, TEOF = 0x26, TWINDOW = 0x27, TCLOSE = 0x28;

    public static final int SYNC_FREEZE = 1;         // SYNC flag: freeze the home too (the VM is about to be destroyed)
    public static final int TOPEN_TLS = 1;           // TOPEN flag: the host speaks TLS to the server

    public static final int FD_STDIN = 0, FD_STDOUT = 1, FD_STDERR = 2;

    public static final int E_MALFORMED = 1, E_UNKNOWN_TYPE = 2, E_UNKNOWN_ID = 3, E_ID_IN_USE = 4,
            E_LIMIT = 5, E_SYSTEM = 6, E_VERSION = 7;
}
