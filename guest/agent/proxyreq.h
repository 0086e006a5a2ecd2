/* The request head a client sends to the guest's egress proxy (docs/protocol.md, "Egress
 * tunnels"): CONNECT host:port, or a plain request in absolute form (GET http://host/path, or
 * GET https://host/path from clients that leave TLS to the proxy, such as busybox wget).
 * Pure: no I/O, no globals, safe on arbitrary bytes (fuzzed alone by fuzz/fuzz_proxyreq.c).
 * The guest's processes are not trusted either; the host decides on what this finds. */
#ifndef VMGATE_PROXYREQ_H
#define VMGATE_PROXYREQ_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

#define PROXYREQ_MAX_HEAD 8192                     /* a longer head is refused (400) */
#define PROXYREQ_MAX_OUT (PROXYREQ_MAX_HEAD + 512)  /* the rewritten head of a plain request */

struct proxyreq {
    int connect;                   /* CONNECT: after the head, bytes go through untouched */
    int tls;                       /* GET https://...: the host speaks TLS to the server for the client */
    char host[PROTO_MAX_HOST + 1]; /* a name or an IP literal (IPv6 without brackets), NUL-terminated */
    uint16_t port;
    size_t head_len;               /* bytes of the client's head, through its blank line */
    size_t out_len;                /* a plain request: the head to forward, in out[0..out_len) */
};

/* Parses the head at the start of buf[0..n). Returns 1 when it is complete and acceptable
 * (*r filled; for a plain request the head to send upstream is in out, which must hold
 * PROXYREQ_MAX_OUT bytes), 0 when more bytes are needed, -1 when it is refused (err, give it
 * 100+ bytes, says why in one line, for a 400 answer). Bytes after head_len are the request
 * body or, for CONNECT, the start of the tunnelled stream: the caller forwards them as they are. */
int proxyreq_parse(const uint8_t *buf, size_t n, struct proxyreq *r, uint8_t *out, char *err, size_t errlen);

#endif
