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
  egress                      a 100 MiB download from an HTTP server on the host's loopback with busybox
                              wget in a VM, through the agent's proxy and through --net open, against
                              curl on the host
  debian (--debian NAME)      the Debian image's build time (built if NAME is missing, or with
                              --debian-rebuild), its size, raw QEMU boot and restore of a Debian VM
                              beside the busybox one, and `ssh host true` into Debian VMs, cold and restored
  oci (--oci)                 `vmgate image pull` of a ~100 MB image from Debian's docker-registry on
                              loopback beside `skopeo copy` of it to a local directory, and
                              `vmgate image import oci:` beside `skopeo copy oci: dir:`

Rows run by default: run,ssh,bulk,idle,many,egress; --debian NAME adds debian, --oci adds oci.
--only-run and --only-egress measure one group and print it (no report); --only-oci measures the
OCI rows and rewrites just that section (and its ratios) of the existing report.

Usage: bench/bench.py [--runs N] [--cold-runs N] [--quick] [--rows run,ssh,bulk,idle,many,egress,debian,oci]
                      [--debian NAME [--debian-rebuild]] [--oci] [--sessions N] [--hold SEC]
                      [--out docs/benchmarks.md] [--only-run | --only-egress | --only-oci]
"""
import argparse
import functools
import glob
import gzip
import hashlib
import http.server
import io
import itertools
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

HOME = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VMGATE = os.path.join(HOME, "vmgate")
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            "-o", "LogLevel=ERROR"]
HELLO, START, STARTED, DATA, EOF, WINDOW, EXIT, ERROR, CONFIGURE, CONFIGURED = 1, 2, 3, 4, 5, 6, 9, 11, 12, 13
# A guest shell command that sets $d to the device of the second virtio-serial port, org.vmgate.raw.
FIND_RAW_PORT = ("for n in /sys/class/virtio-ports/*/name; do [ \"$(cat $n)\" = org.vmgate.raw ] && "
                 "d=/dev/$(basename $(dirname $n)); done; ")


def qemu_args(rundir, template=False, image=None):
    """(state file, memory file, argv): the template's files (None for a cold boot) and the command line
    of the built-in image, or of the image named `image`. With --template, `vmgate image qemu-args`
    prints the template's files first (state, memory, and a saved scratch disk when the VM has one),
    all in the template's directory, then the command line."""
    cmd = [VMGATE, "image", "qemu-args", rundir] + (["--template"] if template else []) + (["--image", image] if image else [])
    lines = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()
    if not template:
        return None, None, lines
    files = list(itertools.takewhile(lambda l: os.path.dirname(l) == os.path.dirname(lines[0]), lines))
    if len(files) not in (2, 3):
        raise RuntimeError(f"{' '.join(cmd)}: expected the template's files first, got {lines[:4]}")
    return files[0], files[1], lines[len(files):]


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
    """QEMU started exactly as vmgate starts it (for the built-in image, or the image named `image`),
    with the host ends of its sockets held here."""

    def __init__(self, extra_ports=(), template=False, image=None):
        self.dir = tempfile.mkdtemp(prefix="vmgate-bench-")
        os.chmod(self.dir, 0o700)
        state, memory, argv = qemu_args(self.dir, template, image)
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
            if ftype == ERROR:
                raise RuntimeError(f"the agent answered ERROR {struct.unpack('>I', payload[:4])[0]}: "
                                   f"{payload[8:].decode(errors='replace')}")

    def close(self):
        self.proc.kill()
        self.proc.wait()
        for sock in list(self.socks.values()) + list(self.listeners.values()):
            sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def raw_boot(image=None):
    vm = RawVm(image=image)
    try:
        vm.await_type(HELLO)
        return time.monotonic() - vm.t0
    finally:
        vm.close()


def configure_payload():
    return struct.pack(">Q", time.time_ns()) + s(b"bench") + s(os.urandom(64))


def raw_restore(image=None):
    vm = RawVm(template=True, image=image)  # sends CONFIGURE
    try:
        vm.await_type(CONFIGURED)
        return time.monotonic() - vm.t0
    finally:
        vm.close()


def start_payload(script):
    """START (docs/protocol.md, version 2) of `/bin/sh -c script` as root, no PTY: flags, uid, gid, no
    groups, path (empty: argv[0]), argv, no env, cwd, term, rows, cols, no terminal modes."""
    argv = [b"/bin/sh", b"-c", script.encode()]
    return struct.pack(">BIIH", 0, 0, 0, 0) + s(b"") + struct.pack(">H", len(argv)) + b"".join(s(a) for a in argv) \
        + struct.pack(">H", 0) + s(b"") + s(b"") + struct.pack(">HHH", 0, 0, 0)


def raw_throughput(total=200 * 1024 * 1024, piped=False):
    """Bytes/s that `dd` in the guest pushes through a virtio-serial port to a host socket
    (piped: through a pipe into a second dd first, as a process's output reaches the agent)."""
    vm = RawVm(extra_ports=("raw",))
    try:
        vm.await_type(HELLO)
        blocks = total // 65536
        script = FIND_RAW_PORT + (f"dd if=/dev/zero bs=64k count={blocks} 2>/dev/null | dd of=$d bs=64k 2>/dev/null" if piped
                                  else f"dd if=/dev/zero of=$d bs=64k count={blocks} 2>/dev/null")
        raw = vm.socks["raw"]
        vm.agent.sendall(frame(START, 1, start_payload(script)))
        vm.await_type(STARTED)
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
        vm.agent.sendall(frame(START, 1, start_payload(FIND_RAW_PORT + "dd if=$d of=/dev/null bs=64k 2>/dev/null")))
        vm.await_type(STARTED)
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
                    f"PidFile {work}/sshd.pid\nStrictModes no\n"
                    # bash run by sshd sources ~/.bashrc unless SHLVL says it is nested (Debian builds it with
                    # SSH_SOURCE_BASHRC); the floor is OpenSSH, not this host's shell start-up (root's .bashrc
                    # here runs `pyenv init`: 1-3 s under load, more than the whole SSH exchange).
                    "SetEnv SHLVL=1\n")
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
        # A control socket of its own (by default it sits beside the host key, which the servers share).
        state = ["--control-socket", os.path.join(work, f"control-{self.port}.sock")]
        self.proc = subprocess.Popen([VMGATE, "serve", "--listen", f"127.0.0.1:{self.port}", "--authorized-keys",
                                      authorized_keys, "--host-key", os.path.join(work, "vmgate_host_key"),
                                      "--max-sessions", str(max_sessions), *state, *extra], stdout=self.log, stderr=self.log)
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


