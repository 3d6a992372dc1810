"""What the bench scripts' embedded Python shares: starting and talking to the bench
servers, a fresh docker-registry, and measuring a process (CPU, peak RSS, peak disk).

The scripts import it with `sys.path.insert(0, os.environ["BENCH_DIR"])` (bench/lib.sh
exports BENCH_DIR). Linux only: everything is read from /proc.
"""

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import time

TICK = os.sysconf("SC_CLK_TCK")
CORES = len(os.sched_getaffinity(0))
GIB, MIB = 1 << 30, 1 << 20


def wait_for(path, proc, what, seconds=3600):
    """The contents of `path` once a server started as `proc` has written it (its
    address); fails if the server exits first or `seconds` pass."""
    for _ in range(int(seconds * 10)):
        if os.path.exists(path) and os.path.getsize(path):
            with open(path) as f:
                return f.read().strip()
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with status {proc.returncode}")
        time.sleep(0.1)
    raise SystemExit(f"{what} did not start")


def command(proc, line):
    """One command to a bench server on its stdin (`clear`, `stats`, `log`); its JSON
    answer from its stdout."""
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def cpu(pid):
    """utime + stime of a live process (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def tree(pid):
    """`pid` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def disk_use(dirs):
    """Blocks used by the files under `dirs`, in bytes."""
    total = 0
    for top in dirs:
        for d, _, files in os.walk(top):
            for f in files:
                try:
                    total += os.lstat(os.path.join(d, f)).st_blocks * 512
                except OSError:
                    pass
    return total


def open_files(pids, dirs):
    """Blocks of regular files the processes hold open that `disk_use` of `dirs`
    misses: deleted ones, and ones open for writing elsewhere."""
    seen, total = set(), 0
    for p in pids:
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{p}/fd/{fd}")
                st = os.stat(f"/proc/{p}/fd/{fd}")
                with open(f"/proc/{p}/fdinfo/{fd}") as f:
                    flags = int(f.read().split("flags:")[1].split()[0], 8)
            except (OSError, IndexError, ValueError):
                continue
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                continue
            deleted = target.endswith(" (deleted)")
            inside = any(target.startswith(d + "/") for d in dirs)
            if deleted or (not inside and flags & 3):
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def rss(pids):
    """The processes' resident memory summed, bytes."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                total += int(next(l for l in f if l.startswith("VmRSS:")).split()[1]) * 1024
        except (OSError, StopIteration):
            pass
    return total


def fresh(*dirs):
    """Empty directories, made anew."""
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)


def measure(cmd, env, cwd, stdout_path, watch=(), what=None):
    """Runs `cmd` (its stdout into `stdout_path`), sampling its process tree every
    0.2 s, and fails if it fails. Returns a dict: wall (s), cpu (its user + system s,
    children included, from wait4), rss (peak: wait4's, or the tree's sampled sum if
    larger), disk (peak of `watch`'s files plus the files the tree holds open deleted or
    for writing elsewhere), stdout (text)."""
    watch = list(watch)
    peak_disk = peak_rss = 0
    with open(stdout_path, "wb") as out:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out)
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            pids = tree(p.pid)
            peak_disk = max(peak_disk, disk_use(watch) + open_files(pids, watch))
            peak_rss = max(peak_rss, rss(pids))
            time.sleep(0.2)
        wall = time.monotonic() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{what or cmd[0]} failed with status {code}")
    with open(stdout_path) as f:
        stdout = f.read()
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss": max(usage.ru_maxrss * 1024, peak_rss),
        "disk": peak_disk,
        "stdout": stdout,
    }


def parse_size(s):
    """A size as depotai's flags take it: K/M/G/T and KiB…TiB binary, KB…TB decimal."""
    m = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", s)
    units = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": MIB, "mib": MIB, "g": GIB,
             "gib": GIB, "t": 1 << 40, "tib": 1 << 40, "kb": 10**3, "mb": 10**6,
             "gb": 10**9, "tb": 10**12}
    if not m or m.group(2).lower() not in units:
        raise SystemExit(f"{s!r} is not a size such as 50GB or 3GiB")
    return int(m.group(1)) * units[m.group(2).lower()]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Registry:
    """A fresh Debian docker-registry on 127.0.0.1 with its own data directory
    (`work/name`, emptied first)."""

    def __init__(self, work, name="registry"):
        self.dir = os.path.join(work, name)
        fresh(self.dir)
        port = free_port()
        self.addr = f"127.0.0.1:{port}"
        cfg = os.path.join(self.dir, "config.yml")
        with open(cfg, "w") as f:
            f.write("version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\n"
                    f"storage: {{filesystem: {{rootdirectory: {self.dir}/data}}}}\n"
                    f"http: {{addr: {self.addr}}}\n")
        self.proc = subprocess.Popen(["docker-registry", "serve", cfg],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise SystemExit("docker-registry did not start")
        self.cpu0 = cpu(self.proc.pid)

    def digest(self, repo, tag):
        """The digest the registry gives for REPO:TAG (an index), or None."""
        out = subprocess.run(
            ["curl", "-sfI", "-H", "Accept: application/vnd.oci.image.index.v1+json",
             f"http://{self.addr}/v2/{repo}/manifests/{tag}"],
            capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            if k.lower() == "docker-content-digest":
                return v.strip()
        return None

    def stored_bytes(self):
        """Bytes of the blobs it stores."""
        total = 0
        blobs = os.path.join(self.dir, "data/docker/registry/v2/blobs")
        for d, _, files in os.walk(blobs):
            total += sum(os.path.getsize(os.path.join(d, f)) for f in files if f == "data")
        return total

    def stop(self, remove=False):
        """Stops it; returns its CPU seconds since it started. `remove`: its data too."""
        used = cpu(self.proc.pid) - self.cpu0
        self.proc.kill()
        self.proc.wait()
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)
        return used
