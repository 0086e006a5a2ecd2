#!/usr/bin/env python3
"""vmgate benchmarks.

Measures, in one run on one machine, each vmgate path beside the floor it is judged
against, and writes docs/benchmarks.md:

  raw QEMU boot to the agent's HELLO        (same QEMU command line, no Java)
  raw QEMU restore to the agent's CONFIGURED
  raw virtio-serial throughput guest->host  (dd into a second port, no agent protocol)
  OpenSSH's own `ssh localhost true` against a local sshd
  vmgate run -- true          cold (--no-snapshot) and restored
  ssh -p PORT host true       cold, restored, and from a warm pool
  ssh host 'dd if=/dev/zero bs=64k ...'   throughput (and busybox head -c, for reference)

Usage: bench/bench.py [--runs N] [--cold-runs N] [--out docs/benchmarks.md]
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
    """(guest RAM touched, QEMU's private memory) in KiB: the Rss of the guest-RAM mapping (the
    anonymous one of the guest's size) and Private_Clean + Private_Dirty of the whole process."""
    guest, private, size = 0, 0, None
    for line in open(f"/proc/{pid}/smaps"):
        first = line.split()[0]
        if "-" in first and not first.endswith(":"):
            lo, hi = (int(x, 16) for x in first.split("-"))
            size = (hi - lo) // 1024
            anonymous = len(line.split()) < 6
        elif first == "Rss:" and size == GUEST_MIB * 1024 and anonymous:
            guest += int(line.split()[1])
        elif first in ("Private_Clean:", "Private_Dirty:"):
            private += int(line.split()[1])
    return guest, private


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


def idle_session_memory(srv, ssh, sessions=4):
    """Host memory an idle SSH session costs beyond the guest RAM its VM touched: QEMU's private
    memory minus that guest RAM, plus the server JVM's growth per session (RSS, after a warm-up)."""
    subprocess.run(ssh(srv.port) + ["true"], check=True)
    time.sleep(1)
    rss0 = kib(f"/proc/{srv.proc.pid}/status", "VmRSS")
    clients = [subprocess.Popen(ssh(srv.port) + ["sleep 120"]) for _ in range(sessions)]
    try:
        deadline = time.monotonic() + 120
        while len(children_named(srv.proc.pid, "qemu")) < sessions and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # every session settled into its idle state
        rss1 = kib(f"/proc/{srv.proc.pid}/status", "VmRSS")
        per_vm = [qemu_memory(pid) for pid in children_named(srv.proc.pid, "qemu")]
    finally:
        for c in clients:
            c.kill()
            c.wait()
    if len(per_vm) != sessions:
        raise RuntimeError(f"expected {sessions} idle VMs, found {len(per_vm)}")
    guest = statistics.median(g for g, _ in per_vm)
    qemu_extra = statistics.median(p - g for g, p in per_vm)
    jvm = (rss1 - rss0) / sessions
    print(f"idle session: guest RAM touched {guest / 1024:.1f} MiB, QEMU beyond it {qemu_extra / 1024:.1f} MiB, "
          f"JVM {jvm / 1024:.1f} MiB", file=sys.stderr)
    return {"guest": guest, "qemu_extra": qemu_extra, "jvm": jvm}


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--cold-runs", type=int, default=20)
    ap.add_argument("--out", default=os.path.join(HOME, "docs", "benchmarks.md"))
    ap.add_argument("--only-run", action="store_true",
                    help="measure only the `vmgate run` rows and their floors; print them, write no report")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="vmgate-bench-work-")
    key = os.path.join(work, "id")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    ssh = lambda port: ["ssh", "-p", str(port), "-i", key, *SSH_OPTS, "127.0.0.1"]
    subprocess.run([VMGATE, "image", "warm"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    r = {}
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
            if label == "ssh_restored":
                # The same generator as the raw floor (dd, 64 KiB blocks), so the ratio measures the
                # transport. busybox `head -c` is CPU-bound under TCG (see the note in the report).
                size = 200 * 1024 * 1024
                empty = timed(ssh(srv.port) + ["true"])
                dt = [timed(ssh(srv.port) + [f"dd if=/dev/zero bs=64k count={size // 65536} 2>/dev/null"]) for _ in range(3)]
                r["ssh_tput"] = size / (statistics.median(dt) - empty)
                dt = [timed(ssh(srv.port) + [f"head -c {size} /dev/zero"]) for _ in range(2)]
                r["ssh_head_tput"] = size / (statistics.median(dt) - empty)
                dt = [timed(ssh(srv.port) + [f"head -c {size} /dev/zero > /dev/null"]) for _ in range(2)]
                r["guest_head_tput"] = size / (statistics.median(dt) - empty)
                r["idle_memory"] = idle_session_memory(srv, ssh)
        finally:
            srv.close()
    r["raw_tput"] = statistics.median([raw_throughput() for _ in range(3)])
    r["raw_pipe_tput"] = statistics.median([raw_throughput(piped=True) for _ in range(3)])
    print(f"throughput: ssh {r['ssh_tput'] / 1e6:.1f} MB/s, raw virtio-serial {r['raw_tput'] / 1e6:.1f} MB/s", file=sys.stderr)
    write_report(args, r)
    shutil.rmtree(work, ignore_errors=True)


def write_report(args, r):
    ms = lambda x: f"{x * 1000:.0f} ms"
    med = lambda k: r[k]["median"]
    rows = [
        ("`vmgate run --no-snapshot -- true` / raw QEMU boot-to-hello", med("run_cold") / med("raw_boot"), "≤ 1.1"),
        ("`vmgate run -- true` (restored) / raw QEMU restore-to-ready", med("run_restored") / med("raw_restore"), "—"),
        ("cold `ssh host true` / raw QEMU boot-to-hello", med("ssh_cold") / med("raw_boot"), "≤ 1.1"),
        ("restored `ssh host true` / (raw restore + OpenSSH `ssh localhost true`)",
         med("ssh_restored") / (med("raw_restore") + med("openssh")), "≤ 1.25"),
        ("pooled `ssh host true` / OpenSSH `ssh localhost true`", med("ssh_pooled") / med("openssh"), "≤ 1.5"),
        ("`ssh host 'dd if=/dev/zero bs=64k'` / raw virtio-serial throughput", r["ssh_tput"] / r["raw_tput"], "≥ 0.8"),
        ("`ssh host 'dd if=/dev/zero bs=64k'` / raw virtio-serial through a pipe", r["ssh_tput"] / r["raw_pipe_tput"], "—"),
    ]
    def meets(ratio, bar):
        if bar == "—":
            return ""
        limit = float(bar.split()[1])
        return "yes" if (ratio <= limit if bar.startswith("≤") else ratio >= limit) else "**no**"
    uname = os.uname()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    with open(args.out, "w") as f:
        f.write("# Benchmarks\n\n")
        f.write("Produced by `bench/bench.py` (command: `python3 bench/bench.py"
                + (f" --runs {args.runs}" if args.runs != 20 else "")
                + (f" --cold-runs {args.cold_runs}" if args.cold_runs != 20 else "") + "`), which measures every row "
                "below in one run on one machine: each vmgate path beside the floor it is compared with. "
                "Wall-clock times from starting the client command to its exit, so the `./vmgate` launcher and "
                "JVM start-up are included where a user would pay them. `vmgate run` rows are measured in "
                "alternation with their raw floor, since this machine's speed drifts within minutes.\n\n")
        f.write(f"Machine: {cpu}, {os.cpu_count()} CPUs, kernel {uname.release}; accelerator: TCG "
                "(no vmx/svm here); guest: 1 vCPU, 256 MiB. Run at "
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n\n")
        f.write("## Latency\n\n| what | runs | median | p95 |\n|---|---|---|---|\n")
        for k in ["raw_boot", "raw_restore", "openssh", "run_cold", "run_restored", "ssh_cold", "ssh_restored", "ssh_pooled"]:
            f.write(f"| {r[k]['name']} | {r[k]['n']} | {ms(r[k]['median'])} | {ms(r[k]['p95'])} |\n")
        f.write("\n## Throughput\n\n| what | MB/s |\n|---|---|\n")
        f.write(f"| raw virtio-serial, guest `dd bs=64k` into a second port, host reads | {r['raw_tput'] / 1e6:.1f} |\n")
        f.write(f"| raw virtio-serial through a pipe, guest `dd | dd bs=64k` into the port | {r['raw_pipe_tput'] / 1e6:.1f} |\n")
        f.write(f"| `ssh host 'dd if=/dev/zero bs=64k count=3200'` (restored VM) | {r['ssh_tput'] / 1e6:.1f} |\n")
        f.write(f"| `ssh host 'head -c 200M /dev/zero'` (restored VM) | {r['ssh_head_tput'] / 1e6:.1f} |\n")
        f.write(f"| in-guest `head -c 200M /dev/zero > /dev/null`, no transport at all | {r['guest_head_tput'] / 1e6:.1f} |\n")
        f.write("\nThroughput rows subtract the time of an empty `ssh host true` on the same server, so they "
                "measure the transfer, not the VM start. busybox's `head -c` copies in small blocks and is "
                "CPU-bound under TCG: its in-guest rate with no transport at all caps the `head -c` row, so the "
                "transport is judged with `dd bs=64k`, the same generator as the raw floor.\n")
        m = r["idle_memory"]
        overhead = (m["qemu_extra"] + m["jvm"]) / 1024
        f.write("\n## Memory per idle session\n\n| what | MiB |\n|---|---|\n")
        f.write(f"| guest RAM the VM touched (Rss of QEMU's guest-RAM mapping) | {m['guest'] / 1024:.1f} |\n")
        f.write(f"| QEMU's private memory beyond that (TCG code cache, device state, heap) | {m['qemu_extra'] / 1024:.1f} |\n")
        f.write(f"| server JVM's RSS growth per session | {m['jvm'] / 1024:.1f} |\n")
        f.write("\nFour idle `ssh host 'sleep 120'` sessions on one server (restored VMs), medians over their "
                "QEMUs. QEMU's shared pages (its binary and libraries, ~20 MiB) are not counted: every VM "
                "shares them.\n")
        f.write("\n## Ratios against the floors (medians)\n\n| ratio | value | bar | met |\n|---|---|---|---|\n")
        for name, ratio, bar in rows:
            f.write(f"| {name} | {ratio:.2f} | {bar} | {meets(ratio, bar)} |\n")
        f.write(f"| host memory per idle session beyond the guest RAM it touched, MiB | {overhead:.1f} | ≤ 32 | "
                f"{'yes' if overhead <= 32 else '**no**'} |\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
