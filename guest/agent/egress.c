/* The guest end of egress (docs/protocol.md, "Egress tunnels").
 *
 * The guest has no network device; with egress on, the host asks (EGRESS) for an HTTP proxy
 * on 127.0.0.1:port. Every client connection is a tunnel: the agent reads the request head
 * (proxyreq.c), asks the host for host:port (TOPEN), and once the host has connected
 * (TOPENED) carries bytes both ways with credit windows, as it does for process streams.
 * The host applies the policy; nothing here decides who may go where. A refusal becomes a
 * 403/502/503 answer with a one-line body, so the user sees why.
 *
 * A tunnel's client socket is read only while the host has granted credit, and the host's
 * bytes are buffered up to one window, so the agent holds at most a window per tunnel. */
#define _GNU_SOURCE
#include "egress.h"

#include "agent.h"
#include "proxyreq.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Client bytes per TDATA frame: the whole frame is then 256 KiB (see OUT_CHUNK in agent.c). */
#define TUNNEL_CHUNK (PROTO_MAX_PAYLOAD - PROTO_HEADER)
/* The proxy's own answers (200 to CONNECT, or an error with its one-line body). */
#define REPLY_MAX (PROTO_MAX_REFUSAL + 256)

enum tstate {
    T_HEAD,    /* reading the client's request head; no id yet */
    T_OPENING, /* TOPEN sent, waiting for TOPENED or TREFUSED */
    T_OPEN,    /* carrying bytes; ends with TCLOSE both ways */
    T_FLUSH,   /* no id any more: write what is buffered to the client, then close */
    T_DRAIN,   /* written: read and discard until the client closes, so that unread input does
                  not make the close a reset that destroys the answer before the client reads it */
};

struct tunnel {
    int used;
    enum tstate state;
    uint32_t id;        /* 0 while it has none */
    int fd;             /* the client's socket; -1 once closed */
    int connect;        /* a CONNECT: answer 200 when open */
    uint8_t *head;      /* T_HEAD: the request so far; T_OPENING: what to send once open */
    size_t headlen;
    uint8_t *buf;       /* for the client: our own answer first, then the host's bytes */
    size_t cap, off, len;
    size_t own;         /* bytes at the front of buf that are our answer (they take no credit) */
    uint32_t credit;    /* TDATA bytes the host still accepts from us */
    uint32_t in_credit; /* the host's credit as we see it: TUNNEL_WINDOW - host bytes in buf */
    int client_eof;     /* the client's side ended: TEOF sent */
    int host_eof;       /* TEOF received: shut the client's write side once buf is empty */
    int sent_close, got_close;
    int reset;          /* the host aborted: close the client's socket with a reset, not a FIN */
    size_t drained;     /* T_DRAIN: bytes read and thrown away */
};

static struct tunnel tunnels[EGRESS_SLOTS];
static int listener = -1;
static uint16_t listen_port;
static uint32_t last_id;
static int who[EGRESS_MAX_FDS]; /* egress_fill's entries: a tunnel's index, or -1 for the listener */

static struct tunnel *find(uint32_t id) {
    for (int i = 0; id && i < EGRESS_SLOTS; i++)
        if (tunnels[i].used && tunnels[i].id == id)
            return &tunnels[i];
    return NULL;
}

static uint32_t new_id(void) {
    do
        last_id++;
    while (last_id == 0 || find(last_id));
    return last_id;
}

static void close_fd(struct tunnel *t) {
    if (t->fd >= 0 && t->reset) /* so a client cannot take a cut-off stream for a complete one */
        setsockopt(t->fd, SOL_SOCKET, SO_LINGER, &(struct linger){1, 0}, sizeof(struct linger));
    if (t->fd >= 0)
        close(t->fd);
    t->fd = -1;
}

static void drop(struct tunnel *t) {
    close_fd(t);
    free(t->head);
    free(t->buf);
    *t = (struct tunnel){.fd = -1};
}

static void send_empty(uint8_t type, uint32_t id) {
    struct proto_out o = begin(type, id);
    send_frame(&o);
}

