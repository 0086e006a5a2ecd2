#!/usr/bin/env python3
"""The measurement behind issue 15's choice of mechanism: what the other candidate (a QEMU
user-mode NIC with restrict=on, its only way out a guestfwd to a host-side proxy) does, in a
raw VM started with vmgate's own command line plus that NIC.

  python3 bench/egress_guestfwd.py URL_PATH_ON_A_HOST_HTTP_SERVER_PORT

Prints, for each guest command, its exit status, its time and its output: a 100 MB download
through guestfwd (twice: a guestfwd to a socket chardev carries one connection), direct TCP
connections (restrict=on refuses them at once), and a DNS lookup (UDP: dropped, not refused).
Start a server first, e.g. `python3 -m http.server PORT --bind 127.0.0.1` in a directory with
a 100 MB file named `big`.
"""
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
from bench import DATA, EXIT, HELLO, START, WINDOW, RawVm, frame, read_frame, s  # noqa: E402


def run(vm, script, i):
    argv = [b"/bin/sh", b"-c", script.encode()]
    start = struct.pack(">BH", 0, len(argv)) + b"".join(s(a) for a in argv) + struct.pack(">H", 0) + s(b"") + s(b"") \
        + struct.pack(">HHH", 0, 0, 0)
    vm.agent.sendall(frame(START, i, start))
    out = {1: b"", 2: b""}
    while True:
        t, fid, pl = read_frame(vm.agent)
        if fid != i:
            continue
        if t == DATA:
            out[pl[0]] += pl[1:]
            vm.agent.sendall(frame(WINDOW, i, struct.pack(">BI", pl[0], len(pl) - 1)))
        elif t == EXIT:
            return struct.unpack(">i", pl[:4])[0], out[1].decode(), out[2].decode()


def main():
    port = int(sys.argv[1])
    plain = bench.qemu_args

    def with_nic(rundir, template=False):
        state, argv = plain(rundir, template)
        argv[argv.index("-append") + 1] += " vmgate.net=10.0.2.15/24,10.0.2.2,10.0.2.3"
        argv += ["-netdev", f"user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:80-tcp:127.0.0.1:{port}",
                 "-device", "virtio-net-device,netdev=n0"]
        return state, argv

    bench.qemu_args = with_nic
    vm = RawVm()
    try:
        vm.await_type(HELLO)
        for i, cmd in enumerate(["time wget -q -O /dev/null http://10.0.2.100/big",
                                 "time timeout 15 wget -q -O /dev/null http://10.0.2.100/big",
                                 "time timeout 60 wget -q -O- http://93.184.216.34/",
                                 f"time timeout 60 nc 10.0.2.2 {port} </dev/null",
                                 "time timeout 30 nslookup example.com"], start=1):
            t0 = time.monotonic()
            code, out, err = run(vm, cmd, i)
            print(f"{cmd}\n  exit={code} host_s={time.monotonic() - t0:.2f} out={out.strip()[:200]!r} "
                  f"err={err.strip()[-300:]!r}", flush=True)
    finally:
        vm.close()


if __name__ == "__main__":
    main()
