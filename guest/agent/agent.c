/* vmgate-agent: PID 1 of a vmgate microVM. It mounts the basics, loads the virtio
 * modules, builds an overlay root whose writes land in a size-limited tmpfs, finds the
 * virtio-serial port and serves docs/protocol.md on it: processes with pipes or a PTY,
 * credit-based flow control per stream, signals, exit statuses.
 *
 * `vmgate-agent --stdio` skips the VM set-up and serves the same protocol on fds 0/1,
 * so the host's tests can run the real agent as a plain process.
 *
 * One thread, one poll() loop; SIGCHLD (and SIGIO, see read_port) arrive on a signalfd.
 * Output is read from a child only while the host has granted credit for it, so the
 * agent never buffers output; stdin is buffered up to the window the host may fill. */
#define _GNU_SOURCE
#include "agent.h"
#include "egress.h"
#include "proto.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/random.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
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

/* Child output per DATA frame: the whole frame is then 256 KiB, a multiple of the 32 KiB
 * virtio_console takes per write. */
#define OUT_CHUNK (PROTO_MAX_PAYLOAD - 10)
/* stdout/stderr pipes of 256 KiB instead of Linux's 64 KiB: under TCG each poll() wakeup costs,
 * and one read now takes up to a window's worth. `dd bs=64k` through `vmgate run`: ~210 -> ~245 MB/s. */
#define OUT_PIPE_SIZE (256 * 1024)

struct ostream {
    int fd;          /* -1 once at EOF */
    uint32_t credit; /* bytes the host still accepts */
    int eof;         /* EOF sent (or never existed: stderr of a PTY) */
};

struct proc {
    int used, pty, reaped, status;
    uint32_t id;
    pid_t pid;
    uint32_t drain;     /* PTY: bytes still to read after the exit (see pump_out) */
    int in_fd;          /* stdin pipe, or a dup of the PTY master; -1 once closed */
    int in_eof;         /* the host sent EOF: close in_fd once the buffer is written */
    uint8_t *inbuf;     /* stdin not yet taken by the child: at most one window */
    size_t inoff, inlen;
    uint32_t in_credit; /* the host's credit as we see it: always WINDOW - inlen */
    struct ostream out[2]; /* fd 1 (the PTY master for a PTY), fd 2 */
};

static struct proc procs[PROTO_MAX_PROCS];
static int vm;   /* PID 1 in the VM: set up, and power off rather than exit */
static int pid1; /* allowed to set the clock and hostname */
static int port_in = 0, port_out = 1, sigfd = -1;
static int port_up = 1; /* see read_port */
static uint8_t rbuf[PROTO_HEADER + PROTO_MAX_PAYLOAD + 65536]; /* a whole frame + read-ahead */
static size_t rlen;
static uint8_t obuf[PROTO_HEADER + PROTO_MAX_PAYLOAD];
static char home_disk[32];                      /* vmgate.home=: the home disk's serial */
static char home_path[PROTO_MAX_HOME_PATH + 1]; /* where HOME mounted it; empty until then */

static void vsay(const char *fmt, va_list ap) {
    char b[600];
    int n = snprintf(b, sizeof b, "vmgate-agent: ");
    n += vsnprintf(b + n, sizeof b - n - 1, fmt, ap);
    n = n > (int)sizeof b - 2 ? (int)sizeof b - 2 : n;
    b[n++] = '\n';
    if (write(2, b, n) < 0) { /* nowhere else to report it */ }
}

void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsay(fmt, ap);
    va_end(ap);
}

static void kill_all(void);
static int find_disk(const char *serial, char *dev, size_t size);

/* PID 1 must never exit (the kernel would panic): a dead agent is a VM powered off. */
__attribute__((format(printf, 1, 2))) static _Noreturn void fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsay(fmt, ap);
    va_end(ap);
    if (vm) {
        sync();
        reboot(RB_POWER_OFF);
        for (;;)
            pause();
    }
    kill_all();
    exit(1);
}

static void closefd(int *fd) {
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Small files of /proc and /sys, NUL-terminated; "" when unreadable. */
static char *slurp(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, size - 1);
    closefd(&fd);
    buf[n > 0 ? n : 0] = 0;
    return buf;
}

/* ---- sending ---------------------------------------------------------------------- */

struct proto_out begin(uint8_t type, uint32_t id) {
    struct proto_out o = {obuf, sizeof obuf, 0, 0};
    proto_begin(&o, type, id);
    return o;
}

/* Blocking writes are fine: the host always drains the port. */
void send_frame(struct proto_out *o) {
    if (proto_end(o) < 0)
        fatal("internal error: %s frame too large", proto_type_name(o->p[4]));
    for (size_t off = 0; off < o->len;) {
        ssize_t w = write(port_out, o->p + off, o->len - off);
        if (w > 0)
            off += w;
        else if (w < 0 && errno == EAGAIN)
            poll(&(struct pollfd){port_out, POLLOUT, 0}, 1, -1);
        else if (!(w < 0 && errno == EINTR))
            fatal("write to host: %s", w < 0 ? strerror(errno) : "no progress");
    }
}

void send_error(uint32_t id, uint32_t code, const char *fmt, ...) {
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct proto_out o = begin(MSG_ERROR, id);
    proto_u32(&o, code);
    proto_bytes(&o, msg, n < 0 ? 0 : n < (int)sizeof msg ? (size_t)n : sizeof msg - 1);
    send_frame(&o);
}

/* EOF, or WINDOW with an increment. */
static void send_fd(uint8_t type, uint32_t id, uint8_t fd, uint32_t inc) {
    struct proto_out o = begin(type, id);
    proto_u8(&o, fd);
    if (type == MSG_WINDOW)
        proto_u32(&o, inc);
    send_frame(&o);
}

