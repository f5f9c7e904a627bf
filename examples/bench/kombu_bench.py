"""Kombu's side of the pidbox benchmark.

usage: kombu_bench.py URL MODE ...
  seq DEST N        N sequential calls of ping to DEST
  gather N ITER     ITER broadcasts of ping with limit=N
  nolimit ITER      ITER broadcasts of ping without a limit (timeout 1 s)

Prints one JSON list of latencies in milliseconds.
"""
import json
import sys
import time

from kombu import Connection
from kombu.pidbox import Mailbox

url, mode = sys.argv[1:3]
mailbox = Mailbox("celery", type="fanout", accept=["json"])
out = []
with Connection(url) as conn:
    bound = mailbox(conn)
    if mode == "seq":
        dest, n = sys.argv[3], int(sys.argv[4])
        for i in range(n + 20):
            t = time.perf_counter()
            r = bound._broadcast("ping", {}, [dest], reply=True, timeout=5, limit=1)
            d = (time.perf_counter() - t) * 1000
            assert len(r) == 1, r
            if i >= 20:
                out.append(d)
    elif mode == "gather":
        n, iters = int(sys.argv[3]), int(sys.argv[4])
        for i in range(iters + 3):
            t = time.perf_counter()
            r = bound.multi_call("ping", timeout=5, limit=n)
            d = (time.perf_counter() - t) * 1000
            assert len(r) == n, (len(r), n)
            if i >= 3:
                out.append(d)
    elif mode == "nolimit":
        iters = int(sys.argv[3])
        for i in range(iters):
            t = time.perf_counter()
            bound.multi_call("ping", timeout=1)
            out.append((time.perf_counter() - t) * 1000)
print(json.dumps(out))
