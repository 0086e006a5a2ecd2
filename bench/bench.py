#!/usr/bin/env python3
"""vmgate benchmarks.

Measures, in one run on one machine, each vmgate path beside the floor it is judged
against, and writes docs/benchmarks.md:

  raw QEMU boot to the agent's HELLO        (same QEMU command line, no Java)
  raw QEMU restore to the agent's CONFIGURED
  raw virtio-serial throughput, both ways   (dd through a second port, no agent protocol)
  OpenSSH's own `ssh localhost true` against a local sshd
  vmgate run -- true          cold (--no-snapshot) and restored
  ssh -p PORT host true       cold, restored, and from a warm pool
  ssh host 'dd ...'           stdout and stdin throughput
  idle sessions               host memory (QEMU's private memory + the JVM's growth) and CPU per VM
  many sessions               100 idle shells at once (with and without a pool): time until all
                              answered, host memory, every one answering again after a hold

Usage: bench/bench.py [--runs N] [--cold-runs N] [--quick] [--rows run,ssh,bulk,idle,many]
                      [--sessions N] [--hold SEC] [--out docs/benchmarks.md]
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

HOME = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VMGATE = os.path.join(HOME, "vmgate")
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            "-o", "LogLevel=ERROR"]
HELLO, START, DATA, EOF, WINDOW, EXIT, ERROR, CONFIGURE, CONFIGURED = 1, 2, 4, 5, 6, 9, 11, 12, 13


def qemu_args(rundir, template=False):
    """(state file, memory file, argv): the template's files (None for a cold boot) and the command line."""
    cmd = [VMGATE, "image", "qemu-args", rundir] + (["--template"] if template else [])
    lines = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()
    return (lines[0], lines[1], lines[2:]) if template else (None, None, lines)


def template_stream(state):
    """QEMU's device state from a template state file (docs/templates.md: a header, then the stream)."""
    data = open(state, "rb").read()
    magic, memory, blank, stream = data.split(b"\n", 3)
    if magic != b"vmgate-template 3" or not memory.startswith(b"memory ") or blank:
        raise RuntimeError(f"{state}: not a vmgate template")
    return stream


def frame(ftype, fid, payload=b""):
    return struct.pack(">IBI", 5 + len(payload), ftype, fid) + payload


def read_frame(sock):
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("agent socket closed")
            buf += chunk
        return buf
    length, ftype, fid = struct.unpack(">IBI", exact(9))
    return ftype, fid, exact(length - 5)


def s(b):
    return struct.pack(">I", len(b)) + b


class RawVm:
    """QEMU started exactly as vmgate starts it, with the host ends of its sockets held here."""

    def __init__(self, extra_ports=(), template=False):
        self.dir = tempfile.mkdtemp(prefix="vmgate-bench-")
        os.chmod(self.dir, 0o700)
        state, memory, argv = qemu_args(self.dir, template)
        self.listeners = {}
        for name in ["console", "agent", "qmp"] + list(extra_ports):
            srv = socket.socket(socket.AF_UNIX)
            srv.bind(os.path.join(self.dir, name + ".sock"))
            srv.listen(1)
            self.listeners[name] = srv
        for name in extra_ports:
            argv += ["-chardev", f"socket,id={name},path={self.dir}/{name}.sock,server=off",
                     "-device", f"virtserialport,chardev={name},name=org.vmgate.{name}"]
        # A restore maps the template's memory file through QEMU's stdin; its state goes over QMP.
        stdin = open(memory, "rb") if template else subprocess.DEVNULL
        stream = template_stream(state) if template else None
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.socks = {n: l.accept()[0] for n, l in self.listeners.items()}
        threading.Thread(target=self._drain, args=(self.socks["console"],), daemon=True).start()
        self.agent = self.socks["agent"]
        qmp = self.socks["qmp"].makefile("rw")
        qmp.readline()  # greeting
        if template:
            self.agent.sendall(frame(CONFIGURE, 0, configure_payload()))  # read by QEMU once the guest runs
            incoming = os.path.join(self.dir, "state.sock")
            for cmd, args in [("qmp_capabilities", {}),
                              ("migrate-set-capabilities", {"capabilities": [{"capability": "x-ignore-shared", "state": True}]}),
                              ("migrate-incoming", {"uri": "unix:" + incoming})]:
                qmp.write(json.dumps({"execute": cmd, "arguments": args}) + "\n")
                qmp.flush()
                answer = json.loads(qmp.readline())
                while "return" not in answer and "error" not in answer:
                    answer = json.loads(qmp.readline())
                if "error" in answer:
                    raise RuntimeError(f"QMP {cmd}: {answer}")
            with socket.socket(socket.AF_UNIX) as st:
                st.connect(incoming)
                st.sendall(stream)
        threading.Thread(target=self._drain, args=(self.socks["qmp"],), daemon=True).start()

    @staticmethod
    def _drain(sock):
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass

    def await_type(self, wanted):
        while True:
            ftype, fid, payload = read_frame(self.agent)
            if ftype == wanted:
                return payload

    def close(self):
        self.proc.kill()
        self.proc.wait()
        for sock in list(self.socks.values()) + list(self.listeners.values()):
            sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def raw_boot():
    vm = RawVm()
    try:
        vm.await_type(HELLO)
        return time.monotonic() - vm.t0
    finally:
        vm.close()