static void send_close(struct tunnel *t) {
    if (!t->sent_close)
        send_empty(MSG_TCLOSE, t->id);
    t->sent_close = 1;
}

/* A tunnel both sides have released is free; one still waiting for the host's TCLOSE keeps
 * its id (and nothing else) so that the host's late frames are recognised and dropped. */
static void release_if_done(struct tunnel *t) {
    if (t->state == T_OPEN && t->sent_close && t->got_close) {
        if (t->len && t->fd >= 0) { /* the host's last bytes still go to the client */
            t->state = T_FLUSH;
            t->id = 0;
        } else {
            drop(t);
        }
    }
}

/* The host or the client broke the tunnel: tell the host, stop talking to the client. */
static void abort_tunnel(struct tunnel *t) {
    send_close(t);
    close_fd(t);
    t->off = t->len = t->own = 0;
    release_if_done(t);
}

/* Queues bytes for the client; the caller has checked they fit. The first call sizes the
 * buffer: a whole window (and our 200) for an open tunnel, one answer for a refusal. */
static int queue(struct tunnel *t, const void *p, size_t n) {
    if (!t->buf) {
        t->cap = t->state == T_OPEN ? PROTO_TUNNEL_WINDOW + REPLY_MAX : REPLY_MAX;
        if (!(t->buf = malloc(t->cap)))
            return -1;
    }
    if (t->off + t->len + n > t->cap) {
        memmove(t->buf, t->buf + t->off, t->len);
        t->off = 0;
    }
    memcpy(t->buf + t->off + t->len, p, n);
    t->len += n;
    return 0;
}

/* An answer of the proxy's own: status line, headers, and "vmgate egress: <msg>" on one line. */
static size_t format_reply(char *dst, size_t cap, int status, const char *msg, size_t msglen) {
    const char *text = status == 400 ? "Bad Request" : status == 403 ? "Forbidden" : status == 502 ? "Bad Gateway"
                                                                                                  : "Service Unavailable";
    char body[PROTO_MAX_REFUSAL + 32];
    if (msglen > PROTO_MAX_REFUSAL)
        msglen = PROTO_MAX_REFUSAL;
    int bn = snprintf(body, sizeof body, "vmgate egress: %.*s\n", (int)msglen, msg);
    for (int i = 0; i < bn - 1; i++) /* one line, whatever the message holds */
        if ((unsigned char)body[i] < 0x20 || body[i] == 0x7f)
            body[i] = ' ';
    int n = snprintf(dst, cap, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                     "Connection: close\r\n\r\n%s", status, text, bn, body);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

/* Answers the client by ourselves and closes once that is written; the tunnel has no id after. */
static void reply(struct tunnel *t, int status, const char *msg, size_t msglen) {
    char r[REPLY_MAX];
    size_t n = format_reply(r, sizeof r, status, msg, msglen);
    free(t->head);
    t->head = NULL;
    t->state = T_FLUSH;
    t->id = 0;
    t->off = t->len = 0;
    if (queue(t, r, n) < 0)
        drop(t);
}

/* ---- the client's side ------------------------------------------------------------ */

static void start_tunnel(struct tunnel *t, const struct proxyreq *r, const uint8_t *out) {
    /* What goes upstream once open: the rewritten head (plain) and what followed the head. */
    size_t rest = t->headlen - r->head_len;
    memmove(t->head + r->out_len, t->head + r->head_len, rest);
    memcpy(t->head, out, r->out_len);
    t->headlen = r->out_len + rest;
    t->connect = r->connect;
    t->id = new_id();
    t->state = T_OPENING;
    struct proto_out o = begin(MSG_TOPEN, t->id);
    proto_bytes(&o, r->host, strlen(r->host));
    proto_u16(&o, r->port);
    proto_u8(&o, r->tls ? TOPEN_TLS : 0);
    send_frame(&o);
}

static void read_head(struct tunnel *t) {
    static uint8_t out[PROXYREQ_MAX_OUT];
    ssize_t n = read(t->fd, t->head + t->headlen, PROXYREQ_MAX_HEAD - t->headlen);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) /* gone before finishing a request: nothing to tell anyone */
        return drop(t);
    t->headlen += (size_t)n;
    struct proxyreq r;
    char err[200];
    int rc = proxyreq_parse(t->head, t->headlen, &r, out, err, sizeof err);
    if (rc < 0)
        reply(t, 400, err, strlen(err));
    else if (rc > 0)
        start_tunnel(t, &r, out);
}