def summary(name, samples):
    med, p95 = stats(samples)
    print(f"{name:<44} n={len(samples):<3} median={med * 1000:8.1f} ms  p95={p95 * 1000:8.1f} ms", file=sys.stderr)
    return {"name": name, "n": len(samples), "median": med, "p95": p95}


def measure_pair(names, n, fns):
    """Two measurements taken in alternation, so both see the same machine (load drifts here)."""
    for fn in fns:
        fn()  # warm-up
    samples = [[], []]
    for _ in range(n):
        for i, fn in enumerate(fns):
            samples[i].append(fn())
    return [summary(name, xs) for name, xs in zip(names, samples)]


def measure(name, n, fn, pause=0.0):
    fn()  # warm-up: page cache, JIT, template
    samples = []
    for _ in range(n):
        samples.append(fn())
        if pause:
            time.sleep(pause)
    return summary(name, samples)


DEFAULT_ROWS = ("run", "ssh", "bulk", "idle", "many", "egress", "persist")
ROWS = DEFAULT_ROWS + ("debian", "oci")  # debian: with --debian NAME; oci: opt-in (--oci)


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


def run_rows(args, r):
    """`vmgate run -- true`, cold and restored, each in alternation with its raw floor."""
    r["raw_boot"], r["run_cold"] = measure_pair(
        ["raw QEMU boot to HELLO", "vmgate run --no-snapshot -- true"], args.cold_runs,
        [raw_boot, lambda: timed([VMGATE, "run", "--no-snapshot", "--", "true"])])
    r["raw_restore"], r["run_restored"] = measure_pair(
        ["raw QEMU restore to CONFIGURED", "vmgate run -- true"], args.runs,
        [raw_restore, lambda: timed([VMGATE, "run", "--", "true"])])
    print(f"ratios: run cold / raw boot {r['run_cold']['median'] / r['raw_boot']['median']:.3f}, "
          f"run restored / raw restore {r['run_restored']['median'] / r['raw_restore']['median']:.2f}", file=sys.stderr)


def openssh_floor(work, key, ssh, n):
    sshd = Sshd(work, key + ".pub")
    try:
        return measure("OpenSSH: ssh localhost true (local sshd)", n, lambda: timed(ssh(sshd.port) + ["true"]))
    finally:
        sshd.close()


def ssh_true(work, key, ssh, name, n, *extra, pause=0.0):
    """`ssh host true` against a server of its own, started with the options `extra`."""
    srv = Serve(work, key + ".pub", *extra)
    try:
        if "--pool" in extra:
            time.sleep(8)  # let the pool fill
        return measure(name, n, lambda: timed(ssh(srv.port) + ["true"]), pause)
    finally:
        srv.close()


def ssh_rows(args, work, key, ssh, r):
    """`ssh host true`, cold, restored and pooled, beside OpenSSH's own and the raw floors."""
    if "raw_restore" not in r:
        r["raw_restore"] = measure("raw QEMU restore to CONFIGURED", args.runs, raw_restore)
        r["raw_boot"] = measure("raw QEMU boot to HELLO", args.cold_runs, raw_boot)
    r["openssh"] = openssh_floor(work, key, ssh, args.runs)
    r["ssh_cold"] = ssh_true(work, key, ssh, "vmgate: ssh host true (cold)", args.cold_runs, "--no-snapshot")
    r["ssh_restored"] = ssh_true(work, key, ssh, "vmgate: ssh host true (restored)", args.runs)
    r["ssh_pooled"] = ssh_true(work, key, ssh, "vmgate: ssh host true (pooled)", args.runs, "--pool", "2", pause=1.5)


def image_info(name):
    """`vmgate image info NAME` as a dict, or None when there is no such image."""
    p = subprocess.run([VMGATE, "image", "info", name], capture_output=True, text=True)
    if p.returncode != 0:
        return None
    return {l.split(":", 1)[0].strip(): l.split(":", 1)[1].strip() for l in p.stdout.splitlines() if ":" in l}


def debian_rows(args, work, key, ssh, r):
    """The Debian image NAME: its build time (built if missing, or with --debian-rebuild) and size; raw QEMU
    boot and restore of it beside the busybox image; `ssh host true` into it, cold and restored, beside
    its raw floors (the ssh bars hold for every image)."""
    name, d = args.debian, {}
    if args.debian_rebuild or image_info(name) is None:
        t0 = time.monotonic()
        subprocess.run([VMGATE, "image", "build", "debian", "--name", name], check=True, stdout=subprocess.DEVNULL)
        d["build_s"] = time.monotonic() - t0
        print(f"Debian image build: {d['build_s']:.0f} s", file=sys.stderr)
    d["info"] = image_info(name)
    d["boot_busybox"], d["boot_debian"] = measure_pair(
        ["raw QEMU boot to HELLO, busybox", f"raw QEMU boot to HELLO, {name}"], args.cold_runs,
        [raw_boot, lambda: raw_boot(name)])
    d["restore_busybox"], d["restore_debian"] = measure_pair(
        ["raw QEMU restore to CONFIGURED, busybox", f"raw QEMU restore to CONFIGURED, {name}"], args.runs,
        [raw_restore, lambda: raw_restore(name)])
    if "openssh" not in r:
        r["openssh"] = openssh_floor(work, key, ssh, args.runs)
    d["ssh_cold"] = ssh_true(work, key, ssh, f"vmgate: ssh host true ({name}, cold)", args.cold_runs,
                             "--image", name, "--no-snapshot")
    d["ssh_restored"] = ssh_true(work, key, ssh, f"vmgate: ssh host true ({name}, restored)", args.runs, "--image", name)
    srv = Serve(work, key + ".pub", "--image", name)
    try:
        d["idle"] = idle_sessions(srv, ssh, sessions=4, idle_seconds=30)
    finally:
        srv.close()
    return d


