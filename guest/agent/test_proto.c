/* Tests of the codec (proto.c), built with ASan+UBSan by `make test`:
 * round trips, every truncation, each limit, and random and mutated input.
 * `test_proto --write-seeds DIR` writes valid frames of every type as fuzzing seeds. */
#include "check.h"
#include "proto.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static uint8_t buf[PROTO_HEADER + PROTO_MAX_PAYLOAD + 64];
static struct proto_out out = {buf, sizeof buf, 0, 0};

static void s(const char *str) { proto_bytes(&out, str, strlen(str)); }

/* Credentials and path, as the host sends them after the flags. */
static void creds(uint32_t uid, uint32_t gid, int ngroups, const uint32_t *groups, const char *path) {
    proto_u32(&out, uid);
    proto_u32(&out, gid);
    proto_u16(&out, (uint16_t)ngroups);
    for (int i = 0; i < ngroups; i++)
        proto_u32(&out, groups[i % 3]);
    s(path);
}

static const uint32_t three_groups[] = {27, 100, 1234567};

/* A START like the host builds: pty flag, credentials, path, argv, env, cwd, term, size, modes. */
static size_t enc_start(uint32_t id, int pty, int argc, const char **argv, int envc, const char **env) {
    proto_begin(&out, MSG_START, id);
    proto_u8(&out, (uint8_t)pty);
    creds(1000, 1001, 3, three_groups, "/bin/bash");
    proto_u16(&out, (uint16_t)argc);
    for (int i = 0; i < argc; i++)
        s(argv[i]);
    proto_u16(&out, (uint16_t)envc);
    for (int i = 0; i < envc; i++)
        s(env[i]);
    s("/tmp");
    s("xterm-256color");
    proto_u16(&out, 40);
    proto_u16(&out, 120);
    proto_u16(&out, 2);
    proto_u8(&out, 53); /* ECHO */
    proto_u32(&out, 0);
    proto_u8(&out, 3); /* VERASE */
    proto_u32(&out, 127);
    CHECK(proto_end(&out) == 0);
    return out.len;
}

