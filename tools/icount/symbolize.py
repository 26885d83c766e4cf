#!/usr/bin/env python3
"""Adds up tools/icount counts per function: symbolize.py ELF COUNTS [BYTES [TOP]]."""
import subprocess, bisect, collections, sys
elf, f = sys.argv[1], sys.argv[2]
nbytes = float(sys.argv[3]) if len(sys.argv) > 3 else 0
syms = []
for line in subprocess.run(["nm", "-n", "-C", "--defined-only", elf], capture_output=True, text=True).stdout.splitlines():
    p = line.split(" ", 2)
    if len(p) == 3 and p[1] in "tTwW": syms.append((int(p[0], 16), p[2]))
addrs = [a for a, _ in syms]
c = collections.Counter(); tot = 0
for l in open(f):
    a, n = l.split(); a = int(a, 16); n = int(n)
    i = bisect.bisect_right(addrs, a) - 1
    c[syms[i][1][:110] if i >= 0 else "?"] += n; tot += n
print("total insns %.1fM" % (tot/1e6), ("insn/B %.3f" % (tot/nbytes)) if nbytes else "")
for k, v in c.most_common(int(sys.argv[4]) if len(sys.argv) > 4 else 45): print("%5.1f%% %8.0fk %s" % (100.0*v/tot, v/1e3, k))
