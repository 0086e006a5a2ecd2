/* Tests of the proxy's request parser (proxyreq.c), built with ASan+UBSan by `make test`:
 * what it accepts and how it rewrites, what it refuses and why, every prefix, and random
 * input. `test_proxyreq --write-seeds DIR` writes requests as seeds for fuzz/fuzz_proxyreq.c. */
#include "check.h"
#include "proxyreq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static uint8_t out[PROXYREQ_MAX_OUT];
static struct proxyreq req;
static char err[256];

static int parse(const char *s) {
    err[0] = 0;
    return proxyreq_parse((const uint8_t *)s, strlen(s), &req, out, err, sizeof err);
}

static int out_is(const char *want) {
    return req.out_len == strlen(want) && memcmp(out, want, req.out_len) == 0;
}

static void test_connect(void) {
    const char *r = "CONNECT deb.debian.org:443 HTTP/1.1\r\nHost: deb.debian.org:443\r\nUser-Agent: curl/7.88\r\n\r\n";
    CHECK(parse(r) == 1 && req.connect && !strcmp(req.host, "deb.debian.org") && req.port == 443);
    CHECK(req.head_len == strlen(r) && req.out_len == 0);
    /* bytes after the head (a client that does not wait for the 200) stay for the caller */
    char more[300];
    snprintf(more, sizeof more, "%s\x16\x03\x01", r);
    CHECK(parse(more) == 1 && req.head_len == strlen(r));
    CHECK(parse("CONNECT [2001:db8::1]:8443 HTTP/1.1\r\n\r\n") == 1 && !strcmp(req.host, "2001:db8::1") && req.port == 8443);
    CHECK(parse("CONNECT 10.0.0.1:22 HTTP/1.0\n\n") == 1 && !strcmp(req.host, "10.0.0.1") && req.port == 22);
    CHECK(parse("CONNECT example.com HTTP/1.1\r\n\r\n") == -1 && strstr(err, "host:port"));
    CHECK(parse("CONNECT example.com:0 HTTP/1.1\r\n\r\n") == -1 && strstr(err, "out of range"));
    CHECK(parse("CONNECT example.com:65536 HTTP/1.1\r\n\r\n") == -1);
    CHECK(parse("CONNECT example.com:443x HTTP/1.1\r\n\r\n") == -1);
    CHECK(parse("CONNECT exa$mple.com:443 HTTP/1.1\r\n\r\n") == -1 && strstr(err, "not allowed"));
    CHECK(parse("CONNECT [::1:443 HTTP/1.1\r\n\r\n") == -1 && strstr(err, "unterminated"));
    CHECK(parse("CONNECT [zz::1]:443 HTTP/1.1\r\n\r\n") == -1);
    CHECK(parse("CONNECT ::1:443 HTTP/1.1\r\n\r\n") == -1); /* unbracketed IPv6 */
    CHECK(parse("CONNECT :443 HTTP/1.1\r\n\r\n") == -1 && strstr(err, "empty host"));
}

