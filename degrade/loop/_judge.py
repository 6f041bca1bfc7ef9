"""Cross-rank judgement: gathered summaries in, the verdict engine's verdicts out.

Every rank runs this on the same gathered data, so every rank reaches the
same verdicts without a second collective. Steps are fed to the engine only
once every rank has reported them (CUDA timings arrive a few steps late),
so the engine sees the same (step × device) rows that batch analysis of the
same timings would see.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["Judge"]


class Judge:
    """Buffers per-step timings by device and feeds aligned blocks to the engine."""

    def __init__(self, config: Any, job: str | None, patience: int = 200):
        from ..verdict.engine import VerdictEngine

        self.engine = VerdictEngine(config)
        self.job = job
        self._rows: dict[str, dict[int, tuple[float, float, float]]] = {}
        self._last: dict[str, int] = {}
        self._meta: dict[str, tuple[Any, Any]] = {}
        self.fed_upto = -1
        self.n_late = 0
        self.patience = int(patience)

    def feed(self, summaries: list[dict]) -> int:
        """Add one exchange's summaries; returns the number of steps fed to the engine."""
        fast = self._feed_aligned(summaries)
        if fast is not None:
            return fast
        present = []
        for s in summaries:
            dev = str(s["device"])
            present.append(dev)
            self._meta[dev] = (s.get("group"), s.get("host"))
            rows = self._rows.setdefault(dev, {})
            ts = s.get("timestamp") or [math.nan] * len(s["steps"])
            for st, c, w, t in zip(s["steps"], s["compute_time"], s["step_time"], ts):
                st = int(st)
                if st <= self.fed_upto:
                    self.n_late += 1  # arrived after its step was judged: dropped, counted
                    continue
                rows[st] = (c, w, t)
                if st > self._last.get(dev, -1):
                    self._last[dev] = st
        reporting = [d for d in present if d in self._last]
        if not reporting:
            return 0
        # wait for a rank whose (CUDA) timings lag, but not for ever: one more than
        # `patience` steps behind the front is judged without, its late rows dropped
        front = max(self._last[d] for d in reporting)
        waits = [self._last.get(d, -1) for d in present]
        upto = min([w for w in waits if w >= front - self.patience] or [front])
        if upto <= self.fed_upto:
            return 0
        steps = sorted({st for d in reporting for st in self._rows[d] if st <= upto})
        if not steps:
            return 0
        devices = sorted(set(reporting))
        T, N = len(steps), len(devices)
        index = {st: i for i, st in enumerate(steps)}
        compute = np.full((T, N), np.nan)
        wall = np.full((T, N), np.nan)
        stamp = np.full(T, np.nan)
        for j, d in enumerate(devices):
            rows = self._rows[d]
            for st in [st for st in rows if st <= upto]:
                c, w, t = rows.pop(st)
                i = index[st]
                compute[i, j] = c
                wall[i, j] = w
                if not math.isnan(t) and (math.isnan(stamp[i]) or t > stamp[i]):
                    stamp[i] = t
        self._run(devices, np.asarray(steps, dtype=np.int64), compute, wall, stamp)
        self.fed_upto = upto
        return T

    def _feed_aligned(self, summaries: list[dict]) -> int | None:
        """The common case without per-row Python: nothing buffered, every rank sent the same steps."""
        if any(self._rows.get(str(s["device"])) for s in summaries):
            return None
        steps = summaries[0]["steps"]
        if not steps or steps[0] <= self.fed_upto or any(s["steps"] != steps for s in summaries):
            return None
        order = sorted(range(len(summaries)), key=lambda i: str(summaries[i]["device"]))
        devices = [str(summaries[i]["device"]) for i in order]
        if len(set(devices)) != len(devices) or any(b <= a for a, b in zip(steps, steps[1:])):
            return None
        compute = np.array([summaries[i]["compute_time"] for i in order], dtype=np.float64).T
        wall = np.array([summaries[i]["step_time"] for i in order], dtype=np.float64).T
        stamps = [summaries[i].get("timestamp") for i in order]
        if all(t is not None and len(t) == len(steps) for t in stamps):
            stamp = np.fmax.reduce(np.array(stamps, dtype=np.float64), axis=0)
        else:
            stamp = np.full(len(steps), np.nan)
        for i in order:
            s = summaries[i]
            self._meta[str(s["device"])] = (s.get("group"), s.get("host"))
            self._last[str(s["device"])] = int(steps[-1])
        self._run(devices, np.asarray(steps, dtype=np.int64), compute, wall, stamp)
        self.fed_upto = int(steps[-1])
        return len(steps)

    def _run(self, devices, steps, compute, wall, stamp) -> None:
        groups = [self._meta[d][0] for d in devices]
        hosts = [self._meta[d][1] for d in devices]
        if all(g is None for g in groups):
            groups = None
        if all(h is None for h in hosts):
            hosts = None
        self.engine.run(
            devices,
            {"compute_time": compute, "step_time": wall},
            steps=steps,
            timestamps=None if np.isnan(stamp).all() else stamp,
            groups=groups,
            job=self.job,
            hosts=hosts,
        )

    def verdicts(self) -> list:
        out = self.engine.verdicts()
        # what the job lost to its flagged devices, from the same verdicts (docs/cost.md)
        job_costs = getattr(self.engine, "job_costs", None)
        self.costs = job_costs(out) if job_costs is not None else []
        return out

    def job_events(self) -> list:
        return self.engine.job_events()