/* One valid frame of each type, in buf; returns its length. */
static size_t enc_type(int type) {
    static const char *argv[] = {"-bash", "-c", "echo hi"}, *env[] = {"LANG=C.UTF-8", "X="};
    switch (type) {
    case MSG_HELLO:
        proto_begin(&out, MSG_HELLO, 0), proto_u16(&out, 1), proto_u64(&out, 123456789), s("6.1.0-56-cloud-amd64");
        break;
    case MSG_START:
        return enc_start(7, 1, 3, argv, 2, env);
    case MSG_STARTED:
        proto_begin(&out, MSG_STARTED, 7), proto_u32(&out, 4242);
        break;
    case MSG_DATA:
        proto_begin(&out, MSG_DATA, 7), proto_u8(&out, 0), proto_raw(&out, "hello\n", 6);
        break;
    case MSG_EOF:
        proto_begin(&out, MSG_EOF, 7), proto_u8(&out, 0);
        break;
    case MSG_WINDOW:
        proto_begin(&out, MSG_WINDOW, 7), proto_u8(&out, 1), proto_u32(&out, 65536);
        break;
    case MSG_RESIZE:
        proto_begin(&out, MSG_RESIZE, 7), proto_u16(&out, 50), proto_u16(&out, 132);
        break;
    case MSG_SIGNAL:
        proto_begin(&out, MSG_SIGNAL, 7), s("TERM");
        break;
    case MSG_EXIT:
        proto_begin(&out, MSG_EXIT, 7), proto_u32(&out, (uint32_t)-1), proto_u8(&out, 9), proto_u8(&out, 1), s("KILL");
        break;
    case MSG_CLOSE:
        proto_begin(&out, MSG_CLOSE, 7);
        break;
    case MSG_ERROR:
        proto_begin(&out, MSG_ERROR, 0), proto_u32(&out, E_UNKNOWN_ID), s("no process with id 9");
        break;
    case MSG_CONFIGURE:
        proto_begin(&out, MSG_CONFIGURE, 0), proto_u64(&out, 1700000000123456789ull), s("vm-42"),
            proto_bytes(&out, "0123456789abcdef", 16);
        break;
    case MSG_CONFIGURED:
        proto_begin(&out, MSG_CONFIGURED, 0);
        break;
    case MSG_HOME:
        proto_begin(&out, MSG_HOME, 0), s("/home/alice"), proto_u32(&out, 1000), proto_u32(&out, 1001);
        break;
    case MSG_HOME_STATUS:
        proto_begin(&out, MSG_HOME_STATUS, 0), s("");
        break;
    case MSG_SYNC:
        proto_begin(&out, MSG_SYNC, 0), proto_u8(&out, SYNC_FREEZE);
        break;
    case MSG_SYNCED:
        proto_begin(&out, MSG_SYNCED, 0), s("");
        break;
    case MSG_EGRESS:
        proto_begin(&out, MSG_EGRESS, 0), proto_u16(&out, 3128);
        break;
    case MSG_EGRESS_STATUS:
        proto_begin(&out, MSG_EGRESS_STATUS, 0), proto_u16(&out, 3128), s("");
        break;
    case MSG_TOPEN:
        proto_begin(&out, MSG_TOPEN, 5), s("deb.debian.org"), proto_u16(&out, 443), proto_u8(&out, 0);
        break;
    case MSG_TOPENED:
        proto_begin(&out, MSG_TOPENED, 5);
        break;
    case MSG_TREFUSED:
        proto_begin(&out, MSG_TREFUSED, 5), proto_u8(&out, REFUSED_DENIED), s("example.com:443 is not allowed");
        break;
    case MSG_TDATA:
        proto_begin(&out, MSG_TDATA, 5), proto_raw(&out, "\x16\x03\x01", 3);
        break;
    case MSG_TEOF:
        proto_begin(&out, MSG_TEOF, 5);
        break;
    case MSG_TWINDOW:
        proto_begin(&out, MSG_TWINDOW, 5), proto_u32(&out, 4096);
        break;
    case MSG_TCLOSE:
        proto_begin(&out, MSG_TCLOSE, 5);
        break;
    }
    CHECK(proto_end(&out) == 0);
    return out.len;
}

static int decode_buf(const uint8_t *b, size_t n, struct proto_msg *m) {
    struct proto_frame f;
    size_t used;
    char err[256];
    if (proto_next_frame(b, n, &f, &used) != 1 || used != n)
        return -100;
    return proto_decode(&f, m, err, sizeof err);
}

static int streq(struct proto_str s, const char *c) { return s.n == strlen(c) && memcmp(s.p, c, s.n) == 0; }

static int from_host(int t) {
    return t != MSG_HELLO && t != MSG_STARTED && t != MSG_EXIT && t != MSG_CONFIGURED && t != MSG_EGRESS_STATUS
        && t != MSG_TOPEN && t != MSG_HOME_STATUS && t != MSG_SYNCED;
}

/* Every type the protocol has, in order: the process ones, then egress. */
static const int all_types[] = {MSG_HELLO, MSG_START, MSG_STARTED, MSG_DATA, MSG_EOF, MSG_WINDOW, MSG_RESIZE,
    MSG_SIGNAL, MSG_EXIT, MSG_CLOSE, MSG_ERROR, MSG_CONFIGURE, MSG_CONFIGURED, MSG_HOME, MSG_HOME_STATUS,
    MSG_SYNC, MSG_SYNCED, MSG_EGRESS, MSG_EGRESS_STATUS, MSG_TOPEN, MSG_TOPENED, MSG_TREFUSED, MSG_TDATA, MSG_TEOF, MSG_TWINDOW, MSG_TCLOSE};
#define NTYPES (int)(sizeof all_types / sizeof all_types[0])