class FileServer:
    """An HTTP server on the host's loopback serving one file of `size` zero bytes."""

    def __init__(self, work, size):
        self.dir = os.path.join(work, "www")
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, "big"), "wb") as f:
            f.truncate(size)

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=self.dir))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/big"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def java_home():
    """A JDK of 21 or newer, as ./vmgate looks for one: $JAVA_HOME, then /usr/lib/jvm/*."""
    for home in [os.environ.get("JAVA_HOME", "")] + sorted(glob.glob("/usr/lib/jvm/*"), reverse=True):
        try:
            release = open(os.path.join(home, "release")).read()
            major = int(release.split('JAVA_VERSION="')[1].split(".")[0].split('"')[0])
        except (OSError, IndexError, ValueError):
            continue
        if major >= 21:
            return home
    raise RuntimeError("no JDK 21 or newer found (set JAVA_HOME)")


def egress_bench(mode, url, runs):
    """Download times (s) of busybox wget in a restored VM, from core's EgressBench (see there)."""
    java = os.path.join(java_home(), "bin", "java")
    cp = os.path.join(HOME, "app", "target", "lib", "*") + ":" + os.path.join(HOME, "core", "target", "test-classes")
    out = subprocess.run([java, "-cp", cp, "io.vmgate.egress.EgressBench", mode, url, str(runs)], check=True,
                         capture_output=True, text=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("RESULT "))
    return [float(x) for x in line.split()[2:]]


def egress_rows(work, runs, size=100 * 1024 * 1024):
    """100 MiB through the agent's proxy and through --net open, against curl on the host."""
    # EgressBench lives in core's test classes; ./vmgate (run before) has built the jar and app/target/lib.
    build = subprocess.run(["mvn", "-q", "-B", "-o", "test-compile", "-pl", "core"], cwd=HOME, capture_output=True, text=True,
                           env=dict(os.environ, JAVA_HOME=java_home()))
    if build.returncode != 0:
        raise RuntimeError(f"mvn test-compile -pl core failed:\n{build.stdout[-3000:]}{build.stderr[-1000:]}")
    srv = FileServer(work, size)
    try:
        curl = lambda: timed(["curl", "-s", "-o", "/dev/null", srv.url])
        e = {"size": size, "runs": runs, "load_start": os.getloadavg()[0],
             "curl": measure("host: curl from the loopback server", runs, curl),
             "egress": statistics.median(egress_bench("egress", srv.url, runs)),
             "open": statistics.median(egress_bench("open", srv.url, runs))}
    finally:
        srv.close()
    e["load_end"] = os.getloadavg()[0]
    print(f"egress: {size >> 20} MiB in {e['egress']:.2f} s through the proxy, {e['open']:.2f} s through --net open, "
          f"{e['curl']['median']:.2f} s with curl on the host", file=sys.stderr)
    return e


def oci_layout(path, data_layers=3, layer_mib=33):
    """An OCI layout of a ~100 MB image: busybox as the base, then layers of random bytes (incompressible, so
    ~100 MB also travel); gzip level 1. Returns its total blob size."""
    blobs = os.path.join(path, "blobs", "sha256")
    os.makedirs(blobs)

    def put(b):
        d = hashlib.sha256(b).hexdigest()
        with open(os.path.join(blobs, d), "wb") as f:
            f.write(b)
        return "sha256:" + d

    def tar(entries):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            for name, kind, data in entries:
                ti = tarfile.TarInfo(name)
                ti.mtime = 1700000000
                if kind == "dir":
                    ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                    t.addfile(ti)
                elif kind == "sym":
                    ti.type, ti.linkname = tarfile.SYMTYPE, data
                    t.addfile(ti)
                else:
                    ti.size, ti.mode = len(data), 0o755
                    t.addfile(ti, io.BytesIO(data))
        return buf.getvalue()

    applets = subprocess.run(["/bin/busybox", "--list"], check=True, capture_output=True, text=True).stdout.split()
    base = [("bin", "dir", None), ("etc", "dir", None), ("tmp", "dir", None), ("root", "dir", None),
            ("bin/busybox", "file", open("/bin/busybox", "rb").read()),
            ("etc/passwd", "file", b"root:x:0:0:root:/root:/bin/sh\n")]
    base += [("bin/" + a, "sym", "busybox") for a in applets if a != "busybox"]
    layer_tars = [tar(base)] + [tar([("data", "dir", None)] + [(f"data/{i}-{j}", "file", os.urandom(1 << 20))
                                                              for j in range(layer_mib)]) for i in range(data_layers)]
    layers, diff_ids = [], []
    for t in layer_tars:
        z = gzip.compress(t, compresslevel=1)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(z), "size": len(z)})
        diff_ids.append("sha256:" + hashlib.sha256(t).hexdigest())
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config),
                                      "size": len(config)}, "layers": layers}).encode()
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                "digest": put(manifest), "size": len(manifest),
                                                "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(path, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    return sum(l["size"] for l in layers) + len(config) + len(manifest)


