/* vmgate-agent: PID 1 of a vmgate microVM. It mounts the basics, loads the virtio
 * modules, builds an overlay root whose writes land in a size-limited tmpfs, finds the
 * virtio-serial port and serves docs/protocol.md on it: processes with pipes or a PTY,
 * credit-based flow control per stream, signals, exit statuses.
 *
 * `vmgate-agent --stdio` skips the VM set-up and serves the same protocol on fds 0/1,
 * so the host's tests can run the real agent as a plain process.
 *
 * One thread, one poll() loop; SIGCHLD (and SIGIO, see port_up) arrive on a signalfd.
 * Output is read from a child only while the host has granted credit for it, so the
 * agent never buffers output; stdin is buffered up to the window the host may fill. */
#define _GNU_SOURCE
#include "proto.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define OUT_CHUNK 65536 /* child output per DATA frame: fewer, larger port writes */
#define DEFAULT_PORT "org.vmgate.agent"

struct ostream {
    int fd;          /* -1 once at EOF */
    uint32_t credit; /* bytes the host still accepts */
    int eof;         /* EOF sent (or never existed: stderr of a PTY) */
};

struct proc {
    int used;
    uint32_t id;
    pid_t pid;
    int pty, reaped, status;
    int in_fd;      /* stdin pipe, or a dup of the PTY master; -1 once closed */
    int in_eof;     /* the host sent EOF: close in_fd once the buffer is written */
    uint8_t *inbuf; /* stdin not yet taken by the child: at most one window */
    size_t inoff, inlen;
    uint32_t in_credit; /* the host's credit as we see it: always WINDOW - inlen */
    struct ostream out[2]; /* fd 1 (the PTY master for a PTY), fd 2 */
};

static struct proc procs[PROTO_MAX_PROCS];
static int vm;   /* PID 1 in the VM: set up, and power off rather than exit */
static int pid1; /* allowed to set the clock and hostname */
static int port_in = 0, port_out = 1, sigfd = -1;
static int port_up = 1; /* see read_port */
static uint8_t rbuf[PROTO_HEADER + PROTO_MAX_PAYLOAD + OUT_CHUNK]; /* host bytes, not yet a frame */
static size_t rlen;
static uint8_t obuf[PROTO_HEADER + PROTO_MAX_PAYLOAD];

__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
    char b[600];
    int n = snprintf(b, sizeof b, "vmgate-agent: ");
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(b + n, sizeof b - n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof b - 2)
        n = sizeof b - 2;
    b[n++] = '\n';
    if (write(2, b, n) < 0) {
        /* nowhere else to report it */
    }
}

static void kill_all(void);

/* PID 1 must never exit (the kernel would panic): a dead agent is a VM powered off. */
static _Noreturn void die(void)
{
    if (vm) {
        sync();
        reboot(RB_POWER_OFF);
        for (;;)
            pause();
    }
    kill_all();
    exit(1);
}

/* ---- sending ---------------------------------------------------------------------- */

static struct proto_out begin(uint8_t type, uint32_t id)
{
    struct proto_out o = {obuf, sizeof obuf, 0, 0};
    proto_begin(&o, type, id);
    return o;
}

/* Blocking writes are fine: the host always drains the port. */
static void send_frame(struct proto_out *o)
{
    if (proto_end(o) < 0) {
        say("internal error: %s frame too large", proto_type_name(o->p[4]));
        return;
    }
    const uint8_t *p = o->p;
    size_t n = o->len;
    while (n) {
        ssize_t w = write(port_out, p, n);
        if (w > 0) {
            p += w;
            n -= w;
        } else if (w < 0 && errno == EAGAIN) {
            struct pollfd pf = {port_out, POLLOUT, 0};
            poll(&pf, 1, -1);
        } else if (!(w < 0 && errno == EINTR)) {
            say("write to host: %s", w < 0 ? strerror(errno) : "no progress");
            die();
        }
    }
}

__attribute__((format(printf, 3, 4))) static void send_error(uint32_t id, uint32_t code, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    struct proto_out o = begin(MSG_ERROR, id);
    proto_u32(&o, code);
    proto_bytes(&o, msg, n < (int)sizeof msg ? (size_t)n : sizeof msg - 1);
    send_frame(&o);
}

static void send_fd(uint8_t type, uint32_t id, uint8_t fd, uint32_t inc)
{
    struct proto_out o = begin(type, id);
    proto_u8(&o, fd);
    if (type == MSG_WINDOW)
        proto_u32(&o, inc);
    send_frame(&o);
}