static void test_round_trip(void) {
    struct proto_msg m;
    struct proto_frame f;
    size_t used;
    char err[256];
    for (int k = 0; k < NTYPES; k++) {
        int t = all_types[k];
        size_t n = enc_type(t);
        CHECK(proto_next_frame(buf, n, &f, &used) == 1 && used == n);
        int rc = proto_decode(&f, &m, err, sizeof err);
        CHECK(from_host(t) ? rc == 0 && m.type == t : rc == E_UNKNOWN_TYPE && strstr(err, "not sent by a host"));
        proto_msg_free(&m);
    }
    /* the encoder, byte for byte: HELLO as the agent sends it */
    static const uint8_t hello[] = {0, 0, 0, 39, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0x07, 0x5b, 0xcd, 0x15, 0, 0, 0, 20};
    size_t n = enc_type(MSG_HELLO);
    CHECK(n == 43 && !memcmp(buf, hello, sizeof hello) && !memcmp(buf + 23, "6.1.0-56-cloud-amd64", 20));
    enc_type(MSG_CONFIGURE);
    CHECK(decode_buf(buf, out.len, &m) == 0 && m.u64 == 1700000000123456789ull && streq(m.str, "vm-42") && m.len == 16);
    enc_type(MSG_DATA);
    CHECK(decode_buf(buf, out.len, &m) == 0 && m.id == 7 && m.fd == 0 && m.len == 6 && !memcmp(m.data, "hello\n", 6));
    enc_type(MSG_WINDOW);
    CHECK(decode_buf(buf, out.len, &m) == 0 && m.fd == 1 && m.u32 == 65536);
    enc_type(MSG_RESIZE);
    CHECK(decode_buf(buf, out.len, &m) == 0 && m.rows == 50 && m.cols == 132);
    enc_type(MSG_EGRESS);
    CHECK(decode_buf(buf, out.len, &m) == 0 && m.port == 3128 && m.id == 0);
    enc_type(MSG_HOME);
    CHECK(decode_buf(buf, out.len, &m) == 0 && streq(m.str, "/home/alice") && m.uid == 1000 && m.gid == 1001);
    proto_begin(&out, MSG_HOME, 3), s("/root"), proto_u32(&out, 0), proto_u32(&out, 0), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_MALFORMED); /* not on id 0 */
    proto_begin(&out, MSG_HOME, 0), s("/root"), proto_u32(&out, 0xFFFFFFFFu), proto_u32(&out, 0), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_MALFORMED);
    CHECK(!strcmp(proto_type_name(MSG_SYNCED), "SYNCED") && !strcmp(proto_type_name(0x12), "?"));
    enc_type(MSG_TREFUSED);
    CHECK(decode_buf(buf, out.len, &m) == 0 && m.id == 5 && m.reason == REFUSED_DENIED
          && streq(m.str, "example.com:443 is not allowed"));
    enc_type(MSG_TDATA);
    CHECK(decode_buf(buf, out.len, &m) == 0 && m.len == 3 && !memcmp(m.data, "\x16\x03\x01", 3));
    enc_type(MSG_TWINDOW);
    CHECK(decode_buf(buf, out.len, &m) == 0 && m.u32 == 4096);
    CHECK(!strcmp(proto_type_name(MSG_TCLOSE), "TCLOSE") && !strcmp(proto_type_name(0x29), "?")
          && !strcmp(proto_type_name(0x1f), "?"));

    enc_type(MSG_START);
    CHECK(decode_buf(buf, out.len, &m) == 0);
    struct proto_start *st = m.start;
    CHECK(st && st->pty == 1 && st->argc == 3 && st->envc == 2);
    CHECK(st->uid == 1000 && st->gid == 1001 && st->ngroups == 3 && st->groups[0] == 27 && st->groups[2] == 1234567);
    CHECK(!strcmp(st->path, "/bin/bash"));
    CHECK(!strcmp(st->argv[0], "-bash") && !strcmp(st->argv[2], "echo hi") && st->argv[3] == NULL);
    CHECK(!strcmp(st->env[0], "LANG=C.UTF-8") && !strcmp(st->env[1], "X=") && st->env[2] == NULL);
    CHECK(!strcmp(st->cwd, "/tmp") && !strcmp(st->term, "xterm-256color"));
    CHECK(st->rows == 40 && st->cols == 120 && st->nmodes == 2);
    CHECK(st->modes[0].op == 53 && st->modes[0].val == 0 && st->modes[1].op == 3 && st->modes[1].val == 127);
    proto_msg_free(&m);

    /* Empty DATA is allowed; an empty-string cwd and term too. */
    proto_begin(&out, MSG_DATA, 1), proto_u8(&out, 0), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == 0 && m.len == 0);
    const char *one[] = {"true"};
    proto_begin(&out, MSG_START, 1), proto_u8(&out, 0), creds(0, 0, 0, NULL, ""), proto_u16(&out, 1), s(one[0]),
        proto_u16(&out, 0), s(""), s(""), proto_u16(&out, 0), proto_u16(&out, 0), proto_u16(&out, 0), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == 0 && m.start->cwd[0] == 0 && m.start->term[0] == 0 && m.start->envc == 0);
    CHECK(m.start->uid == 0 && m.start->gid == 0 && m.start->ngroups == 0 && m.start->path == m.start->argv[0]);
    proto_msg_free(&m);
}

