#!/usr/bin/env python3
"""End-to-end tests of `vmgate-agent --stdio`: the real agent as a host process, driven
frame by frame over its stdin/stdout the way the Java host drives it over the port.

usage: smoke.py path/to/vmgate-agent [test-name ...]"""
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time

HELLO, START, STARTED, DATA, EOF, WINDOW, RESIZE, SIGNAL, EXIT, CLOSE, ERROR, CONFIGURE, CONFIGURED = range(1, 14)
NAMES = {v: k for k, v in dict(HELLO=1, START=2, STARTED=3, DATA=4, EOF=5, WINDOW=6, RESIZE=7, SIGNAL=8,
                                  EXIT=9, CLOSE=10, ERROR=11, CONFIGURE=12, CONFIGURED=13).items()}
HOME, HOME_STATUS, SYNC, SYNCED = range(0x0E, 0x12)
EGRESS, EGRESS_STATUS, TOPEN, TOPENED, TREFUSED, TDATA, TEOF, TWINDOW, TCLOSE = range(0x20, 0x29)
WIN = 262144
TWIN = 524288  # a tunnel's window
AGENT = None


def s(b):
    b = b.encode() if isinstance(b, str) else b
    return struct.pack(">I", len(b)) + b


def frame(t, i, payload=b""):
    return struct.pack(">IBI", 5 + len(payload), t, i) + payload


def start_payload(argv, env=(), cwd="", pty=None, modes=(), uid=None, gid=None, groups=(), path=""):
    """A version 2 START; credentials default to the agent's own (it runs as this test's user)."""
    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid
    p = struct.pack(">BIIH", 1 if pty else 0, uid, gid, len(groups)) + b"".join(struct.pack(">I", g) for g in groups)
    p += s(path) + struct.pack(">H", len(argv)) + b"".join(s(a) for a in argv)
    p += struct.pack(">H", len(env)) + b"".join(s(e) for e in env) + s(cwd)
    term, rows, cols = pty or ("", 0, 0)
    p += s(term) + struct.pack(">HHH", rows, cols, len(modes))
    return p + b"".join(struct.pack(">BI", op, v) for op, v in modes)


class Proc:
    def __init__(self):
        self.out = {1: bytearray(), 2: bytearray()}
        self.eof = set()
        self.exit = None
        self.pid = None
        self.errors = []
        self.stdin_granted = 0
        self.exit_before_eof = False