def persist_rows(args, work, key, ssh, image=None):
    """--persist machine: an idle session's machine saved when its connection ends (time and size, from the
    server's machine_saved events), and `ssh host true` into the resumed machine beside `ssh host true` into a
    fresh restored VM of a server without persistence, alternating. With `image`, both servers run it."""
    with_image = ["--image", image] if image else []
    state = os.path.join(work, "state-" + (image or "default"))
    srv = Serve(work, key + ".pub", "--persist", "machine", "--state-dir", state, *with_image)
    plain = None
    what = f" ({image})" if image else ""
    try:
        plain = Serve(work, key + ".pub", *with_image)
        def saves():
            with open(srv.log.name) as f:
                return [(int(m.group(1)), int(m.group(2))) for m in re.finditer(r"machine_saved .*?bytes=(\d+) ms=(\d+)", f.read())]
        timed(ssh(srv.port) + ["true"])  # the first connection: a fresh machine (its home made), saved when it ends
        timed(ssh(plain.port) + ["true"])  # the plain server's template is warm too

        def resumed():
            wait_for(lambda: len(saves()) >= resumed.n, 120, "the machine to be saved")
            resumed.n += 1
            return timed(ssh(srv.port) + ["true"])
        resumed.n = 1
        d = {}
        d["resumed"], d["fresh"] = measure_pair(
            [f"vmgate: ssh host true{what} (--persist machine, resumed)", f"vmgate: ssh host true{what} (restored, no persistence)"],
            args.runs, [resumed, lambda: timed(ssh(plain.port) + ["true"])])
        wait_for(lambda: len(saves()) >= resumed.n, 120, "the last save")
        got = saves()
        d["save_bytes"] = statistics.median(b for b, _ in got)
        d["save_ms"] = statistics.median(t for _, t in got)
        d["saves"] = len(got)
        d["image"] = image
    finally:
        srv.close()
        if plain:
            plain.close()
    print(f"persist{what}: save {d['save_bytes'] / 1e6:.1f} MB in {d['save_ms']:.0f} ms (median of {d['saves']}), resumed ssh true "
          f"{d['resumed']['median'] * 1000:.0f} ms vs fresh restored {d['fresh']['median'] * 1000:.0f} ms", file=sys.stderr)
    return d


def oci_rows(args):
    """`vmgate image pull` and `import` of a ~100 MB image beside `skopeo copy` of it to a local directory."""
    work = tempfile.mkdtemp(prefix="vmgate-bench-oci-")
    registry = None
    try:
        layout = os.path.join(work, "layout")
        size = oci_layout(layout)
        port = free_port()
        cfg = os.path.join(work, "registry.yml")
        with open(cfg, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {work}/registry-data\n"
                    f"http:\n  addr: 127.0.0.1:{port}\n")
        registry = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, 30)
        env = dict(os.environ, HOME=os.path.join(work, "home"))  # skopeo's blob-info cache: its own
        ref = f"127.0.0.1:{port}/bench/big:v1"
        subprocess.run(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{ref}"],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        runs = itertools.count(1)

        def vmgate(*cmd):
            cache = os.path.join(work, f"cache-{next(runs)}")  # nothing cached: every blob fetched, every layer applied
            try:
                return timed([VMGATE, *cmd], env=dict(os.environ, VMGATE_CACHE=cache))
            finally:
                shutil.rmtree(cache, ignore_errors=True)

        def skopeo(src):
            out = os.path.join(work, f"dir-{next(runs)}")
            try:
                return timed(["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false", src, f"dir:{out}"], env=env)
            finally:
                shutil.rmtree(out, ignore_errors=True)

        n = max(3, args.runs // 4)
        d = {"size": size}
        d["pull"], d["skopeo_pull"] = measure_pair(
            ["vmgate image pull (loopback registry)", "skopeo copy docker:// dir: (same image)"], n,
            [lambda: vmgate("image", "pull", ref, "--name", "big"), lambda: skopeo(f"docker://{ref}")])
        d["import"], d["skopeo_import"] = measure_pair(
            ["vmgate image import oci:", "skopeo copy oci: dir: (same image)"], n,
            [lambda: vmgate("image", "import", f"oci:{layout}:v1", "--name", "big"), lambda: skopeo(f"oci:{layout}:v1")])
        print(f"ratios: pull / skopeo {d['pull']['median'] / d['skopeo_pull']['median']:.2f}, "
              f"import / skopeo {d['import']['median'] / d['skopeo_import']['median']:.2f}", file=sys.stderr)
        return d
    finally:
        if registry:
            registry.terminate()
            registry.wait()
        shutil.rmtree(work, ignore_errors=True)


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=None, help="latency samples per row (default 20, --quick 5)")
    ap.add_argument("--cold-runs", type=int, default=None, help="cold-boot samples per row (default 20, --quick 5)")
    ap.add_argument("--quick", action="store_true",
                    help="fewer samples, 20 s idle windows, 30 s hold for the many-sessions rows: a smoke run")
    ap.add_argument("--rows", help=f"comma-separated groups to measure, of {','.join(ROWS)} "
                                   f"(default {','.join(DEFAULT_ROWS)}; debian needs --debian NAME)")
    ap.add_argument("--sessions", type=int, default=100, help="sessions at once for the many-sessions rows (default 100)")
    ap.add_argument("--pool", type=int, default=10, help="pool size for the many-sessions row with a pool (default 10)")
    ap.add_argument("--hold", type=int, default=None, help="seconds the many sessions stay idle before answering again (default 300)")
    ap.add_argument("--debian", metavar="NAME", help="also measure the Debian image NAME (built first if missing): the debian rows")
    ap.add_argument("--debian-rebuild", action="store_true", help="time a fresh build of --debian NAME")
    ap.add_argument("--oci", action="store_true", help="also measure OCI image pull and import against skopeo: the oci rows")
    ap.add_argument("--out", default=os.path.join(HOME, "docs", "benchmarks.md"))
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--only-run", action="store_true",
                      help="measure only the `vmgate run` rows and their floors; print them, write no report")
    only.add_argument("--only-egress", action="store_true",
                      help="measure only the egress download rows; print them, write no report")
    only.add_argument("--only-oci", action="store_true",
                      help="measure only the OCI rows and rewrite that section (and its ratios) of the existing report")
    only.add_argument("--only-persist", action="store_true",
                      help="measure only the --persist machine rows and rewrite that section (and its ratios) of the existing report")
    args = ap.parse_args()
    args.runs = args.runs or (5 if args.quick else 20)
    args.cold_runs = args.cold_runs or (5 if args.quick else 20)
    args.hold = args.hold if args.hold is not None else (30 if args.quick else 300)
    args.rows = selected_rows(ap, args)
    return args