static void send_hello(void) {
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

static struct proc *find(uint32_t id) {
    for (int i = 0; i < PROTO_MAX_PROCS; i++)
        if (procs[i].used && procs[i].id == id)
            return &procs[i];
    return NULL;
}

/* Kills the process group and, since a job-control shell moves jobs to groups of their
 * own, the rest of the session (found in /proc). A session or group id cannot be reused
 * while a member lives, but once all are gone the number may belong to a new process of
 * ours: skip it then. */
static void kill_tree(struct proc *p) {
    for (int i = 0; i < PROTO_MAX_PROCS; i++)
        if (&procs[i] != p && procs[i].used && !procs[i].reaped && procs[i].pid == p->pid)
            return;
    kill(-p->pid, SIGKILL);
    DIR *d = opendir("/proc");
    for (struct dirent *e; d && (e = readdir(d));) {
        char path[300], buf[512];
        int pgrp, sid;
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        char *rp = strrchr(slurp(path, buf, sizeof buf), ')'); /* the name may hold anything else */
        if (rp && sscanf(rp + 1, " %*c %*d %d %d", &pgrp, &sid) == 2 && sid == p->pid)
            kill(atoi(e->d_name), SIGKILL);
    }
    if (d)
        closedir(d);
}

static void kill_all(void) {
    for (int i = 0; i < PROTO_MAX_PROCS; i++)
        if (procs[i].used)
            kill_tree(&procs[i]);
}

/* Stdin is gone (the child closed it, or CLOSE): drop what is buffered and, if asked,
 * give its credit back so the host's writer is not left waiting. */
static void drop_stdin(struct proc *p, int grant) {
    closefd(&p->in_fd);
    if (grant && p->inlen)
        send_fd(MSG_WINDOW, p->id, 0, (uint32_t)p->inlen);
    p->in_credit += p->inlen;
    p->inoff = p->inlen = 0;
}

/* EXIT goes out once the process is reaped and every output stream has sent EOF. */
static void try_exit(struct proc *p) {
    if (!p->reaped || !p->out[0].eof || !p->out[1].eof)
        return;
    int st = p->status, sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    char rt[24] = "";
    const char *name = sig ? proto_signal_name(sig) : "";
    if (!name) /* a real-time signal */
        name = (snprintf(rt, sizeof rt, "RTMIN+%d", sig - SIGRTMIN), rt);
    struct proto_out o = begin(MSG_EXIT, p->id);
    proto_u32(&o, WIFEXITED(st) ? (uint32_t)WEXITSTATUS(st) : (uint32_t)-1);
    proto_u8(&o, sig);
    proto_u8(&o, sig && WCOREDUMP(st) ? 1 : 0);
    proto_bytes(&o, name, strlen(name));
    send_frame(&o);
    closefd(&p->in_fd);
    free(p->inbuf);
    *p = (struct proc){.in_fd = -1, .out = {{.fd = -1}, {.fd = -1}}};
}

static void end_stream(struct proc *p, int k) {
    closefd(&p->out[k].fd);
    p->out[k].eof = 1;
    send_fd(MSG_EOF, p->id, (uint8_t)(k + 1), 0);
    try_exit(p); /* may free p */
}

/* Reads child output into DATA frames, never more than the credit. A pipe is at EOF when
 * read returns 0. A PTY master returns EIO once every slave fd is closed, but a
 * background job may keep the slave open: so once the process is reaped, drain what is
 * readable now and call that the end (the kernel flushes pending tty input before a
 * non-blocking read says EAGAIN). The drain is capped well above what a PTY can hold
 * (~68 KiB), so a background job writing without pause cannot hold back the EXIT. */
static void pump_out(struct proc *p, int k) {
    struct ostream *s = &p->out[k];
    int draining = p->pty && p->reaped;
    while (s->fd >= 0 && s->credit > 0) {
        uint32_t want = s->credit < OUT_CHUNK ? s->credit : OUT_CHUNK;
        if (draining && want > p->drain)
            want = p->drain;
        struct proto_out o = begin(MSG_DATA, p->id);
        proto_u8(&o, k + 1);
        ssize_t n = want ? read(s->fd, o.p + o.len, want) : 0;
        if (n > 0) {
            o.len += n;
            s->credit -= (uint32_t)n;
            p->drain -= draining ? (uint32_t)n : 0;
            send_frame(&o);
            if (!draining)
                return; /* one read per wakeup keeps streams fair */
        } else if (!(n < 0 && errno == EINTR)) {
            if (!(n < 0 && errno == EAGAIN && !draining))
                end_stream(p, k); /* 0, EIO, or drained */
            return;
        }
    }
}

/* Writes buffered stdin to the child and grants the credit back as it goes. */
static void pump_in(struct proc *p) {
    while (p->inlen && p->in_fd >= 0) {
        ssize_t n = write(p->in_fd, p->inbuf + p->inoff, p->inlen);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
            if (errno == EAGAIN)
                return;
        } else if (n <= 0) { /* EPIPE: nobody reads it any more; EIO: PTY slave gone */
            drop_stdin(p, 1);
        } else {
            p->inoff += n;
            p->inlen -= n;
            p->in_credit += (uint32_t)n;
            send_fd(MSG_WINDOW, p->id, 0, (uint32_t)n);
        }
    }
    p->inoff = 0;
    if (p->in_eof && !p->pty)
        closefd(&p->in_fd);
}

