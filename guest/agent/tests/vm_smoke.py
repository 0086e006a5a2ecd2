#!/usr/bin/env python3
"""Boots the agent as PID 1 of a real QEMU microVM and drives it over virtio-serial.

Builds its own small initramfs (the agent as /init, the virtio and overlay modules, a
busybox root at /rootfs), the layout the Java image builder produces. Slow (TCG boot) and
needs qemu-system-x86_64, a Debian cloud kernel and busybox-static, so it is not part of
`make test`: run `make vm-test`.

usage: vm_smoke.py path/to/vmgate-agent [--kernel /boot/vmlinuz-...]"""
import glob
import json
import re
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smoke import (CONFIGURE, CONFIGURED, Agent, frame, s)  # noqa: E402

MODULES = ["kernel/drivers/virtio/virtio.ko", "kernel/drivers/virtio/virtio_ring.ko",
           "kernel/drivers/virtio/virtio_mmio.ko", "kernel/drivers/char/virtio_console.ko",
           "kernel/fs/overlayfs/overlay.ko"]


class Cpio:
    """Just enough of the newc format: ownership, modes and devices are header fields."""

    def __init__(self):
        self.out = bytearray()
        self.ino = 1

    def add(self, name, mode, data=b"", rdev=(0, 0)):
        self.ino += 1
        name_b = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0]
        self.out += b"070701" + b"".join(b"%08X" % f for f in fields) + name_b
        self.out += b"\0" * (-len(self.out) % 4) + data
        self.out += b"\0" * (-len(self.out) % 4)

    def dir(self, name, mode=0o755):
        self.add(name, 0o040000 | mode)

    def file(self, name, data, mode=0o644):
        self.add(name, 0o100000 | mode, data)

    def symlink(self, name, target):
        self.add(name, 0o120777, target.encode())

    def finish(self):
        self.add("TRAILER!!!", 0)
        return bytes(self.out)