static void send_hello(void)
{
    struct utsname u;
    struct timespec ts;
    uname(&u);
    clock_gettime(CLOCK_BOOTTIME, &ts);
    struct proto_out o = begin(MSG_HELLO, 0);
    proto_u16(&o, PROTO_VERSION);
    proto_u64(&o, (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
    proto_bytes(&o, u.release, strlen(u.release));
    send_frame(&o);
}

/* ---- processes -------------------------------------------------------------------- */

static struct proc *find(uint32_t id)
{
    for (int i = 0; i < PROTO_MAX_PROCS; i++)
        if (procs[i].used && procs[i].id == id)
            return &procs[i];
    return NULL;
}

static void closefd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Kills the process group and, since a job-control shell moves jobs to groups of their
 * own, the rest of the session (found in /proc). A session or group id cannot be reused
 * while a member lives, but once all are gone the number may belong to a new process of
 * ours: skip it then. */
static void kill_tree(struct proc *p)
{
    for (int i = 0; i < PROTO_MAX_PROCS; i++)
        if (&procs[i] != p && procs[i].used && !procs[i].reaped && procs[i].pid == p->pid)
            return;
    kill(-p->pid, SIGKILL);
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char path[300], buf[512];
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        buf[n > 0 ? n : 0] = 0;
        char *rp = strrchr(buf, ')'); /* the command name may hold anything but this */
        int pgrp, sid;
        if (rp && sscanf(rp + 1, " %*c %*d %d %d", &pgrp, &sid) == 2 && sid == p->pid)
            kill(atoi(e->d_name), SIGKILL);
    }
    if (d)
        closedir(d);
}

static void kill_all(void)
{
    for (int i = 0; i < PROTO_MAX_PROCS; i++)
        if (procs[i].used && !procs[i].reaped)
            kill_tree(&procs[i]);
}

/* Stdin is gone (the child closed it, or CLOSE): drop what is buffered and, if asked,
 * give its credit back so the host's writer is not left waiting. */
static void drop_stdin(struct proc *p, int grant)
{
    closefd(&p->in_fd);
    if (grant && p->inlen)
        send_fd(MSG_WINDOW, p->id, 0, (uint32_t)p->inlen);
    p->in_credit += p->inlen;
    p->inoff = p->inlen = 0;
}

static void free_proc(struct proc *p)
{
    closefd(&p->in_fd);
    closefd(&p->out[0].fd);
    closefd(&p->out[1].fd);
    free(p->inbuf);
    memset(p, 0, sizeof *p);
    p->in_fd = p->out[0].fd = p->out[1].fd = -1;
}

/* EXIT goes out once the process is reaped and every output stream has sent EOF. */
static void try_exit(struct proc *p)
{
    if (!p->reaped || !p->out[0].eof || !p->out[1].eof)
        return;
    int st = p->status, sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    char num[16];
    const char *name = sig ? proto_signal_name(sig) : "";
    if (!name) {
        snprintf(num, sizeof num, sig >= SIGRTMIN && sig <= SIGRTMAX ? "RTMIN+%d" : "%d",
                 sig >= SIGRTMIN ? sig - SIGRTMIN : sig);
        name = num;
    }
    struct proto_out o = begin(MSG_EXIT, p->id);
    proto_u32(&o, WIFEXITED(st) ? (uint32_t)WEXITSTATUS(st) : (uint32_t)-1);
    proto_u8(&o, (uint8_t)sig);
    proto_u8(&o, sig && WCOREDUMP(st) ? 1 : 0);
    proto_bytes(&o, name, strlen(name));
    send_frame(&o);
    free_proc(p);
}

static void end_stream(struct proc *p, int k)
{
    closefd(&p->out[k].fd);
    p->out[k].eof = 1;
    send_fd(MSG_EOF, p->id, (uint8_t)(k + 1), 0);
    try_exit(p); /* may free p */
}

/* Reads child output into DATA frames, never more than the credit. A pipe is at EOF when
 * read returns 0. A PTY master returns EIO once every slave fd is closed, but a
 * background job may keep the slave open: so once the process is reaped, drain what is
 * readable now and call that the end (the kernel flushes pending tty input before a
 * non-blocking read says EAGAIN). */
static void pump_out(struct proc *p, int k)
{
    struct ostream *s = &p->out[k];
    int draining = p->pty && p->reaped;
    while (s->fd >= 0 && s->credit > 0) {
        struct proto_out o = begin(MSG_DATA, p->id);
        proto_u8(&o, (uint8_t)(k + 1));
        ssize_t n = read(s->fd, o.p + o.len, s->credit < OUT_CHUNK ? s->credit : OUT_CHUNK);
        if (n > 0) {
            o.len += n;
            s->credit -= (uint32_t)n;
            send_frame(&o);
            if (!draining)
                return; /* one read per wakeup keeps streams fair */
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN && !draining) {
            return;
        } else {
            end_stream(p, k);
            return;
        }
    }
}

/* Writes buffered stdin to the child and grants the credit back as it goes. */
static void pump_in(struct proc *p)
{
    while (p->inlen && p->in_fd >= 0) {
        ssize_t n = write(p->in_fd, p->inbuf + p->inoff, p->inlen);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) { /* EPIPE: nobody reads it any more; EIO: PTY slave gone */
            drop_stdin(p, 1);
            return;
        }
        p->inoff += n;
        p->inlen -= n;
        p->in_credit += (uint32_t)n;
        send_fd(MSG_WINDOW, p->id, 0, (uint32_t)n);
    }
    p->inoff = 0;
    if (p->in_eof && !p->pty)
        closefd(&p->in_fd);
}

