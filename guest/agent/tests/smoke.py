#!/usr/bin/env python3
"""End-to-end tests of `vmgate-agent --stdio`: the real agent as a host process, driven
frame by frame over its stdin/stdout the way the Java host drives it over the port.

usage: smoke.py path/to/vmgate-agent [test-name ...]"""
import os
import select
import struct
import subprocess
import sys
import tempfile
import time

HELLO, START, STARTED, DATA, EOF, WINDOW, RESIZE, SIGNAL, EXIT, CLOSE, ERROR, CONFIGURE, CONFIGURED = range(1, 14)
NAMES = {v: k for k, v in dict(HELLO=1, START=2, STARTED=3, DATA=4, EOF=5, WINDOW=6, RESIZE=7, SIGNAL=8,
                                  EXIT=9, CLOSE=10, ERROR=11, CONFIGURE=12, CONFIGURED=13).items()}
WIN = 262144
AGENT = None


def s(b):
    b = b.encode() if isinstance(b, str) else b
    return struct.pack(">I", len(b)) + b


def frame(t, i, payload=b""):
    return struct.pack(">IBI", 5 + len(payload), t, i) + payload


def start_payload(argv, env=(), cwd="", pty=None, modes=()):
    p = struct.pack(">BH", 1 if pty else 0, len(argv)) + b"".join(s(a) for a in argv)
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
    assert a.hello[0] == 1 and a.hello[1] > 0 and a.hello[2] == os.uname().release, a.hello
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
    a.send(frame(START, 2, struct.pack(">BH", 0, 0)))  # argc 0
    a.procs[2] = Proc()
    a.send(frame(0x0E, 3))
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
    assert [c for c, _ in a.conn_errors] == [2, 2, 1, 2], a.conn_errors  # type 0x0e, HELLO, START on id 0, CONFIGURED
    a.send(frame(CONFIGURE, 0, struct.pack(">Q", time.time_ns()) + s("") + s(os.urandom(64))))
    while a.step(5)[0] != CONFIGURED:
        pass
    rc, err = a.close()
    assert rc == 0, (rc, err)


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