/* Every proper prefix of a fixed-format payload and one extra byte must be rejected. */
static void test_truncation(void) {
    static uint8_t copy[sizeof buf];
    struct proto_msg m;
    for (int k = 0; k < NTYPES; k++) {
        int t = all_types[k];
        if (!from_host(t))
            continue;
        size_t n = enc_type(t);
        memcpy(copy, buf, n);
        for (size_t cut = PROTO_HEADER; cut < n; cut++) {
            uint32_t len = (uint32_t)cut - 4;
            copy[0] = (uint8_t)(len >> 24), copy[1] = (uint8_t)(len >> 16), copy[2] = (uint8_t)(len >> 8), copy[3] = (uint8_t)len;
            int rc = decode_buf(copy, cut, &m);
            /* a DATA prefix that still holds the fd byte is a shorter valid DATA; TDATA likewise */
            if ((t == MSG_DATA && cut > PROTO_HEADER) || (t == MSG_TDATA && cut > PROTO_HEADER))
                CHECK(rc == 0);
            else
                CHECK(rc == E_MALFORMED);
            proto_msg_free(&m);
        }
        if (t == MSG_DATA || t == MSG_TDATA)
            continue;
        memcpy(copy, buf, n);
        copy[n] = 0;
        uint32_t len = (uint32_t)n - 3;
        copy[0] = (uint8_t)(len >> 24), copy[1] = (uint8_t)(len >> 16), copy[2] = (uint8_t)(len >> 8), copy[3] = (uint8_t)len;
        CHECK(decode_buf(copy, n + 1, &m) == E_MALFORMED); /* trailing byte */
    }
}