def initramfs(agent, release):
    c = Cpio()
    c.file("init", open(agent, "rb").read(), 0o755)
    for d in ("dev", "proc", "sys", "etc", "etc/vmgate", "rootfs"):
        c.dir(d)
    c.add("dev/console", 0o020600, rdev=(5, 1))
    moddir = f"/lib/modules/{release}"
    order = [MODULES[1], MODULES[0], MODULES[2], MODULES[3], MODULES[4]]  # virtio_ring first
    made = set()
    for m in order:
        parts = (moddir + "/" + m).strip("/").split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in made:
                made.add(d)
                c.dir(d)
        c.file(moddir.strip("/") + "/" + m, open(moddir + "/" + m, "rb").read())
    c.file("etc/vmgate/modules", "".join(f"{moddir}/{m}\n" for m in order).encode())
    r = "rootfs/"
    for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "run", "var"):
        c.dir(r + d)
    c.dir(r + "root", 0o700)
    c.dir(r + "tmp", 0o1777)
    c.file(r + "bin/busybox", open("/bin/busybox", "rb").read(), 0o755)
    for applet in subprocess.run(["/bin/busybox", "--list-full"], capture_output=True, text=True).stdout.split():
        if "/" in applet and applet != "bin/busybox":
            c.symlink(r + applet, "../" * applet.count("/") + "bin/busybox")
    c.file(r + "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    c.file(r + "etc/group", b"root:x:0:\n")
    return c.finish()


class Vm:
    def __init__(self, agent, kernel, append="", tmp=None, incoming=None):
        self.tmp = tmp
        release = os.path.basename(kernel).removeprefix("vmlinuz-")
        self.initrd = os.path.join(tmp, "initrd")
        with open(self.initrd, "wb") as f:
            f.write(initramfs(agent, release))
        self.sock = os.path.join(tmp, "agent.sock")
        self.qmp_path = os.path.join(tmp, "qmp.sock")
        for path in (self.sock, self.qmp_path):
            if os.path.exists(path):
                os.unlink(path)
        extra = ["-incoming", incoming] if incoming else []
        self.console = os.path.join(tmp, "console.log")
        self.qemu = subprocess.Popen(
            ["qemu-system-x86_64", "-M", "microvm,pit=on,pic=on,rtc=on,acpi=on", "-accel", "tcg", "-m", "256",
             "-kernel", kernel, "-initrd", self.initrd, "-append", "console=ttyS0 quiet panic=-1" + tsc_khz() + " " + append,
             "-nographic", "-no-reboot", "-device", "virtio-serial-device",
             "-chardev", f"socket,id=agent,path={self.sock},server=on,wait=off",
             "-device", "virtserialport,chardev=agent,name=org.vmgate.agent",
             "-qmp", f"unix:{self.qmp_path},server=on,wait=off"] + extra,
            stdin=subprocess.DEVNULL, stdout=open(self.console, "wb"), stderr=subprocess.STDOUT)
        self.t0 = time.monotonic()

    def connect(self, path=None):
        path = path or self.sock
        for _ in range(200):
            if os.path.exists(path):
                break
            time.sleep(0.05)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(path)
        return c

    def qmp(self, *commands):
        """Runs QMP commands in order; returns the last answer."""
        q = self.connect(self.qmp_path).makefile("rw")
        q.readline()  # greeting
        for cmd in ("qmp_capabilities",) + commands:
            name, args = (cmd, {}) if isinstance(cmd, str) else cmd
            q.write(json.dumps({"execute": name, "arguments": args}) + "\n")
            q.flush()
            while True:
                answer = json.loads(q.readline())
                if "return" in answer or "error" in answer:
                    break
        q.close()
        return answer

    def log(self):
        return open(self.console, "rb").read().decode(errors="replace")

    def kill(self):
        if self.qemu.poll() is None:
            self.qemu.kill()
        self.qemu.wait()


def tsc_khz():
    """TCG guests often hang calibrating their clock without this hint (see HostClock.java)."""
    for line in open("/proc/cpuinfo"):
        if line.startswith("cpu MHz"):
            return f" tsc_early_khz={round(float(line.split(':')[1]) * 1000)}"
    return ""


def sh(a, i, cmd, **kw):
    p = a.run(["sh", "-c", cmd], i=i, **kw)
    return bytes(p.out[1]).decode(), bytes(p.out[2]).decode(), p.exit


def check(cond, what):
    print(("  ok   " if cond else "  FAIL ") + what)
    return 0 if cond else 1


def main():
    agent = os.path.abspath(sys.argv[1])
    cloud = sorted(glob.glob("/boot/vmlinuz-*-cloud-amd64"), key=lambda k: [int(x) if x.isdigit() else x for x in re.split(r"[.-]", k)])
    kernel = sys.argv[sys.argv.index("--kernel") + 1] if "--kernel" in sys.argv else (cloud[-1] if cloud else "/boot/vmlinuz")
    fails = 0
    with tempfile.TemporaryDirectory() as tmp:
        vm = Vm(agent, kernel, "vmgate.rwsize=16", tmp)
        try:
            conn = vm.connect()
            a = Agent(conn, hello_timeout=90)
            fails += check(a.hello[0] == 2 and a.hello[2] == os.path.basename(kernel)[8:],
                           f"HELLO after {time.monotonic() - vm.t0:.1f}s: {a.hello}")
            out, err, ex = sh(a, 1, "uname -r; hostname; id -u; pwd; cat /proc/loadavg /proc/sys/kernel/threads-max")
            print("      " + out.replace("\n", " | "))
            fails += check(ex[0] == 0 and "\nvmgate\n0\n/root\n" in out, "uname, hostname vmgate, root, cwd /root")
            out, _, _ = sh(a, 2, "cat /proc/mounts")
            fails += check(all(m in out for m in ("overlay / overlay", "devpts /dev/pts", "tmpfs /tmp", "proc /proc",
                                                  "sysfs /sys", "devtmpfs /dev", "tmpfs /run")), "mounts")
            out, err, ex = sh(a, 3, "echo hello > /etc/new && cat /etc/new && dd if=/dev/zero of=/big bs=1M count=40")
            fails += check(out == "hello\n" and "No space left" in err and ex[0] != 0,
                           f"root is writable and limited by vmgate.rwsize ({err.strip().splitlines()[0]})")
            out, _, ex = sh(a, 4, "tty; stty size", pty=("xterm", 30, 100))
            fails += check(out.startswith("/dev/pts/0") and "30 100" in out, f"PTY {out.split()[0]}")
            out, _, ex = sh(a, 5, "ip link show lo; ping -c1 -W2 127.0.0.1 >/dev/null && echo pong")
            fails += check("UP" in out and "pong" in out, "lo is up")
            a.send(frame(CONFIGURE, 0, struct.pack(">Q", time.time_ns()) + s("vm-test") + s(os.urandom(64))))
            while a.step(10)[0] != CONFIGURED:
                pass
            out, _, _ = sh(a, 6, "hostname; date +%s")
            host, when = out.split()
            fails += check(host == "vm-test" and abs(int(when) - time.time()) < 5 and not a.conn_errors,
                           "CONFIGURE set hostname and clock")
            sh(a, 7, "sleep 0.2 & echo started")
            time.sleep(1)
            out, _, _ = sh(a, 8, "ps -o stat,comm | grep -c '^Z' || true")
            fails += check(out.strip() == "0", "orphans reaped (no zombies)")
            t = time.monotonic()
            p = a.run(["dd", "if=/dev/zero", "bs=65536", "count=763"], i=10)
            dt = time.monotonic() - t
            fails += check(len(p.out[1]) == 763 * 65536, f"50 MB stdout in {dt:.1f}s ({50 / dt:.0f} MB/s)")

            # The host end goes away and comes back (a restore does this): the agent waits.
            conn.close()
            time.sleep(1)
            conn = vm.connect()
            a = Agent(conn, hello=False)
            out, _, ex = sh(a, 1, "echo again")
            fails += check(out == "again\n", "serves a new host connection after a disconnect")

            # A framing error powers the VM off.
            a.send(struct.pack(">I", 2))
            try:
                vm.qemu.wait(30)
            except subprocess.TimeoutExpired:
                pass
            fails += check(vm.qemu.poll() is not None and "framing error" in vm.log(),
                           "framing error powers the VM off")
        finally:
            vm.kill()
            log = vm.log()
            agent_lines = [x for x in log.splitlines() if "vmgate-agent" in x]
            print("console (agent lines):\n    " + "\n    ".join(agent_lines or ["(none)"]))
            if fails or sys.exc_info()[0]:
                print(log[-3000:])
        # Snapshot and restore, as the warm start does: the restored agent answers CONFIGURE.
        state = os.path.join(tmp, "state")
        vm = Vm(agent, kernel, "", tmp)
        try:
            a = Agent(vm.connect(), hello_timeout=90)
            sh(a, 1, "echo before > /root/mark")
            vm.qmp("stop", ("migrate", {"uri": f"exec:cat > {state}"}))
            while vm.qmp("query-migrate")["return"].get("status") not in ("completed", "failed"):
                time.sleep(0.1)
            vm.kill()
            vm = Vm(agent, kernel, "", tmp, incoming=f"exec:cat {state}")
            t = time.monotonic()
            a = Agent(vm.connect(), hello=False)
            while vm.qmp("query-status")["return"]["status"] == "inmigrate":
                time.sleep(0.05)
            vm.qmp("cont")
            a.send(frame(CONFIGURE, 0, struct.pack(">Q", time.time_ns()) + s("restored") + s(os.urandom(32))))
            while a.step(30)[0] != CONFIGURED:
                pass
            dt = time.monotonic() - t
            out, _, _ = sh(a, 2, "hostname; cat /root/mark")
            fails += check(out == "restored\nbefore\n", f"restored from a snapshot, CONFIGURED {dt:.1f}s after launch")
        finally:
            vm.kill()

        # The limit on processes, from the kernel command line.
        vm = Vm(agent, kernel, "vmgate.maxprocs=100", tmp)
        try:
            a = Agent(vm.connect(), hello_timeout=90)
            out, err, ex = sh(a, 1, "cat /proc/sys/kernel/threads-max; i=0; while [ $i -lt 200 ]; do "
                                    "sleep 5 & i=$((i+1)); done 2>&1 | tail -1; ps | wc -l")
            print("      " + (out + err).replace("\n", " | "))
            fails += check(out.startswith("100\n") and "fork" in out + err, "vmgate.maxprocs bounds fork")
        finally:
            vm.kill()
    print("vm_smoke.py: " + ("all passed" if not fails else f"{fails} failed"))
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
