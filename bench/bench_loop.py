"""Cost of degrade.loop.Monitor in a training loop, beside a bare loop and torch's own ops.

Run:  python bench/bench_loop.py [--steps 200000] [--every 50]

Prints, per training step on this machine's CPU:
  - the local hot path: ``monitor.step(compute_time=...)`` and two timed
    sections + ``step_end()`` (CPU clock; the CUDA clock records two events
    per section instead and reads them steps later),
  - a bare ``time.perf_counter()`` pair (what any hand-rolled timer costs) and
    tiny torch ops (``x.add_(1)`` on a 1-element tensor, ``torch.empty(1)``),
  - the exchange: a real gloo ``all_gather`` round trip of the summary tensor
    (world size 1 over TCP loopback, so it is the fixed cost, not the
    network) amortised over ``every`` steps,
  - the HOT PATH as the training thread pays it: two sections +
    ``step_end()`` per step plus, every ``every`` steps, the summary, the
    asynchronous gloo all-gather, the coordination bookkeeping and the
    hand-off to the judge (whose engine is replaced by a no-op here, so the
    row is the training thread's share alone); then the same loop with the
    real background judge running: this loop does no work of its own, so
    the judge's engine competes with it for the GIL (a real step, which
    spends its time in CUDA calls, kernels or I/O, leaves the judge idle
    time), and the verdict engine's
    judgement of one window (``Judge.feed``: alignment + ``engine.run``) for
    8 / 64 / 1024 ranks (it runs in a background thread, off the training step).
Ratios are against the bare perf_counter pair.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def per_call(fn, n: int, repeat: int = 5) -> float:
    """Best-of-``repeat`` mean seconds per call of ``fn(n)`` (which loops n times)."""
    best = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(n)
        best.append((time.perf_counter() - t0) / n)
    return min(best)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--every", type=int, default=50)
    a = ap.parse_args()
    n = a.steps

    import torch

    from degrade.loop import Monitor

    torch.set_num_threads(1)
    pc = time.perf_counter

    def bare(n):
        for _ in range(n):
            t = pc()
            pc() - t

    x = torch.zeros(1)

    def torch_add(n):
        for _ in range(n):
            x.add_(1)

    def torch_empty(n):
        for _ in range(n):
            torch.empty(1)

    # hot path only: no exchange within the timed loop
    mon = Monitor(every=10**9, gather=None, timer="cpu")

    def report(n):
        step = mon.step
        for _ in range(n):
            step(compute_time=0.1)

    mon2 = Monitor(every=10**9, gather=None, timer="cpu")

    def sections(n):
        sec, end = mon2.section, mon2.step_end
        for _ in range(n):
            with sec("forward"):
                pass
            with sec("backward"):
                pass
            end()

    off = Monitor(every=10**9, gather=None, timer="cpu", enabled=False)

    def disabled(n):
        sec, end = off.section, off.step_end
        for _ in range(n):
            with sec("forward"):
                pass
            end()

    rows = []
    t_bare = per_call(bare, n)
    rows.append(("bare perf_counter pair", t_bare))
    rows.append(("torch x.add_(1), 1 element", per_call(torch_add, n // 4)))
    rows.append(("torch.empty(1)", per_call(torch_empty, n // 4)))
    rows.append(("Monitor.step(compute_time=...)", per_call(report, n)))
    rows.append(("2 sections + step_end (CPU clock)", per_call(sections, n)))
    rows.append(("disabled monitor: section + step_end", per_call(disabled, n)))

    # ---- the exchange: a real gloo round trip (world 1), amortised over `every`
    import torch.distributed as dist

    from degrade.loop._gather import TorchGather, make_summary

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=0, world_size=1)
    g = TorchGather(capacity=2 * a.every + 64)
    meta = {"device": "d0", "group": "0", "host": "h", "rank": 0}
    g.setup(meta)
    k = a.every
    summ = make_summary(meta, np.arange(k), np.full(k, 0.1), np.full(k, 0.1), np.full(k, 0.0))
    ex = []
    for _ in range(200):
        t0 = pc()
        g.poll(g.start(summ), block=True)
        ex.append(pc() - t0)
    t_ex = statistics.median(ex)
    rows.append((f"gloo exchange round trip / every={k}", t_ex / k))

    # ---- the whole hot path as a training loop pays it: two sections and step_end
    # per step, plus (every `k` steps) the exchange on degrade's own gloo group, the
    # coordination bookkeeping and the hand-off to the background judge, whose
    # engine runs in its thread (world size 1: the fixed cost of the exchange)
    class NoJudge:  # the training thread's share alone: the judge's engine not run
        def feed(self, summaries):
            return 0

        def verdicts(self):
            return []

        def job_events(self):
            return []

    def full(n, kind, k=k):
        m = Monitor(every=k, timer="cpu", gather="auto", action="none")
        if kind == "nojudge":
            m._make_judge = NoJudge
        if kind in ("gloo", "nojudge"):
            ident = m._identity
            m._identity = lambda: {**ident(), "world_size": 2}  # take the gloo path at world 1
        sec, end = m.section, m.step_end
        for _ in range(4 * k):  # setup (new_group, all_gather_object) and first judgements
            with sec("forward"):
                pass
            end()
        m._worker.results(block=True)
        t0 = pc()
        for _ in range(n):
            with sec("forward"):
                pass
            with sec("backward"):
                pass
            end()
        t = (pc() - t0) / n
        m.close()
        assert m.status()["gather"] == ("local" if kind == "local" else "torch"), m.status()
        assert m.status()["error"] is None, m.status()
        return t

    for kk in (k, 2 * k):
        n_full = (n // (2 * kk)) * kk  # whole windows only
        rows.append(
            (
                f"hot path + judge thread, gloo, every={kk}",
                min(full(n_full, "gloo", kk) for _ in range(3)),
            )
        )
    n_full = (n // (2 * k)) * k
    rows.append(
        (
            f"HOT PATH (training thread), gloo, every={k}",
            min(full(n_full, "nojudge") for _ in range(3)),
        )
    )
    rows.append(
        (f"hot path + judge thread, local, every={k}", min(full(n_full, "local") for _ in range(3)))
    )
    dist.destroy_process_group()

    # ---- the judgement (background thread): Judge.feed of one window (engine.run inside)
    from degrade.loop._judge import Judge
    from degrade.verdict.engine import EngineConfig

    judge_rows = []
    rng = np.random.default_rng(0)
    for n_ranks in (8, 64, 1024):
        judge = Judge(EngineConfig(persistence=k), None)
        X = 0.1 * np.exp(rng.normal(0, 0.02, (20 * k, n_ranks)))

        def window(w, X=X, n_ranks=n_ranks):
            st = np.arange(w * k + 1, (w + 1) * k + 1)
            rows = X[w * k : (w + 1) * k]
            return [
                make_summary(
                    {"device": f"r{i}", "group": "0", "host": "h", "rank": i},
                    st,
                    rows[:, i],
                    rows[:, i],
                    st * 1.0,
                )
                for i in range(n_ranks)
            ]

        for w in range(10):  # warm the baselines, compile
            judge.feed(window(w))
        ts = []
        for w in range(10, 20):
            summaries = window(w)  # built by the gather on the main thread: not timed here
            t0 = pc()
            judge.feed(summaries)
            judge.verdicts()
            ts.append(pc() - t0)
        judge_rows.append((n_ranks, statistics.median(ts)))

    print(
        f"# degrade.loop overhead, {n} steps, every={k}, python {sys.version.split()[0]}, torch {torch.__version__}"
    )
    print(f"{'what':44s} {'µs/step':>9s} {'× bare':>8s}")
    for name, t in rows:
        print(f"{name:44s} {t * 1e6:9.3f} {t / t_bare:8.1f}")
    print()
    print(f"{'judgement of one window (background thread)':44s} {'ms/window':>9s} {'µs/step':>8s}")
    for n_ranks, t in judge_rows:
        print(f"{f'  {n_ranks} ranks x {k} steps':44s} {t * 1e3:9.3f} {t / k * 1e6:8.2f}")


if __name__ == "__main__":
    main()