static void test_frames(void) {
    struct proto_frame f;
    size_t used;
    uint8_t b[16] = {0};
    CHECK(proto_next_frame(b, 0, &f, &used) == 0);
    CHECK(proto_next_frame(b, 3, &f, &used) == 0);
    CHECK(proto_next_frame(b, 4, &f, &used) == -1); /* length 0 */
    b[3] = 4;
    CHECK(proto_next_frame(b, 4, &f, &used) == -1); /* length 4 */
    b[3] = 5;
    CHECK(proto_next_frame(b, 8, &f, &used) == 0); /* header incomplete */
    b[4] = MSG_CLOSE, b[8] = 3;
    CHECK(proto_next_frame(b, 16, &f, &used) == 1 && used == 9 && f.type == MSG_CLOSE && f.id == 3 && f.len == 0);
    uint32_t big = 5 + PROTO_MAX_PAYLOAD;
    b[0] = (uint8_t)(big >> 24), b[1] = (uint8_t)(big >> 16), b[2] = (uint8_t)(big >> 8), b[3] = (uint8_t)big;
    CHECK(proto_next_frame(b, 16, &f, &used) == 0); /* largest legal: wait for it */
    big++;
    b[0] = (uint8_t)(big >> 24), b[1] = (uint8_t)(big >> 16), b[2] = (uint8_t)(big >> 8), b[3] = (uint8_t)big;
    CHECK(proto_next_frame(b, 4, &f, &used) == -1);
    memset(b, 0xff, 4);
    CHECK(proto_next_frame(b, 4, &f, &used) == -1);

    /* Two frames back to back split one at a time. */
    size_t n1 = enc_type(MSG_SIGNAL);
    static uint8_t two[200];
    memcpy(two, buf, n1);
    size_t n2 = enc_type(MSG_RESIZE);
    memcpy(two + n1, buf, n2);
    CHECK(proto_next_frame(two, n1 + n2, &f, &used) == 1 && used == n1 && f.type == MSG_SIGNAL);
    CHECK(proto_next_frame(two + used, n1 + n2 - used, &f, &used) == 1 && used == n2 && f.type == MSG_RESIZE);

    /* The biggest payload a frame may carry encodes; one byte more does not. */
    static uint8_t data[PROTO_MAX_PAYLOAD];
    proto_begin(&out, MSG_DATA, 1), proto_u8(&out, 1), proto_raw(&out, data, PROTO_MAX_PAYLOAD - 1);
    CHECK(proto_end(&out) == 0 && out.len == PROTO_HEADER + PROTO_MAX_PAYLOAD);
    struct proto_msg m;
    CHECK(decode_buf(buf, out.len, &m) == 0 && m.len == PROTO_MAX_PAYLOAD - 1);
    proto_begin(&out, MSG_DATA, 1), proto_u8(&out, 1), proto_raw(&out, data, PROTO_MAX_PAYLOAD);
    CHECK(proto_end(&out) == -1);
    struct proto_out tiny = {buf, 12, 0, 0};
    proto_begin(&tiny, MSG_STARTED, 1), proto_u32(&tiny, 1);
    CHECK(proto_end(&tiny) == -1 && tiny.overflow);
}

static uint32_t start_uid = 0, start_gid = 0;
static int start_ngroups = 0;

static int start_rc(int flags, int argc, const char **argv, int envc, const char **env, int nmodes) {
    struct proto_msg m;
    proto_begin(&out, MSG_START, 1);
    proto_u8(&out, (uint8_t)flags);
    creds(start_uid, start_gid, start_ngroups, three_groups, "");
    proto_u16(&out, (uint16_t)argc);
    for (int i = 0; i < argc; i++)
        s(argv[i % 2]);
    proto_u16(&out, (uint16_t)envc);
    for (int i = 0; i < envc; i++)
        s(env[i % 2]);
    s("");
    s("");
    proto_u16(&out, 0), proto_u16(&out, 0), proto_u16(&out, (uint16_t)nmodes);
    for (int i = 0; i < nmodes; i++)
        proto_u8(&out, 1), proto_u32(&out, 3);
    CHECK(proto_end(&out) == 0);
    int rc = decode_buf(buf, out.len, &m);
    if (rc == 0)
        CHECK(m.start->argc == (unsigned)argc && m.start->argv[argc] == NULL && m.start->env[envc] == NULL);
    proto_msg_free(&m);
    return rc;
}