/* Both halves finished and everything written: the normal end. */
static void finish_if_done(struct tunnel *t) {
    if (t->state == T_OPEN && t->client_eof && t->host_eof && !t->len && !t->sent_close) {
        send_close(t);
        close_fd(t);
        release_if_done(t);
    }
}

/* Client bytes to the host, never more than its credit. */
static void read_client(struct tunnel *t) {
    struct proto_out o = begin(MSG_TDATA, t->id);
    size_t want = t->credit < TUNNEL_CHUNK ? t->credit : TUNNEL_CHUNK;
    ssize_t n = read(t->fd, o.p + o.len, want);
    if (n > 0) {
        o.len += (size_t)n;
        t->credit -= (uint32_t)n;
        send_frame(&o);
    } else if (n == 0) {
        t->client_eof = 1;
        send_empty(MSG_TEOF, t->id);
        finish_if_done(t);
    } else if (errno != EAGAIN && errno != EINTR) {
        return abort_tunnel(t); /* reset by the client */
    }
}

/* Writes buffered bytes to the client and grants the host's share back. */
static void write_client(struct tunnel *t) {
    ssize_t n = send(t->fd, t->buf + t->off, t->len, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n < 0) /* EPIPE, ECONNRESET: the client is gone */
        return t->state == T_FLUSH ? drop(t) : abort_tunnel(t);
    size_t own = (size_t)n < t->own ? (size_t)n : t->own;
    uint32_t host = (uint32_t)((size_t)n - own);
    t->own -= own;
    t->off += (size_t)n;
    t->len -= (size_t)n;
    if (!t->len)
        t->off = 0;
    if (t->state == T_FLUSH) {
        if (!t->len && t->reset)
            drop(t);
        else if (!t->len && shutdown(t->fd, SHUT_WR) == 0)
            t->state = T_DRAIN;
        else if (!t->len)
            drop(t);
        return;
    }
    t->in_credit += host;
    if (host && !t->sent_close) {
        struct proto_out o = begin(MSG_TWINDOW, t->id);
        proto_u32(&o, host);
        send_frame(&o);
    }
    if (!t->len && t->host_eof)
        shutdown(t->fd, SHUT_WR);
    finish_if_done(t);
}

/* At most this much of a finished client's input is read and thrown away before closing. */
#define DRAIN_MAX (1024 * 1024)

static void drain(struct tunnel *t) {
    static uint8_t junk[65536];
    ssize_t n = read(t->fd, junk, sizeof junk);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    t->drained += n > 0 ? (size_t)n : 0;
    if (n <= 0 || t->drained > DRAIN_MAX)
        drop(t);
}

static int live_tunnels(void) {
    int n = 0;
    for (int i = 0; i < EGRESS_SLOTS; i++)
        n += tunnels[i].used && tunnels[i].state != T_FLUSH && tunnels[i].state != T_DRAIN;
    return n;
}

static void accept_clients(void) {
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return; /* EAGAIN, or a client that left in the backlog */
        struct tunnel *t = NULL;
        for (int i = 0; i < EGRESS_SLOTS && !t; i++)
            t = tunnels[i].used ? NULL : &tunnels[i];
        for (int i = 0; i < EGRESS_SLOTS && !t; i++) /* a finished client that has not closed yet */
            if (tunnels[i].state == T_DRAIN)
                drop(t = &tunnels[i]);
        if (!t) { /* every slot busy writing: the answer without the courtesy of draining */
            char r[REPLY_MAX];
            static const char why[] = "too many connections through the proxy at once";
            if (send(fd, r, format_reply(r, sizeof r, 503, why, sizeof why - 1), MSG_NOSIGNAL) < 0) { /* gone */ }
            close(fd);
            continue;
        }
        int full = live_tunnels() >= EGRESS_MAX_TUNNELS;
        *t = (struct tunnel){.used = 1, .state = T_HEAD, .fd = fd};
        if (full) {
            static const char why[] = "too many connections through the proxy at once";
            reply(t, 503, why, sizeof why - 1);
        } else if (!(t->head = malloc(PROXYREQ_MAX_HEAD + PROXYREQ_MAX_OUT))) {
            static const char why[] = "out of memory";
            reply(t, 503, why, sizeof why - 1);
        }
    }
}

