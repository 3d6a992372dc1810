#!/usr/bin/env python3
"""Measures what readers that never drain cost `depotai serve`, and that they go away.

    python3 scripts/serve-stalled-readers.py ROOT REPO [N]

Starts `depotai serve --root ROOT` (target/debug/depotai, or $DEPOTAI), opens N
(default 200) connections that each ask for REPO's largest blob with a 4 KiB receive
buffer and never read, and prints the server's descriptors and resident memory over
40 s: they stay put while the stalled responses wait, and fall back once the idle
timeout (30 s without a byte moving) closes them.
"""
import os
import socket
import subprocess
import sys
import time

root, repo = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 200
exe = os.environ.get("DEPOTAI", os.path.join(os.path.dirname(__file__), "..", "target", "debug", "depotai"))
p = subprocess.Popen([exe, "serve", "--root", root, "--addr", "127.0.0.1:0", "--quiet"], stdout=subprocess.PIPE)
try:
    host, port = p.stdout.readline().decode().strip().rsplit("http://", 1)[1].rsplit(":", 1)
    blobs = os.path.join(root, repo, "blobs", "sha256")
    layer = "sha256:" + max(os.listdir(blobs), key=lambda b: os.path.getsize(os.path.join(blobs, b)))

    def fds():
        return len(os.listdir(f"/proc/{p.pid}/fd"))

    def rss():
        return next(l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS")).split()[1]

    print(f"before: fds={fds()} rss={rss()} KiB", flush=True)
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, int(port)))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(f"GET /v2/{repo}/blobs/{layer} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        socks.append(s)
    t0 = time.time()
    for t in [2, 10, 25, 33, 40]:
        time.sleep(max(0, t - (time.time() - t0)))
        print(f"t={t:>2}s with {n} stalled readers: fds={fds()} rss={rss()} KiB", flush=True)
finally:
    p.kill()