static void test_plain(void) {
    CHECK(parse("GET http://example.com/a/b?c=d#frag HTTP/1.1\r\nHost: example.com\r\nProxy-Connection: Keep-Alive\r\n"
                "Connection: keep-alive\r\nKeep-Alive: 300\r\nProxy-Authorization: Basic eDp5\r\nAccept: */*\r\n\r\n") == 1);
    CHECK(!req.connect && !strcmp(req.host, "example.com") && req.port == 80);
    CHECK(out_is("GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nConnection: close\r\n\r\n"));
    CHECK(parse("GET HTTP://Example.COM:8080 HTTP/1.0\n\n") == 1 && !strcmp(req.host, "Example.COM") && req.port == 8080);
    CHECK(out_is("GET / HTTP/1.0\r\nConnection: close\r\nHost: Example.COM:8080\r\n\r\n")); /* Host added for 1.0 */
    CHECK(parse("POST http://127.0.0.1:9/x?y HTTP/1.1\r\nhost: 127.0.0.1:9\r\nContent-Length: 3\r\n\r\nabc") == 1);
    CHECK(out_is("POST /x?y HTTP/1.1\r\nhost: 127.0.0.1:9\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"));
    CHECK(req.head_len == strlen("POST http://127.0.0.1:9/x?y HTTP/1.1\r\nhost: 127.0.0.1:9\r\nContent-Length: 3\r\n\r\n"));
    CHECK(parse("GET http://h?q HTTP/1.1\r\nHost: h\r\n\r\n") == 1 && out_is("GET /?q HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"));
    CHECK(parse("GET http://[::1]:81/ HTTP/1.1\r\nHost: [::1]:81\r\n\r\n") == 1 && !strcmp(req.host, "::1") && req.port == 81);

    CHECK(parse("GET https://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n") == 1 && req.tls && req.port == 443
          && !req.connect && out_is("GET /x HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"));
    CHECK(parse("GET http://example.com/x HTTP/1.1\r\n\r\n") == 1 && !req.tls);
    CHECK(parse("GET HTTPS://[::1]:8443 HTTP/1.1\r\n\r\n") == 1 && req.tls && req.port == 8443);
    CHECK(parse("CONNECT example.com:443 HTTP/1.1\r\n\r\n") == 1 && !req.tls);
    CHECK(parse("GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n") == -1 && strstr(err, "absolute URL"));
    CHECK(parse("GET ftp://x/ HTTP/1.1\r\n\r\n") == -1 && strstr(err, "only http:// and https://"));
    CHECK(parse("GET httpx://x/ HTTP/1.1\r\n\r\n") == -1);
    CHECK(parse("GET http://user:pw@x/ HTTP/1.1\r\n\r\n") == -1 && strstr(err, "user information"));
    CHECK(parse("GET http:///x HTTP/1.1\r\n\r\n") == -1 && strstr(err, "empty host"));
}

static void test_malformed(void) {
    CHECK(parse("GET http://x/ HTTP/2.0\r\n\r\n") == -1 && strstr(err, "HTTP/1.x"));
    CHECK(parse("GET http://x/ HTTP/1.1 extra\r\n\r\n") == -1);
    CHECK(parse("GET  http://x/ HTTP/1.1\r\n\r\n") == -1);
    CHECK(parse("\r\n\r\n") == -1 && strstr(err, "request line"));
    CHECK(parse("G(T http://x/ HTTP/1.1\r\n\r\n") == -1 && strstr(err, "method"));
    CHECK(parse("GET http://x/\x01 HTTP/1.1\r\n\r\n") == -1 && strstr(err, "target"));
    CHECK(parse("GET http://x/ HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n") == -1 && strstr(err, "folded"));
    CHECK(parse("GET http://x/ HTTP/1.1\r\nNo colon\r\n\r\n") == -1 && strstr(err, "header"));
    CHECK(parse("GET http://x/ HTTP/1.1\r\n: empty name\r\n\r\n") == -1);
    CHECK(parse("GET http://x/ HTTP/1.1\r\nX-A: b\rc\r\n\r\n") == -1 && strstr(err, "control"));
    CHECK(parse("GET http://x/ HTTP/1.1\r\nX-A: caf\xc3\xa9\r\n\r\n") == 1); /* obs-text is fine */
    CHECK(parse("GET http://x/ HTTP/1.1\r\nX-A:\tb\r\n\r\n") == 1);
    /* a name of 253 bytes is fine, 254 is not */
    char r[600], name[300];
    memset(name, 'a', 254);
    name[253] = 0;
    snprintf(r, sizeof r, "CONNECT %s:443 HTTP/1.1\r\n\r\n", name);
    CHECK(parse(r) == 1 && strlen(req.host) == 253);
    name[253] = 'a', name[254] = 0;
    snprintf(r, sizeof r, "CONNECT %s:443 HTTP/1.1\r\n\r\n", name);
    CHECK(parse(r) == -1 && strstr(err, "longer than"));
}