static void reap(void) {
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
            p->drain = PROTO_INITIAL_WINDOW;
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

static void apply_modes(struct termios *t, const struct proto_start *s) {
    for (unsigned i = 0; i < s->nmodes; i++) {
        for (size_t j = 0; j < sizeof tty_modes / sizeof tty_modes[0]; j++) {
            if (tty_modes[j].op != s->modes[i].op)
                continue;
            uint32_t val = s->modes[i].val;
            unsigned kind = tty_modes[j].kind, v = tty_modes[j].v;
            tcflag_t *f = kind == IF ? &t->c_iflag : kind == LF ? &t->c_lflag : kind == OF ? &t->c_oflag : &t->c_cflag;
            if (kind == CC)
                t->c_cc[v] = val == 255 ? _POSIX_VDISABLE : (cc_t)val; /* SSH's "disabled" */
            else
                *f = val ? *f | v : *f & ~(tcflag_t)v;
        }
    }
}

static void set_size(int fd, uint16_t rows, uint16_t cols) {
    struct winsize ws = {rows ? rows : 24, cols ? cols : 80, 0, 0};
    ioctl(fd, TIOCSWINSZ, &ws);
}

/* Opens a PTY pair set up from the START. The slave comes from TIOCGPTPEER, which needs
 * no path lookup (Linux 4.13+). */
static int open_pty(const struct proto_start *s, int *master, int *slave) {
    int unlock = 0;
    struct termios t;
    *master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (*master < 0 || ioctl(*master, TIOCSPTLCK, &unlock) < 0
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
static void setenv_in(char **envp, size_t *n, char *kv) {
    size_t len = strchr(kv, '=') - kv + 1, i = 0;
    while (i < *n && strncmp(envp[i], kv, len) != 0)
        i++;
    envp[i] = kv;
    *n += i == *n;
}

/* Takes on the START's credentials as sshd does: the terminal first (the user owns it), then
 * groups, gid, uid. Not root (the --stdio test mode): only our own uid and gid work. */
static int become(const struct proto_start *s, int tty) {
    gid_t groups[PROTO_MAX_GROUPS];
    for (unsigned i = 0; i < s->ngroups; i++)
        groups[i] = (gid_t)s->groups[i];
    if (geteuid() != 0 && s->uid == getuid() && s->gid == getgid())
        return 0;
    if (tty >= 0 && fchown(tty, (uid_t)s->uid, (gid_t)-1) < 0)
        return say("chown of the terminal to uid %u: %s", s->uid, strerror(errno)), -1;
    if (setgroups(s->ngroups, groups) < 0 || setgid((gid_t)s->gid) < 0 || setuid((uid_t)s->uid) < 0)
        return say("cannot run as uid %u gid %u: %s", s->uid, s->gid, strerror(errno)), -1;
    return 0;
}

/* The forked child: never returns. fds[] become its 0, 1, 2 (all the PTY slave). */
static _Noreturn void child(const struct proto_start *s, const int fds[3]) {
    static char *base[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                           "HOME=/root", "USER=root", "LOGNAME=root", "SHELL=/bin/sh"};
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigset_t none;
    for (int i = 1; i < NSIG; i++)
        sigaction(i, &dfl, NULL); /* SIGPIPE was ignored, and exec keeps ignored signals */
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setsid();
    if (s->pty && ioctl(fds[0], TIOCSCTTY, 0) < 0)
        say("TIOCSCTTY: %s", strerror(errno));
    for (int i = 0; i < 3; i++)
        dup2(fds[s->pty ? 0 : i], i); /* fds[] are >= 3: main keeps 0..2 open */
    syscall(SYS_close_range, 3, ~0u, 0); /* O_CLOEXEC already; belt and braces */

    if (become(s, s->pty ? 0 : -1) < 0) /* 0: the slave, since the dup2 above */
        _exit(126);

    /* Only PATH for another user: the host sends that user's HOME, USER, LOGNAME and SHELL. */
    size_t n = 0, nbase = s->uid == 0 ? sizeof base / sizeof base[0] : 1;
    char **envp = malloc((nbase + 2 + s->envc) * sizeof *envp), *term;
    if (!envp)
        _exit(126);
    for (; n < nbase; n++)
        envp[n] = base[n];
    if (s->pty && *s->term && asprintf(&term, "TERM=%s", s->term) > 0)
        setenv_in(envp, &n, term);
    for (unsigned i = 0; i < s->envc; i++)
        setenv_in(envp, &n, s->env[i]);
    envp[n] = NULL;
    environ = envp; /* so execvp searches the child's own PATH */

    if (*s->cwd ? chdir(s->cwd) < 0 : chdir("/root") < 0 && chdir("/") < 0) {
        say("%s: %s", *s->cwd ? s->cwd : "/", strerror(errno));
        _exit(126);
    }
    execvp(s->path, s->argv);
    int e = errno;
    say("%s: %s", s->path, strerror(e));
    _exit(e == ENOENT ? 127 : 126);
}

static void start(uint32_t id, const struct proto_start *s) {
    struct proc *p = NULL;
    if (find(id))
        return send_error(id, E_ID_IN_USE, "id %u is in use", id);
    for (int i = 0; i < PROTO_MAX_PROCS && !p; i++)
        p = procs[i].used ? NULL : &procs[i];
    if (!p)
        return send_error(id, E_LIMIT, "%d processes are running already", PROTO_MAX_PROCS);
    int kid[3] = {-1, -1, -1}, mine[3] = {-1, -1, -1}; /* mine: stdin, stdout, stderr */
    int err = 0, pp[2];
    pid_t pid = -1;
    if (s->pty) {
        if (open_pty(s, &mine[1], &kid[0]) < 0)
            return send_error(id, E_SYSTEM, "no PTY available: %s", strerror(errno));
        /* stdin gets its own fd so the two directions can be closed independently */
        if ((mine[0] = fcntl(mine[1], F_DUPFD_CLOEXEC, 3)) < 0)
            err = errno;
    }
    for (int k = 0; k < 3 && !s->pty && !err; k++) {
        if (pipe2(pp, O_CLOEXEC) < 0)
            err = errno;
        kid[k] = err ? -1 : pp[k ? 1 : 0];
        mine[k] = err ? -1 : pp[k ? 0 : 1];
        if (!err) /* best effort: a bigger pipe, fewer wakeups (see OUT_PIPE_SIZE); stdin too */
            fcntl(pp[0], F_SETPIPE_SZ, OUT_PIPE_SIZE);
    }
    if (!err) {
        for (int k = 0; k < 3; k++)
            if (mine[k] >= 0)
                fcntl(mine[k], F_SETFL, O_NONBLOCK);
        if ((pid = fork()) == 0)
            child(s, kid);
        err = errno;
    }
    for (int k = 0; k < 3; k++)
        closefd(&kid[k]);
    if (pid < 0) {
        for (int k = 0; k < 3; k++)
            closefd(&mine[k]);
        return send_error(id, err == EAGAIN ? E_LIMIT : E_SYSTEM, "cannot start a process: %s", strerror(err));
    }
    *p = (struct proc){.used = 1, .id = id, .pid = pid, .pty = s->pty, .in_fd = mine[0],
                       .in_credit = PROTO_INITIAL_WINDOW,
                       .out = {{mine[1], PROTO_INITIAL_WINDOW, 0}, {mine[2], PROTO_INITIAL_WINDOW, s->pty}}};
    struct proto_out o = begin(MSG_STARTED, id);
    proto_u32(&o, (uint32_t)pid);
    send_frame(&o);
}

/* Host DATA for stdin: buffered (credit + buffered == WINDOW, so it fits after compaction),
 * then written as the child takes it. */
static void stdin_data(struct proc *p, const struct proto_msg *m) {
    if (m->fd != 0)
        return send_error(p->id, E_MALFORMED, "DATA from the host must be for fd 0, not %u", m->fd);
    if (p->in_eof && !p->pty)
        return send_error(p->id, E_MALFORMED, "DATA after EOF on stdin");
    if (m->len > p->in_credit)
        return send_error(p->id, E_MALFORMED, "DATA of %u bytes beyond the window (%u left)", m->len, p->in_credit);
    if (!m->len)
        return;
    if (p->in_fd < 0) /* nobody reads stdin any more: discard, give the credit back */
        return send_fd(MSG_WINDOW, p->id, 0, m->len);
    const uint8_t *data = m->data;
    uint32_t len = m->len;
    if (!p->inlen) { /* nothing queued: straight into the child's pipe, buffer only what it refuses */
        ssize_t n = write(p->in_fd, data, len);
        if (n > 0) {
            data += n;
            len -= (uint32_t)n;
            send_fd(MSG_WINDOW, p->id, 0, (uint32_t)n);
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            drop_stdin(p, 1); /* EPIPE: nobody reads it any more; EIO: PTY slave gone */
            return send_fd(MSG_WINDOW, p->id, 0, len);
        }
        if (!len)
            return;
    }
    if (!p->inbuf && !(p->inbuf = malloc(PROTO_INITIAL_WINDOW)))
        return send_error(p->id, E_SYSTEM, "stdin buffer: out of memory");
    if (p->inoff + p->inlen + len > PROTO_INITIAL_WINDOW) {
        memmove(p->inbuf, p->inbuf + p->inoff, p->inlen);
        p->inoff = 0;
    }
    memcpy(p->inbuf + p->inoff + p->inlen, data, len);
    p->inlen += len;
    p->in_credit -= len;
    pump_in(p);
}

static void proc_msg(struct proc *p, const struct proto_msg *m) {
    struct ostream *s = &p->out[m->fd == 2];
    int sig;
    switch (m->type) {
    case MSG_DATA:
        return stdin_data(p, m);
    case MSG_EOF:
        if (m->fd != 0)
            return send_error(p->id, E_MALFORMED, "EOF from the host must be for fd 0, not %u", m->fd);
        if (!p->pty) { /* a terminal has no half-close */
            p->in_eof = 1;
            if (!p->inlen)
                closefd(&p->in_fd);
        }
        return;
    case MSG_WINDOW:
        if (m->fd == 0 || (m->fd == 2 && p->pty))
            return send_error(p->id, E_MALFORMED, "WINDOW for fd %u: no such output stream", m->fd);
        if (s->eof)
            return; /* a late grant for a finished stream */
        if (m->u32 > PROTO_INITIAL_WINDOW - s->credit)
            send_error(p->id, E_MALFORMED, "WINDOW would raise fd %u credit beyond %u", m->fd, PROTO_INITIAL_WINDOW);
        s->credit = m->u32 > PROTO_INITIAL_WINDOW - s->credit ? PROTO_INITIAL_WINDOW : s->credit + m->u32;
        if (p->pty && p->reaped)
            pump_out(p, 0); /* resume the drain */
        return;
    case MSG_RESIZE:
        if (p->pty && (p->in_fd >= 0 || p->out[0].fd >= 0))
            set_size(p->in_fd >= 0 ? p->in_fd : p->out[0].fd, m->rows, m->cols);
        return;
    case MSG_SIGNAL:
        if (!(sig = proto_signal_number(m->str.p, m->str.n)))
            return send_error(p->id, E_MALFORMED, "unknown signal name '%.*s'", (int)(m->str.n > 32 ? 32 : m->str.n),
                              m->str.p);
        if (!p->reaped) /* once reaped the pid may be someone else's */
            kill(p->pid, sig);
        return;
    case MSG_CLOSE: /* the host has lost interest: kill, discard, still report the exit */
        kill_tree(p); /* reaped or not: what holds its pipes open is in its group */
        p->in_eof = 1;
        drop_stdin(p, 0);
        for (int k = 0; k < 2; k++)
            if (!p->out[k].eof) {
                closefd(&p->out[k].fd);
                p->out[k].eof = 1;
                send_fd(MSG_EOF, p->id, (uint8_t)(k + 1), 0);
            }
        return try_exit(p);
    }
}

/* After a snapshot restore QEMU's translation cache (TCG) is empty, so the first command pays
 * ~60 ms for translating fork, exec and busybox anew. The host is rarely ready to send it at
 * once: run one throwaway /bin/true meanwhile, at the lowest priority, so a real command that
 * arrives mid-way takes the CPU and finds most of that work done. Reaped like any orphan. */
static void warm_up(void) {
    if (fork() == 0) {
        char *argv[] = {"true", NULL}, *envp[] = {NULL};
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        setpriority(PRIO_PROCESS, 0, 19);
        execve("/bin/true", argv, envp);
        _exit(127);
    }
}

static void configure(const struct proto_msg *m) {
    struct timespec ts = {(time_t)(m->u64 / 1000000000u), (long)(m->u64 % 1000000000u)};
    if (pid1 && clock_settime(CLOCK_REALTIME, &ts) < 0)
        send_error(0, E_SYSTEM, "clock_settime: %s", strerror(errno));
    if (pid1 && m->str.n && sethostname(m->str.p, m->str.n) < 0)
        send_error(0, E_SYSTEM, "sethostname: %s", strerror(errno));
    /* Restored snapshots must not share RNG state: mix in the host's bytes and reseed. */
    union {
        struct rand_pool_info info;
        uint8_t raw[sizeof(struct rand_pool_info) + PROTO_MAX_ENTROPY];
    } u = {.info = {.entropy_count = (int)m->len * 8, .buf_size = (int)m->len}};
    memcpy(u.info.buf, m->data, m->len);
    int fd = open("/dev/urandom", O_RDWR | O_CLOEXEC);
    if (fd >= 0 && m->len && ioctl(fd, RNDADDENTROPY, &u.info) < 0 && vm)
        send_error(0, E_SYSTEM, "RNDADDENTROPY: %s", strerror(errno));
    if (fd >= 0 && ioctl(fd, RNDRESEEDCRNG) < 0 && vm)
        send_error(0, E_SYSTEM, "RNDRESEEDCRNG: %s", strerror(errno));
    closefd(&fd);
    struct proto_out o = begin(MSG_CONFIGURED, 0);
    send_frame(&o);
    if (pid1)
        warm_up();
}

/* An answer carrying an error string, empty for success (HOME_STATUS, SYNCED). */
__attribute__((format(printf, 2, 3))) static void send_status(uint8_t type, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct proto_out o = begin(type, 0);
    proto_bytes(&o, msg, strlen(msg));
    send_frame(&o);
}

/* An absolute path, not "/", without empty, "." or ".." components: a home the host names. */
static int plain_path(const char *p) {
    if (p[0] != '/' || !p[1])
        return 0;
    for (const char *c = p + 1; *c;) {
        size_t n = strcspn(c, "/");
        if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            return 0;
        c += n;
        c += *c == '/';
    }
    return p[strlen(p) - 1] != '/';
}

/* HOME: mount the home disk (vmgate.home=) at the path, owned by uid:gid. Not at boot: a
 * template is saved before any user's disk is known (docs/protocol.md). */
static void home(const struct proto_msg *m) {
    char path[PROTO_MAX_HOME_PATH + 1], dev[300];
    memcpy(path, m->str.p, m->str.n);
    path[m->str.n] = 0;
    if (!vm || !*home_disk)
        return send_status(MSG_HOME_STATUS, "this VM has no home disk (no vmgate.home=)");
    if (*home_path)
        return send_status(MSG_HOME_STATUS, "a home is already mounted at %s", home_path);
    if (!plain_path(path))
        return send_status(MSG_HOME_STATUS, "'%s' is not an absolute path without '.' or '..'", path);
    if (find_disk(home_disk, dev, sizeof dev) < 0)
        return send_status(MSG_HOME_STATUS, "no disk with serial '%s'", home_disk);
    /* A restored guest may still cache blocks it read from the template's placeholder disk. */
    int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ioctl(fd, BLKFLSBUF, 0) < 0) {
        int e = errno;
        closefd(&fd);
        return send_status(MSG_HOME_STATUS, "flush %s: %s", dev, strerror(e));
    }
    closefd(&fd);
    for (char *c = path + 1; (c = strchr(c, '/')); *c++ = '/') {
        *c = 0;
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
            return send_status(MSG_HOME_STATUS, "mkdir %s: %s", path, strerror(errno));
    }
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        return send_status(MSG_HOME_STATUS, "mkdir %s: %s", path, strerror(errno));
    /* made by the host over zeroes, with uninitialised inode tables: nothing to zero here */
    if (mount(dev, path, "ext4", MS_NOSUID | MS_NODEV | MS_NOATIME, "noinit_itable") < 0)
        return send_status(MSG_HOME_STATUS, "mount: %s", strerror(errno));
    if (chown(path, m->uid, m->gid) < 0) {
        int e = errno;
        umount2(path, MNT_DETACH);
        return send_status(MSG_HOME_STATUS, "chown %s: %s", path, strerror(e));
    }
    snprintf(home_path, sizeof home_path, "%s", path);
    send_status(MSG_HOME_STATUS, "%s", "");
}

/* FIFREEZE from <linux/fs.h>, which clashes with <sys/mount.h>. */
#ifndef FIFREEZE
#define FIFREEZE _IOWR('X', 119, int)
#endif

/* SYNC: dirty data to the disks. With SYNC_FREEZE (the host is about to destroy the VM) the home
 * is frozen too, which flushes its journal and marks it clean, so the next VM's mount replays
 * nothing; without it (the VM is saved, to resume) the home stays as it is. */
static void sync_all(int freeze) {
    int fd = *home_path ? open(home_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1, e = 0;
    const char *step = "syncfs";
    if (fd >= 0 && (syncfs(fd) < 0 || (freeze && (step = "freeze", ioctl(fd, FIFREEZE, 0) < 0))))
        e = errno;
    closefd(&fd);
    if (vm)
        sync();
    if (e)
        return send_status(MSG_SYNCED, "%s %s: %s", step, home_path, strerror(e));
    send_status(MSG_SYNCED, "%s", "");
}

static void handle(const struct proto_frame *f) {
    struct proto_msg m;
    char err[256];
    int rc = proto_decode(f, &m, err, sizeof err);
    struct proc *p = rc || m.type >= MSG_EGRESS ? NULL : find(m.id);
    if (rc)
        return send_error(f->id, rc, "%s", err);
    switch (m.type) {
    case MSG_START:
        start(m.id, m.start);
        break;
    case MSG_CONFIGURE:
        configure(&m);
        break;
    case MSG_HOME:
        home(&m);
        break;
    case MSG_SYNC:
        sync_all(m.fd & SYNC_FREEZE);
        break;
    case MSG_ERROR:
        say("host reports error %u on id %u: %.*s", m.u32, m.id, (int)(m.str.n > 300 ? 300 : m.str.n), m.str.p);
        break;
    case MSG_DATA: case MSG_EOF: case MSG_WINDOW: case MSG_RESIZE: case MSG_SIGNAL: case MSG_CLOSE:
        if (p)
            proc_msg(p, &m);
        else
            send_error(m.id, E_UNKNOWN_ID, "%s: no process with id %u", proto_type_name(m.type), m.id);
        break;
    case MSG_EGRESS: case MSG_TOPENED: case MSG_TREFUSED: case MSG_TDATA: case MSG_TEOF: case MSG_TWINDOW: case MSG_TCLOSE:
        egress_message(&m);
        break;
    }
    proto_msg_free(&m);
}

/* stdio mode: the host is gone or we are told to stop. */
static _Noreturn void finish(int code) {
    kill_all();
    for (int i = 0; i < PROTO_MAX_PROCS; i++)
        if (procs[i].used && !procs[i].reaped)
            waitpid(procs[i].pid, NULL, 0); /* SIGKILLed: quick */
    exit(code);
}

/* In the VM the port reads EOF (and polls POLLHUP) while no host is connected, e.g. a
 * restored snapshot before the new host attaches. That is not the end: stop polling it
 * and wait for the SIGIO virtio_console sends when the host end opens again. */
static void read_port(void) {
    /* In the VM the port is non-blocking, and virtio_console hands out one of its 4 KiB buffers
     * per read: drain what is there before parsing, instead of one poll() per 4 KiB. */
    int gone = 0;
    do {
        ssize_t n = read(port_in, rbuf + rlen, sizeof rbuf - rlen);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            break;
        if (n < 0)
            fatal("read from host: %s", strerror(errno));
        if (n == 0) {
            gone = 1;
            break;
        }
        rlen += n;
    } while (vm && rlen < sizeof rbuf);
    size_t off = 0, used;
    struct proto_frame f;
    int r;
    for (; (r = proto_next_frame(rbuf + off, rlen - off, &f, &used)) == 1; off += used)
        handle(&f);
    if (r < 0) {
        const uint8_t *b = rbuf + off;
        unsigned len = (unsigned)b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3];
        send_error(0, E_MALFORMED, "frame length %u outside [5, %u]", len, 5 + PROTO_MAX_PAYLOAD);
        fatal("framing error from host (frame length %u), giving up", len);
    }
    memmove(rbuf, rbuf + off, rlen - off);
    rlen -= off;
    if (gone) {
        if (rlen)
            say("host connection ended inside a frame");
        rlen = 0;
        if (!vm)
            finish(0);
        port_up = 0;
        egress_disconnected();
    }
}

static void serve(void) {
    static struct pollfd pfd[2 + 3 * PROTO_MAX_PROCS + EGRESS_MAX_FDS];
    static struct { int slot, role; } who[2 + 3 * PROTO_MAX_PROCS]; /* role 0 stdin, k+1 out[k] */
    for (;;) {
        int n = 2;
        pfd[0] = (struct pollfd){sigfd, POLLIN, 0};
        pfd[1] = (struct pollfd){port_up ? port_in : -1, POLLIN, 0};
        for (int i = 0; i < PROTO_MAX_PROCS; i++) {
            struct proc *p = &procs[i];
            if (p->used && p->in_fd >= 0 && p->inlen) {
                who[n].slot = i, who[n].role = 0;
                pfd[n++] = (struct pollfd){p->in_fd, POLLOUT, 0};
            }
            /* Without credit the fd is left out entirely: POLLHUP is reported even with no
             * events asked, and would spin. */
            for (int k = 0; k < 2; k++)
                if (p->used && p->out[k].fd >= 0 && p->out[k].credit) {
                    who[n].slot = i, who[n].role = k + 1;
                    pfd[n++] = (struct pollfd){p->out[k].fd, POLLIN, 0};
                }
        }
        int procs_end = n;
        n += egress_fill(pfd + n);
        if (poll(pfd, n, -1) < 0 && errno != EINTR)
            fatal("poll: %s", strerror(errno));
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
        for (int i = 2; i < procs_end; i++) {
            struct proc *p = &procs[who[i].slot];
            if (!pfd[i].revents || !p->used)
                continue;
            if (who[i].role == 0 && p->in_fd == pfd[i].fd)
                pump_in(p);
            else if (who[i].role && p->out[who[i].role - 1].fd == pfd[i].fd)
                pump_out(p, who[i].role - 1);
        }
        egress_ready(pfd + procs_end, n - procs_end);
        if (pfd[1].revents)
            read_port();
    }
}

/* ---- VM set-up (PID 1) ------------------------------------------------------------ */

static void mount_at(const char *src, const char *dir, const char *type, unsigned long flags, const char *opts) {
    mkdir(dir, 0755);
    if (mount(src, dir, type, flags, opts) < 0)
        fatal("mount %s on %s: %s", type ? type : src, dir, strerror(errno));
}

/* A tmpfs of the writable layer's size (vmgate.rwsize=, MiB; 0: the tmpfs default). */
static void mount_tmpfs(const char *dir, const char *mode, unsigned long mib) {
    char opts[64];
    snprintf(opts, sizeof opts, mib ? "mode=%s,size=%lum" : "mode=%s", mode, mib);
    mount_at("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, opts);
}

/* Loads the modules a list names (absolute .ko paths, one per line, in order). */
static void load_modules(const char *list) {
    FILE *f = fopen(list, "re");
    char line[512];
    if (!f && errno != ENOENT)
        say("%s: %s", list, strerror(errno));
    while (f && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        int fd = line[0] == '/' ? open(line, O_RDONLY | O_CLOEXEC) : -2;
        if (fd == -1 || (fd >= 0 && syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST))
            say("load module %s: %s", line, strerror(errno)); /* loud; what needs it fails next */
        closefd(&fd);
    }
    if (f)
        fclose(f);
}

static int open_port(const char *name) {
    struct timespec start, now, nap = {0, 20 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    do {
        /* The module is loaded but the device may not be yet: the only polling we do. */
        DIR *d = opendir("/sys/class/virtio-ports");
        int fd = -1;
        for (struct dirent *e; d && fd < 0 && (e = readdir(d));) {
            char path[320], buf[256];
            snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
            slurp(path, buf, sizeof buf);
            buf[strcspn(buf, "\n")] = 0;
            snprintf(path, sizeof path, "/dev/%s", e->d_name);
            if (e->d_name[0] != '.' && strcmp(buf, name) == 0)
                fd = open(path, O_RDWR | O_CLOEXEC);
        }
        if (d)
            closedir(d);
        if (fd >= 0)
            return fd;
        nanosleep(&nap, NULL);
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while (now.tv_sec - start.tv_sec < 10);
    return -1;
}

/* The /dev node of the virtio disk whose serial is `serial` (see docs/protocol.md), waiting
 * as open_port does for a device the module has announced but not yet registered; -1 if none. */
static int find_disk(const char *serial, char *dev, size_t size) {
    struct timespec start, now, nap = {0, 20 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    do {
        DIR *d = opendir("/sys/block");
        int found = 0;
        for (struct dirent *e; d && !found && (e = readdir(d));) {
            char path[320], buf[64];
            snprintf(path, sizeof path, "/sys/block/%s/serial", e->d_name);
            slurp(path, buf, sizeof buf);
            buf[strcspn(buf, "\n")] = 0;
            if (e->d_name[0] != '.' && strcmp(buf, serial) == 0)
                found = snprintf(dev, size, "/dev/%s", e->d_name) > 0;
        }
        if (d)
            closedir(d);
        if (found)
            return 0;
        nanosleep(&nap, NULL);
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while (now.tv_sec - start.tv_sec < 10);
    return -1;
}

static void need_disk(const char *serial, char *dev, size_t size) {
    if (find_disk(serial, dev, size) < 0)
        fatal("no disk with serial '%s' in /sys/block after 10 s", serial);
}

static int in_addr(const char *s, struct sockaddr *sa) {
    struct sockaddr_in *a = (struct sockaddr_in *)sa;
    *a = (struct sockaddr_in){.sin_family = AF_INET};
    return inet_pton(AF_INET, s, &a->sin_addr) == 1 ? 0 : -1;
}

/* vmgate.net=ADDRESS/PREFIX,GATEWAY,DNS (what QEMU's user networking serves: 10.0.2.15/24,
 * 10.0.2.2, 10.0.2.3): the only NIC gets the address and the default route, and
 * /etc/resolv.conf the resolver. Static, because the kernel has no ip= (no CONFIG_IP_PNP)
 * and a DHCP client would cost a round trip on every boot. */
static void setup_net(const char *spec) {
    char addr[32], gw[32], dns[32];
    unsigned prefix;
    struct ifreq ifr = {0};
    struct rtentry rt = {0};
    struct sockaddr resolver;
    if (sscanf(spec, "%31[0-9.]/%u,%31[0-9.],%31[0-9.]", addr, &prefix, gw, dns) != 4 || prefix < 1 || prefix > 30
        || in_addr(addr, &ifr.ifr_addr) < 0 || in_addr(gw, &rt.rt_gateway) < 0 || in_addr(dns, &resolver) < 0)
        return say("vmgate.net=%s: expected ADDRESS/PREFIX,GATEWAY,DNS (IPv4); no network configured", spec);
    struct if_nameindex *ifs = if_nameindex(), *i = ifs;
    while (i && i->if_name && strcmp(i->if_name, "lo") == 0)
        i++;
    if (!i || !i->if_name) {
        say("vmgate.net=%s: no network interface (is the NIC's driver in /etc/vmgate/modules.net?)", spec);
        return if_freenameindex(ifs);
    }
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", i->if_name);
    if_freenameindex(ifs);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    const char *step = "socket";
    if (fd >= 0 && (step = "address", ioctl(fd, SIOCSIFADDR, &ifr)) == 0) {
        uint32_t mask = htonl(~0u << (32 - prefix));
        ((struct sockaddr_in *)&ifr.ifr_netmask)->sin_addr.s_addr = mask;
        ifr.ifr_netmask.sa_family = AF_INET;
        if ((step = "netmask", ioctl(fd, SIOCSIFNETMASK, &ifr)) == 0 && (step = "flags", ioctl(fd, SIOCGIFFLAGS, &ifr)) == 0
            && (ifr.ifr_flags |= IFF_UP, step = "up", ioctl(fd, SIOCSIFFLAGS, &ifr)) == 0) {
            in_addr("0.0.0.0", &rt.rt_dst);
            in_addr("0.0.0.0", &rt.rt_genmask);
            rt.rt_flags = RTF_UP | RTF_GATEWAY;
            step = "default route";
            if (ioctl(fd, SIOCADDRT, &rt) == 0)
                step = NULL;
        }
    }
    if (step)
        say("vmgate.net: %s on %s: %s", step, ifr.ifr_name, strerror(errno));
    closefd(&fd);
    mkdir("/etc", 0755);
    unlink("/etc/resolv.conf"); /* may be a symlink into a resolver daemon's directory */
    FILE *f = fopen("/etc/resolv.conf", "we");
    if (!f || fprintf(f, "nameserver %s\n", dns) < 0 || fclose(f) != 0)
        say("/etc/resolv.conf: %s", strerror(errno));
}

static void setup_vm(void) {
    char cmdline[4096], port[128] = "org.vmgate.agent", root[32] = "", fstype[32] = "ext4", scratch[32] = "";
    char net[128] = "", dev[300];
    unsigned long rwsize = 0, maxprocs = 0;

    mount_at("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    int fd = fcntl(2, F_GETFD) < 0 ? open("/dev/console", O_RDWR | O_NOCTTY) : -1; /* no console node */
    for (int i = 0; fd >= 0 && i < 3; i++)
        if (i != fd)
            dup2(fd, i);
    if (fd > 2)
        closefd(&fd);
    mount_at("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_at("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    load_modules("/etc/vmgate/modules");

    slurp("/proc/cmdline", cmdline, sizeof cmdline);
    for (char *save, *t = strtok_r(cmdline, " \t\n", &save); t; t = strtok_r(NULL, " \t\n", &save)) {
        if (strncmp(t, "vmgate.rwsize=", 14) == 0)
            rwsize = strtoul(t + 14, NULL, 10);
        else if (strncmp(t, "vmgate.maxprocs=", 16) == 0)
            maxprocs = strtoul(t + 16, NULL, 10);
        else if (strncmp(t, "vmgate.port=", 12) == 0)
            snprintf(port, sizeof port, "%s", t + 12);
        else if (strncmp(t, "vmgate.root=", 12) == 0)
            snprintf(root, sizeof root, "%s", t + 12);
        else if (strncmp(t, "vmgate.rootfstype=", 18) == 0)
            snprintf(fstype, sizeof fstype, "%s", t + 18);
        else if (strncmp(t, "vmgate.scratch=", 15) == 0)
            snprintf(scratch, sizeof scratch, "%s", t + 15);
        else if (strncmp(t, "vmgate.home=", 12) == 0)
            snprintf(home_disk, sizeof home_disk, "%s", t + 12);
        else if (strncmp(t, "vmgate.net=", 11) == 0)
            snprintf(net, sizeof net, "%s", t + 11);
    }
    if (*net) /* the NIC's driver only when there is a NIC: it costs boot time */
        load_modules("/etc/vmgate/modules.net");
    if (maxprocs) { /* root ignores RLIMIT_NPROC; threads-max binds all (kernel threads too) */
        FILE *f = fopen("/proc/sys/kernel/threads-max", "we");
        if (!f || fprintf(f, "%lu\n", maxprocs) < 0 || fclose(f) != 0)
            say("vmgate.maxprocs=%lu: threads-max: %s", maxprocs, strerror(errno));
    }

    /* Overlay root: the image's tree read-only below (the initramfs's /rootfs, or the image's
     * shared read-only disk), a size-limited tmpfs or the VM's own scratch disk above. */
    if (*root || *scratch || *home_disk) /* the home disk is only probed now: mounted on HOME */
        load_modules("/etc/vmgate/modules.disk");
    if (*root) {
        need_disk(root, dev, sizeof dev);
        mount_at(dev, "/lower", fstype, MS_RDONLY | MS_NOATIME, NULL);
    }
    if (*scratch) {
        need_disk(scratch, dev, sizeof dev);
        /* made by the host with uninitialised inode tables over zeroes: nothing to zero here */
        mount_at(dev, "/run-rw", "ext4", MS_NOSUID | MS_NODEV | MS_NOATIME, "noinit_itable");
    } else {
        mount_tmpfs("/run-rw", "0755", rwsize);
    }
    mkdir("/run-rw/upper", 0755);
    mkdir("/run-rw/work", 0755);
    mount_at("overlay", "/newroot", "overlay", 0,
             *root ? "lowerdir=/lower,upperdir=/run-rw/upper,workdir=/run-rw/work"
                   : "lowerdir=/rootfs,upperdir=/run-rw/upper,workdir=/run-rw/work");
    mount_at("/dev", "/newroot/dev", NULL, MS_MOVE, NULL);
    mount_at("/proc", "/newroot/proc", NULL, MS_MOVE, NULL);
    mount_at("/sys", "/newroot/sys", NULL, MS_MOVE, NULL);
    mount_at("devpts", "/newroot/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "ptmxmode=0666,mode=0620");
    if (!*scratch) /* with a scratch disk, /tmp is the overlay's: as large as the disk */
        mount_tmpfs("/newroot/tmp", "1777", rwsize);
    mount_tmpfs("/newroot/dev/shm", "1777", rwsize);
    mount_tmpfs("/newroot/run", "0755", rwsize);
    /* vmgate's own tools (sftp-server, busybox) in every image, without writing into it */
    mkdir("/newroot/run/vmgate", 0755);
    mount_at("/rootfs", "/newroot/run/vmgate/tools", NULL, MS_BIND, NULL);
    if (mount(NULL, "/newroot/run/vmgate/tools", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
        fatal("remount /run/vmgate/tools read-only: %s", strerror(errno));
    /* devtmpfs has a ptmx node that finds the devpts beside it; if not, use the devpts one */
    if ((fd = open("/newroot/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0
        && (unlink("/newroot/dev/ptmx"), symlink("pts/ptmx", "/newroot/dev/ptmx") < 0))
        say("/dev/ptmx: %s", strerror(errno));
    closefd(&fd);
    symlink("/proc/self/fd", "/newroot/dev/fd");
    symlink("/proc/self/fd/0", "/newroot/dev/stdin");
    symlink("/proc/self/fd/1", "/newroot/dev/stdout");
    symlink("/proc/self/fd/2", "/newroot/dev/stderr");

    /* switch_root: pivot_root cannot leave the initramfs (rootfs), so move over it. */
    if (chdir("/newroot") < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/") < 0)
        fatal("switch root: %s", strerror(errno));
    if (sethostname("vmgate", 6) < 0)
        say("sethostname: %s", strerror(errno));
    struct ifreq ifr = {.ifr_name = "lo"};
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || ioctl(fd, SIOCGIFFLAGS, &ifr) < 0 || (ifr.ifr_flags |= IFF_UP, ioctl(fd, SIOCSIFFLAGS, &ifr) < 0))
        say("bring up lo: %s", strerror(errno));
    closefd(&fd);
    if (*net)
        setup_net(net);

    if ((port_in = port_out = open_port(port)) < 0)
        fatal("virtio-serial port '%s' not found in /sys/class/virtio-ports after 10 s", port);
    /* virtio_console signals host connect/disconnect with SIGIO (see read_port). */
    if (fcntl(port_in, F_SETOWN, 1) < 0 || fcntl(port_in, F_SETFL, O_ASYNC | O_NONBLOCK) < 0)
        say("port O_ASYNC: %s", strerror(errno));
}

int main(int argc, char **argv) {
    int stdio = argc == 2 && strcmp(argv[1], "--stdio") == 0, fd;
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
    for (int i = 0; i < 3; i++) /* PID 1 gets no TERM/INT/HUP; stdio mode stops on them */
        sigaddset(&mask, vm ? SIGIO : (int[]){SIGTERM, SIGINT, SIGHUP}[i]);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (vm)
        setup_vm();
    else
        prctl(PR_SET_CHILD_SUBREAPER, 1); /* reap orphans as PID 1 would */
    while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd <= 2) { /* keep 0..2 taken: see child */ }
    closefd(&fd);
    if (sigfd < 0)
        fatal("signalfd: %s", strerror(errno));
    send_hello();
    serve();
}
