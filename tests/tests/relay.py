#!/usr/bin/env python3
"""A frame-impairing relay between QEMU's `-netdev dgram` socket and a TAP
device (netem is not available on the test machines).

Usage: relay.py TAP RELAY_PORT QEMU_PORT SEED DROP DUP REORDER STATS_FILE

Listens on 127.0.0.1:RELAY_PORT (QEMU sends each guest frame there as one
datagram) and sends host frames to 127.0.0.1:QEMU_PORT. IPv4 frames in both
directions are impaired with a seeded generator: dropped with probability
DROP, sent twice with DUP, held back and sent after the next frame of the
same direction (reordered) with REORDER. Other frames (ARP) pass. Counts are
written to STATS_FILE every half second and on exit (SIGTERM).
"""
import fcntl
import os
import random
import select
import signal
import socket
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def main():
    tap_name, relay_port, qemu_port, seed, drop, dup, reorder, stats_path = sys.argv[1:9]
    relay_port, qemu_port, seed = int(relay_port), int(qemu_port), int(seed)
    drop, dup, reorder = float(drop), float(dup), float(reorder)
    tap = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tap, TUNSETIFF, struct.pack("16sH", tap_name.encode(), IFF_TAP | IFF_NO_PI))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", relay_port))
    qemu = ("127.0.0.1", qemu_port)
    rng = random.Random(seed)
    stats = {"frames": 0, "dropped": 0, "duplicated": 0, "reordered": 0}
    held = [None, None]  # per direction: 0 = to the TAP (host), 1 = to QEMU (guest)

    def send(d, f):
        try:
            if d == 0:
                os.write(tap, f)
            else:
                udp.sendto(f, qemu)
        except OSError:
            pass

    def write_stats():
        with open(stats_path + ".tmp", "w") as out:
            out.write(" ".join("%s=%d" % kv for kv in stats.items()) + "\n")
        os.replace(stats_path + ".tmp", stats_path)

    def stop(*_):
        write_stats()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)

    def frame(d, f):
        stats["frames"] += 1
        if len(f) < 14 or f[12:14] != b"\x08\x00":
            send(d, f)
            return
        r = rng.random()
        if r < drop:
            stats["dropped"] += 1
            return
        if r < drop + reorder and held[d] is None:
            stats["reordered"] += 1
            held[d] = f
            return
        send(d, f)
        if r >= 1.0 - dup:
            stats["duplicated"] += 1
            send(d, f)
        if held[d] is not None:
            send(d, held[d])
            held[d] = None

    last = time.monotonic()
    while True:
        ready, _, _ = select.select([tap, udp], [], [], 0.02)
        if not ready:
            # Quiet: let held frames go (a reordering, not a loss).
            for d in (0, 1):
                if held[d] is not None:
                    send(d, held[d])
                    held[d] = None
        for r in ready:
            if r is tap:
                frame(1, os.read(tap, 65536))
            else:
                f, _ = udp.recvfrom(65536)
                frame(0, f)
        now = time.monotonic()
        if now - last > 0.5:
            write_stats()
            last = now


if __name__ == "__main__":
    main()