def configure_payload():
    return struct.pack(">Q", time.time_ns()) + s(b"bench") + s(os.urandom(64))


def raw_restore():
    vm = RawVm(template=True)  # sends CONFIGURE
    try:
        vm.await_type(CONFIGURED)
        return time.monotonic() - vm.t0
    finally:
        vm.close()


def raw_throughput(total=200 * 1024 * 1024, piped=False):
    """Bytes/s that `dd` in the guest pushes through a virtio-serial port to a host socket
    (piped: through a pipe into a second dd first, as a process's output reaches the agent)."""
    vm = RawVm(extra_ports=("raw",))
    try:
        vm.await_type(HELLO)
        script = ("for n in /sys/class/virtio-ports/*/name; do [ \"$(cat $n)\" = org.vmgate.raw ] && "
                  "d=/dev/$(basename $(dirname $n)); done; "
                  + ("dd if=/dev/zero bs=64k count=%d 2>/dev/null | dd of=$d bs=64k 2>/dev/null" if piped
                     else "dd if=/dev/zero of=$d bs=64k count=%d 2>/dev/null") % (total // 65536))
        argv = [b"/bin/sh", b"-c", script.encode()]
        start = struct.pack(">BH", 0, len(argv)) + b"".join(s(a) for a in argv) + struct.pack(">H", 0) + s(b"") + s(b"") \
            + struct.pack(">HHH", 0, 0, 0)
        raw = vm.socks["raw"]
        vm.agent.sendall(frame(START, 1, start))
        got, first = 0, None
        while got < total:
            chunk = raw.recv(1 << 20)
            if not chunk:
                break
            if first is None:
                first = time.monotonic()
            got += len(chunk)
        return got / (time.monotonic() - first)
    finally:
        vm.close()


def raw_throughput_in(total=200 * 1024 * 1024):
    """Bytes/s the host pushes into a second virtio-serial port that `dd` in the guest reads
    (the stdin floor): from the first byte sent to the guest process's exit."""
    vm = RawVm(extra_ports=("raw",))
    try:
        vm.await_type(HELLO)
        script = ("for n in /sys/class/virtio-ports/*/name; do [ \"$(cat $n)\" = org.vmgate.raw ] && "
                  "d=/dev/$(basename $(dirname $n)); done; dd if=$d of=/dev/null bs=64k 2>/dev/null")
        argv = [b"/bin/sh", b"-c", script.encode()]
        start = struct.pack(">BH", 0, len(argv)) + b"".join(s(a) for a in argv) + struct.pack(">H", 0) + s(b"") + s(b"") \
            + struct.pack(">HHH", 0, 0, 0)
        vm.agent.sendall(frame(START, 1, start))
        time.sleep(1)  # the guest's dd has opened the port
        raw = vm.socks["raw"]
        block = bytes(1 << 20)
        t0 = time.monotonic()
        for _ in range(total // len(block)):
            raw.sendall(block)
        raw.shutdown(socket.SHUT_WR)  # the guest reads EOF once the host end is gone
        raw.close()
        vm.socks.pop("raw")
        vm.await_type(EXIT)
        return total / (time.monotonic() - t0)
    finally:
        vm.close()


def timed(cmd, **kw):
    t0 = time.monotonic()
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.decode()[-400:]}")
    return dt


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sshd:
    """OpenSSH's own server on loopback: the floor for the SSH handshake."""

    def __init__(self, work, pubkey):
        self.port = free_port()
        hostkey = os.path.join(work, "sshd_host_key")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostkey], check=True)
        ak = os.path.join(work, "sshd_authorized_keys")
        shutil.copy(pubkey, ak)
        os.chmod(ak, 0o600)
        cfg = os.path.join(work, "sshd_config")
        with open(cfg, "w") as f:
            f.write(f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {hostkey}\nAuthorizedKeysFile {ak}\n"
                    "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin yes\n"
                    f"PidFile {work}/sshd.pid\nStrictModes no\n")
        os.makedirs("/run/sshd", exist_ok=True)
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", cfg], stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def close(self):
        self.proc.terminate()
        self.proc.wait()