static void reap(void)
{
    int st;
    pid_t pid;
    /* Orphans re-parent to us (PID 1, or a subreaper in stdio mode): reap them too. */
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        for (int i = 0; i < PROTO_MAX_PROCS; i++) {
            struct proc *p = &procs[i];
            if (!p->used || p->reaped || p->pid != pid)
                continue;
            p->reaped = 1;
            p->status = st;
            if (p->pty && p->out[0].fd >= 0)
                pump_out(p, 0);
            else
                try_exit(p);
            break;
        }
    }
}

/* RFC 4254 §8 opcodes: control characters and flags (as OpenSSH applies them). */
enum { CC, IF, LF, OF, CF };
static const struct {
    uint8_t op, kind;
    unsigned v;
} tty_modes[] = {
    {1, CC, VINTR}, {2, CC, VQUIT}, {3, CC, VERASE}, {4, CC, VKILL}, {5, CC, VEOF}, {6, CC, VEOL},
    {7, CC, VEOL2}, {8, CC, VSTART}, {9, CC, VSTOP}, {10, CC, VSUSP}, {12, CC, VREPRINT},
    {13, CC, VWERASE}, {14, CC, VLNEXT}, {18, CC, VDISCARD},
    {30, IF, IGNPAR}, {31, IF, PARMRK}, {32, IF, INPCK}, {33, IF, ISTRIP}, {34, IF, INLCR},
    {35, IF, IGNCR}, {36, IF, ICRNL}, {37, IF, IUCLC}, {38, IF, IXON}, {39, IF, IXANY},
    {40, IF, IXOFF}, {41, IF, IMAXBEL}, {42, IF, IUTF8},
    {50, LF, ISIG}, {51, LF, ICANON}, {52, LF, XCASE}, {53, LF, ECHO}, {54, LF, ECHOE},
    {55, LF, ECHOK}, {56, LF, ECHONL}, {57, LF, NOFLSH}, {58, LF, TOSTOP}, {59, LF, IEXTEN},
    {60, LF, ECHOCTL}, {61, LF, ECHOKE}, {62, LF, PENDIN},
    {70, OF, OPOST}, {71, OF, OLCUC}, {72, OF, ONLCR}, {73, OF, OCRNL}, {74, OF, ONOCR},
    {75, OF, ONLRET}, {90, CF, CS7}, {91, CF, CS8}, {92, CF, PARENB}, {93, CF, PARODD},
};

static void apply_modes(struct termios *t, const struct proto_start *s)
{
    for (unsigned i = 0; i < s->nmodes; i++) {
        for (size_t j = 0; j < sizeof tty_modes / sizeof tty_modes[0]; j++) {
            if (tty_modes[j].op != s->modes[i].op)
                continue;
            uint32_t val = s->modes[i].val;
            tcflag_t *f = tty_modes[j].kind == IF ? &t->c_iflag : tty_modes[j].kind == LF ? &t->c_lflag
                        : tty_modes[j].kind == OF ? &t->c_oflag : &t->c_cflag;
            if (tty_modes[j].kind == CC)
                t->c_cc[tty_modes[j].v] = val == 255 ? _POSIX_VDISABLE : (cc_t)val;
            else if (val)
                *f |= tty_modes[j].v;
            else
                *f &= ~(tcflag_t)tty_modes[j].v;
        }
    }
}

static void set_size(int fd, uint16_t rows, uint16_t cols)
{
    struct winsize ws = {rows ? rows : 24, cols ? cols : 80, 0, 0};
    ioctl(fd, TIOCSWINSZ, &ws);
}

/* Opens a PTY pair set up from the START. The slave comes from TIOCGPTPEER, which needs
 * no path lookup (Linux 4.13+). */