static void test_limits(void) {
    const char *a[] = {"x", "yy"}, *e[] = {"A=1", "B="}, *bad_env1[] = {"=1", "=1"}, *bad_env2[] = {"A", "A"};
    CHECK(start_rc(0, 1, a, 0, e, 0) == 0);
    CHECK(start_rc(0, 0, a, 0, e, 0) == E_MALFORMED);
    CHECK(start_rc(0, PROTO_MAX_ARGS, a, PROTO_MAX_ENV, e, PROTO_MAX_MODES) == 0);
    CHECK(start_rc(0, PROTO_MAX_ARGS + 1, a, 0, e, 0) == E_MALFORMED);
    CHECK(start_rc(0, 1, a, PROTO_MAX_ENV + 1, e, 0) == E_MALFORMED);
    CHECK(start_rc(0, 1, a, 0, e, PROTO_MAX_MODES + 1) == E_MALFORMED);
    CHECK(start_rc(2, 1, a, 0, e, 0) == E_MALFORMED);
    CHECK(start_rc(0, 1, a, 1, bad_env1, 0) == E_MALFORMED);
    CHECK(start_rc(0, 1, a, 1, bad_env2, 0) == E_MALFORMED);
    /* credentials: (uid_t)-1 means "unchanged" to setuid, so it is never accepted */
    start_ngroups = PROTO_MAX_GROUPS;
    CHECK(start_rc(0, 1, a, 0, e, 0) == 0);
    start_ngroups = PROTO_MAX_GROUPS + 1;
    CHECK(start_rc(0, 1, a, 0, e, 0) == E_MALFORMED);
    start_ngroups = 0, start_uid = 0xffffffffu;
    CHECK(start_rc(0, 1, a, 0, e, 0) == E_MALFORMED);
    start_uid = 0xfffffffeu, start_gid = 0xffffffffu;
    CHECK(start_rc(0, 1, a, 0, e, 0) == E_MALFORMED);
    start_gid = 0;
    CHECK(start_rc(0, 1, a, 0, e, 0) == 0);
    start_uid = 0;
    const uint32_t bad_group[] = {5, 0xffffffffu};
    struct proto_msg m;
    proto_begin(&out, MSG_START, 1), proto_u8(&out, 0), proto_u32(&out, 0), proto_u32(&out, 0), proto_u16(&out, 2),
        proto_u32(&out, bad_group[0]), proto_u32(&out, bad_group[1]), s(""), proto_u16(&out, 1), s("x"), proto_u16(&out, 0),
        s(""), s(""), proto_u16(&out, 0), proto_u16(&out, 0), proto_u16(&out, 0), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_MALFORMED);
    const char *nul[] = {"a\0b"};
    proto_begin(&out, MSG_START, 1), proto_u8(&out, 0), creds(0, 0, 0, NULL, ""), proto_u16(&out, 1), proto_bytes(&out, nul[0], 3);
    proto_u16(&out, 0), s(""), s(""), proto_u16(&out, 0), proto_u16(&out, 0), proto_u16(&out, 0), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_MALFORMED);
    proto_begin(&out, MSG_START, 1), proto_u8(&out, 0), proto_u32(&out, 0), proto_u32(&out, 0), proto_u16(&out, 0);
    proto_bytes(&out, "/bin/x\0y", 8), proto_u16(&out, 1), s("x");
    proto_u16(&out, 0), s(""), s(""), proto_u16(&out, 0), proto_u16(&out, 0), proto_u16(&out, 0), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_MALFORMED); /* NUL in path */
    /* a string length far past the payload */
    proto_begin(&out, MSG_SIGNAL, 1), proto_u32(&out, 0xffffffffu), proto_raw(&out, "TERM", 4), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_MALFORMED);
    /* ids */
    proto_begin(&out, MSG_CLOSE, 0), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_MALFORMED);
    proto_begin(&out, MSG_CONFIGURE, 3), proto_u64(&out, 1), s(""), s(""), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_MALFORMED);
    proto_begin(&out, MSG_ERROR, 3), proto_u32(&out, 1), s("x"), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == 0);
    /* fds, windows, entropy, types */
    proto_begin(&out, MSG_EOF, 1), proto_u8(&out, 3), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_MALFORMED);
    proto_begin(&out, MSG_WINDOW, 1), proto_u8(&out, 1), proto_u32(&out, 0), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_MALFORMED);
    proto_begin(&out, MSG_WINDOW, 1), proto_u8(&out, 1), proto_u32(&out, PROTO_INITIAL_WINDOW + 1), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_MALFORMED);
    static uint8_t ent[PROTO_MAX_ENTROPY + 1];
    proto_begin(&out, MSG_CONFIGURE, 0), proto_u64(&out, 1), s("h"), proto_bytes(&out, ent, sizeof ent), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_MALFORMED);
    proto_begin(&out, MSG_CONFIGURE, 0), proto_u64(&out, 1), s(""), proto_bytes(&out, ent, PROTO_MAX_ENTROPY), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == 0);
    proto_begin(&out, 0x12, 1), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_UNKNOWN_TYPE);
    proto_begin(&out, 0, 1), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_UNKNOWN_TYPE);
    proto_begin(&out, MSG_EXIT, 1), proto_u32(&out, 0), proto_u8(&out, 0), proto_u8(&out, 0), s(""), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_UNKNOWN_TYPE);

    /* egress: ids, reasons, windows, sizes, and the types only a guest sends */
    proto_begin(&out, MSG_EGRESS, 1), proto_u16(&out, 3128), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_MALFORMED);
    for (int t = MSG_TOPENED; t <= MSG_TCLOSE; t++) {
        enc_type(t);
        buf[5] = buf[6] = buf[7] = buf[8] = 0; /* id 0 */
        CHECK(decode_buf(buf, out.len, &m) == E_MALFORMED);
    }
    proto_begin(&out, MSG_TDATA, 1), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_MALFORMED); /* empty */
    for (int reason = 0; reason < 6; reason++) {
        proto_begin(&out, MSG_TREFUSED, 1), proto_u8(&out, (uint8_t)reason), s("x"), proto_end(&out);
        CHECK(decode_buf(buf, out.len, &m) == (reason >= REFUSED_DENIED && reason <= REFUSED_FAILED ? 0 : E_MALFORMED));
    }
    static char longmsg[PROTO_MAX_REFUSAL + 1];
    memset(longmsg, 'x', sizeof longmsg);
    proto_begin(&out, MSG_TREFUSED, 1), proto_u8(&out, 1), proto_bytes(&out, longmsg, PROTO_MAX_REFUSAL), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == 0);
    proto_begin(&out, MSG_TREFUSED, 1), proto_u8(&out, 1), proto_bytes(&out, longmsg, PROTO_MAX_REFUSAL + 1), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_MALFORMED);
    proto_begin(&out, MSG_TREFUSED, 1), proto_u8(&out, 1), proto_bytes(&out, "a\0b", 3), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_MALFORMED);
    proto_begin(&out, MSG_TWINDOW, 1), proto_u32(&out, 0), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_MALFORMED);
    proto_begin(&out, MSG_TWINDOW, 1), proto_u32(&out, PROTO_TUNNEL_WINDOW + 1), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_MALFORMED);
    proto_begin(&out, MSG_TWINDOW, 1), proto_u32(&out, PROTO_TUNNEL_WINDOW), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == 0);
    char err[256];
    struct proto_frame f;
    size_t used;
    static char longpath[PROTO_MAX_HOME_PATH + 1];
    memset(longpath, 'a', sizeof longpath);
    longpath[0] = '/';
    proto_begin(&out, MSG_HOME, 0), proto_bytes(&out, longpath, PROTO_MAX_HOME_PATH), proto_u32(&out, 1), proto_u32(&out, 1),
        proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == 0);
    proto_begin(&out, MSG_HOME, 0), proto_bytes(&out, longpath, PROTO_MAX_HOME_PATH + 1), proto_u32(&out, 1),
        proto_u32(&out, 1), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_MALFORMED);
    proto_begin(&out, MSG_SYNC, 4), proto_u8(&out, 0), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_MALFORMED); /* not on id 0 */
    proto_begin(&out, MSG_SYNC, 0), proto_u8(&out, 2), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == E_MALFORMED); /* unknown flag */
    proto_begin(&out, MSG_SYNC, 0), proto_u8(&out, 0), proto_end(&out);
    CHECK(decode_buf(buf, out.len, &m) == 0 && m.fd == 0);
    for (int t = 0x12; t < 0x100; t++) {
        if (t >= MSG_EGRESS && t <= MSG_TCLOSE)
            continue;
        proto_begin(&out, (uint8_t)t, 1), proto_end(&out);
        CHECK(decode_buf(buf, out.len, &m) == E_UNKNOWN_TYPE);
    }
    enc_type(MSG_TOPEN);
    CHECK(proto_next_frame(buf, out.len, &f, &used) == 1 && proto_decode(&f, &m, err, sizeof err) == E_UNKNOWN_TYPE
          && strstr(err, "not sent by a host"));
}

