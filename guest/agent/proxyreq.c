/* Parser of a proxy client's request head (see proxyreq.h). Strict on purpose: what it does
 * not understand is refused with a reason rather than guessed at, and every index is checked
 * against the bytes actually there. */
#include "proxyreq.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

__attribute__((format(printf, 3, 4))) static int refuse(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* A bounded writer: an overflow is sticky. */
struct out {
    uint8_t *p;
    size_t n, cap;
    int over;
};

static void put(struct out *o, const void *p, size_t n) {
    if (o->over || n > o->cap - o->n) {
        o->over = 1;
        return;
    }
    memcpy(o->p + o->n, p, n);
    o->n += n;
}

static void puts_(struct out *o, const char *s) { put(o, s, strlen(s)); }

/* The index just past the blank line that ends the head, or 0 if it has not arrived. */
static size_t head_end(const uint8_t *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (b[i] != '\n')
            continue;
        if (i + 1 < n && b[i + 1] == '\n')
            return i + 2;
        if (i + 2 < n && b[i + 1] == '\r' && b[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

/* RFC 9110 token characters (method and header names). */
static int tchar(uint8_t c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int hexdigit(uint8_t c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* host[:port] or [v6][:port] into r->host and r->port (0 when absent and allowed). */
static int authority(const uint8_t *a, size_t n, struct proxyreq *r, int need_port, char *err, size_t errlen) {
    const uint8_t *h = a, *rest;
    size_t hn;
    if (n && a[0] == '[') {
        const uint8_t *close = memchr(a, ']', n);
        if (!close)
            return refuse(err, errlen, "unterminated IPv6 literal");
        h = a + 1;
        hn = (size_t)(close - h);
        rest = close + 1;
        for (size_t i = 0; i < hn; i++)
            if (!hexdigit(h[i]) && h[i] != ':' && h[i] != '.')
                return refuse(err, errlen, "malformed IPv6 literal");
        if (hn < 2 || !memchr(h, ':', hn))
            return refuse(err, errlen, "malformed IPv6 literal");
    } else {
        const uint8_t *colon = memchr(a, ':', n);
        hn = colon ? (size_t)(colon - a) : n;
        rest = a + hn;
        for (size_t i = 0; i < hn; i++) {
            uint8_t c = h[i];
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '.' || c == '_'))
                return refuse(err, errlen, "host name with a character that is not allowed (0x%02x)", c);
        }
    }
    if (hn == 0)
        return refuse(err, errlen, "empty host");
    if (hn > PROTO_MAX_HOST)
        return refuse(err, errlen, "host name longer than %d bytes", PROTO_MAX_HOST);
    size_t rn = (size_t)(a + n - rest);
    unsigned long port = 0;
    if (rn == 0 && need_port)
        return refuse(err, errlen, "CONNECT needs host:port");
    if (rn) {
        if (rest[0] != ':' || rn < 2 || rn > 6)
            return refuse(err, errlen, "malformed port");
        for (size_t i = 1; i < rn; i++) {
            if (rest[i] < '0' || rest[i] > '9')
                return refuse(err, errlen, "malformed port");
            port = port * 10 + (rest[i] - '0');
        }
        if (port < 1 || port > 65535)
            return refuse(err, errlen, "port %lu out of range", port);
    }
    memcpy(r->host, h, hn);
    r->host[hn] = 0;
    r->port = (uint16_t)port;
    return 0;
}

/* Hop-by-hop headers the proxy removes from a forwarded request (it adds Connection: close). */
static int dropped(const uint8_t *name, size_t n) {
    static const char *const names[] = {"proxy-connection", "proxy-authorization", "connection", "keep-alive"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == n && strncasecmp((const char *)name, names[i], n) == 0)
            return 1;
    return 0;
}

int proxyreq_parse(const uint8_t *buf, size_t n, struct proxyreq *r, uint8_t *out, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    size_t end = head_end(buf, n < PROXYREQ_MAX_HEAD ? n : PROXYREQ_MAX_HEAD);
    if (!end)
        return n >= PROXYREQ_MAX_HEAD ? refuse(err, errlen, "request head longer than %d bytes", PROXYREQ_MAX_HEAD) : 0;
    r->head_len = end;

    /* Lines without their line ends; a CR anywhere but at the end is refused. */
    const uint8_t *line = buf, *stop = buf + end;
    const uint8_t *nl = memchr(line, '\n', (size_t)(stop - line));
    size_t len = (size_t)(nl - line);
    if (len && line[len - 1] == '\r')
        len--;

    /* Request line: METHOD SP TARGET SP HTTP/1.x */
    const uint8_t *sp1 = memchr(line, ' ', len);
    const uint8_t *sp2 = sp1 ? memchr(sp1 + 1, ' ', len - (size_t)(sp1 + 1 - line)) : NULL;
    if (!sp1 || !sp2 || sp1 == line || sp2 == sp1 + 1)
        return refuse(err, errlen, "malformed request line");
    const uint8_t *method = line, *target = sp1 + 1, *version = sp2 + 1;
    size_t mlen = (size_t)(sp1 - line), tlen = (size_t)(sp2 - target), vlen = (size_t)(line + len - version);
    for (size_t i = 0; i < mlen; i++)
        if (!tchar(method[i]))
            return refuse(err, errlen, "malformed request method");
    for (size_t i = 0; i < tlen; i++)
        if (target[i] < 0x21 || target[i] > 0x7e)
            return refuse(err, errlen, "malformed request target");
    if (vlen != 8 || memcmp(version, "HTTP/1.", 7) != 0 || version[7] < '0' || version[7] > '9')
        return refuse(err, errlen, "not an HTTP/1.x request");

    /* The destination, and for a plain request the path to forward. */
    const uint8_t *path = NULL;
    size_t plen = 0, alen = 0;
    const uint8_t *auth = target;
    if (mlen == 7 && memcmp(method, "CONNECT", 7) == 0) {
        r->connect = 1;
        alen = tlen;
        if (authority(auth, alen, r, 1, err, errlen) < 0)
            return -1;
    } else {
        size_t scheme = tlen >= 7 && strncasecmp((const char *)target, "http://", 7) == 0 ? 7
                        : tlen >= 8 && strncasecmp((const char *)target, "https://", 8) == 0 ? 8 : 0;
        if (!scheme && tlen && target[0] == '/')
            return refuse(err, errlen, "this is an HTTP proxy: the request needs an absolute URL (http://host/path), not a path");
        if (!scheme)
            return refuse(err, errlen, "only http:// and https:// URLs and CONNECT are supported");
        r->tls = scheme == 8;
        auth = target + scheme;
        while (alen < tlen - scheme && auth[alen] != '/' && auth[alen] != '?' && auth[alen] != '#')
            alen++;
        if (memchr(auth, '@', alen))
            return refuse(err, errlen, "URLs with user information are not supported");
        if (authority(auth, alen, r, 0, err, errlen) < 0)
            return -1;
        if (!r->port)
            r->port = r->tls ? 443 : 80;
        path = auth + alen;
        plen = (size_t)(target + tlen - path);
        const uint8_t *hash = memchr(path, '#', plen);
        plen = hash ? (size_t)(hash - path) : plen;
    }

    struct out o = {out, 0, PROXYREQ_MAX_OUT, 0};
    if (!r->connect) {
        put(&o, method, mlen);
        puts_(&o, " ");
        if (!plen || path[0] != '/')
            puts_(&o, "/");
        put(&o, path, plen);
        puts_(&o, " ");
        put(&o, version, vlen);
        puts_(&o, "\r\n");
    }

    /* Header lines: checked for both kinds, forwarded for a plain request. */
    int have_host = 0;
    for (line = nl + 1; line < stop; line = nl + 1) {
        nl = memchr(line, '\n', (size_t)(stop - line));
        len = (size_t)(nl - line);
        if (len && line[len - 1] == '\r')
            len--;
        if (!len)
            break; /* the blank line: the end */
        if (line[0] == ' ' || line[0] == '\t')
            return refuse(err, errlen, "folded header lines are not supported");
        const uint8_t *colon = memchr(line, ':', len);
        if (!colon || colon == line)
            return refuse(err, errlen, "malformed header line");
        size_t nlen = (size_t)(colon - line);
        for (size_t i = 0; i < nlen; i++)
            if (!tchar(line[i]))
                return refuse(err, errlen, "malformed header name");
        for (size_t i = nlen + 1; i < len; i++)
            if ((line[i] < 0x20 && line[i] != '\t') || line[i] == 0x7f)
                return refuse(err, errlen, "control character in a header");
        if (nlen == 4 && strncasecmp((const char *)line, "host", 4) == 0)
            have_host = 1;
        if (!r->connect && !dropped(line, nlen)) {
            put(&o, line, len);
            puts_(&o, "\r\n");
        }
    }
    if (!r->connect) {
        puts_(&o, "Connection: close\r\n");
        if (!have_host) { /* HTTP/1.0 clients may leave it out; servers behind names need it */
            puts_(&o, "Host: ");
            put(&o, auth, alen);
            puts_(&o, "\r\n");
        }
        puts_(&o, "\r\n");
        if (o.over)
            return refuse(err, errlen, "request head too long once rewritten");
        r->out_len = o.n;
    }
    return 1;
}