class Agent:
    """The host end. Spawns `agent --stdio`, or talks over a connected socket (vm_smoke.py)."""

    def __init__(self, sock=None, hello_timeout=10.0, hello=True):
        if sock is None:
            self.err = tempfile.TemporaryFile()
            self.p = subprocess.Popen([AGENT, "--stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self.err)
            self.rfd, self.wfd = self.p.stdout.fileno(), self.p.stdin.fileno()
        else:
            self.p, self.sock, self.rfd, self.wfd = None, sock, sock.fileno(), sock.fileno()
        self.buf = b""
        self.procs = {}
        self.conn_errors = []
        self.auto_grant = True
        if not hello:  # a reconnection: the agent greeted the previous host
            return
        f = self.recv(hello_timeout)
        assert f, f"no HELLO within {hello_timeout}s"
        t, i, pl = f
        assert t == HELLO and i == 0, (t, i)
        ver, boot = struct.unpack(">HQ", pl[:10])
        (n,) = struct.unpack(">I", pl[10:14])
        self.hello = (ver, boot, pl[14:14 + n].decode())

    def send(self, data):
        """Writes all of data, reading the agent's output meanwhile: like the Java host's
        reader thread, so that neither side blocks on a full pipe."""
        fd = self.wfd
        os.set_blocking(fd, False)
        data = memoryview(data)
        while data:
            r, w, _ = select.select([self.rfd], [fd], [], 10)
            assert r or w, "agent neither reads nor writes"
            if r:
                chunk = os.read(self.rfd, 1 << 20)
                if not chunk:
                    raise EOFError("agent closed its stdout")
                self.buf += chunk
            if w:
                try:
                    data = data[os.write(fd, data):]
                except BlockingIOError:
                    pass

    def recv(self, timeout=10.0):
        """One frame as (type, id, payload), or None after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack(">I", self.buf[:4])
                assert 5 <= n <= 5 + 262144, n
                if len(self.buf) >= 4 + n:
                    t, i = struct.unpack(">BI", self.buf[4:9])
                    pl, self.buf = self.buf[9:4 + n], self.buf[4 + n:]
                    return t, i, pl
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.rfd], [], [], left)[0]:
                return None
            chunk = os.read(self.rfd, 1 << 20)
            if not chunk:
                raise EOFError("agent closed its stdout")
            self.buf += chunk

    def step(self, timeout=10.0):
        """Receives one frame and files it under its process; returns it."""
        f = self.recv(timeout)
        if f is None:
            return None
        t, i, pl = f
        p = self.procs.get(i)
        if t == ERROR:
            code, n = struct.unpack(">II", pl[:8])
            (p.errors if p else self.conn_errors).append((code, pl[8:8 + n].decode()))
        elif t == STARTED:
            p.pid = struct.unpack(">I", pl)[0]
        elif t == DATA:
            assert pl[0] not in p.eof, "DATA after EOF"
            p.out[pl[0]] += pl[1:]
            if self.auto_grant:
                self.send(frame(WINDOW, i, struct.pack(">BI", pl[0], len(pl) - 1)))
        elif t == EOF:
            p.eof.add(pl[0])
        elif t == WINDOW:
            assert pl[0] == 0
            p.stdin_granted += struct.unpack(">I", pl[1:])[0]
        elif t == EXIT:
            code, sig, core = struct.unpack(">iBB", pl[:6])
            (n,) = struct.unpack(">I", pl[6:10])
            p.exit = (code, sig, core, pl[10:10 + n].decode())
        return f

    def start(self, i, argv, **kw):
        self.procs[i] = Proc()
        self.send(frame(START, i, start_payload(argv, **kw)))
        return self.procs[i]

    def wait_exit(self, i, timeout=10.0):
        p = self.procs[i]
        deadline = time.monotonic() + timeout
        while p.exit is None and not (p.errors and p.pid is None):  # or START refused
            assert self.step(deadline - time.monotonic()) is not None, f"no EXIT for id {i} in {timeout}s"
        return p

    def run(self, argv, i=1, **kw):
        self.start(i, argv, **kw)
        return self.wait_exit(i)

    def conn_error(self, timeout=5.0):
        while not self.conn_errors:
            assert self.step(timeout) is not None, "no ERROR"
        return self.conn_errors.pop(0)

    def close(self):
        os.close(self.p.stdin.fileno())
        self.p.stdin = None
        rc = self.p.wait(10)
        self.p.stdout.close()
        self.err.seek(0)
        return rc, self.err.read().decode(errors="replace")


def test_hello():
    a = Agent()
    assert a.hello[0] == 3 and a.hello[1] > 0 and a.hello[2] == os.uname().release, a.hello
    assert a.close()[0] == 0


def test_echo_exit_code():
    a = Agent()
    p = a.run(["sh", "-c", "echo hi; exit 3"])
    assert p.pid and bytes(p.out[1]) == b"hi\n" and p.eof == {1, 2} and p.exit == (3, 0, 0, ""), vars(p)
    p = a.run(["sh", "-c", "echo out; echo err >&2"], i=2)
    assert (bytes(p.out[1]), bytes(p.out[2]), p.exit[0]) == (b"out\n", b"err\n", 0)
    assert a.close()[0] == 0


def test_exit_waits_for_eof():
    a = Agent()
    a.start(1, ["sh", "-c", "(sleep 0.3; echo late) & exit 0"])
    p = a.wait_exit(1)
    assert bytes(p.out[1]) == b"late\n" and p.eof == {1, 2} and p.exit[0] == 0, vars(p)
    a.close()


def test_signals_and_exit_status():
    a = Agent()
    p = a.run(["sh", "-c", "kill -TERM $$"])
    assert p.exit == (-1, 15, 0, "TERM"), p.exit
    a.start(2, ["sleep", "30"])
    while a.procs[2].pid is None:
        a.step()
    a.send(frame(SIGNAL, 2, s("INT")))
    assert a.wait_exit(2).exit == (-1, 2, 0, "INT")
    a.start(3, ["sleep", "30"])
    a.send(frame(SIGNAL, 3, s("NOPE")))
    a.send(frame(SIGNAL, 3, s("KILL")))
    p = a.wait_exit(3)
    assert p.errors and p.errors[0][0] == 1 and p.exit[3] == "KILL", vars(p)
    a.close()


def test_exec_failures():
    a = Agent()
    p = a.run(["no-such-command-xyz"])
    assert p.exit[0] == 127 and b"vmgate-agent: no-such-command-xyz: No such file or directory" in p.out[2], vars(p)
    p = a.run(["/etc/passwd"], i=2)
    assert p.exit[0] == 126 and b"Permission denied" in p.out[2], vars(p)
    p = a.run(["pwd"], i=3, cwd="/no/such/dir")
    assert p.exit[0] == 126 and b"/no/such/dir" in p.out[2], vars(p)
    a.close()


def test_env_and_cwd():
    a = Agent()
    p = a.run(["sh", "-c", 'echo "$FOO|$HOME|$USER|$LOGNAME|$SHELL|$PATH|$TERM"; pwd'],
              env=["FOO=bar baz", "HOME=/tmp", "TERM=ignored"], cwd="/tmp")
    line, cwd = bytes(p.out[1]).decode().splitlines()
    assert line == "bar baz|/tmp|root|root|/bin/sh|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|ignored", line
    assert cwd == "/tmp"
    p = a.run(["pwd"], i=2)
    assert bytes(p.out[1]).strip() in (b"/root", b"/"), p.out
    p = a.run(["sh", "-c", "env | wc -l"], i=3)
    assert int(p.out[1]) == 5 + 1, p.out  # base environment plus PWD set by sh
    a.close()


def test_path_apart_from_argv0():
    a = Agent()
    p = a.run(["-sh", "-c", 'echo "$0"'], path="/bin/sh")  # a login shell's argv[0]
    assert bytes(p.out[1]) == b"-sh\n" and p.exit[0] == 0, vars(p)
    p = a.run(["whatever", "-c", 'echo "$0"'], i=2, path="sh")  # looked up in PATH
    assert bytes(p.out[1]) == b"whatever\n" and p.exit[0] == 0, vars(p)
    p = a.run(["-sh"], i=3, path="/no/such/shell")
    assert p.exit[0] == 127 and b"/no/such/shell: No such file or directory" in p.out[2], vars(p)
    a.close()


def test_credentials():
    a = Agent()
    if os.geteuid() != 0:  # not root: only the agent's own credentials work
        p = a.run(["id"], uid=os.getuid() + 1)
        assert p.exit[0] == 126 and b"cannot run as uid" in p.out[2], vars(p)
        a.close()
        return
    p = a.run(["sh", "-c", 'id -u; id -g; id -G; echo "$HOME|$USER|$PATH"; pwd'], uid=1234, gid=2345,
              groups=(5, 100, 2345))
    out = bytes(p.out[1]).decode().splitlines()
    assert p.exit[0] == 0 and out[:3] == ["1234", "2345", "2345 5 100"], (out, vars(p))
    assert out[3] == "||/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", out  # root's names only for root
    assert out[4] == "/", out  # /root cannot be entered by uid 1234
    # cwd is entered as the user, after the switch
    d = tempfile.mkdtemp()
    os.chmod(d, 0o700)
    p = a.run(["pwd"], i=2, uid=1234, gid=1234, cwd=d)
    assert p.exit[0] == 126 and b"Permission denied" in p.out[2], vars(p)
    os.chown(d, 1234, 1234)
    p = a.run(["pwd"], i=3, uid=1234, gid=1234, cwd=d)
    assert p.exit[0] == 0 and bytes(p.out[1]).decode().strip() == d, vars(p)
    os.rmdir(d)
    # a PTY is handed to the user, as sshd does
    p = a.run(["sh", "-c", 'stat -c %u "$(tty)"; id -u'], i=4, uid=1234, gid=1234, pty=("vt100", 0, 0))
    assert bytes(p.out[1]).split() == [b"1234", b"1234"], vars(p)
    # refused on the wire: (uid_t)-1 means "unchanged" to setuid
    a.procs[5] = Proc()
    a.send(frame(START, 5, start_payload(["id"], uid=0xffffffff)))
    while not a.procs[5].errors:
        a.step()
    assert a.procs[5].errors[0][0] == 1 and a.procs[5].pid is None, vars(a.procs[5])
    a.close()


def test_stdin():
    a = Agent()
    a.start(1, ["cat"])
    a.send(frame(DATA, 1, b"\0hello ") + frame(DATA, 1, b"\0") + frame(DATA, 1, b"\0world\n") + frame(EOF, 1, b"\0"))
    p = a.wait_exit(1)
    assert bytes(p.out[1]) == b"hello world\n" and p.exit[0] == 0 and p.stdin_granted == 12, vars(p)
    a.close()


def test_bulk_both_ways():
    """2 MiB in through cat and back out, sending only with credit and granting as we read."""
    a = Agent()
    data = os.urandom(2 << 20)
    p = a.start(1, ["cat"])
    sent = 0
    credit = WIN
    while p.exit is None:
        while credit and sent < len(data):
            n = min(credit, 32768, len(data) - sent)
            a.send(frame(DATA, 1, b"\0" + data[sent:sent + n]))
            sent += n
            credit -= n
            if sent == len(data):
                a.send(frame(EOF, 1, b"\0"))
        before = p.stdin_granted
        assert a.step() is not None
        credit += p.stdin_granted - before
    assert bytes(p.out[1]) == data and p.exit[0] == 0 and p.stdin_granted == len(data)
    a.close()


def test_output_flow_control():
    """Without grants the agent sends exactly one window, then nothing until WINDOW."""
    a = Agent()
    a.auto_grant = False
    p = a.start(1, ["head", "-c", "1000000", "/dev/zero"])
    while len(p.out[1]) < WIN:
        assert a.step() is not None
    assert a.step(0.5) is None and len(p.out[1]) == WIN and p.exit is None
    a.send(frame(WINDOW, 1, struct.pack(">BI", 1, 1000)))
    while len(p.out[1]) < WIN + 1000:
        assert a.step() is not None
    assert a.step(0.3) is None and len(p.out[1]) == WIN + 1000
    a.auto_grant = True
    a.send(frame(WINDOW, 1, struct.pack(">BI", 1, WIN)))
    p = a.wait_exit(1)
    assert len(p.out[1]) == 1000000 and p.exit[0] == 0
    # A grant beyond the window is refused (and clamped), no crash.
    a.start(2, ["sleep", "0.2"])
    a.send(frame(WINDOW, 2, struct.pack(">BI", 1, 10)))
    p = a.wait_exit(2)
    assert p.errors and p.errors[0][0] == 1, vars(p)
    a.close()


def test_stdin_window_enforced():
    a = Agent()
    p = a.start(1, ["sleep", "1"])  # never reads stdin: the pipe fills, the agent buffers
    # The agent writes into the pipe directly and gives that credit back at once, so only more than
    # the pipe (64-256 KiB) plus the window (256 KiB) is sure to overrun: 800 KB without waiting.
    a.send(b"".join(frame(DATA, 1, b"\0" + bytes([c]) * 200000) for c in b"wxyz"))
    p = a.wait_exit(1)
    assert p.errors and all(e[0] == 1 and "beyond the window" in e[1] for e in p.errors), vars(p)
    a.close()


def test_pty():
    a = Agent()
    p = a.run(["sh", "-c", "tty; stty size; echo $TERM; test -t 0 && test -t 2 && echo tty-all"],
              pty=("xterm-256color", 33, 101))
    out = bytes(p.out[1]).decode()
    assert out.startswith("/dev/pts/") and "33 101\r\n" in out and "xterm-256color\r\n" in out and "tty-all" in out, out
    assert p.eof == {1} and p.exit == (0, 0, 0, ""), vars(p)
    # echo on: the typed line comes back; with ECHO (53) off it does not
    for i, modes, echoed in ((2, (), True), (3, ((53, 0),), False)):
        a.start(i, ["sh", "-c", "read x; echo got:$x"], pty=("vt100", 0, 0), modes=modes)
        a.send(frame(DATA, i, b"\0abc\n"))
        out = bytes(a.wait_exit(i).out[1])
        assert out.endswith(b"got:abc\r\n") and (b"abc\r\ngot" in out) == echoed, out
    # resize, then default size
    a.start(4, ["sh", "-c", "stty size; read x; stty size"], pty=("vt100", 0, 0))
    while b"\n" not in a.procs[4].out[1]:
        a.step()
    a.send(frame(RESIZE, 4, struct.pack(">HH", 10, 20)) + frame(DATA, 4, b"\0\n"))
    out = bytes(a.wait_exit(4).out[1])
    assert out.startswith(b"24 80\r\n") and out.endswith(b"10 20\r\n"), out
    # ^C through the line discipline kills the foreground process
    a.start(5, ["sleep", "30"], pty=("vt100", 0, 0), modes=((1, 3), (50, 1)))
    while a.procs[5].pid is None:
        a.step()
    time.sleep(0.2)
    a.send(frame(DATA, 5, b"\0\x03"))
    assert a.wait_exit(5).exit[3] == "INT"
    a.close()


def test_pty_drain_and_background():
    a = Agent()
    t = time.monotonic()
    p = a.run(["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x; sleep 5 & exit 5"], pty=("vt100", 0, 0))
    assert bytes(p.out[1]) == b"x" * 300000 and p.exit[0] == 5, (len(p.out[1]), p.exit)
    assert time.monotonic() - t < 4, "EXIT waited for a background job holding the PTY"
    t = time.monotonic()
    p = a.run(["sh", "-c", "yes & sleep 0.3; exit 6"], i=2, pty=("vt100", 0, 0))
    assert p.exit[0] == 6 and time.monotonic() - t < 4, "EXIT waited for a background writer"
    a.close()


def test_close():
    a = Agent()
    a.start(1, ["sh", "-c", "sleep 30 & echo $!; sleep 30"])
    while b"\n" not in a.procs[1].out[1]:
        a.step()
    bg = int(a.procs[1].out[1])
    a.send(frame(CLOSE, 1))
    p = a.wait_exit(1)
    assert p.exit[3] == "KILL" and p.eof == {1, 2}, vars(p)
    time.sleep(0.2)
    assert not os.path.exists(f"/proc/{bg}"), "background job survived CLOSE"
    # exited, but a background job holds stdout: CLOSE kills it and EXIT follows at once
    a.start(2, ["sh", "-c", "sleep 30 & echo $!; exit 4"])
    while b"\n" not in a.procs[2].out[1]:
        a.step()
    bg = int(a.procs[2].out[1])
    assert a.step(0.5) is None
    a.send(frame(CLOSE, 2))
    p = a.wait_exit(2, timeout=2)
    assert p.exit[0] == 4 and p.eof == {1, 2}, vars(p)
    time.sleep(0.2)
    assert not os.path.exists(f"/proc/{bg}"), "background job survived CLOSE"
    a.close()


def test_errors():
    a = Agent()
    a.procs[99] = Proc()
    a.send(frame(DATA, 99, b"\0x"))
    assert a.step()[0] == ERROR and a.procs[99].errors == [(3, "DATA: no process with id 99")]
    a.start(1, ["sleep", "1"])
    a.send(frame(START, 1, start_payload(["true"])))
    a.send(frame(START, 2, struct.pack(">BIIH", 0, 0, 0, 0) + s("") + struct.pack(">H", 0)))  # argc 0
    a.procs[2] = Proc()
    a.send(frame(0x12, 3))
    a.send(frame(HELLO, 0, struct.pack(">HQ", 1, 0) + s("x")))
    a.send(frame(EXIT, 1, struct.pack(">iBB", 0, 0, 0) + s("")))
    a.send(frame(START, 0, start_payload(["true"])))
    a.send(frame(DATA, 1, b"\1x"))
    a.send(frame(WINDOW, 1, struct.pack(">BI", 0, 5)))
    a.send(frame(CONFIGURED, 0))
    p = a.wait_exit(1)
    codes = [c for c, _ in p.errors]
    assert codes == [4, 2, 1, 1], p.errors  # in use; EXIT from host; DATA fd 1; WINDOW fd 0
    assert [c for c, _ in a.procs[2].errors] == [1]
    assert [c for c, _ in a.conn_errors] == [2, 2, 1, 2], a.conn_errors  # type 0x12, HELLO, START on id 0, CONFIGURED
    a.send(frame(CONFIGURE, 0, struct.pack(">Q", time.time_ns()) + s("") + s(os.urandom(64))))
    while a.step(5)[0] != CONFIGURED:
        pass
    rc, err = a.close()
    assert rc == 0, (rc, err)


def test_home_and_sync_without_a_home_disk():
    # --stdio mode has no disks: HOME is answered with the reason, nothing is mounted; SYNC works.
    a = Agent()
    a.send(frame(HOME, 0, s("/home/alice") + struct.pack(">II", 1000, 1000)))
    a.send(frame(SYNC, 0, bytes([1])))
    got = []
    while len(got) < 2:
        t, i, pl = a.step(5)
        if t in (HOME_STATUS, SYNCED):
            (n,) = struct.unpack(">I", pl[:4])
            got.append((t, pl[4:4 + n].decode()))
    assert got[0][0] == HOME_STATUS and "no home disk" in got[0][1], got
    assert got[1] == (SYNCED, ""), got
    a.send(frame(HOME, 0, s("/root") + struct.pack(">II", 0xFFFFFFFF, 0)))  # refused by the decoder
    while not a.conn_errors:
        a.step(5)
    assert a.conn_errors[0][0] == 1, a.conn_errors
    assert a.close()[0] == 0


def test_many_and_limit():
    a = Agent()
    for i in range(1, 41):
        a.start(i, ["sh", "-c", f"echo {i}; exit {i % 7}"])
    for i in range(1, 41):
        p = a.wait_exit(i)
        assert bytes(p.out[1]) == f"{i}\n".encode() and p.exit[0] == i % 7
    for i in range(100, 356):
        a.start(i, ["sleep", "30"])
    a.start(999, ["true"])
    while not a.procs[999].errors:
        a.step()
    assert a.procs[999].errors[0][0] == 5 and a.procs[999].exit is None
    for i in range(100, 356):
        a.send(frame(CLOSE, i))
    for i in range(100, 356):
        assert a.wait_exit(i).exit[3] == "KILL"
    a.run(["true"], i=999)  # the ids are free again
    a.close()


def test_orphans_reaped_and_eof_kills():
    a = Agent()
    p = a.run(["sh", "-c", "sleep 0.3 </dev/null >/dev/null 2>&1 & echo $!"])
    orphan = int(p.out[1])
    time.sleep(0.8)
    assert not os.path.exists(f"/proc/{orphan}"), "orphan not reaped"
    a.start(2, ["sh", "-c", "echo $$; exec sleep 30"])
    while b"\n" not in a.procs[2].out[1]:
        a.step()
    pid = int(a.procs[2].out[1])
    rc, err = a.close()
    assert rc == 0 and not os.path.exists(f"/proc/{pid}"), (rc, err)


def test_framing_error():
    a = Agent()
    a.send(struct.pack(">I", 3))
    assert a.conn_error() == (1, "frame length 3 outside [5, 262149]")
    assert a.p.wait(5) == 1
    a = Agent()
    a.send(struct.pack(">IBI", 6 + 262144, DATA, 1))
    assert a.conn_error()[0] == 1 and a.p.wait(5) == 1


# ---- egress: the proxy on loopback and its tunnels (in --stdio mode it listens on the host's) ----

def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def egress_on(a, port=None):
    port = port or free_port()
    a.send(frame(EGRESS, 0, struct.pack(">H", port)))
    t, i, pl = expect(a, EGRESS_STATUS)
    assert pl == struct.pack(">H", port) + s(""), pl
    return port


def expect(a, want, timeout=5.0):
    f = a.recv(timeout)
    assert f is not None, f"no frame of type {want:#x} within {timeout}s"
    assert f[0] == want, f"expected type {want:#x}, got {f[0]:#x} on id {f[1]}: {f[2][:200]!r}"
    return f


def topen(a, tls=0):
    """The next TOPEN: (tunnel id, host, port); its TLS flag must be tls."""
    _, i, pl = expect(a, TOPEN)
    (n,) = struct.unpack(">I", pl[:4])
    port, flags = struct.unpack(">HB", pl[4 + n:])
    assert flags == tls, flags
    return i, pl[4:4 + n].decode(), port


def client(port, request=b""):
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    c.sendall(request)
    return c


def read_until(c, marker):
    got = b""
    while marker not in got:
        chunk = c.recv(65536)
        assert chunk, f"EOF before {marker!r}: {got!r}"
        got += chunk
    return got


def read_all(c):
    got = b""
    while True:
        chunk = c.recv(65536)
        if not chunk:
            return got
        got += chunk


def tunnel_data(a, tid, want):
    """TDATA frames for tid until want bytes have come (and nothing else on the way)."""
    got = b""
    while len(got) < want:
        _, i, pl = expect(a, TDATA)
        assert i == tid, i
        got += pl
    return got


def test_egress_connect_tunnel():
    a = Agent()
    port = egress_on(a)
    c = client(port, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    tid, host, p = topen(a)
    assert tid != 0 and (host, p) == ("example.com", 443), (tid, host, p)
    a.send(frame(TOPENED, tid))
    assert read_until(c, b"\r\n\r\n") == b"HTTP/1.1 200 Connection established\r\n\r\n"
    c.sendall(b"\x16\x03\x01client hello")
    assert tunnel_data(a, tid, 15) == b"\x16\x03\x01client hello"  # carried untouched
    a.send(frame(TDATA, tid, b"server hello"))
    assert read_until(c, b"hello") == b"server hello"
    assert expect(a, TWINDOW)[1:] == (tid, struct.pack(">I", 12))
    c.shutdown(socket.SHUT_WR)
    assert expect(a, TEOF)[1] == tid
    a.send(frame(TEOF, tid))
    assert read_all(c) == b""
    assert expect(a, TCLOSE)[1] == tid  # both halves done: the guest lets go
    a.send(frame(TCLOSE, tid))
    assert a.recv(0.3) is None  # and says nothing more about it
    c.close()
    assert a.close()[0] == 0


def test_egress_plain_request_rewritten():
    a = Agent()
    port = egress_on(a)
    c = client(port, b"GET http://h.example:8080/x?y HTTP/1.1\r\nHost: h.example:8080\r\nProxy-Connection: keep-alive\r\n"
                     b"User-Agent: t\r\n\r\n")
    tid, host, p = topen(a)
    assert (host, p) == ("h.example", 8080)
    a.send(frame(TOPENED, tid))
    head = b"GET /x?y HTTP/1.1\r\nHost: h.example:8080\r\nUser-Agent: t\r\nConnection: close\r\n\r\n"
    assert tunnel_data(a, tid, len(head)) == head
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    a.send(frame(TDATA, tid, response) + frame(TEOF, tid))
    assert read_all(c) == response
    c.close()
    seen = {f[0] for f in iter(lambda: a.recv(1), None)}
    assert TEOF in seen and TCLOSE in seen, seen
    a.send(frame(TCLOSE, tid))
    # https:// in a plain request (busybox wget's way): the same, with the host asked to do TLS
    c = client(port, b"GET https://h.example/x HTTP/1.1\r\nHost: h.example\r\n\r\n")
    tid, host, p = topen(a, tls=1)
    assert (host, p) == ("h.example", 443)
    a.send(frame(TREFUSED, tid, struct.pack(">B", 3) + s("TLS with h.example:443 failed")))
    assert read_all(c).startswith(b"HTTP/1.1 502 Bad Gateway")
    assert a.close()[0] == 0


def test_egress_refusals_are_answered():
    a = Agent()
    port = egress_on(a)
    for reason, status in [(1, b"403 Forbidden"), (2, b"503 Service Unavailable"), (3, b"502 Bad Gateway")]:
        c = client(port, b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
        tid, _, _ = topen(a)
        a.send(frame(TREFUSED, tid, struct.pack(">B", reason) + s("example.com:443 is not allowed\r\nX-Injected: 1")))
        answer = read_all(c)
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 " + status) and b"X-Injected" not in head, answer
        assert body == b"vmgate egress: example.com:443 is not allowed  X-Injected: 1\n", body
        assert f"Content-Length: {len(body)}".encode() in head
        c.close()
    assert a.recv(0.3) is None  # a refused id needs no TCLOSE
    assert a.close()[0] == 0


def test_egress_bad_requests_never_reach_the_host():
    a = Agent()
    port = egress_on(a)
    for request, why in [(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n", b"absolute URL"),
                         (b"GET ftp://x/ HTTP/1.1\r\n\r\n", b"https://"),
                         (b"CONNECT x HTTP/1.1\r\n\r\n", b"host:port"),
                         (b"\x16\x03\x01" + os.urandom(100) + b"\n\r\n", b""),
                         (b"GET http://x/ HTTP/1.1\r\nX: " + b"a" * 9000, b"longer than 8192")]:
        c = client(port, request)
        answer = read_all(c)
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n") and why in answer, answer
        c.close()
    c = client(port, b"GET http://x/ HTT")  # gone before the head is complete
    c.close()
    assert a.recv(0.5) is None, "the host heard of a request it should not have"
    assert a.close()[0] == 0


def test_egress_credit_both_ways():
    a = Agent()
    port = egress_on(a)
    c = client(port, b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
    tid, _, _ = topen(a)
    a.send(frame(TOPENED, tid))
    read_until(c, b"\r\n\r\n")
    # guest -> host: never more than the window without a grant
    import threading
    sender = threading.Thread(target=lambda: c.sendall(b"x" * (3 * TWIN)), daemon=True)
    sender.start()
    got = 0
    while True:
        f = a.recv(0.5)
        if f is None:
            break
        assert f[0] == TDATA and f[1] == tid, f[:2]
        got += len(f[2])
    assert got == TWIN, got
    a.send(frame(TWINDOW, tid, struct.pack(">I", TWIN)))
    assert len(tunnel_data(a, tid, TWIN)) == TWIN
    # host -> guest: the client reads nothing, so once the guest's credit is used up and its
    # socket buffers are full, one byte more is an overrun: refused and the tunnel aborted
    credit = TWIN
    while True:
        while credit:
            n = min(credit, 65536)
            a.send(frame(TDATA, tid, b"y" * n))
            credit -= n
        f = a.recv(0.5)
        while f is not None and f[0] == TDATA:  # the client's rest, still coming
            f = a.recv(0.5)
        if f is None:
            break
        assert f[0] == TWINDOW and f[1] == tid, f[:2]
        credit += struct.unpack(">I", f[2])[0]
    a.send(frame(TDATA, tid, b"!"))
    f = expect(a, ERROR)
    assert f[1] == tid and struct.unpack(">I", f[2][:4])[0] == 1 and b"beyond the window" in f[2], f
    while f[0] != TCLOSE:
        f = a.recv(2)
        assert f is not None, "no TCLOSE after the overrun"
    a.send(frame(TCLOSE, tid))
    c.close()
    assert a.close()[0] == 0


def test_egress_host_abort_resets_the_client():
    a = Agent()
    port = egress_on(a)
    c = client(port, b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
    tid, _, _ = topen(a)
    a.send(frame(TOPENED, tid) + frame(TDATA, tid, b"partial") + frame(TCLOSE, tid))
    f = a.recv(2)  # perhaps a TWINDOW for "partial" first
    while f is not None and f[0] != TCLOSE:
        f = a.recv(2)
    assert f is not None and f[1] == tid, "no TCLOSE answer"
    got, reset = b"", False
    try:
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            got += chunk
    except ConnectionResetError:
        reset = True
    assert reset, f"the client saw a clean end after an abort: {got!r}"
    c.close()
    assert a.close()[0] == 0


def test_egress_errors_and_limits():
    a = Agent()
    port = egress_on(a)
    a.send(frame(TDATA, 77, b"x") + frame(TOPENED, 78) + frame(TWINDOW, 79, struct.pack(">I", 0)))
    errors = [expect(a, ERROR)[1:] for _ in range(3)]
    assert [(i, struct.unpack(">I", pl[:4])[0]) for i, pl in errors] == [(77, 3), (78, 3), (79, 1)], errors
    assert b"no tunnel with id 77" in errors[0][1]
    # the same port again is fine; a port someone else holds is reported, not fatal
    egress_on(a, port)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        a.send(frame(EGRESS, 0, struct.pack(">H", taken.getsockname()[1])))
        _, _, pl = expect(a, EGRESS_STATUS)
        assert b"cannot listen on 127.0.0.1" in pl and b"in use" in pl, pl
    port = egress_on(a)
    # 64 tunnels at once; the 65th client is answered 503 at once
    clients = [client(port, b"CONNECT example.com:443 HTTP/1.1\r\n\r\n") for _ in range(64)]
    ids = [topen(a)[0] for _ in clients]
    assert len(set(ids)) == 64
    extra = client(port, b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
    answer = read_all(extra)
    assert answer.startswith(b"HTTP/1.1 503 ") and b"too many connections" in answer, answer
    a.send(frame(TOPENED, ids[0]) + frame(TOPENED, ids[0]))  # the second is an error
    f = a.recv(2)
    while f[0] != ERROR:
        f = a.recv(2)
    assert f[1] == ids[0] and b"not waiting to open" in f[2], f
    for i in ids[1:]:
        a.send(frame(TREFUSED, i, struct.pack(">B", 1) + s("no")))
    for c in clients[1:]:
        assert read_all(c).startswith(b"HTTP/1.1 403")  # left open: their slots are reclaimed when needed
    c = client(port, b"CONNECT example.org:443 HTTP/1.1\r\n\r\n")  # slots are free again
    assert topen(a)[1] == "example.org"
    # stopping the proxy: nobody listens any more
    a.send(frame(EGRESS, 0, struct.pack(">H", 0)))
    f = a.recv(2)
    while f[0] != EGRESS_STATUS:
        f = a.recv(2)
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        raise AssertionError("the proxy still listens after EGRESS 0")
    except ConnectionRefusedError:
        pass
    assert a.close()[0] == 0


def main():
    global AGENT
    AGENT = os.path.abspath(sys.argv[1])
    names = sys.argv[2:] or [n for n in globals() if n.startswith("test_")]
    failed = 0
    for n in names:
        t = time.monotonic()
        try:
            globals()[n]()
            print(f"  ok   {n} ({time.monotonic() - t:.1f}s)")
        except Exception as e:  # noqa: BLE001 - report every failure, run the rest
            failed += 1
            print(f"  FAIL {n}: {type(e).__name__}: {e}")
    print(f"smoke.py: {len(names) - failed}/{len(names)} passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