static void test_signals(void) {
    CHECK(proto_signal_number("TERM", 4) == SIGTERM && proto_signal_number("KILL", 4) == SIGKILL);
    CHECK(proto_signal_number("WINCH", 5) == SIGWINCH && proto_signal_number("TSTP", 4) == SIGTSTP);
    CHECK(proto_signal_number("SIGTERM", 7) == 0 && proto_signal_number("TER", 3) == 0);
    CHECK(proto_signal_number("", 0) == 0 && proto_signal_number("TERMX", 5) == 0);
    for (int sig = 1; sig < 32; sig++) {
        const char *n = proto_signal_name(sig);
        CHECK(n && proto_signal_number(n, strlen(n)) == sig);
    }
    CHECK(proto_signal_name(0) == NULL && proto_signal_name(40) == NULL);
}

/* Splits and decodes everything in b, as the agent does; returns frames decoded. */
static int run_input(const uint8_t *b, size_t n) {
    struct proto_frame f;
    struct proto_msg m;
    size_t used;
    char err[256];
    int frames = 0;
    while (proto_next_frame(b, n, &f, &used) == 1) {
        if (proto_decode(&f, &m, err, sizeof err) == 0) {
            frames++;
            if (m.start)
                for (unsigned i = 0; i < m.start->argc; i++)
                    CHECK(m.start->argv[i] && strlen(m.start->argv[i]) <= f.len);
            proto_msg_free(&m);
        } else {
            CHECK(strlen(err) < sizeof err);
        }
        b += used;
        n -= used;
    }
    return frames;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)rng;
}