static int open_pty(const struct proto_start *s, int *master, int *slave)
{
    int unlock = 0;
    struct termios t;
    *master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (*master < 0)
        return -1;
    if (ioctl(*master, TIOCSPTLCK, &unlock) < 0
        || (*slave = ioctl(*master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
        int e = errno;
        closefd(master);
        errno = e;
        return -1;
    }
    if (tcgetattr(*slave, &t) == 0) {
        apply_modes(&t, s);
        tcsetattr(*slave, TCSANOW, &t);
    }
    set_size(*slave, s->rows, s->cols);
    return 0;
}

/* Adds or replaces NAME=value in envp[0..*n). */
static void setenv_in(char **envp, size_t *n, char *kv)
{
    size_t len = strchr(kv, '=') - kv + 1;
    for (size_t i = 0; i < *n; i++)
        if (strncmp(envp[i], kv, len) == 0) {
            envp[i] = kv;
            return;
        }
    envp[(*n)++] = kv;
}

/* The forked child: never returns. fds[] become its 0, 1, 2 (all the PTY slave). */
static _Noreturn void child(const struct proto_start *s, const int fds[3])
{
    static char *base[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                           "HOME=/root", "USER=root", "LOGNAME=root", "SHELL=/bin/sh"};
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigset_t none;
    for (int i = 1; i < NSIG; i++)
        sigaction(i, &dfl, NULL); /* SIGPIPE was ignored; exec keeps ignored signals */
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setsid();
    if (s->pty && ioctl(fds[0], TIOCSCTTY, 0) < 0)
        say("TIOCSCTTY: %s", strerror(errno));
    for (int i = 0; i < 3; i++)
        dup2(fds[s->pty ? 0 : i], i); /* fds[] are >= 3: main keeps 0..2 open */
    syscall(SYS_close_range, 3, ~0u, 0); /* O_CLOEXEC already; this is belt and braces */

    size_t n = 0;
    char **envp = malloc((sizeof base / sizeof base[0] + 2 + s->envc) * sizeof *envp);
    char term[300];
    if (!envp)
        _exit(126);
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++)
        envp[n++] = base[i];
    if (s->pty && *s->term && snprintf(term, sizeof term, "TERM=%s", s->term) < (int)sizeof term)
        setenv_in(envp, &n, term);
    for (unsigned i = 0; i < s->envc; i++)
        setenv_in(envp, &n, s->env[i]);
    envp[n] = NULL;
    environ = envp; /* so execvp searches the child's own PATH */

    if (*s->cwd ? chdir(s->cwd) < 0 : chdir("/root") < 0 && chdir("/") < 0) {
        say("%s: %s", *s->cwd ? s->cwd : "/", strerror(errno));
        _exit(126);
    }
    execvp(s->argv[0], s->argv);
    int e = errno;
    say("%s: %s", s->argv[0], strerror(e));
    _exit(e == ENOENT ? 127 : 126);
}

static void start(uint32_t id, const struct proto_start *s)
{
    struct proc *p = NULL;
    if (find(id)) {
        send_error(id, E_ID_IN_USE, "id %u is in use", id);
        return;
    }
    for (int i = 0; i < PROTO_MAX_PROCS && !p; i++)
        if (!procs[i].used)
            p = &procs[i];
    if (!p) {
        send_error(id, E_LIMIT, "%d processes are running already", PROTO_MAX_PROCS);
        return;
    }
    int kid[3] = {-1, -1, -1}, mine[3] = {-1, -1, -1}; /* mine: stdin, stdout, stderr */
    int err = EMFILE;
    if (s->pty) {
        if (open_pty(s, &mine[1], &kid[0]) < 0) {
            send_error(id, E_SYSTEM, "no PTY available: %s", strerror(errno));
            return;
        }
        /* stdin gets its own fd so the two directions can be closed independently */
        mine[0] = fcntl(mine[1], F_DUPFD_CLOEXEC, 3);
    } else {
        for (int k = 0; k < 3; k++) {
            int pp[2];
            if (pipe2(pp, O_CLOEXEC) < 0) {
                err = errno;
                break;
            }
            kid[k] = pp[k ? 1 : 0];
            mine[k] = pp[k ? 0 : 1];
        }
    }
    pid_t pid = -1;
    if (mine[0] >= 0 && mine[1] >= 0 && (s->pty || mine[2] >= 0)) {
        for (int k = 0; k < 3; k++)
            if (mine[k] >= 0)
                fcntl(mine[k], F_SETFL, O_NONBLOCK);
        pid = fork();
        err = errno;
        if (pid == 0)
            child(s, kid);
    }
    for (int k = 0; k < 3; k++)
        closefd(&kid[k]);
    if (pid < 0) {
        for (int k = 0; k < 3; k++)
            closefd(&mine[k]);
        send_error(id, err == EAGAIN ? E_LIMIT : E_SYSTEM, "cannot start a process: %s", strerror(err));
        return;
    }
    *p = (struct proc){.used = 1, .id = id, .pid = pid, .pty = s->pty, .in_fd = mine[0],
                       .in_credit = PROTO_INITIAL_WINDOW,
                       .out = {{mine[1], PROTO_INITIAL_WINDOW, 0}, {mine[2], PROTO_INITIAL_WINDOW, s->pty}}};
    struct proto_out o = begin(MSG_STARTED, id);
    proto_u32(&o, (uint32_t)pid);
    send_frame(&o);
}

/* CLOSE: the host has lost interest. Kill, discard, and still report the exit. */
static void close_proc(struct proc *p)
{
    if (!p->reaped)
        kill_tree(p);
    p->in_eof = 1;
    drop_stdin(p, 0);
    for (int k = 0; k < 2; k++)
        if (!p->out[k].eof) {
            closefd(&p->out[k].fd);
            p->out[k].eof = 1;
            send_fd(MSG_EOF, p->id, (uint8_t)(k + 1), 0);
        }
    try_exit(p);
}

static void proc_msg(struct proc *p, const struct proto_msg *m)
{
    switch (m->type) {
    case MSG_DATA:
        if (m->fd != 0)
            send_error(p->id, E_MALFORMED, "DATA from the host must be for fd 0, not %u", m->fd);
        else if (p->in_eof && !p->pty)
            send_error(p->id, E_MALFORMED, "DATA after EOF on stdin");
        else if (m->len > p->in_credit)
            send_error(p->id, E_MALFORMED, "DATA of %u bytes beyond the window (%u left)", m->len, p->in_credit);
        else if (p->in_fd < 0) {
            if (m->len) /* nobody reads stdin any more: discard, give the credit back */
                send_fd(MSG_WINDOW, p->id, 0, m->len);
        } else if (m->len) {
            if (!p->inbuf && !(p->inbuf = malloc(PROTO_INITIAL_WINDOW))) {
                send_error(p->id, E_SYSTEM, "stdin buffer: out of memory");
                return;
            }
            /* credit + buffered == WINDOW, so after compaction it fits */
            if (p->inoff + p->inlen + m->len > PROTO_INITIAL_WINDOW) {
                memmove(p->inbuf, p->inbuf + p->inoff, p->inlen);
                p->inoff = 0;
            }
            memcpy(p->inbuf + p->inoff + p->inlen, m->data, m->len);
            p->inlen += m->len;
            p->in_credit -= m->len;
            pump_in(p);
        }
        break;
    case MSG_EOF:
        if (m->fd != 0)
            send_error(p->id, E_MALFORMED, "EOF from the host must be for fd 0, not %u", m->fd);
        else if (!p->pty) { /* a terminal has no half-close */
            p->in_eof = 1;
            if (!p->inlen)
                closefd(&p->in_fd);
        }
        break;
    case MSG_WINDOW: {
        if (m->fd == 0 || (m->fd == 2 && p->pty)) {
            send_error(p->id, E_MALFORMED, "WINDOW for fd %u: no such output stream", m->fd);
            break;
        }
        struct ostream *s = &p->out[m->fd - 1];
        if (s->eof)
            break; /* a late grant for a finished stream */
        if (m->u32 > PROTO_INITIAL_WINDOW - s->credit) {
            send_error(p->id, E_MALFORMED, "WINDOW would raise fd %u credit beyond %u", m->fd,
                       PROTO_INITIAL_WINDOW);
            s->credit = PROTO_INITIAL_WINDOW;
        } else {
            s->credit += m->u32;
        }
        if (p->pty && p->reaped)
            pump_out(p, 0); /* resume the drain */
        break;
    }
    case MSG_RESIZE:
        if (p->pty && (p->in_fd >= 0 || p->out[0].fd >= 0))
            set_size(p->in_fd >= 0 ? p->in_fd : p->out[0].fd, m->rows, m->cols);
        break;
    case MSG_SIGNAL: {
        int sig = proto_signal_number(m->str.p, m->str.n);
        if (!sig)
            send_error(p->id, E_MALFORMED, "unknown signal name '%.*s'", (int)(m->str.n > 32 ? 32 : m->str.n),
                       m->str.p);
        else if (!p->reaped) /* once reaped the pid may be someone else's */
            kill(p->pid, sig);
        break;
    }
    case MSG_CLOSE:
        close_proc(p);
        break;
    }
}

static void configure(const struct proto_msg *m)
{
    if (pid1) {
        struct timespec ts = {(time_t)(m->u64 / 1000000000u), (long)(m->u64 % 1000000000u)};
        if (clock_settime(CLOCK_REALTIME, &ts) < 0)
            send_error(0, E_SYSTEM, "clock_settime: %s", strerror(errno));
        if (m->str.n && sethostname(m->str.p, m->str.n) < 0)
            send_error(0, E_SYSTEM, "sethostname: %s", strerror(errno));
    }
    /* Restored snapshots must not share RNG state: mix in the host's bytes and reseed. */
    int fd = open("/dev/urandom", O_RDWR | O_CLOEXEC);
    union {
        struct rand_pool_info info;
        uint8_t raw[sizeof(struct rand_pool_info) + PROTO_MAX_ENTROPY];
    } u;
    if (fd >= 0 && m->len) {
        u.info.entropy_count = (int)m->len * 8;
        u.info.buf_size = (int)m->len;
        memcpy(u.info.buf, m->data, m->len);
        if (ioctl(fd, RNDADDENTROPY, &u.info) < 0 && vm)
            send_error(0, E_SYSTEM, "RNDADDENTROPY: %s", strerror(errno));
    }
    if (fd >= 0 && ioctl(fd, RNDRESEEDCRNG) < 0 && vm)
        send_error(0, E_SYSTEM, "RNDRESEEDCRNG: %s", strerror(errno));
    if (fd >= 0)
        close(fd);
    struct proto_out o = begin(MSG_CONFIGURED, 0);
    send_frame(&o);
}

static void handle(const struct proto_frame *f)
{
    struct proto_msg m;
    char err[256];
    int rc = proto_decode(f, &m, err, sizeof err);
    if (rc) {
        send_error(f->id, rc, "%s", err);
        return;
    }
    switch (m.type) {
    case MSG_START:
        start(m.id, m.start);
        break;
    case MSG_CONFIGURE:
        configure(&m);
        break;
    case MSG_ERROR:
        say("host reports error %u on id %u: %.*s", m.u32, m.id, (int)(m.str.n > 300 ? 300 : m.str.n), m.str.p);
        break;
    case MSG_DATA: case MSG_EOF: case MSG_WINDOW: case MSG_RESIZE: case MSG_SIGNAL: case MSG_CLOSE: {
        struct proc *p = find(m.id);
        if (p)
            proc_msg(p, &m);
        else
            send_error(m.id, E_UNKNOWN_ID, "%s: no process with id %u", proto_type_name(m.type), m.id);
        break;
    }
    default:
        send_error(m.id, E_UNKNOWN_TYPE, "%s is not sent by a host", proto_type_name(m.type));
    }
    proto_msg_free(&m);
}

static _Noreturn void finish(int code)
{
    kill_all();
    for (int i = 0; i < PROTO_MAX_PROCS; i++)
        if (procs[i].used && !procs[i].reaped)
            waitpid(procs[i].pid, NULL, 0); /* SIGKILLed: quick */
    exit(code);
}

/* In the VM the port reads EOF (and polls POLLHUP) while no host is connected, e.g. a
 * restored snapshot before the new host attaches. That is not the end: stop polling it
 * and wait for the SIGIO virtio_console sends when the host end opens again. */
static void read_port(void)
{
    ssize_t n = read(port_in, rbuf + rlen, sizeof rbuf - rlen);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n < 0) {
        say("read from host: %s", strerror(errno));
        die();
    }
    if (n == 0) {
        if (rlen)
            say("host connection ended inside a frame");
        rlen = 0;
        if (!vm)
            finish(0);
        port_up = 0;
        return;
    }
    rlen += n;
    size_t off = 0, used;
    struct proto_frame f;
    int r;
    while ((r = proto_next_frame(rbuf + off, rlen - off, &f, &used)) == 1) {
        handle(&f);
        off += used;
    }
    if (r < 0) {
        const uint8_t *b = rbuf + off;
        unsigned len = (unsigned)b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3];
        send_error(0, E_MALFORMED, "frame length %u outside [5, %u]", len, 5 + PROTO_MAX_PAYLOAD);
        say("framing error from host (frame length %u), giving up", len);
        die();
    }
    memmove(rbuf, rbuf + off, rlen - off);
    rlen -= off;
}