def wait_port(port, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port}")


class Serve:
    def __init__(self, work, authorized_keys, *extra, max_sessions=4):
        self.port = free_port()
        self.log = open(os.path.join(work, f"serve-{self.port}.log"), "w")
        self.proc = subprocess.Popen([VMGATE, "serve", "--listen", f"127.0.0.1:{self.port}", "--authorized-keys",
                                      authorized_keys, "--host-key", os.path.join(work, "vmgate_host_key"),
                                      "--max-sessions", str(max_sessions), *extra], stdout=self.log, stderr=self.log)
        wait_port(self.port)

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()


GUEST_MIB = 256  # vmgate's default guest memory, which the servers here use


def kib(path, field):
    for line in open(path):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in {path}")


def qemu_memory(pid):
    """KiB: (QEMU's private memory: every anonymous page it has, its own heap and TCG code cache
    as well as the guest-RAM pages it copied from the template on write; of those, the guest-RAM
    copies; template pages it maps, shared with every VM of that template)."""
    anon, guest_copies, template_mapped, in_template = 0, 0, 0, False
    for line in open(f"/proc/{pid}/smaps"):
        first = line.split()[0]
        if "-" in first and not first.endswith(":"):
            in_template = "/templates/" in line and "/memory-" in line
        elif first == "Anonymous:":
            anon += int(line.split()[1])
            if in_template:
                guest_copies += int(line.split()[1])
        elif first == "Rss:" and in_template:
            template_mapped += int(line.split()[1])
    return anon, guest_copies, template_mapped - guest_copies


def cpu_ticks(pid):
    st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(st[11]) + int(st[12])


def mem_available_kib():
    return kib("/proc/meminfo", "MemAvailable")


def children_named(ppid, name):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
                if int(stat.rsplit(")", 1)[1].split()[1]) == ppid and name in open(f"/proc/{d}/comm").read():
                    out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def idle_sessions(srv, ssh, sessions=8, idle_seconds=60):
    """Idle restored sessions (`ssh host 'sleep ...'`): host memory per session (QEMU's private
    memory, plus the server JVM's RSS growth per session after a warm-up) and each VM's CPU over
    `idle_seconds` (utime + stime of its QEMU, from /proc/PID/stat)."""
    # Warm-up: as many sessions at once as measured, so the JVM's heap and JIT have seen it all.
    warm = [subprocess.Popen(ssh(srv.port) + ["sleep 1"], stdout=subprocess.DEVNULL) for _ in range(sessions)]
    for w in warm:
        w.wait()
    wait_for(lambda: not children_named(srv.proc.pid, "qemu"), 60, "the warm-up VMs to go")
    time.sleep(2)
    rss0 = kib(f"/proc/{srv.proc.pid}/status", "VmRSS")
    clients = [subprocess.Popen(ssh(srv.port) + [f"sleep {idle_seconds + 120}"]) for _ in range(sessions)]
    try:
        wait_for(lambda: len(children_named(srv.proc.pid, "qemu")) >= sessions, 120, f"{sessions} VMs")
        time.sleep(5)  # every session settled into its idle state
        pids = children_named(srv.proc.pid, "qemu")
        t0 = {p: cpu_ticks(p) for p in pids}
        time.sleep(idle_seconds)
        cpu = [(cpu_ticks(p) - t0[p]) / os.sysconf("SC_CLK_TCK") / idle_seconds * 100 for p in pids]
        rss1 = kib(f"/proc/{srv.proc.pid}/status", "VmRSS")
        per_vm = [qemu_memory(p) for p in pids]
    finally:
        for c in clients:
            c.kill()
            c.wait()
    r = {"sessions": sessions, "idle_seconds": idle_seconds,
         "qemu_private": statistics.median(a for a, _, _ in per_vm), "guest_copies": statistics.median(g for _, g, _ in per_vm),
         "template_mapped": statistics.median(t for _, _, t in per_vm), "jvm": (rss1 - rss0) / sessions,
         "cpu": statistics.median(cpu), "cpu_max": max(cpu)}
    print(f"idle session: QEMU private {r['qemu_private'] / 1024:.1f} MiB (guest RAM copies {r['guest_copies'] / 1024:.1f}), "
          f"JVM {r['jvm'] / 1024:.1f} MiB, CPU {r['cpu']:.2f} % median, {r['cpu_max']:.2f} % max over {idle_seconds} s",
          file=sys.stderr)
    return r