static void test_random(int rounds) {
    static uint8_t b[4096];
    long decoded = 0;
    for (int r = 0; r < rounds; r++) {
        size_t n;
        if (r % 2) { /* a valid frame, mutated: reaches deep into the decoders */
            n = enc_type(all_types[rnd() % NTYPES]);
            if (n > sizeof b)
                n = sizeof b;
            memcpy(b, buf, n);
            for (int k = (int)(rnd() % 4) + 1; k > 0; k--)
                b[rnd() % n] ^= (uint8_t)(1u << (rnd() % 8));
            if (rnd() % 4 == 0)
                n = rnd() % (n + 1);
        } else { /* noise with a plausible length prefix */
            n = rnd() % sizeof b;
            for (size_t i = 0; i < n; i++)
                b[i] = (uint8_t)rnd();
            if (n >= 4 && rnd() % 2) {
                uint32_t len = 5 + rnd() % (uint32_t)(n - 3);
                b[0] = 0, b[1] = (uint8_t)(len >> 16), b[2] = (uint8_t)(len >> 8), b[3] = (uint8_t)len;
            }
        }
        decoded += run_input(b, n);
    }
    printf("test_proto: %d random/mutated inputs, %ld frames decoded\n", rounds, decoded);
}

static int write_seeds(const char *dir) {
    char path[512];
    for (int k = 0; k < NTYPES; k++) {
        int t = all_types[k];
        size_t n = enc_type(t);
        snprintf(path, sizeof path, "%s/%s", dir, proto_type_name((uint8_t)t));
        if (write_file(path, buf, n))
            return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--write-seeds"))
        return write_seeds(argv[2]);
    test_round_trip();
    test_truncation();
    test_frames();
    test_limits();
    test_signals();
    test_random(argc == 2 ? atoi(argv[1]) : 300000);
    return verdict("test_proto");
}