/* ---- the host's side -------------------------------------------------------------- */

static void opened(struct tunnel *t) {
    static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
    t->state = T_OPEN;
    t->credit = t->in_credit = PROTO_TUNNEL_WINDOW;
    if (t->connect) {
        if (queue(t, ok, sizeof ok - 1) < 0)
            return abort_tunnel(t);
        t->own = sizeof ok - 1;
    }
    if (t->headlen) { /* at most PROXYREQ_MAX_HEAD + PROXYREQ_MAX_OUT: well inside the window */
        struct proto_out o = begin(MSG_TDATA, t->id);
        proto_raw(&o, t->head, t->headlen);
        send_frame(&o);
        t->credit -= (uint32_t)t->headlen;
    }
    free(t->head);
    t->head = NULL;
    t->headlen = 0;
    if (t->len)
        write_client(t);
}

static void refused(struct tunnel *t, const struct proto_msg *m) {
    int status = m->reason == REFUSED_DENIED ? 403 : m->reason == REFUSED_LIMIT ? 503 : 502;
    reply(t, status, m->str.p, m->str.n);
    if (t->used)
        write_client(t);
}

static void host_data(struct tunnel *t, const struct proto_msg *m) {
    if (t->host_eof || m->len > t->in_credit) { /* a stream with bytes missing is worse than none */
        send_error(t->id, E_MALFORMED, t->host_eof ? "TDATA after TEOF" : "TDATA beyond the window");
        return abort_tunnel(t);
    }
    if (t->fd < 0)
        return; /* the client is gone and TCLOSE is on its way to the host */
    const uint8_t *p = m->data;
    size_t n = m->len;
    if (!t->len) { /* nothing waits before it: straight from the frame, one copy fewer */
        ssize_t w = send(t->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            return abort_tunnel(t); /* the client is gone */
        if (w > 0) {
            struct proto_out o = begin(MSG_TWINDOW, t->id);
            proto_u32(&o, (uint32_t)w);
            send_frame(&o);
            p += w;
            n -= (size_t)w;
        }
    }
    if (n && queue(t, p, n) < 0) {
        send_error(t->id, E_SYSTEM, "tunnel buffer: out of memory");
        return abort_tunnel(t);
    }
    t->in_credit -= (uint32_t)n;
    if (t->len)
        write_client(t);
}

static void host_eof(struct tunnel *t) {
    if (t->host_eof)
        return send_error(t->id, E_MALFORMED, "second TEOF");
    t->host_eof = 1;
    if (!t->len && t->fd >= 0)
        shutdown(t->fd, SHUT_WR);
    finish_if_done(t);
}

static void host_window(struct tunnel *t, uint32_t inc) {
    if (inc > PROTO_TUNNEL_WINDOW - t->credit)
        send_error(t->id, E_MALFORMED, "TWINDOW would raise the credit beyond %u", PROTO_TUNNEL_WINDOW);
    t->credit = inc > PROTO_TUNNEL_WINDOW - t->credit ? PROTO_TUNNEL_WINDOW : t->credit + inc;
}

static void host_close(struct tunnel *t) {
    t->got_close = 1;
    t->reset = !t->host_eof;
    send_close(t);
    t->client_eof = 1; /* read no more from the client */
    if (t->fd >= 0 && !t->len)
        close_fd(t);
    release_if_done(t);
}

static void proxy(uint16_t port) {
    struct proto_out o;
    char err[160] = "";
    if (listener >= 0 && port != listen_port) {
        close(listener);
        listener = -1;
    }
    if (port && listener < 0) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0
            || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 128) < 0) {
            snprintf(err, sizeof err, "cannot listen on 127.0.0.1:%u: %s", port, strerror(errno));
            if (fd >= 0)
                close(fd);
        } else {
            listener = fd;
            listen_port = port;
        }
    }
    o = begin(MSG_EGRESS_STATUS, 0);
    proto_u16(&o, port);
    proto_bytes(&o, err, strlen(err));
    send_frame(&o);
}

