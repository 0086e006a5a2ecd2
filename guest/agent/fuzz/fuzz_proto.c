/* libFuzzer target for the codec: split the input into frames as the agent does and
 * decode each one; then re-encode what decoded and check it decodes the same. Built
 * with ASan+UBSan by `make fuzz`. */
#include "../proto.h"

#include <stdlib.h>
#include <string.h>

static uint8_t buf[PROTO_HEADER + PROTO_MAX_PAYLOAD];

/* Re-encodes a decoded START the way the host does; the result must decode equal. */
static void recheck_start(const struct proto_msg *m)
{
    const struct proto_start *s = m->start;
    struct proto_out o = {buf, sizeof buf, 0, 0};
    proto_begin(&o, MSG_START, m->id);
    proto_u8(&o, (uint8_t)s->pty);
    proto_u32(&o, s->uid);
    proto_u32(&o, s->gid);
    proto_u16(&o, (uint16_t)s->ngroups);
    for (unsigned i = 0; i < s->ngroups; i++)
        proto_u32(&o, s->groups[i]);
    /* path == argv[0] (same pointer) when the sender left it empty */
    proto_bytes(&o, s->path == s->argv[0] ? "" : s->path, s->path == s->argv[0] ? 0 : strlen(s->path));
    proto_u16(&o, (uint16_t)s->argc);
    for (unsigned i = 0; i < s->argc; i++)
        proto_bytes(&o, s->argv[i], strlen(s->argv[i]));
    proto_u16(&o, (uint16_t)s->envc);
    for (unsigned i = 0; i < s->envc; i++)
        proto_bytes(&o, s->env[i], strlen(s->env[i]));
    proto_bytes(&o, s->cwd, strlen(s->cwd));
    proto_bytes(&o, s->term, strlen(s->term));
    proto_u16(&o, s->rows);
    proto_u16(&o, s->cols);
    proto_u16(&o, (uint16_t)s->nmodes);
    for (unsigned i = 0; i < s->nmodes; i++) {
        proto_u8(&o, s->modes[i].op);
        proto_u32(&o, s->modes[i].val);
    }
    if (proto_end(&o) != 0)
        abort();
    struct proto_frame f;
    struct proto_msg m2;
    size_t used;
    char err[256];
    if (proto_next_frame(buf, o.len, &f, &used) != 1 || proto_decode(&f, &m2, err, sizeof err) != 0)
        abort();
    const struct proto_start *t = m2.start;
    if (t->argc != s->argc || t->envc != s->envc || t->nmodes != s->nmodes || strcmp(t->cwd, s->cwd)
        || strcmp(t->term, s->term) || t->argv[t->argc] || t->env[t->envc] || strcmp(t->path, s->path)
        || t->uid != s->uid || t->gid != s->gid || t->ngroups != s->ngroups
        || memcmp(t->groups, s->groups, s->ngroups * sizeof s->groups[0]) || s->uid == 0xffffffffu
        || s->gid == 0xffffffffu)
        abort();
    for (unsigned i = 0; i < s->argc; i++)
        if (strcmp(t->argv[i], s->argv[i]))
            abort();
    proto_msg_free(&m2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proto_frame f;
    struct proto_msg m;
    size_t used;
    char err[256];
    while (proto_next_frame(data, size, &f, &used) == 1) {
        if (proto_decode(&f, &m, err, sizeof err) == 0) {
            if (m.start)
                recheck_start(&m);
            if (m.type == MSG_SIGNAL)
                (void)proto_signal_number(m.str.p, m.str.n);
            proto_msg_free(&m);
        } else if (strlen(err) >= sizeof err) {
            abort();
        }
        data += used;
        size -= used;
    }
    return 0;
}