static void serve(void)
{
    static struct pollfd pfd[2 + 3 * PROTO_MAX_PROCS];
    static struct { int slot, role; } who[2 + 3 * PROTO_MAX_PROCS]; /* role 0 stdin, k+1 out[k] */
    for (;;) {
        int n = 2;
        pfd[0] = (struct pollfd){sigfd, POLLIN, 0};
        pfd[1] = (struct pollfd){port_up ? port_in : -1, POLLIN, 0};
        for (int i = 0; i < PROTO_MAX_PROCS; i++) {
            struct proc *p = &procs[i];
            if (!p->used)
                continue;
            if (p->in_fd >= 0 && p->inlen) {
                who[n].slot = i, who[n].role = 0;
                pfd[n++] = (struct pollfd){p->in_fd, POLLOUT, 0};
            }
            /* Without credit the fd is left out entirely: POLLHUP is reported even with no
             * events asked, and would spin. */
            for (int k = 0; k < 2; k++)
                if (p->out[k].fd >= 0 && p->out[k].credit) {
                    who[n].slot = i, who[n].role = k + 1;
                    pfd[n++] = (struct pollfd){p->out[k].fd, POLLIN, 0};
                }
        }
        if (poll(pfd, n, -1) < 0) {
            if (errno == EINTR)
                continue;
            say("poll: %s", strerror(errno));
            die();
        }
        if (pfd[0].revents) {
            struct signalfd_siginfo si[16];
            ssize_t r = read(sigfd, si, sizeof si);
            for (ssize_t i = 0; i < r / (ssize_t)sizeof si[0]; i++) {
                if (si[i].ssi_signo == SIGIO)
                    port_up = 1;
                else if (si[i].ssi_signo != SIGCHLD)
                    finish(128 + (int)si[i].ssi_signo); /* stdio mode: TERM, INT, HUP */
            }
            reap();
        }
        /* Processes before the port: only START opens fds or reuses slots, so the table
         * above stays valid (slots and fds are re-checked, reaping may have freed some). */
        for (int i = 2; i < n; i++) {
            struct proc *p = &procs[who[i].slot];
            if (!pfd[i].revents || !p->used)
                continue;
            if (who[i].role == 0 && p->in_fd == pfd[i].fd)
                pump_in(p);
            else if (who[i].role && p->out[who[i].role - 1].fd == pfd[i].fd)
                pump_out(p, who[i].role - 1);
        }
        if (pfd[1].revents)
            read_port();
    }
}

