/* Codec of docs/protocol.md: decodes what a host sends, encodes any frame. Every read is
 * bounds-checked against what is left of the payload before it happens; nothing here
 * trusts a length it has not checked. */
#include "proto.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}

int proto_next_frame(const uint8_t *buf, size_t n, struct proto_frame *f, size_t *used) {
    if (n < 4)
        return 0;
    uint32_t len = be32(buf);
    /* Checked before waiting for the rest, so a bad length fails at once. */
    if (len < 5 || len > 5 + PROTO_MAX_PAYLOAD)
        return -1;
    if (n - 4 < len)
        return 0;
    f->type = buf[4];
    f->id = be32(buf + 5);
    f->payload = buf + PROTO_HEADER;
    f->len = len - 5;
    *used = 4 + (size_t)len;
    return 1;
}

/* A payload reader: the first failure sticks and later reads return zeroes. */
struct rd {
    const uint8_t *p;
    size_t n;
    int failed;
    char *err;
    size_t errlen;
};

__attribute__((format(printf, 2, 3))) static void bad(struct rd *r, const char *fmt, ...) {
    if (r->failed)
        return;
    r->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, r->errlen, fmt, ap);
    va_end(ap);
}

static const uint8_t *take(struct rd *r, size_t k, const char *what) {
    if (r->failed)
        return NULL;
    if (r->n < k) {
        bad(r, "truncated %s", what);
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += k;
    r->n -= k;
    return p;
}

/* A big-endian unsigned number of k bytes (0 once the payload is short). */
static uint64_t num(struct rd *r, size_t k, const char *what) {
    const uint8_t *p = take(r, k, what);
    uint64_t v = 0;
    for (size_t i = 0; p && i < k; i++)
        v = v << 8 | p[i];
    return v;
}
#define u8(r, what) ((uint8_t)num(r, 1, what))
#define u16(r, what) ((uint16_t)num(r, 2, what))
#define u32(r, what) ((uint32_t)num(r, 4, what))
#define u64(r, what) num(r, 8, what)

static struct proto_str bytes(struct rd *r, const char *what) {
    struct proto_str s = {"", 0};
    uint32_t n = u32(r, what);
    const uint8_t *p = take(r, n, what);
    if (p) {
        s.p = (const char *)p;
        s.n = n;
    }
    return s;
}

static struct proto_str str(struct rd *r, const char *what) {
    struct proto_str s = bytes(r, what);
    if (memchr(s.p, 0, s.n)) {
        bad(r, "%s contains NUL", what);
        s.n = 0;
    }
    return s;
}

/* A u16 count, checked against its limits. */
static unsigned count(struct rd *r, const char *what, unsigned lo, unsigned hi) {
    unsigned v = u16(r, what);
    if (!r->failed && (v < lo || v > hi))
        bad(r, "%s %u out of range", what, v);
    return v;
}

static uint8_t fd(struct rd *r) {
    uint8_t v = u8(r, "fd");
    if (v > 2)
        bad(r, "fd %u is not 0, 1 or 2", v);
    return v;
}

/* A uid or gid: (uid_t)-1 tells setuid and friends "leave it", so it is never a user. */
static uint32_t id32(struct rd *r, const char *what) {
    uint32_t v = u32(r, what);
    if (!r->failed && v == 0xffffffffu)
        bad(r, "%s 4294967295 is not an id", what);
    return v;
}

/* Copies a checked string into the START block, NUL-terminated. */
static char *keep(char **arena, struct proto_str s) {
    char *p = *arena;
    memcpy(p, s.p, s.n);
    p[s.n] = 0;
    *arena += s.n + 1;
    return p;
}

static struct proto_start *decode_start(struct rd *r, size_t len) {
    /* Each string costs its 4-byte length on the wire, so the strings with their NULs
     * fit in len bytes and there are at most len / 4 of them: one allocation is enough. */
    size_t nptr = len / 4 + 2;
    struct proto_start *s = calloc(1, sizeof *s + nptr * sizeof(char *) + len + 1);
    if (!s) {
        bad(r, "out of memory");
        return NULL;
    }
    char **ptrs = (char **)(s + 1);
    char *arena = (char *)(ptrs + nptr);
    uint8_t flags = u8(r, "flags");
    if (flags & ~1u)
        bad(r, "unknown START flags 0x%x", flags);
    s->pty = flags & 1;
    s->uid = id32(r, "uid");
    s->gid = id32(r, "gid");
    s->ngroups = count(r, "ngroups", 0, PROTO_MAX_GROUPS);
    for (unsigned i = 0; i < s->ngroups && !r->failed; i++)
        s->groups[i] = id32(r, "group");
    struct proto_str path = str(r, "path");
    s->argc = count(r, "argc", 1, PROTO_MAX_ARGS);
    s->argv = ptrs;
    for (unsigned i = 0; i < s->argc && !r->failed; i++) {
        struct proto_str a = str(r, "argv");
        if (!r->failed)
            *ptrs++ = keep(&arena, a);
    }
    *ptrs++ = NULL;
    if (!r->failed)
        s->path = path.n ? keep(&arena, path) : s->argv[0];
    s->envc = count(r, "envc", 0, PROTO_MAX_ENV);
    s->env = ptrs;
    for (unsigned i = 0; i < s->envc && !r->failed; i++) {
        struct proto_str e = str(r, "env");
        const char *eq = r->failed ? NULL : memchr(e.p, '=', e.n);
        if (!r->failed && (!eq || eq == e.p))
            bad(r, "env entry %u is not NAME=value", i);
        if (!r->failed)
            *ptrs++ = keep(&arena, e);
    }
    *ptrs = NULL;
    struct proto_str cwd = str(r, "cwd"), term = str(r, "term");
    if (!r->failed) {
        s->cwd = keep(&arena, cwd);
        s->term = keep(&arena, term);
    }
    s->rows = u16(r, "rows");
    s->cols = u16(r, "cols");
    s->nmodes = count(r, "nmodes", 0, PROTO_MAX_MODES);
    for (unsigned i = 0; i < s->nmodes && !r->failed; i++) {
        s->modes[i].op = u8(r, "mode opcode");
        s->modes[i].val = u32(r, "mode value");
    }
    return s;
}

int proto_decode(const struct proto_frame *f, struct proto_msg *m, char *err, size_t errlen) {
    *m = (struct proto_msg){.type = f->type, .id = f->id, .str = {"", 0}};
    /* Errors start with the type so that they stand alone in a log. */
    int pre = snprintf(err, errlen, "%s: ", proto_type_name(f->type));
    pre = pre > 0 && (size_t)pre < errlen ? pre : 0;
    struct rd r = {f->payload, f->len, 0, err + pre, errlen - pre};
    int conn = 0; /* sent on id 0 (else on a process or tunnel id) */
    switch (f->type) {
    case MSG_START:
        m->start = decode_start(&r, f->len);
        break;
    case MSG_DATA:
        m->fd = fd(&r);
        m->data = r.p;
        m->len = (uint32_t)r.n;
        r.n = 0;
        break;
    case MSG_EOF:
        m->fd = fd(&r);
        break;
    case MSG_WINDOW:
        m->fd = fd(&r);
        m->u32 = u32(&r, "increment");
        if (!r.failed && (m->u32 == 0 || m->u32 > PROTO_INITIAL_WINDOW))
            bad(&r, "window increment %u out of range", m->u32);
        break;
    case MSG_RESIZE:
        m->rows = u16(&r, "rows");
        m->cols = u16(&r, "cols");
        break;
    case MSG_SIGNAL:
        m->str = str(&r, "signal name");
        break;
    case MSG_CLOSE:
        break;
    case MSG_ERROR:
        m->u32 = u32(&r, "code");
        m->str = str(&r, "message");
        conn = -1; /* either */
        break;
    case MSG_EGRESS:
        m->port = u16(&r, "port");
        conn = 1;
        break;
    case MSG_TOPENED: case MSG_TEOF: case MSG_TCLOSE:
        break;
    case MSG_TREFUSED:
        m->reason = u8(&r, "reason");
        if (!r.failed && (m->reason < REFUSED_DENIED || m->reason > REFUSED_FAILED))
            bad(&r, "unknown reason %u", m->reason);
        m->str = str(&r, "message");
        if (m->str.n > PROTO_MAX_REFUSAL)
            bad(&r, "message of %u bytes, at most %d", m->str.n, PROTO_MAX_REFUSAL);
        break;
    case MSG_TDATA:
        m->data = r.p;
        m->len = (uint32_t)r.n;
        r.n = 0;
        if (!m->len)
            bad(&r, "empty");
        break;
    case MSG_TWINDOW:
        m->u32 = u32(&r, "increment");
        if (!r.failed && (m->u32 == 0 || m->u32 > PROTO_TUNNEL_WINDOW))
            bad(&r, "window increment %u out of range", m->u32);
        break;
    case MSG_CONFIGURE: {
        m->u64 = u64(&r, "unix_time_ns");
        m->str = str(&r, "hostname");
        struct proto_str e = bytes(&r, "entropy");
        if (e.n > PROTO_MAX_ENTROPY)
            bad(&r, "%u bytes of entropy, at most %d", e.n, PROTO_MAX_ENTROPY);
        m->data = (const uint8_t *)e.p;
        m->len = e.n;
        conn = 1;
        break;
    }
    case MSG_HOME:
        m->str = str(&r, "path");
        m->uid = u32(&r, "uid");
        m->gid = u32(&r, "gid");
        if (!r.failed && m->str.n > PROTO_MAX_HOME_PATH)
            bad(&r, "path of %u bytes, at most %d", m->str.n, PROTO_MAX_HOME_PATH);
        if (!r.failed && (m->uid == 0xFFFFFFFFu || m->gid == 0xFFFFFFFFu))
            bad(&r, "uid or gid 0xFFFFFFFF");
        conn = 1;
        break;
    case MSG_SYNC:
        m->fd = u8(&r, "flags"); /* bit 0: freeze the home */
        if (!r.failed && (m->fd & ~SYNC_FREEZE))
            bad(&r, "unknown flags 0x%02x", m->fd);
        conn = 1;
        break;
    default: /* including those only a guest sends */
        if ((f->type >= MSG_HELLO && f->type <= MSG_SYNCED) || f->type == MSG_EGRESS_STATUS || f->type == MSG_TOPEN)
            snprintf(err, errlen, "%s is not sent by a host", proto_type_name(f->type));
        else
            snprintf(err, errlen, "unknown frame type 0x%02x", f->type);
        return E_UNKNOWN_TYPE;
    }
    if (r.n)
        bad(&r, "%zu trailing bytes", r.n);
    if (conn == 1 && f->id != 0)
        bad(&r, "must be sent on id 0, not %u", f->id);
    if (conn == 0 && f->id == 0)
        bad(&r, "needs a %s id, got 0", f->type >= MSG_TOPEN ? "tunnel" : "process");
    if (r.failed)
        proto_msg_free(m);
    return r.failed ? E_MALFORMED : 0;
}

void proto_msg_free(struct proto_msg *m) {
    free(m->start);
    m->start = NULL;
}

void proto_begin(struct proto_out *o, uint8_t type, uint32_t id) {
    o->len = 0;
    o->overflow = o->cap < PROTO_HEADER;
    if (o->overflow)
        return;
    o->p[4] = type;
    put_be32(o->p + 5, id);
    o->len = PROTO_HEADER;
}

void proto_raw(struct proto_out *o, const void *p, size_t n) {
    if (o->overflow || n > o->cap - o->len) {
        o->overflow = 1;
        return;
    }
    if (n)
        memcpy(o->p + o->len, p, n);
    o->len += n;
}

void proto_num(struct proto_out *o, uint64_t v, size_t k) {
    uint8_t b[8];
    for (size_t i = 0; i < k; i++)
        b[i] = (uint8_t)(v >> 8 * (k - 1 - i));
    proto_raw(o, b, k);
}

void proto_bytes(struct proto_out *o, const void *p, size_t n) {
    if (n > PROTO_MAX_PAYLOAD) {
        o->overflow = 1;
        return;
    }
    proto_u32(o, (uint32_t)n);
    proto_raw(o, p, n);
}

int proto_end(struct proto_out *o) {
    if (o->overflow || o->len - PROTO_HEADER > PROTO_MAX_PAYLOAD)
        return -1;
    put_be32(o->p, (uint32_t)(o->len - 4));
    return 0;
}

static const struct {
    const char *name;
    int sig;
} signals[] = {
    {"HUP", SIGHUP}, {"INT", SIGINT}, {"QUIT", SIGQUIT}, {"ILL", SIGILL}, {"TRAP", SIGTRAP},
    {"ABRT", SIGABRT}, {"BUS", SIGBUS}, {"FPE", SIGFPE}, {"KILL", SIGKILL}, {"USR1", SIGUSR1},
    {"SEGV", SIGSEGV}, {"USR2", SIGUSR2}, {"PIPE", SIGPIPE}, {"ALRM", SIGALRM}, {"TERM", SIGTERM},
    {"STKFLT", SIGSTKFLT}, {"CHLD", SIGCHLD}, {"CONT", SIGCONT}, {"STOP", SIGSTOP},
    {"TSTP", SIGTSTP}, {"TTIN", SIGTTIN}, {"TTOU", SIGTTOU}, {"URG", SIGURG}, {"XCPU", SIGXCPU},
    {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH},
    {"IO", SIGIO}, {"PWR", SIGPWR}, {"SYS", SIGSYS},
};

int proto_signal_number(const char *name, size_t n) {
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
        if (strlen(signals[i].name) == n && memcmp(signals[i].name, name, n) == 0)
            return signals[i].sig;
    return 0;
}

const char *proto_signal_name(int sig) {
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
        if (signals[i].sig == sig)
            return signals[i].name;
    return NULL;
}

const char *proto_type_name(uint8_t type) {
    static const char *const names[] = {"?", "HELLO", "START", "STARTED", "DATA", "EOF", "WINDOW",
        "RESIZE", "SIGNAL", "EXIT", "CLOSE", "ERROR", "CONFIGURE", "CONFIGURED", "HOME", "HOME_STATUS", "SYNC",
        "SYNCED"};
    static const char *const egress[] = {"EGRESS", "EGRESS_STATUS", "TOPEN", "TOPENED", "TREFUSED", "TDATA",
        "TEOF", "TWINDOW", "TCLOSE"};
    if (type >= MSG_EGRESS && type - MSG_EGRESS < (int)(sizeof egress / sizeof egress[0]))
        return egress[type - MSG_EGRESS];
    return type < sizeof names / sizeof names[0] ? names[type] : "?";
}
