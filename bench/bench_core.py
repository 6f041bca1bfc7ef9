"""Throughput of the streaming core beside River and plain NumPy, from one run.

    python bench/bench_core.py            # full table (~2 min on 2 cores)
    python bench/bench_core.py --quick    # smaller sizes

Figures are stream-updates per second (one sample of one stream = one
update), measured in CPU seconds of this process (``time.process_time``) so
that other load on a shared machine does not count; wall-clock figures are
printed beside them. Each figure is the best of ``--repeat`` runs. Peers run
on the same data in the same process:

* River's ADWIN and PageHinkley (one detector object per stream, the way
  River is used), per stream-update;
* a plain NumPy CUSUM + EWMA, vectorised over streams, stepping through time.

Compile times come from fresh subprocesses: "cold" with an empty numba cache
directory (``NUMBA_CACHE_DIR``), "cached" reusing the cache that run wrote.

The physical limit: a STREAM-like copy (``b[:] = a``) and triad
(``a = b + s * c``, one numba loop) over arrays of the same size as the
batch input, in the same run, give the bytes per second this machine moves
at that size (and over 64 MB arrays, from main memory); beside them, the bytes our batch CUSUM+EWMA touches per
stream-update (as implemented, and the compulsory part: read the sample,
write the statistic and the alarm flag) times its stream-updates per second.
Page faults (``ru_minflt``) during the timed batch runs are printed too: a
fresh (T, N) temporary costs as much CPU time to fault in as the charts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def timed(fn, repeat):
    best_cpu, best_wall = np.inf, np.inf
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        best_cpu = min(best_cpu, time.process_time() - c)
        best_wall = min(best_wall, time.perf_counter() - w)
    return best_cpu, best_wall


def data(T, N, seed=0):
    rng = np.random.default_rng(seed)
    X = np.exp(rng.normal(np.log(0.25), 0.02, size=(T, N)))
    X[T // 2 :, ::5] *= 1.1
    return X


def bench_degrade(name, make, X, repeat, steps_update):
    """Batch ``run`` over X, and ``update`` row by row (Python loop over steps)."""
    T, N = X.shape

    def batch():
        dets = make()
        for d in dets:
            d.run(X)

    for d in make():  # compile outside the timing (run and update kernels)
        d.run(X[:50])
        d.update(X[50])
    batch()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    cpu, wall = timed(batch, repeat)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / repeat
    # time updates after the baselines are learned (warm-up: 100 samples)
    rows = X[150 : 150 + steps_update]
    steps_update = len(rows)
    cpu_u = np.inf
    for _ in range(repeat):
        dets = make()
        for d in dets:
            d.run(X[:150])
        c = time.process_time()
        for x in rows:
            for d in dets:
                d.update(x)
        cpu_u = min(cpu_u, time.process_time() - c)
    cpu_u = max(cpu_u, 1e-9)
    return {
        "detector": name,
        "N": N,
        "T": T,
        "batch_cpu": T * N / cpu,
        "batch_wall": T * N / wall,
        "update_cpu": steps_update * N / cpu_u,
        "update_us": cpu_u / steps_update * 1e6,
        "faults": faults,
    }


def numpy_cusum_ewma(X, k=0.5, h=5.0, lam=0.1, L=2.814):
    """The same two charts in plain NumPy: vectorised over streams, a loop over time."""
    T, N = X.shape
    Z = np.log(X)
    mu = np.median(Z[:100], axis=0)
    sigma = 1.4826 * np.median(np.abs(Z[:100] - mu), axis=0)
    up = np.zeros(N)
    down = np.zeros(N)
    e = np.zeros(N)
    lim = L * np.sqrt(lam / (2 - lam))
    alarms = 0
    for t in range(T):
        z = (Z[t] - mu) / sigma
        ok = np.isfinite(z)
        z = np.where(ok, z, 0.0)
        up = np.maximum(0.0, up + z - k)
        down = np.maximum(0.0, down - z - k)
        a = (up > h) | (down > h)
        up[a] = 0.0
        down[a] = 0.0
        e = np.where(ok, lam * z + (1 - lam) * e, e)
        b = np.abs(e) > lim
        e[b] = 0.0
        alarms += int(a.sum() + b.sum())
    return alarms


def bench_numpy(X, repeat):
    T, N = X.shape
    cpu, _ = timed(lambda: numpy_cusum_ewma(X), repeat)
    return 2 * T * N / cpu  # two charts per sample, as for degrade's CUSUM+EWMA


# bytes touched per sample by one of CUSUM(log=True) / EWMA(log=True) in run:
# read x, write log(x) into the chunk buffer and read it back, write the
# statistic (float64) and the alarm flag (bool); onsets are one int64 per alarm
BYTES_IMPLEMENTED = 8 + 8 + 8 + 8 + 1
BYTES_COMPULSORY = 8 + 8 + 1  # read x, write statistic and alarm


def bench_stream(nbytes, repeat):
    """STREAM-like copy and triad over float64 arrays of ``nbytes`` each; bytes/CPU-second."""
    from degrade._config import njit

    @njit
    def triad(a, b, c, s):
        for i in range(a.size):
            a[i] = b[i] + s * c[i]

    n = max(1, nbytes // 8)
    a = np.zeros(n)
    b = np.ones(n)
    c = np.full(n, 2.0)
    triad(a[:8], b[:8], c[:8], 3.0)
    np.copyto(a, b)  # touch every page before timing
    cpu_c, _ = timed(lambda: np.copyto(a, b), repeat)
    cpu_t, _ = timed(lambda: triad(a, b, c, 3.0), repeat)
    return {"copy": 2 * 8 * n / cpu_c, "triad": 3 * 8 * n / cpu_t}


def bench_river(X, n_updates):
    from river import drift

    T, N = X.shape
    steps = max(1, n_updates // N)
    out = {}
    for name, make in (("ADWIN", drift.ADWIN), ("PageHinkley", drift.PageHinkley)):
        dets = [make() for _ in range(N)]
        rows = X[:steps].tolist()
        c = time.process_time()
        for row in rows:
            for d, v in zip(dets, row):
                d.update(v)
        cpu = time.process_time() - c
        out[name] = steps * N / cpu
    return out


COMPILE_SNIPPET = """
import time, json
t0 = time.perf_counter()
import numpy as np
from degrade.core import CUSUM, EWMA, BOCPD, PeerComparison
t1 = time.perf_counter()
x = np.ones(8)
for det in (CUSUM(n_streams=8), EWMA(n_streams=8), BOCPD(n_streams=8), PeerComparison(n_streams=8)):
    det.update(x)
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first_update": t2 - t1}))
"""


def compile_times():
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, DEGRADE_NUMBA_CACHE="1")
        runs = []
        for _ in range(2):  # cold (empty cache), then cached
            out = subprocess.run(
                [sys.executable, "-c", COMPILE_SNIPPET],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return runs[0], runs[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    from degrade.core import BOCPD, CUSUM, EWMA, PeerComparison

    total = 500_000 if args.quick else 4_000_000
    rows = []
    peers = {}
    streams = {}
    for N in (8, 4096):
        T = max(400, total // N)
        X = data(T, N)
        groups = np.arange(N) % max(1, N // 8)  # peer groups of 8 devices

        def cusum_ewma():
            return [CUSUM(log=True), EWMA(log=True)]

        r = bench_degrade("CUSUM+EWMA", cusum_ewma, X, args.repeat, min(T, 2000))
        # both charts see every sample: count two stream-updates per sample
        for key in ("batch_cpu", "batch_wall", "update_cpu"):
            r[key] *= 2
        rows.append(r)
        rows.append(
            bench_degrade(
                "PeerComparison",
                lambda groups=groups: [PeerComparison(groups=groups)],
                X,
                args.repeat,
                min(T, 2000),
            )
        )
        Tb = max(400, T // 20)
        rows.append(
            bench_degrade(
                "BOCPD (R=256)",
                lambda: [BOCPD(log=True, max_run=256)],
                X[:Tb],
                1,
                100,
            )
        )
        peers[N] = {"numpy": bench_numpy(X[: min(T, 20_000)], args.repeat)}
        peers[N].update(bench_river(X, 20_000 if args.quick else 100_000))
        streams[N] = bench_stream(X.nbytes, max(args.repeat, 5))

    dram = bench_stream(64_000_000, 3)  # arrays far beyond the 32 MiB L3: main memory
    cold, cached = compile_times()

    print(f"degrade streaming core — {time.strftime('%Y-%m-%d')}, python {sys.version.split()[0]}")
    print("stream-updates per CPU-second (wall in brackets); update = one call for all N streams\n")
    hdr = (
        f"{'detector':<16}{'N':>6}{'batch run':>22}{'per-step update':>18}{'us/update call':>16}"
        f"{'faults/run':>12}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(
            f"{r['detector']:<16}{r['N']:>6}{r['batch_cpu']:>12.3g} [{r['batch_wall']:.3g}]"
            f"{r['update_cpu']:>18.3g}{r['update_us']:>16.2f}{r['faults']:>12.0f}"
        )
    print("\npeers on the same data (stream-updates per CPU-second) and ratios")
    hdr = f"{'N':>6}{'peer':>14}{'peer rate':>12}{'CUSUM+EWMA run / peer':>24}{'update / peer':>16}"
    print(hdr)
    print("-" * len(hdr))
    for N, p in peers.items():
        ours = next(r for r in rows if r["N"] == N and r["detector"] == "CUSUM+EWMA")
        for name, rate in p.items():
            print(
                f"{N:>6}{name:>14}{rate:>12.3g}{ours['batch_cpu'] / rate:>23.2g}x"
                f"{ours['update_cpu'] / rate:>15.2g}x"
            )
    print(
        "\nthe physical limit: bytes per CPU-second, same array size as the batch input, same run"
    )
    hdr = (
        f"{'N':>6}{'array MB':>10}{'copy':>11}{'triad':>11}{'CUSUM+EWMA touched':>20}"
        f"{'of copy':>9}{'compulsory':>12}{'of copy':>9}"
    )
    print(hdr)
    print("-" * len(hdr))
    for N, st in streams.items():
        ours = next(r for r in rows if r["N"] == N and r["detector"] == "CUSUM+EWMA")
        mb = ours["T"] * N * 8 / 1e6
        touched = BYTES_IMPLEMENTED * ours["batch_cpu"]
        compulsory = BYTES_COMPULSORY * ours["batch_cpu"]
        print(
            f"{N:>6}{mb:>10.1f}{st['copy'] / 1e9:>9.1f}GB{st['triad'] / 1e9:>9.1f}GB"
            f"{touched / 1e9:>18.1f}GB{touched / st['copy']:>8.0%}"
            f"{compulsory / 1e9:>10.1f}GB{compulsory / st['copy']:>8.0%}"
        )
    print(
        f"(bytes per stream-update: {BYTES_IMPLEMENTED} touched as implemented, "
        f"{BYTES_COMPULSORY} compulsory; at these sizes the caches serve much of the "
        f"traffic. Main memory, "
        f"64 MB arrays: copy {dram['copy'] / 1e9:.1f} GB/s, triad {dram['triad'] / 1e9:.1f} GB/s)"
    )
    print(
        f"\ncompile: cold import {cold['import']:.2f} s + first update of 4 detectors "
        f"{cold['first_update']:.2f} s; cached: import {cached['import']:.2f} s + first update "
        f"{cached['first_update']:.3f} s"
    )
    n8 = next(r for r in rows if r["N"] == 8 and r["detector"] == "CUSUM+EWMA")
    big = next(r for r in rows if r["N"] == 4096 and r["detector"] == "CUSUM+EWMA")

    def mark(ok):
        return "met" if ok else "NOT met"

    print("\ntargets (issue 15):")
    r = big["batch_cpu"] / peers[4096]["numpy"]
    print(f"  batch N=4096 / plain NumPy loop: {r:.2f}x (>= 2x) {mark(r >= 2)}")
    print(
        f"  batch N=4096: {big['batch_cpu']:.3g} stream-updates/CPU-s (>= 5e7) "
        f"{mark(big['batch_cpu'] >= 5e7)}"
    )
    for ours in (n8, big):
        N = ours["N"]
        rb = ours["batch_cpu"] / peers[N]["ADWIN"]
        ru = ours["update_cpu"] / peers[N]["ADWIN"]
        print(
            f"  N={N}: / River ADWIN per stream-update: batch {rb:.1f}x, per step {ru:.2f}x "
            f"(>= 10x) {mark(rb >= 10)} / {mark(ru >= 10)}"
        )
    us = n8["update_us"] / 2
    print(f"  update N=8, one detector: {us:.2f} us per call (<= 5) {mark(us <= 5)}")


if __name__ == "__main__":
    main()