/* ---- VM set-up (PID 1) ------------------------------------------------------------ */

static void mount_at(const char *src, const char *dir, const char *type, unsigned long flags, const char *opts)
{
    mkdir(dir, 0755);
    if (mount(src, dir, type, flags, opts) < 0) {
        say("mount %s on %s: %s", type ? type : src, dir, strerror(errno));
        die();
    }
}

static void load_modules(void)
{
    FILE *f = fopen("/etc/vmgate/modules", "re");
    char line[512];
    if (!f) {
        if (errno != ENOENT)
            say("/etc/vmgate/modules: %s", strerror(errno));
        return;
    }
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (line[0] != '/')
            continue;
        int fd = open(line, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST))
            say("load module %s: %s", line, strerror(errno)); /* loud; what needs it fails next */
        if (fd >= 0)
            close(fd);
    }
    fclose(f);
}

static int open_port(const char *name)
{
    struct timespec start, now, nap = {0, 20 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    do {
        /* The module is loaded but the device may not be: the only polling we do. */
        DIR *d = opendir("/sys/class/virtio-ports");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            char path[320], buf[256];
            if (e->d_name[0] == '.')
                continue;
            snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
            if (fd >= 0)
                close(fd);
            buf[n > 0 ? n : 0] = 0;
            buf[strcspn(buf, "\n")] = 0;
            if (strcmp(buf, name) != 0)
                continue;
            snprintf(path, sizeof path, "/dev/%s", e->d_name);
            fd = open(path, O_RDWR | O_CLOEXEC);
            if (fd >= 0) {
                closedir(d);
                return fd;
            }
        }
        if (d)
            closedir(d);
        nanosleep(&nap, NULL);
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while (now.tv_sec - start.tv_sec < 10);
    return -1;
}

static void setup_vm(void)
{
    char cmdline[4096] = "", port[128] = DEFAULT_PORT, sizeopt[64] = "";
    unsigned long rwsize = 0, maxprocs = 0;

    mount_at("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    if (fcntl(2, F_GETFD) < 0) { /* no /dev/console in the initramfs */
        int fd = open("/dev/console", O_RDWR | O_NOCTTY);
        for (int i = 0; fd >= 0 && i < 3; i++)
            if (i != fd)
                dup2(fd, i);
    }
    mount_at("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_at("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    load_modules();

    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, cmdline, sizeof cmdline - 1);
    if (fd >= 0)
        close(fd);
    cmdline[n > 0 ? n : 0] = 0;
    for (char *save, *t = strtok_r(cmdline, " \t\n", &save); t; t = strtok_r(NULL, " \t\n", &save)) {
        if (strncmp(t, "vmgate.rwsize=", 14) == 0)
            rwsize = strtoul(t + 14, NULL, 10);
        else if (strncmp(t, "vmgate.maxprocs=", 16) == 0)
            maxprocs = strtoul(t + 16, NULL, 10);
        else if (strncmp(t, "vmgate.port=", 12) == 0)
            snprintf(port, sizeof port, "%s", t + 12);
    }
    if (maxprocs) {
        /* root ignores RLIMIT_NPROC; threads-max binds everyone (kernel threads count too) */
        FILE *f = fopen("/proc/sys/kernel/threads-max", "we");
        if (!f || fprintf(f, "%lu\n", maxprocs) < 0 || fclose(f) != 0)
            say("vmgate.maxprocs=%lu: threads-max: %s", maxprocs, strerror(errno));
    }
    if (rwsize)
        snprintf(sizeopt, sizeof sizeopt, ",size=%lum", rwsize);

    /* Overlay root: the image's tree read-only below, a size-limited tmpfs above. */
    char opts[128];
    snprintf(opts, sizeof opts, "mode=0755%s", sizeopt);
    mount_at("tmpfs", "/run-rw", "tmpfs", MS_NOSUID | MS_NODEV, opts);
    mkdir("/run-rw/upper", 0755);
    mkdir("/run-rw/work", 0755);
    mount_at("overlay", "/newroot", "overlay", 0, "lowerdir=/rootfs,upperdir=/run-rw/upper,workdir=/run-rw/work");
    mount_at("/dev", "/newroot/dev", NULL, MS_MOVE, NULL);
    mount_at("/proc", "/newroot/proc", NULL, MS_MOVE, NULL);
    mount_at("/sys", "/newroot/sys", NULL, MS_MOVE, NULL);
    mount_at("devpts", "/newroot/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "ptmxmode=0666,mode=0620");
    snprintf(opts, sizeof opts, "mode=1777%s", sizeopt);
    mount_at("tmpfs", "/newroot/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts);
    mount_at("tmpfs", "/newroot/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, opts);
    snprintf(opts, sizeof opts, "mode=0755%s", sizeopt);
    mount_at("tmpfs", "/newroot/run", "tmpfs", MS_NOSUID | MS_NODEV, opts);
    /* devtmpfs has a ptmx node that finds the devpts beside it; if not, use the devpts one */
    fd = open("/newroot/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        unlink("/newroot/dev/ptmx");
        if (symlink("pts/ptmx", "/newroot/dev/ptmx") < 0)
            say("/dev/ptmx: %s", strerror(errno));
    }
    closefd(&fd);
    symlink("/proc/self/fd", "/newroot/dev/fd");
    symlink("/proc/self/fd/0", "/newroot/dev/stdin");
    symlink("/proc/self/fd/1", "/newroot/dev/stdout");
    symlink("/proc/self/fd/2", "/newroot/dev/stderr");

    /* switch_root: pivot_root cannot leave the initramfs (rootfs), so move over it. */
    if (chdir("/newroot") < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/") < 0) {
        say("switch root: %s", strerror(errno));
        die();
    }
    if (sethostname("vmgate", 6) < 0)
        say("sethostname: %s", strerror(errno));
    struct ifreq ifr = {0};
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    strcpy(ifr.ifr_name, "lo");
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0 || (ifr.ifr_flags |= IFF_UP, ioctl(s, SIOCSIFFLAGS, &ifr) < 0))
        say("bring up lo: %s", strerror(errno));
    closefd(&s);

    port_in = port_out = open_port(port);
    if (port_in < 0) {
        say("virtio-serial port '%s' not found in /sys/class/virtio-ports after 10 s", port);
        die();
    }
    /* virtio_console signals host connect/disconnect with SIGIO (see read_port). */
    if (fcntl(port_in, F_SETOWN, 1) < 0 || fcntl(port_in, F_SETFL, O_ASYNC) < 0)
        say("port O_ASYNC: %s", strerror(errno));
}

int main(int argc, char **argv)
{
    int stdio = argc == 2 && strcmp(argv[1], "--stdio") == 0;
    pid1 = getpid() == 1;
    vm = pid1 && !stdio;
    if (!stdio && !pid1) {
        fprintf(stderr, "usage: vmgate-agent --stdio   (or as /init: PID 1 of a vmgate VM)\n");
        return 2;
    }
    for (int i = 0; i < PROTO_MAX_PROCS; i++)
        procs[i].in_fd = procs[i].out[0].fd = procs[i].out[1].fd = -1;
    signal(SIGPIPE, SIG_IGN);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, vm ? SIGIO : SIGTERM);
    if (!vm) {
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
    }
    sigprocmask(SIG_BLOCK, &mask, NULL);
    sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (vm)
        setup_vm();
    else
        prctl(PR_SET_CHILD_SUBREAPER, 1); /* reap orphans as PID 1 would */
    int fd; /* keep 0..2 taken so that no pipe lands there (see child) */
    while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd <= 2) {
    }
    if (fd > 2)
        close(fd);
    if (sigfd < 0) {
        say("signalfd: %s", strerror(errno));
        die();
    }
    send_hello();
    serve();
}
