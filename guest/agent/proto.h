/* Frame and message codec of docs/protocol.md (version 2). Pure: no I/O, no globals,
 * safe on arbitrary bytes, so it can be fuzzed on its own (fuzz/fuzz_proto.c). */
#ifndef VMGATE_PROTO_H
#define VMGATE_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_VERSION 3
#define PROTO_HEADER 9 /* u32 length + u8 type + u32 id */
#define PROTO_MAX_PAYLOAD 262144u
#define PROTO_INITIAL_WINDOW 262144u
#define PROTO_MAX_PROCS 256
#define PROTO_MAX_ARGS 4096
#define PROTO_MAX_ENV 4096
#define PROTO_MAX_GROUPS 256
#define PROTO_MAX_MODES 256
#define PROTO_MAX_ENTROPY 512
#define PROTO_TUNNEL_WINDOW 524288u /* twice a process stream's: host-to-guest downloads need it */
#define PROTO_MAX_HOST 253     /* TOPEN host */
#define PROTO_MAX_REFUSAL 1024 /* TREFUSED message */
#define PROTO_MAX_HOME_PATH 4096 /* HOME path */

enum {
    MSG_HELLO = 0x01, MSG_START, MSG_STARTED, MSG_DATA, MSG_EOF, MSG_WINDOW, MSG_RESIZE,
    MSG_SIGNAL, MSG_EXIT, MSG_CLOSE, MSG_ERROR, MSG_CONFIGURE, MSG_CONFIGURED,
    /* a persistent home disk, and writing dirty data out before the host tears the VM down */
    MSG_HOME, MSG_HOME_STATUS, MSG_SYNC, MSG_SYNCED,
    /* egress: the proxy and its tunnels (ids of their own, chosen by the guest) */
    MSG_EGRESS = 0x20, MSG_EGRESS_STATUS, MSG_TOPEN, MSG_TOPENED, MSG_TREFUSED, MSG_TDATA, MSG_TEOF,
    MSG_TWINDOW, MSG_TCLOSE,
};

/* SYNC flags */
#define SYNC_FREEZE 1u /* freeze the home after writing it out: the VM is about to be destroyed */

/* TOPEN flags */
#define TOPEN_TLS 1u /* the host speaks TLS to the server; the tunnel carries the plaintext */

/* TREFUSED reasons */
enum { REFUSED_DENIED = 1, REFUSED_LIMIT, REFUSED_FAILED };

enum {
    E_MALFORMED = 1, E_UNKNOWN_TYPE, E_UNKNOWN_ID, E_ID_IN_USE, E_LIMIT, E_SYSTEM, E_VERSION,
};

struct proto_frame {
    uint8_t type;
    uint32_t id;
    const uint8_t *payload; /* points into the caller's buffer */
    uint32_t len;
};

/* A string as it is on the wire: not NUL-terminated, but checked to hold no NUL. */
struct proto_str { const char *p; uint32_t n; };

struct proto_mode { uint8_t op; uint32_t val; }; /* RFC 4254 §8 opcode and value */

/* A decoded START: one heap block (free with proto_msg_free), strings NUL-terminated. */
struct proto_start {
    int pty;
    uint32_t uid, gid;           /* never 0xFFFFFFFF (that means "unchanged" to setuid) */
    unsigned ngroups;
    uint32_t groups[PROTO_MAX_GROUPS];
    char *path;  /* the program to execute: argv[0] when the host sent "" */
    unsigned argc, envc, nmodes;
    char **argv; /* NULL-terminated */
    char **env;  /* NULL-terminated, each "NAME=value" with a non-empty NAME */
    char *cwd, *term;
    uint16_t rows, cols;
    struct proto_mode modes[PROTO_MAX_MODES];
};

/* Every message in one flat struct; which fields are set depends on type. */
struct proto_msg {
    uint8_t type;
    uint32_t id;
    uint8_t fd;              /* DATA, EOF, WINDOW; SYNC flags */
    uint8_t reason;          /* TREFUSED */
    uint16_t port;           /* PROXY */
    const uint8_t *data;     /* DATA and TDATA bytes, CONFIGURE entropy (into the frame) */
    uint32_t len;
    uint32_t u32;            /* WINDOW and TWINDOW increment, ERROR code */
    uint64_t u64;            /* CONFIGURE unix_time_ns */
    uint16_t rows, cols;     /* RESIZE */
    uint32_t uid, gid;       /* HOME owner */
    struct proto_str str;    /* SIGNAL name, ERROR message, CONFIGURE hostname, TREFUSED message, HOME path */
    struct proto_start *start;
};

/* Splits one frame off the front of buf[0..n). Returns 1 (frame in *f, *used bytes),
 * 0 (need more bytes) or -1 (framing error: length out of range, unrecoverable). */
int proto_next_frame(const uint8_t *buf, size_t n, struct proto_frame *f, size_t *used);

/* Decodes and checks the payload of a frame a host sends (a guest's own types are
 * E_UNKNOWN_TYPE here). Returns 0, or E_MALFORMED / E_UNKNOWN_TYPE with a message in
 * err (give it 100+ bytes). On success free with proto_msg_free (START allocates). */
int proto_decode(const struct proto_frame *f, struct proto_msg *m, char *err, size_t errlen);
void proto_msg_free(struct proto_msg *m);

/* Frame builder over a caller's buffer; an overflow is sticky and reported by end. */
struct proto_out {
    uint8_t *p;
    size_t cap, len;
    int overflow;
};
void proto_begin(struct proto_out *o, uint8_t type, uint32_t id);
void proto_num(struct proto_out *o, uint64_t v, size_t k); /* k bytes, big-endian */
#define proto_u8(o, v) proto_num(o, v, 1)
#define proto_u16(o, v) proto_num(o, v, 2)
#define proto_u32(o, v) proto_num(o, v, 4)
#define proto_u64(o, v) proto_num(o, v, 8)
void proto_raw(struct proto_out *o, const void *p, size_t n);
void proto_bytes(struct proto_out *o, const void *p, size_t n); /* u32 n + bytes; str too */
int proto_end(struct proto_out *o); /* fills in length; -1 if too big or overflowed */

/* Signal names without "SIG" (Linux numbers). 0 / NULL when unknown. */
int proto_signal_number(const char *name, size_t n);
const char *proto_signal_name(int sig);
const char *proto_type_name(uint8_t type);

#endif