def selected_rows(ap, args):
    """The groups to measure: --only-*, else --rows (default DEFAULT_ROWS), plus debian with --debian and oci with --oci."""
    if args.only_run or args.only_egress or args.only_oci or args.only_persist:
        return {"run" if args.only_run else "egress" if args.only_egress else "oci" if args.only_oci else "persist"}
    rows = {x.strip() for x in args.rows.split(",")} if args.rows else set(DEFAULT_ROWS)
    if not rows <= set(ROWS):
        ap.error(f"--rows takes {','.join(ROWS)}, not {args.rows}")
    rows |= {"debian"} if args.debian else set()
    rows |= {"oci"} if args.oci else set()
    if "debian" in rows and not args.debian:
        ap.error("the debian rows need --debian NAME (an image name; built first if missing)")
    if args.debian_rebuild and not args.debian:
        ap.error("--debian-rebuild needs --debian NAME")
    return rows


def measure_rows(args, work):
    rows = args.rows
    key = os.path.join(work, "id")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    ssh = lambda port: ["ssh", "-p", str(port), "-i", key, *SSH_OPTS, "127.0.0.1"]
    if rows != {"oci"}:
        subprocess.run([VMGATE, "image", "warm"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = {"rows": rows, "load_start": os.getloadavg()}
    if "run" in rows:
        run_rows(args, r)
    if "ssh" in rows:
        ssh_rows(args, work, key, ssh, r)
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
    if "egress" in rows:
        r["egress"] = egress_rows(work, 3 if args.quick else 5)
    if "debian" in rows:
        r["debian"] = debian_rows(args, work, key, ssh, r)
    if "oci" in rows:
        r["oci"] = oci_rows(args)
    if "persist" in rows:
        r["persist"] = persist_rows(args, work, key, ssh)
        if args.debian and image_info(args.debian) is not None:
            r["persist"]["debian"] = persist_rows(args, work, key, ssh, image=args.debian)
        elif args.debian:
            print(f"persist: no image {args.debian}: its saved machines are not measured", file=sys.stderr)
    r["load_end"] = os.getloadavg()
    return r


def main():
    args = parse_args()
    work = tempfile.mkdtemp(prefix="vmgate-bench-work-")
    try:
        r = measure_rows(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.only_oci:
        update_section(args, OCI_TITLE, oci_section(r["oci"], separately=command_line(args)), oci_ratios(r["oci"]))
    elif args.only_persist:
        update_section(args, PERSIST_TITLE, persist_section(r["persist"], separately=command_line(args)),
                       persist_ratios(r["persist"]))
    elif not (args.only_run or args.only_egress):
        write_report(args, r)


NOT_MEASURED = "not measured in this run"
RATIOS_TITLE = "## Ratios against the floors (medians)"
OCI_TITLE = "## OCI images: pull and import"
PERSIST_TITLE = "## Saved machines (--persist machine)"


def ms(x):
    return f"{x * 1000:.0f} ms"


def latency_rows(items):
    """Table rows | name | runs | median | p95 | of measure() results."""
    return "".join(f"| {m['name']} | {m['n']} | {ms(m['median'])} | {ms(m['p95'])} |\n" for m in items)


def meets(ratio, bar):
    if bar == "—":
        return ""
    limit = float(bar.split()[1])
    return "yes" if (ratio <= limit if bar.startswith("≤") else ratio >= limit) else "**no**"


def ratio_row(name, ratio, bar="—"):
    return name, f"{ratio:.2f}", bar, meets(ratio, bar)


def ratio_table_rows(rows):
    return "".join(f"| {name} | {value} | {bar} | {met} |\n" for name, value, bar, met in rows)


def command_line(args):
    """The command that measures what this run measured."""
    rows, default_runs = args.rows, 5 if args.quick else 20
    cmd = ["python3 bench/bench.py"] + (["--quick"] if args.quick else [])
    if args.only_oci:
        cmd.append("--only-oci")
    elif args.only_persist:
        cmd.append("--only-persist" + (f" --debian {args.debian}" if args.debian else ""))
    else:
        implied = set(DEFAULT_ROWS) | ({"debian"} if "debian" in rows else set())
        if "debian" in rows:
            cmd.append(f"--debian {args.debian}" + (" --debian-rebuild" if args.debian_rebuild else ""))
        if rows == implied | {"oci"}:
            cmd.append("--oci")
        elif rows != implied:
            cmd.append("--rows " + ",".join(g for g in ROWS if g in rows))
    cmd += [f"--runs {args.runs}"] if args.runs != default_runs else []
    cmd += [f"--cold-runs {args.cold_runs}"] if args.cold_runs != default_runs else []
    return " ".join(cmd)


def header(args, r):
    uname = os.uname()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    measured = [g for g in ROWS if g in r["rows"]]
    out = ["# Benchmarks\n\n",
           f"Produced by `bench/bench.py` (command: `{command_line(args)}`), which measures every row below in one run on one "
           "machine: each vmgate path beside the floor it is compared with. Wall-clock times from starting the "
           "client command to its exit, so the `./vmgate` launcher and JVM start-up are included where a user would "
           "pay them. `vmgate run` rows are measured in alternation with their raw floor, since this machine's speed "
           "drifts within minutes.\n\n",
           f"Machine: {cpu}, {os.cpu_count()} CPUs, kernel {uname.release}; accelerator: TCG "
           "(no vmx/svm here); guest: 1 vCPU, 256 MiB. Run at "
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Load average (1 min) {r['load_start'][0]:.1f} at "
           f"the start, {r['load_end'][0]:.1f} at the end",
           ": **the machine was shared and loaded during this run** (other engineers' VMs), so absolute times and "
           "throughputs are low and noisy; ratios to a floor measured beside them hold up better.\n"
           if max(r["load_start"][0], r["load_end"][0]) > os.cpu_count() else ".\n"]
    if len(measured) < len(ROWS):
        out.append(f"\nMeasured in this run: {', '.join(measured)}; rows of the other groups say \"{NOT_MEASURED}\".\n")
    return "".join(out)


def latency_section(r):
    out = ["## Latency\n\n| what | runs | median | p95 |\n|---|---|---|---|\n"]
    for k, name in [("raw_boot", "raw QEMU boot to HELLO"), ("raw_restore", "raw QEMU restore to CONFIGURED"),
                    ("openssh", "OpenSSH: ssh localhost true (local sshd)"), ("run_cold", "vmgate run --no-snapshot -- true"),
                    ("run_restored", "vmgate run -- true"), ("ssh_cold", "vmgate: ssh host true (cold)"),
                    ("ssh_restored", "vmgate: ssh host true (restored)"), ("ssh_pooled", "vmgate: ssh host true (pooled)")]:
        out.append(latency_rows([r[k]]) if k in r else f"| {name} | — | {NOT_MEASURED} | |\n")
    return "".join(out)


def throughput_section(r):
    out = ["## Throughput\n\n| what | MB/s |\n|---|---|\n"]
    if "ssh_tput" not in r:
        return out[0] + f"| all | {NOT_MEASURED} |\n"
    mb = r["bulk_size"] >> 20
    out += [f"| raw virtio-serial guest→host: guest `dd bs=64k` into a second port, the host reads | {r['raw_tput'] / 1e6:.1f} |\n",
            f"| raw virtio-serial host→guest: the host writes into a second port, guest `dd bs=64k` reads | {r['raw_in_tput'] / 1e6:.1f} |\n",
            f"| raw virtio-serial through a pipe: guest `dd \\| dd bs=64k` into the port | {r['raw_pipe_tput'] / 1e6:.1f} |\n",
            f"| `ssh host 'dd if=/dev/zero bs=64k count={mb * 16}'` (stdout, restored VM) | {r['ssh_tput'] / 1e6:.1f} |\n",
            f"| `dd if=/dev/zero bs=64k count={mb * 16} \\| ssh host 'dd of=/dev/null bs=64k'` (stdin) | {r['ssh_in_tput'] / 1e6:.1f} |\n",
            "\nThroughput rows subtract the time of an empty `ssh host true` on the same server, so they measure "
            "the transfer, not the VM start.\n"]
    return "".join(out)


def egress_section(r):
    out = ["## Egress\n\n"]
    if "egress" not in r:
        return out[0] + NOT_MEASURED + ".\n"
    e = r["egress"]
    mib = e["size"] >> 20
    mbs = lambda sec: e["size"] / sec / 1e6
    out += [f"| what | seconds for {mib} MiB | MB/s |\n|---|---|---|\n",
            f"| curl on the host from a loopback HTTP server (python http.server) | {e['curl']['median']:.2f} | "
            f"{mbs(e['curl']['median']):.0f} |\n",
            f"| busybox wget in a restored VM through the agent's proxy (egress allowlist) | {e['egress']:.2f} | "
            f"{mbs(e['egress']):.0f} |\n",
            f"| busybox wget in a restored VM through `--net open` (QEMU user-mode NAT) | {e['open']:.2f} | "
            f"{mbs(e['open']):.0f} |\n",
            f"\nMedians of {e['runs']} downloads each (`core/src/test/java/io/vmgate/egress/EgressBench.java`: the time "
            "from START to EXIT of `wget -q -O /dev/null URL`, minus an empty command's). The proxy path carries the "
            "bytes host-to-guest over the agent's virtio-serial port, whose guest driver hands out 4 KiB per read. "
            f"Load average during the rows: {e['load_start']:.1f} at the start, {e['load_end']:.1f} at the end.\n"]
    return "".join(out)


def idle_section(r):
    out = ["## An idle session\n\n"]
    if "idle" not in r:
        return out[0] + NOT_MEASURED + ".\n"
    m = r["idle"]
    mib = lambda k: f"{k / 1024:.1f}"
    total = (m["qemu_private"] + m["jvm"]) / 1024
    out += ["| what | value |\n|---|---|\n",
            f"| QEMU's private memory per VM (all its anonymous pages: heap, TCG code cache, and the guest-RAM pages "
            f"copied from the template) | {mib(m['qemu_private'])} MiB |\n",
            f"| of which guest RAM copied from the template on write | {mib(m['guest_copies'])} MiB |\n",
            f"| server JVM's RSS growth per session | {mib(m['jvm'])} MiB |\n",
            f"| **host memory per idle session** (the two above) | **{total:.1f} MiB** |\n",
            f"| template pages a VM maps, shared by every VM of the template (page cache, counted once) | "
            f"{mib(m['template_mapped'])} MiB |\n",
            f"| CPU per idle VM over {m['idle_seconds']} s (QEMU's utime + stime), median / max of {m['sessions']} | "
            f"{m['cpu']:.2f} % / {m['cpu_max']:.2f} % of a core |\n",
            f"\n{m['sessions']} idle `ssh host 'sleep ...'` sessions on one server (restored VMs), medians over "
            "their QEMUs. QEMU's binary and libraries (~20 MiB, shared by every VM) are not counted.\n"]
    return "".join(out)


def idle_memory_line(m, what):
    """One table-less line: host memory per idle session (QEMU's private memory + the JVM's growth)."""
    return (f"\nHost memory per {what}: **{(m['qemu_private'] + m['jvm']) / 1024:.1f} MiB** (QEMU's private memory "
            f"{m['qemu_private'] / 1024:.1f} MiB, of which guest RAM copied from the template {m['guest_copies'] / 1024:.1f} MiB; "
            f"the JVM's growth {m['jvm'] / 1024:.1f} MiB; template pages mapped, shared {m['template_mapped'] / 1024:.1f} MiB), "
            f"median of {m['sessions']} idle `ssh host 'sleep ...'` sessions; CPU {m['cpu']:.2f} % of a core over "
            f"{m['idle_seconds']} s.\n")


def many_section(r):
    out = ["## Many sessions at once\n\n"]
    if "many" not in r:
        return out[0] + NOT_MEASURED + ".\n"
    a, b = r["many"], r["many_pool"]
    sec = lambda x: "never" if x is None else f"{x:.1f} s"
    out += ["| what | no pool | pool of %d |\n|---|---|---|\n" % b["pool"],
            f"| sessions opened at once (`ssh host sh`, each sent `echo` at once) | {a['n']} | {b['n']} |\n",
            f"| shells that answered | {a['answered']} | {b['answered']} |\n",
            f"| time until all had answered | {sec(a['all_up'])} | {sec(b['all_up'])} |\n",
            f"| median time to answer | {sec(a['median_up'])} | {sec(b['median_up'])} |\n",
            f"| QEMU private memory, all VMs | {a['qemu_private'] / 1024:.0f} MiB | {b['qemu_private'] / 1024:.0f} MiB |\n",
            f"| server JVM RSS growth | {a['jvm'] / 1024:.0f} MiB | {b['jvm'] / 1024:.0f} MiB |\n",
            f"| host MemAvailable drop (with the {a['n']} ssh clients) | {a['mem_available_drop'] / 1024:.0f} MiB | "
            f"{b['mem_available_drop'] / 1024:.0f} MiB |\n",
            f"| CPU of all VMs while idle, over {a['idle_window']} s | {a['idle_cpu']:.1f} % of a core | "
            f"{b['idle_cpu']:.1f} % of a core |\n",
            f"| shells answering `echo` again after {a['hold']} s | {a['again']} | {b['again']} |\n",
            f"\nOne server (`--max-sessions {a['n']} --max-startups {2 * a['n']} --per-source-max-startups 0`: "
            "all logins come from 127.0.0.1 at once), the clients started together; QEMU private memory as in the "
            "idle-session rows, summed.\n"]
    return "".join(out)


def debian_section(args, r):
    out = ["## Root filesystem image: Debian\n\n"]
    if "debian" not in r:
        return out[0] + NOT_MEASURED + " (`--debian NAME` measures it).\n"
    d, info = r["debian"], r["debian"]["info"]
    out.append(f"Image `{args.debian}`: {info.get('source', '?')}, {info.get('files', '?')} files, "
               f"disk {info.get('disk', '?').split('(')[-1].rstrip(')')}.")
    if "build_s" in d:
        out.append(f" Built in {d['build_s']:.0f} s (`vmgate image build debian`, mmdebstrap from deb.debian.org, "
                   "no package cache).")
    out += ["\n\n| what | runs | median | p95 |\n|---|---|---|---|\n",
            latency_rows(d[k] for k in ["boot_busybox", "boot_debian", "restore_busybox", "restore_debian",
                                        "ssh_cold", "ssh_restored"]),
            idle_memory_line(d["idle"], f"idle `{args.debian}` session") if "idle" in d else "",
            f"\nRaw rows of the two images are measured in alternation. Ratios: Debian / busybox cold boot "
            f"{d['boot_debian']['median'] / d['boot_busybox']['median']:.2f}, restore "
            f"{d['restore_debian']['median'] / d['restore_busybox']['median']:.2f}. The Debian VM also loads virtio_blk "
            "and mounts its read-only ext4 disk at boot; a restore finds both done. The `ssh host true` rows run "
            f"`vmgate serve --image {args.debian}` (with `--no-snapshot` for the cold one).\n"]
    return "".join(out)


def oci_section(d, separately=None):
    """The OCI section; `separately`: the command that measured it on its own (--only-oci), if it was."""
    if d is None:
        return f"{OCI_TITLE}\n\n{NOT_MEASURED} (`--oci` measures it).\n"
    out = [f"{OCI_TITLE}\n\n",
           f"A {d['size'] / 1e6:.0f} MB image (busybox, then three layers of 33 MiB of random bytes, gzip), pushed by skopeo "
           "to Debian's docker-registry on loopback. Every run starts from an empty cache (`VMGATE_CACHE`) or an empty "
           "directory: vmgate fetches every blob, checks its digest, applies the layers and writes the read-only ext4 "
           "image (debugfs, e2fsck); skopeo only stores the blobs. Runs alternate, and include vmgate's JVM start-up.",
           f" This section was measured on its own (`{separately}`) at "
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average (1 min) {os.getloadavg()[0]:.1f}."
           if separately else "",
           "\n\n| what | runs | median | p95 |\n|---|---|---|---|\n",
           latency_rows(d[k] for k in ["pull", "skopeo_pull", "import", "skopeo_import"])]
    return "".join(out)


def persist_section(d, separately=None):
    if d is None:
        return f"{PERSIST_TITLE}\n\n{NOT_MEASURED} (`--rows persist` measures it).\n"
    deb = d.get("debian")
    out = [f"{PERSIST_TITLE}\n\n",
           f"`vmgate serve --persist machine`: when a connection ends, its VM is stopped and saved as its device state plus the "
           f"RAM pages that differ from its template, beside the user's home; the next connection resumes it. Saves: median "
           f"**{d['save_bytes'] / 1e6:.1f} MB** in **{d['save_ms']:.0f} ms** (of {d['saves']}, from the server's `machine_saved` "
           "events; an idle session that ran `true`)",
           f"; with `--image {deb['image']}`: **{deb['save_bytes'] / 1e6:.1f} MB** in **{deb['save_ms']:.0f} ms** (of {deb['saves']})"
           if deb else "",
           ". `ssh host true` into the resumed machine alternates with `ssh host true` "
           "into a fresh restored VM of a server without persistence (which mounts no home).",
           f" This section was measured on its own (`{separately}`) at "
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average (1 min) {os.getloadavg()[0]:.1f}."
           if separately else "",
           "\n\n| what | runs | median | p95 |\n|---|---|---|---|\n",
           latency_rows([d["resumed"], d["fresh"]] + ([deb["resumed"], deb["fresh"]] if deb else []))]
    return "".join(out)


def persist_ratios(d):
    rows = [ratio_row("`ssh host true` into a resumed saved machine / into a fresh restored VM",
                      d["resumed"]["median"] / d["fresh"]["median"])]
    if d.get("debian"):
        deb = d["debian"]
        rows.append(ratio_row(f"the same with `--image {deb['image']}`", deb["resumed"]["median"] / deb["fresh"]["median"]))
    return rows


def oci_ratios(d):
    return [ratio_row("`vmgate image pull` / `skopeo copy docker:// dir:` (~100 MB image, loopback registry)",
                      d["pull"]["median"] / d["skopeo_pull"]["median"]),
            ratio_row("`vmgate image import oci:` / `skopeo copy oci: dir:`", d["import"]["median"] / d["skopeo_import"]["median"])]


def ratios(r):
    med = lambda k: r[k]["median"]
    have = lambda *ks: all(k in r for k in ks)
    rows = []
    if have("run_cold", "raw_boot"):
        rows.append(ratio_row("`vmgate run --no-snapshot -- true` / raw QEMU boot-to-hello", med("run_cold") / med("raw_boot"), "≤ 1.1"))
    if have("run_restored", "raw_restore"):
        rows.append(ratio_row("`vmgate run -- true` (restored) / raw QEMU restore-to-ready", med("run_restored") / med("raw_restore")))
    if have("ssh_cold", "raw_boot"):
        rows.append(ratio_row("cold `ssh host true` / raw QEMU boot-to-hello", med("ssh_cold") / med("raw_boot"), "≤ 1.1"))
    if have("ssh_restored", "raw_restore", "openssh"):
        rows.append(ratio_row("restored `ssh host true` / (raw restore + OpenSSH `ssh localhost true`)",
                              med("ssh_restored") / (med("raw_restore") + med("openssh")), "≤ 1.25"))
    if have("ssh_pooled", "openssh"):
        rows.append(ratio_row("pooled `ssh host true` / OpenSSH `ssh localhost true`", med("ssh_pooled") / med("openssh"), "≤ 1.5"))
    if have("ssh_tput"):
        rows.append(ratio_row("`ssh host 'dd if=/dev/zero bs=64k'` / raw virtio-serial guest→host", r["ssh_tput"] / r["raw_tput"], "≥ 0.8"))
        rows.append(ratio_row("`ssh host 'dd of=/dev/null bs=64k'` (stdin) / raw virtio-serial host→guest",
                              r["ssh_in_tput"] / r["raw_in_tput"], "≥ 0.8"))
        rows.append(ratio_row("`ssh host 'dd if=/dev/zero bs=64k'` / raw virtio-serial through a pipe in the guest",
                              r["ssh_tput"] / r["raw_pipe_tput"]))
    if "idle" in r:
        m = r["idle"]
        total = (m["qemu_private"] + m["jvm"]) / 1024
        rows.append(("host memory per idle session, MiB", f"{total:.1f}", "≤ 32", "yes" if total <= 32 else "**no**"))
        rows.append(("CPU per idle VM, % of a core", f"{m['cpu']:.2f}", "≤ 0.3", "yes" if m["cpu"] <= 0.3 else "**no**"))
    if "many" in r:
        a, b = r["many"], r["many_pool"]
        ok = a["again"] == a["n"] and b["again"] == b["n"]
        rows.append((f"{a['n']} idle sessions at once, all answering after {a['hold']} s",
                     f"{a['again']} + {b['again']} of {2 * a['n']}", "all", "yes" if ok else "**no**"))
    if "egress" in r:
        e = r["egress"]
        mib = e["size"] >> 20
        rows.append(ratio_row(f"{mib} MiB download through egress (guest wget via the agent's proxy) / curl on the host, time",
                              e["egress"] / e["curl"]["median"]))
        rows.append(ratio_row(f"{mib} MiB download through `--net open` / curl on the host, time", e["open"] / e["curl"]["median"]))
        if have("raw_in_tput"):
            rows.append(ratio_row("egress download rate / raw virtio-serial host→guest", e["size"] / e["egress"] / r["raw_in_tput"]))
    if "debian" in r:
        d = r["debian"]
        dmed = lambda k: d[k]["median"]
        rows.append(ratio_row("raw QEMU boot-to-hello, Debian / busybox", dmed("boot_debian") / dmed("boot_busybox")))
        rows.append(ratio_row("raw QEMU restore-to-ready, Debian / busybox", dmed("restore_debian") / dmed("restore_busybox")))
        rows.append(ratio_row("cold `ssh host true` into Debian / raw QEMU boot-to-hello of Debian",
                              dmed("ssh_cold") / dmed("boot_debian"), "≤ 1.1"))
        rows.append(ratio_row("restored `ssh host true` into Debian / (raw Debian restore + OpenSSH `ssh localhost true`)",
                              dmed("ssh_restored") / (dmed("restore_debian") + med("openssh")), "≤ 1.25"))
        if "idle" in d:
            total = (d["idle"]["qemu_private"] + d["idle"]["jvm"]) / 1024
            rows.append(("host memory per idle Debian session, MiB", f"{total:.1f}", "≤ 32", "yes" if total <= 32 else "**no**"))
    if "oci" in r:
        rows += oci_ratios(r["oci"])
    if "persist" in r:
        rows += persist_ratios(r["persist"])
    return f"{RATIOS_TITLE}\n\n| ratio | value | bar | met |\n|---|---|---|---|\n" + ratio_table_rows(rows)


def write_report(args, r):
    with open(os.path.join(HOME, "bench", "notes.md")) as notes:
        sections = [header(args, r), latency_section(r), throughput_section(r), egress_section(r), idle_section(r),
                    many_section(r), debian_section(args, r), oci_section(r.get("oci")), persist_section(r.get("persist")),
                    ratios(r), notes.read()]
    with open(args.out, "w") as f:
        f.write("\n".join(sections))
    print(f"wrote {args.out}", file=sys.stderr)


def update_section(args, title, section, new_rows):
    """--only-oci, --only-persist: puts a section into an existing report (in place of the one there, else
    before the ratios) and its rows into the ratio table (in place of theirs, else at its end)."""
    path = args.out
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    pattern = re.escape(title) + r"\n.*?(?=\n## |\Z)"
    if re.search(pattern, text, flags=re.S):
        text = re.sub(pattern, lambda _: section, text, count=1, flags=re.S)
    elif "\n" + RATIOS_TITLE in text:
        head, tail = text.split("\n" + RATIOS_TITLE, 1)
        text = head.rstrip("\n") + "\n\n" + section + "\n" + RATIOS_TITLE + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    if "\n" + RATIOS_TITLE + "\n" not in text:
        text = text.rstrip("\n") + f"\n\n{RATIOS_TITLE}\n\n| ratio | value | bar | met |\n|---|---|---|---|\n"
    lines = text.split("\n")
    first = lines.index(RATIOS_TITLE) + 4  # the title, a blank line, the header and its rule
    end = first
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    kept = [l for l in lines[first:end] if not any(l.startswith(f"| {name} |") for name, *_ in new_rows)]
    lines[first:end] = kept + ratio_table_rows(new_rows).rstrip("\n").split("\n")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote the section '{title[3:]}' of {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
