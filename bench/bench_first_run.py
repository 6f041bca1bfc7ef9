"""First run of the README's main command: cold (fresh numba cache) and cached, beside a plain polars pass.

    python bench/bench_first_run.py [--cold 2] [--cached 3] [PATH]

Runs ``python -m degrade analyze PATH`` (default: datasets/demo) in fresh
processes, with stderr on a pseudo-terminal as in a user's shell (so the
"compiling kernels (first run only)" status is shown and checked):

- cold: every run gets an empty ``NUMBA_CACHE_DIR``, so every kernel compiles;
- cached: the kernels come from one warmed cache directory;
- peer: a fresh process that imports polars and reads, sorts and groups the
  same files (the floor any Python tool reading this data pays).

Prints the median wall and CPU time (user + system, of the child process) of
each and the wall ratio to the peer, the number of
degrade functions numba compiled (cold), the machine's load average and CPU
count (the figures depend on both: the development machine is shared).
"""

from __future__ import annotations

import argparse
import os
import pty
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PEER = """
import sys, polars as pl
paths = sys.argv[1:]
t = pl.scan_parquet([p for p in paths if 'timings' in p]).sort(['device', 'step']).group_by('device').agg(
    pl.col('compute_time').median()).collect()
c = pl.scan_parquet([p for p in paths if 'counters' in p]).sort(['device', 'timestamp']).group_by(
    'device').agg(pl.col('sm_clock_mhz').median()).collect()
print(t.height, c.height)
"""


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run_tty(cmd, env) -> tuple[float, float, int, str]:
    """Wall and CPU seconds, exit code and stderr (read from a pseudo-terminal) of ``cmd``."""
    master, slave = pty.openpty()
    c0 = _cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=slave,
                            stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks: list[bytes] = []

    def drain():
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    rc = proc.wait(timeout=900)
    wall = time.perf_counter() - t0
    cpu = _cpu() - c0
    reader.join(timeout=10)
    os.close(master)
    return wall, cpu, rc, b"".join(chunks).decode(errors="replace")


def _count_compiles(path: str, env) -> int:
    code = (
        "import sys\n"
        "from degrade._warmup import FirstRunStatus\n"
        "from degrade.analyze import analyze\n"
        "with FirstRunStatus(enabled=False) as s:\n"
        f"    analyze([{path!r}])\n"
        "print(s.compiled)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=900, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", nargs="?", default="datasets/demo")
    ap.add_argument("--cold", type=int, default=2, help="cold runs (default 2)")
    ap.add_argument("--cached", type=int, default=3, help="cached runs (default 3)")
    a = ap.parse_args(argv)

    base = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    base["PYTHONPATH"] = str(ROOT) + os.pathsep + base.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "degrade", "analyze", a.path]
    files = [str(p) for p in sorted((ROOT / a.path).glob("*.parquet")) if p.name != "truth.parquet"]
    load0 = os.getloadavg()

    cold, cold_cpu, said = [], [], []
    for _ in range(a.cold):
        with tempfile.TemporaryDirectory(prefix="degrade-bench-numba-") as d:
            wall, cpu, rc, err = _run_tty(cmd, {**base, "NUMBA_CACHE_DIR": d})
            assert rc == 0, err
            cold.append(wall)
            cold_cpu.append(cpu)
            said.append("compiling kernels (first run only" in err)
    with tempfile.TemporaryDirectory(prefix="degrade-bench-numba-") as d:
        env = {**base, "NUMBA_CACHE_DIR": d}
        compiles = _count_compiles(a.path, env)  # also warms this cache
        cached, cached_cpu, quiet = [], [], []
        for _ in range(a.cached):
            wall, cpu, rc, err = _run_tty(cmd, env)
            assert rc == 0, err
            cached.append(wall)
            cached_cpu.append(cpu)
            quiet.append("compiling kernels" not in err)
    peer, peer_cpu = [], []
    for _ in range(a.cached):
        c0 = _cpu()
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", PEER, *files], cwd=ROOT, env=base, check=True,
                       capture_output=True, timeout=300)
        peer.append(time.perf_counter() - t0)
        peer_cpu.append(_cpu() - c0)
    load1 = os.getloadavg()

    p = statistics.median(peer)
    print(f"degrade analyze {a.path}  ({os.cpu_count()} CPUs; load average {load0[0]:.2f} before, "
          f"{load1[0]:.2f} after)")
    print(f"{'run':<34}{'wall s':>8}{'CPU s':>8}{'runs':>6}{'wall x peer':>13}")
    for name, xs, cs in (("cold (empty NUMBA_CACHE_DIR)", cold, cold_cpu),
                         ("cached", cached, cached_cpu),
                         ("peer: polars read+sort+group_by", peer, peer_cpu)):
        m = statistics.median(xs)
        print(f"{name:<34}{m:>8.2f}{statistics.median(cs):>8.2f}{len(xs):>6}{m / p:>13.1f}")
    print(f"cold runs: {compiles} degrade functions compiled; status line shown "
          f"{sum(said)}/{len(said)}; cached runs silent {sum(quiet)}/{len(quiet)}")
    print("all runs (s): cold " + ", ".join(f"{x:.2f}" for x in cold)
          + "; cached " + ", ".join(f"{x:.2f}" for x in cached))
    return 0


if __name__ == "__main__":
    sys.exit(main())