void egress_message(const struct proto_msg *m) {
    if (m->type == MSG_EGRESS)
        return proxy(m->port);
    struct tunnel *t = find(m->id);
    if (!t)
        return send_error(m->id, E_UNKNOWN_ID, "%s: no tunnel with id %u", proto_type_name(m->type), m->id);
    if (m->type == MSG_TOPENED || m->type == MSG_TREFUSED) {
        if (t->state != T_OPENING)
            return send_error(m->id, E_MALFORMED, "%s: tunnel %u is not waiting to open", proto_type_name(m->type), m->id);
        return m->type == MSG_TOPENED ? opened(t) : refused(t, m);
    }
    if (t->state != T_OPEN)
        return send_error(m->id, E_MALFORMED, "%s: tunnel %u is not open", proto_type_name(m->type), m->id);
    if (m->type == MSG_TCLOSE) {
        if (t->got_close)
            return send_error(m->id, E_MALFORMED, "second TCLOSE");
        return host_close(t);
    }
    if (t->got_close)
        return send_error(m->id, E_MALFORMED, "%s after TCLOSE", proto_type_name(m->type));
    if (t->sent_close)
        return; /* we have let go; the host has not heard yet */
    switch (m->type) {
    case MSG_TDATA:
        return host_data(t, m);
    case MSG_TEOF:
        return host_eof(t);
    case MSG_TWINDOW:
        return host_window(t, m->u32);
    }
}

int egress_fill(struct pollfd *pfd) {
    int n = 0;
    if (listener >= 0) {
        who[n] = -1;
        pfd[n++] = (struct pollfd){listener, POLLIN, 0};
    }
    for (int i = 0; i < EGRESS_SLOTS; i++) {
        struct tunnel *t = &tunnels[i];
        short ev = 0;
        if (!t->used || t->fd < 0)
            continue;
        if (t->state == T_HEAD || t->state == T_DRAIN || (t->state == T_OPEN && t->credit && !t->client_eof && !t->sent_close))
            ev |= POLLIN;
        if (t->len)
            ev |= POLLOUT;
        if (ev) { /* an fd without events is left out: poll reports POLLHUP anyway, and would spin */
            who[n] = i;
            pfd[n++] = (struct pollfd){t->fd, ev, 0};
        }
    }
    return n;
}

void egress_ready(const struct pollfd *pfd, int n) {
    int accept_now = 0;
    for (int k = 0; k < n; k++) {
        if (!pfd[k].revents)
            continue;
        if (who[k] < 0) {
            accept_now = listener == pfd[k].fd;
            continue;
        }
        struct tunnel *t = &tunnels[who[k]];
        if (!t->used || t->fd != pfd[k].fd) /* freed meanwhile */
            continue;
        if (t->len && (pfd[k].revents & (POLLOUT | POLLERR | POLLHUP)))
            write_client(t);
        if (!t->used || t->fd != pfd[k].fd || !(pfd[k].revents & (POLLIN | POLLERR | POLLHUP)))
            continue;
        if (t->state == T_HEAD)
            read_head(t);
        else if (t->state == T_DRAIN)
            drain(t);
        else if (t->state == T_OPEN && t->credit && !t->client_eof && !t->sent_close)
            read_client(t);
    }
    if (accept_now) /* last: a new tunnel may take a slot (and an fd number) seen above */
        accept_clients();
}

void egress_disconnected(void) {
    if (listener >= 0)
        close(listener);
    listener = -1;
    for (int i = 0; i < EGRESS_SLOTS; i++)
        if (tunnels[i].used)
            drop(&tunnels[i]);
}