static void test_incomplete_and_size(void) {
    const char *r = "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n";
    for (size_t cut = 0; cut < strlen(r); cut++) /* every prefix waits for more */
        CHECK(proxyreq_parse((const uint8_t *)r, cut, &req, out, err, sizeof err) == 0);
    static uint8_t big[PROXYREQ_MAX_HEAD + 100];
    memset(big, 'a', sizeof big);
    memcpy(big, "GET http://x/ HTTP/1.1\r\nX: ", 27);
    CHECK(proxyreq_parse(big, PROXYREQ_MAX_HEAD - 1, &req, out, err, sizeof err) == 0);
    CHECK(proxyreq_parse(big, PROXYREQ_MAX_HEAD, &req, out, err, sizeof err) == -1 && strstr(err, "longer than"));
    /* a head that ends just inside the limit is fine even with more bytes behind it */
    memcpy(big + PROXYREQ_MAX_HEAD - 4, "\r\n\r\n", 4);
    CHECK(proxyreq_parse(big, sizeof big, &req, out, err, sizeof err) == 1 && req.head_len == PROXYREQ_MAX_HEAD);
    /* many short bare-LF header lines grow when rewritten to CRLF: refused cleanly, never overflowed */
    size_t n = 0;
    n += (size_t)sprintf((char *)big, "GET http://x/ HTTP/1.1\n");
    while (n + 4 < PROXYREQ_MAX_HEAD - 2)
        memcpy(big + n, "a:\n", 3), n += 3;
    big[n++] = '\n';
    int rc = proxyreq_parse(big, n, &req, out, err, sizeof err);
    CHECK(rc == -1 ? strstr(err, "rewritten") != NULL : req.out_len <= PROXYREQ_MAX_OUT);
}

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)rng;
}

static const char *seeds[] = {
    "CONNECT deb.debian.org:443 HTTP/1.1\r\nHost: deb.debian.org:443\r\n\r\n",
    "GET http://example.com/a?b HTTP/1.1\r\nHost: example.com\r\nProxy-Connection: keep-alive\r\n\r\n",
    "GET http://[::1]:8080/ HTTP/1.0\n\n",
    "GET https://deb.debian.org/debian/ HTTP/1.1\r\nHost: deb.debian.org\r\n\r\n",
    "POST http://127.0.0.1:9/x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
};

static void test_random(int rounds) {
    static uint8_t b[PROXYREQ_MAX_HEAD + 64];
    long complete = 0;
    for (int r = 0; r < rounds; r++) {
        const char *s = seeds[rnd() % (sizeof seeds / sizeof seeds[0])];
        size_t n = strlen(s);
        memcpy(b, s, n);
        for (int k = (int)(rnd() % 6) + 1; k > 0; k--) {
            size_t at = rnd() % n;
            b[at] = rnd() % 3 ? (uint8_t)(b[at] ^ (1u << (rnd() % 8))) : (uint8_t)"\r\n :[]/@#?"[rnd() % 10];
        }
        if (rnd() % 4 == 0)
            n = rnd() % (n + 1);
        int rc = proxyreq_parse(b, n, &req, out, err, sizeof err);
        CHECK(rc >= -1 && rc <= 1);
        if (rc == 1) {
            complete++;
            CHECK(req.head_len <= n && strlen(req.host) >= 1 && strlen(req.host) <= PROTO_MAX_HOST && req.port);
            CHECK(req.out_len <= PROXYREQ_MAX_OUT && (req.connect || req.out_len > 0));
        } else if (rc < 0) {
            CHECK(strlen(err) > 0 && strlen(err) < sizeof err);
        }
    }
    printf("test_proxyreq: %d mutated requests, %ld accepted\n", rounds, complete);
}

static int write_seeds(const char *dir) {
    char path[512];
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        snprintf(path, sizeof path, "%s/request-%zu", dir, i);
        if (write_file(path, seeds[i], strlen(seeds[i])))
            return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--write-seeds"))
        return write_seeds(argv[2]);
    test_connect();
    test_plain();
    test_malformed();
    test_incomplete_and_size();
    test_random(argc == 2 ? atoi(argv[1]) : 200000);
    return verdict("test_proxyreq");
}
