/* libFuzzer target for the proxy's request parser: any bytes a guest process sends to the
 * proxy give "need more", a refusal with a one-line reason, or a request whose fields are
 * within their limits; a rewritten head must parse again to the same destination. Built
 * with ASan+UBSan by `make fuzz`. */
#define _GNU_SOURCE
#include "../proxyreq.h"

#include <stdlib.h>
#include <string.h>

static uint8_t out[PROXYREQ_MAX_OUT], again[PROXYREQ_MAX_OUT];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proxyreq r, r2;
    char err[256];
    int rc = proxyreq_parse(data, size, &r, out, err, sizeof err);
    if (rc < -1 || rc > 1 || (rc < 0 && (!err[0] || strchr(err, '\n'))))
        abort();
    if (rc != 1)
        return 0;
    if (r.head_len > size || !r.port || !r.host[0] || strlen(r.host) > PROTO_MAX_HOST || r.out_len > PROXYREQ_MAX_OUT)
        abort();
    if (!r.connect) {
        /* The forwarded head is an origin-form request: not a proxy request any more. */
        if (r.out_len == 0 || out[0] == ' ' || !memmem(out, r.out_len, "\r\nConnection: close\r\n", 21))
            abort();
        if (proxyreq_parse(out, r.out_len, &r2, again, err, sizeof err) != -1)
            abort();
    }
    return 0;
}