class Shell:
    """One `ssh host sh` with a pipe to its stdin: an interactive session that answers echo."""

    def __init__(self, ssh_cmd, i):
        self.i = i
        self.proc = subprocess.Popen(ssh_cmd + ["sh"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1)

    def ask(self, word):
        """Sends `echo word-i`; returns the seconds until the answer arrived, or None."""
        t0 = time.monotonic()
        try:
            self.proc.stdin.write(f"echo {word}-{self.i}\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (OSError, ValueError):
            return None
        return time.monotonic() - t0 if line.strip() == f"{word}-{self.i}" else None

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def many_sessions(work, pubkey, key, n, hold, pool):
    """n interactive sessions opened at once against one server: time until every shell answered
    `echo`, host memory they took, their idle CPU, and every one answering again after `hold` s."""
    extra = ["--max-startups", str(2 * n), "--per-source-max-startups", "0"]  # n logins at once from one address
    if pool:
        extra += ["--pool", str(pool)]
    srv = Serve(work, pubkey, *extra, max_sessions=n)
    ssh = ["ssh", "-p", str(srv.port), "-i", key, *SSH_OPTS, "127.0.0.1"]
    shells = []
    try:
        subprocess.run(ssh + ["true"], check=True, stdout=subprocess.DEVNULL)
        if pool:
            wait_for(lambda: open(srv.log.name).read().count("pool_ready") >= pool + 1, 300, "the pool to fill")
        time.sleep(3)
        avail0 = mem_available_kib()
        rss0 = kib(f"/proc/{srv.proc.pid}/status", "VmRSS")
        t0 = time.monotonic()
        shells = [Shell(ssh, i) for i in range(n)]
        first = [None] * n
        threads = [threading.Thread(target=lambda j=j: first.__setitem__(j, shells[j].ask("up")), daemon=True) for j in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        answered = [x for x in first if x is not None]
        all_up = time.monotonic() - t0 if len(answered) == n else None
        time.sleep(5)
        pids = children_named(srv.proc.pid, "qemu")
        qemu_private = sum(qemu_memory(p)[0] for p in pids)
        rss1 = kib(f"/proc/{srv.proc.pid}/status", "VmRSS")
        avail1 = mem_available_kib()
        c0 = {p: cpu_ticks(p) for p in pids}
        idle_window = min(60, hold)
        time.sleep(idle_window)
        idle_cpu = sum(cpu_ticks(p) - c0[p] for p in pids if os.path.exists(f"/proc/{p}")) / os.sysconf("SC_CLK_TCK") / idle_window * 100
        time.sleep(max(0, hold - idle_window))
        again = [sh.ask("again") for sh in shells]
        r = {"n": n, "pool": pool, "answered": len(answered), "all_up": all_up, "median_up": statistics.median(answered) if answered else None,
             "vms": len(pids), "qemu_private": qemu_private, "jvm": rss1 - rss0, "mem_available_drop": avail0 - avail1,
             "idle_cpu": idle_cpu, "idle_window": idle_window, "hold": hold, "again": sum(1 for a in again if a is not None)}
        print(f"{n} sessions (pool {pool}): {r['answered']} answered, all within {all_up}, median {r['median_up']}; "
              f"QEMU private {qemu_private / 1024:.0f} MiB, JVM +{r['jvm'] / 1024:.0f} MiB, MemAvailable -{r['mem_available_drop'] / 1024:.0f} MiB; "
              f"idle CPU {idle_cpu:.1f} % of a core for all; {r['again']} answered again after {hold} s", file=sys.stderr)
        return r
    finally:
        for sh in shells:
            sh.close()
        srv.close()


def stats(samples):
    xs = sorted(samples)
    p95 = xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
    return statistics.median(xs), p95


def measure_pair(names, n, fns):
    """Two measurements taken in alternation, so both see the same machine (load drifts here)."""
    for fn in fns:
        fn()  # warm-up
    samples = [[], []]
    for _ in range(n):
        for i, fn in enumerate(fns):
            samples[i].append(fn())
    out = []
    for name, xs in zip(names, samples):
        med, p95 = stats(xs)
        print(f"{name:<44} n={n:<3} median={med * 1000:8.1f} ms  p95={p95 * 1000:8.1f} ms", file=sys.stderr)
        out.append({"name": name, "n": n, "median": med, "p95": p95})
    return out


def measure(name, n, fn, pause=0.0):
    fn()  # warm-up: page cache, JIT, template
    samples = []
    for _ in range(n):
        samples.append(fn())
        if pause:
            time.sleep(pause)
    med, p95 = stats(samples)
    print(f"{name:<44} n={n:<3} median={med * 1000:8.1f} ms  p95={p95 * 1000:8.1f} ms", file=sys.stderr)
    return {"name": name, "n": n, "median": med, "p95": p95}


ROWS = ("run", "ssh", "bulk", "idle", "many")


def bulk(srv, ssh, r, quick):
    """ssh host 'dd ...' both ways, minus an empty `ssh host true` on the same server."""
    size = (100 if quick else 200) * 1024 * 1024
    n = 2 if quick else 3
    empty = statistics.median(timed(ssh(srv.port) + ["true"]) for _ in range(3))
    dt = [timed(ssh(srv.port) + [f"dd if=/dev/zero bs=64k count={size // 65536} 2>/dev/null"]) for _ in range(n)]
    r["ssh_tput"] = size / (statistics.median(dt) - empty)
    dt = []
    for _ in range(n):
        t0 = time.monotonic()
        src = subprocess.Popen(["dd", "if=/dev/zero", "bs=64k", f"count={size // 65536}"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
        rc = subprocess.run(ssh(srv.port) + ["dd of=/dev/null bs=64k 2>/dev/null"], stdin=src.stdout,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode
        src.wait()
        if rc != 0:
            raise RuntimeError(f"ssh stdin transfer failed ({rc})")
        dt.append(time.monotonic() - t0)
    r["ssh_in_tput"] = size / (statistics.median(dt) - empty)
    r["raw_tput"] = statistics.median([raw_throughput(total=size) for _ in range(n)])
    r["raw_pipe_tput"] = statistics.median([raw_throughput(total=size, piped=True) for _ in range(n)])
    r["raw_in_tput"] = statistics.median([raw_throughput_in(total=size) for _ in range(n)])
    r["bulk_size"] = size
    print(f"throughput: ssh stdout {r['ssh_tput'] / 1e6:.1f} MB/s, stdin {r['ssh_in_tput'] / 1e6:.1f} MB/s; raw virtio-serial "
          f"out {r['raw_tput'] / 1e6:.1f}, in {r['raw_in_tput'] / 1e6:.1f}, out through a pipe {r['raw_pipe_tput'] / 1e6:.1f}",
          file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=None, help="latency samples per row (default 20, --quick 5)")
    ap.add_argument("--cold-runs", type=int, default=None, help="cold-boot samples per row (default 20, --quick 5)")
    ap.add_argument("--quick", action="store_true",
                    help="fewer samples, 20 s idle windows, 30 s hold for the many-sessions rows: a smoke run")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated groups to measure, of {','.join(ROWS)}")
    ap.add_argument("--sessions", type=int, default=100, help="sessions at once for the many-sessions rows (default 100)")
    ap.add_argument("--pool", type=int, default=10, help="pool size for the many-sessions row with a pool (default 10)")
    ap.add_argument("--hold", type=int, default=None, help="seconds the many sessions stay idle before answering again (default 300)")
    ap.add_argument("--out", default=os.path.join(HOME, "docs", "benchmarks.md"))
    ap.add_argument("--only-run", action="store_true",
                    help="measure only the `vmgate run` rows and their floors; print them, write no report")
    args = ap.parse_args()
    args.runs = args.runs or (5 if args.quick else 20)
    args.cold_runs = args.cold_runs or (5 if args.quick else 20)
    args.hold = args.hold if args.hold is not None else (30 if args.quick else 300)
    rows = set(x.strip() for x in ("run" if args.only_run else args.rows).split(","))
    if not rows <= set(ROWS):
        ap.error(f"--rows takes {','.join(ROWS)}, not {args.rows}")
    work = tempfile.mkdtemp(prefix="vmgate-bench-work-")
    key = os.path.join(work, "id")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    ssh = lambda port: ["ssh", "-p", str(port), "-i", key, *SSH_OPTS, "127.0.0.1"]
    subprocess.run([VMGATE, "image", "warm"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    r = {"rows": rows, "load_start": os.getloadavg()}
    if "run" in rows:
        r["raw_boot"], r["run_cold"] = measure_pair(
            ["raw QEMU boot to HELLO", "vmgate run --no-snapshot -- true"], args.cold_runs,
            [raw_boot, lambda: timed([VMGATE, "run", "--no-snapshot", "--", "true"])])
        r["raw_restore"], r["run_restored"] = measure_pair(
            ["raw QEMU restore to CONFIGURED", "vmgate run -- true"], args.runs,
            [raw_restore, lambda: timed([VMGATE, "run", "--", "true"])])
        print(f"ratios: run cold / raw boot {r['run_cold']['median'] / r['raw_boot']['median']:.3f}, "
              f"run restored / raw restore {r['run_restored']['median'] / r['raw_restore']['median']:.2f}", file=sys.stderr)
    if args.only_run:
        shutil.rmtree(work, ignore_errors=True)
        return

    if "ssh" in rows:
        if "raw_restore" not in r:
            r["raw_restore"] = measure("raw QEMU restore to CONFIGURED", args.runs, raw_restore)
            r["raw_boot"] = measure("raw QEMU boot to HELLO", args.cold_runs, raw_boot)
        sshd = Sshd(work, key + ".pub")
        try:
            r["openssh"] = measure("OpenSSH: ssh localhost true (local sshd)", args.runs, lambda: timed(ssh(sshd.port) + ["true"]))
        finally:
            sshd.close()
        for label, extra, n, pause in [("ssh_cold", ["--no-snapshot"], args.cold_runs, 0.0),
                                       ("ssh_restored", [], args.runs, 0.0),
                                       ("ssh_pooled", ["--pool", "2"], args.runs, 1.5)]:
            srv = Serve(work, key + ".pub", *extra)
            try:
                if label == "ssh_pooled":
                    time.sleep(8)  # let the pool fill
                r[label] = measure(f"vmgate: ssh host true ({label[4:]})", n, lambda: timed(ssh(srv.port) + ["true"]), pause)
            finally:
                srv.close()
    if "bulk" in rows or "idle" in rows:
        srv = Serve(work, key + ".pub", max_sessions=16)  # room for the idle sessions and their warm-up
        try:
            if "bulk" in rows:
                bulk(srv, ssh, r, args.quick)
            if "idle" in rows:
                r["idle"] = idle_sessions(srv, ssh, idle_seconds=20 if args.quick else 60)
        finally:
            srv.close()
    if "many" in rows:
        r["many"] = many_sessions(work, key + ".pub", key, args.sessions, args.hold, 0)
        r["many_pool"] = many_sessions(work, key + ".pub", key, args.sessions, args.hold, args.pool)
    r["load_end"] = os.getloadavg()
    write_report(args, r)
    shutil.rmtree(work, ignore_errors=True)


NOT_MEASURED = "not measured in this run"


def write_report(args, r):
    ms = lambda x: f"{x * 1000:.0f} ms"
    mib = lambda k: f"{k / 1024:.1f}"
    med = lambda k: r[k]["median"]
    have = lambda *ks: all(k in r for k in ks)

    def meets(ratio, bar):
        if bar == "—":
            return ""
        limit = float(bar.split()[1])
        return "yes" if (ratio <= limit if bar.startswith("≤") else ratio >= limit) else "**no**"

    rows = []
    if have("run_cold", "raw_boot"):
        rows.append(("`vmgate run --no-snapshot -- true` / raw QEMU boot-to-hello", med("run_cold") / med("raw_boot"), "≤ 1.1"))
    if have("run_restored", "raw_restore"):
        rows.append(("`vmgate run -- true` (restored) / raw QEMU restore-to-ready", med("run_restored") / med("raw_restore"), "—"))
    if have("ssh_cold", "raw_boot"):
        rows.append(("cold `ssh host true` / raw QEMU boot-to-hello", med("ssh_cold") / med("raw_boot"), "≤ 1.1"))
    if have("ssh_restored", "raw_restore", "openssh"):
        rows.append(("restored `ssh host true` / (raw restore + OpenSSH `ssh localhost true`)",
                     med("ssh_restored") / (med("raw_restore") + med("openssh")), "≤ 1.25"))
    if have("ssh_pooled", "openssh"):
        rows.append(("pooled `ssh host true` / OpenSSH `ssh localhost true`", med("ssh_pooled") / med("openssh"), "≤ 1.5"))
    if have("ssh_tput"):
        rows.append(("`ssh host 'dd if=/dev/zero bs=64k'` / raw virtio-serial guest→host", r["ssh_tput"] / r["raw_tput"], "≥ 0.8"))
        rows.append(("`ssh host 'dd of=/dev/null bs=64k'` (stdin) / raw virtio-serial host→guest",
                     r["ssh_in_tput"] / r["raw_in_tput"], "≥ 0.8"))
        rows.append(("`ssh host 'dd if=/dev/zero bs=64k'` / raw virtio-serial through a pipe in the guest",
                     r["ssh_tput"] / r["raw_pipe_tput"], "—"))
    uname = os.uname()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    measured = [g for g in ROWS if g in r["rows"]]
    cmd = "python3 bench/bench.py" + (" --quick" if args.quick else "") + (
        f" --rows {','.join(measured)}" if len(measured) < len(ROWS) else "") + (
        f" --runs {args.runs}" if args.runs != (5 if args.quick else 20) else "") + (
        f" --cold-runs {args.cold_runs}" if args.cold_runs != (5 if args.quick else 20) else "")
    with open(args.out, "w") as f:
        f.write("# Benchmarks\n\n")
        f.write(f"Produced by `bench/bench.py` (command: `{cmd}`), which measures every row below in one run on one "
                "machine: each vmgate path beside the floor it is compared with. Wall-clock times from starting the "
                "client command to its exit, so the `./vmgate` launcher and JVM start-up are included where a user would "
                "pay them. `vmgate run` rows are measured in alternation with their raw floor, since this machine's speed "
                "drifts within minutes.\n\n")
        f.write(f"Machine: {cpu}, {os.cpu_count()} CPUs, kernel {uname.release}; accelerator: TCG "
                "(no vmx/svm here); guest: 1 vCPU, 256 MiB. Run at "
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Load average (1 min) {r['load_start'][0]:.1f} at "
                f"the start, {r['load_end'][0]:.1f} at the end")
        f.write(": **the machine was shared and loaded during this run** (other engineers' VMs), so absolute times and "
                "throughputs are low and noisy; ratios to a floor measured beside them hold up better.\n\n"
                if max(r["load_start"][0], r["load_end"][0]) > os.cpu_count() else ".\n\n")
        if len(measured) < len(ROWS):
            f.write(f"Measured in this run: {', '.join(measured)}; rows of the other groups say \"{NOT_MEASURED}\".\n\n")

        f.write("## Latency\n\n| what | runs | median | p95 |\n|---|---|---|---|\n")
        for k, name in [("raw_boot", "raw QEMU boot to HELLO"), ("raw_restore", "raw QEMU restore to CONFIGURED"),
                        ("openssh", "OpenSSH: ssh localhost true (local sshd)"), ("run_cold", "vmgate run --no-snapshot -- true"),
                        ("run_restored", "vmgate run -- true"), ("ssh_cold", "vmgate: ssh host true (cold)"),
                        ("ssh_restored", "vmgate: ssh host true (restored)"), ("ssh_pooled", "vmgate: ssh host true (pooled)")]:
            if k in r:
                f.write(f"| {r[k]['name']} | {r[k]['n']} | {ms(r[k]['median'])} | {ms(r[k]['p95'])} |\n")
            else:
                f.write(f"| {name} | — | {NOT_MEASURED} | |\n")

        f.write("\n## Throughput\n\n| what | MB/s |\n|---|---|\n")
        if have("ssh_tput"):
            mb = r["bulk_size"] >> 20
            f.write(f"| raw virtio-serial guest→host: guest `dd bs=64k` into a second port, the host reads | {r['raw_tput'] / 1e6:.1f} |\n")
            f.write(f"| raw virtio-serial host→guest: the host writes into a second port, guest `dd bs=64k` reads | {r['raw_in_tput'] / 1e6:.1f} |\n")
            f.write(f"| raw virtio-serial through a pipe: guest `dd | dd bs=64k` into the port | {r['raw_pipe_tput'] / 1e6:.1f} |\n")
            f.write(f"| `ssh host 'dd if=/dev/zero bs=64k count={mb * 16}'` (stdout, restored VM) | {r['ssh_tput'] / 1e6:.1f} |\n")
            f.write(f"| `dd if=/dev/zero bs=64k count={mb * 16} \\| ssh host 'dd of=/dev/null bs=64k'` (stdin) | {r['ssh_in_tput'] / 1e6:.1f} |\n")
            f.write("\nThroughput rows subtract the time of an empty `ssh host true` on the same server, so they measure "
                    "the transfer, not the VM start.\n")
        else:
            f.write(f"| all | {NOT_MEASURED} |\n")

        f.write("\n## An idle session\n\n")
        if "idle" in r:
            m = r["idle"]
            total = (m["qemu_private"] + m["jvm"]) / 1024
            f.write("| what | value |\n|---|---|\n")
            f.write(f"| QEMU's private memory per VM (all its anonymous pages: heap, TCG code cache, and the guest-RAM pages "
                    f"copied from the template) | {mib(m['qemu_private'])} MiB |\n")
            f.write(f"| of which guest RAM copied from the template on write | {mib(m['guest_copies'])} MiB |\n")
            f.write(f"| server JVM's RSS growth per session | {mib(m['jvm'])} MiB |\n")
            f.write(f"| **host memory per idle session** (the two above) | **{total:.1f} MiB** |\n")
            f.write(f"| template pages a VM maps, shared by every VM of the template (page cache, counted once) | "
                    f"{mib(m['template_mapped'])} MiB |\n")
            f.write(f"| CPU per idle VM over {m['idle_seconds']} s (QEMU's utime + stime), median / max of {m['sessions']} | "
                    f"{m['cpu']:.2f} % / {m['cpu_max']:.2f} % of a core |\n")
            f.write(f"\n{m['sessions']} idle `ssh host 'sleep ...'` sessions on one server (restored VMs), medians over "
                    "their QEMUs. QEMU's binary and libraries (~20 MiB, shared by every VM) are not counted.\n")
        else:
            f.write(NOT_MEASURED + ".\n")

        f.write("\n## Many sessions at once\n\n")
        if "many" in r:
            f.write("| what | no pool | pool of %d |\n|---|---|---|\n" % r["many_pool"]["pool"])
            a, b = r["many"], r["many_pool"]
            sec = lambda x: "never" if x is None else f"{x:.1f} s"
            f.write(f"| sessions opened at once (`ssh host sh`, each sent `echo` at once) | {a['n']} | {b['n']} |\n")
            f.write(f"| shells that answered | {a['answered']} | {b['answered']} |\n")
            f.write(f"| time until all had answered | {sec(a['all_up'])} | {sec(b['all_up'])} |\n")
            f.write(f"| median time to answer | {sec(a['median_up'])} | {sec(b['median_up'])} |\n")
            f.write(f"| QEMU private memory, all VMs | {a['qemu_private'] / 1024:.0f} MiB | {b['qemu_private'] / 1024:.0f} MiB |\n")
            f.write(f"| server JVM RSS growth | {a['jvm'] / 1024:.0f} MiB | {b['jvm'] / 1024:.0f} MiB |\n")
            f.write(f"| host MemAvailable drop (with the {a['n']} ssh clients) | {a['mem_available_drop'] / 1024:.0f} MiB | "
                    f"{b['mem_available_drop'] / 1024:.0f} MiB |\n")
            f.write(f"| CPU of all VMs while idle, over {a['idle_window']} s | {a['idle_cpu']:.1f} % of a core | "
                    f"{b['idle_cpu']:.1f} % of a core |\n")
            f.write(f"| shells answering `echo` again after {a['hold']} s | {a['again']} | {b['again']} |\n")
            f.write(f"\nOne server (`--max-sessions {a['n']} --max-startups {2 * a['n']} --per-source-max-startups 0`: "
                    "all logins come from 127.0.0.1 at once), the clients started together; QEMU private memory as in the "
                    "idle-session rows, summed.\n")
        else:
            f.write(NOT_MEASURED + ".\n")

        f.write("\n## Ratios against the floors (medians)\n\n| ratio | value | bar | met |\n|---|---|---|---|\n")
        for name, ratio, bar in rows:
            f.write(f"| {name} | {ratio:.2f} | {bar} | {meets(ratio, bar)} |\n")
        if "idle" in r:
            m = r["idle"]
            total = (m["qemu_private"] + m["jvm"]) / 1024
            f.write(f"| host memory per idle session, MiB | {total:.1f} | ≤ 32 | {'yes' if total <= 32 else '**no**'} |\n")
            f.write(f"| CPU per idle VM, % of a core | {m['cpu']:.2f} | ≤ 0.3 | {'yes' if m['cpu'] <= 0.3 else '**no**'} |\n")
        if "many" in r:
            ok = r["many"]["again"] == r["many"]["n"] and r["many_pool"]["again"] == r["many_pool"]["n"]
            f.write(f"| {r['many']['n']} idle sessions at once, all answering after {r['many']['hold']} s | "
                    f"{r['many']['again']} + {r['many_pool']['again']} of {2 * r['many']['n']} | all | {'yes' if ok else '**no**'} |\n")
        with open(os.path.join(HOME, "bench", "notes.md")) as notes:
            f.write("\n" + notes.read())
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
