"""What each slow device cost its job: lost wall time from the engine's evidence (docs/cost.md).

The meter rides along with the :class:`~degrade.verdict.VerdictEngine`: every
timing block the engine sees is reduced, per job and per step, to the few
numbers the critical path needs (the ``K`` slowest pipelines with their stage
times, the median step time, the devices present), so its memory grows with
steps, not with devices × steps. Nothing is re-detected: at the end the
engine's verdicts say which devices are slow, since when (``onset_step``) and
by how much (``slowdown``), and the meter recomputes each step's critical path
with that device running at its peer median — its own time divided by
``1 + slowdown``, which keeps the step's noise.

Three topologies:

- synchronous (data parallel): the step waits for the slowest rank, so a
  device costs the step only what it adds above the next-slowest rank; the
  non-compute time (communication, checkpoints) is on the critical path and
  unchanged by the what-if;
- pipeline (``pipelines`` and ``microbatches`` given): a pipeline of ``S``
  stages with ``m`` microbatches takes ``(sum_s c_s + (m - 1) max_s c_s) / m``
  (fill, steady state at the bottleneck stage, drain), and the step waits for
  the slowest pipeline;
- independent replicas (step times differ per device: nobody waits): the
  device's own excess, ``time x slowdown / (1 + slowdown)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["CostMeter", "JobCost", "TOPOLOGIES"]

TOPOLOGIES = ("synchronous", "pipeline", "replicas")

#: the numba reduction for synchronous jobs (False: the NumPy reference path, for tests)
_USE_KERNEL = True

#: a device flagged without a slowdown estimate is charged when its measured excess is at least this
_MEASURED_FLOOR = 0.02

#: per device and job, at most this many step buckets are kept (then they are merged in pairs)
_MAX_BUCKETS = 512

#: statuses whose evidence is charged (healthy and unknown devices cost nothing)
_CHARGED = ("suspect", "degraded", "failed")

# a job whose step times spread across devices at least this much relative to
# the compute times is independent replicas: in a synchronous job every rank
# leaves the collective together, so its step times agree far better than its
# compute times do
_REPLICA_SPREAD = 0.5


@dataclass
class JobCost:
    """What the job's flagged devices cost it (one entry of the JSON contract's ``costs``).

    ``lost_seconds`` is the wall time the job would have saved had every
    flagged device run at its peer median; for independent replicas it is the
    replicas' summed excess (device-seconds). ``lost_gpu_hours`` multiplies the
    lost wall time by the devices in the job at each step (elastic jobs
    included). ``devices_lost_seconds`` holds each flagged device's own figure
    (the wall time that device alone cost): they need not add up to the job's,
    since two equally slow ranks hide each other.
    """

    job: str | None
    topology: str
    devices: int
    steps: int
    wall_seconds: float | None
    lost_seconds: float
    lost_gpu_hours: float
    lost_share: float | None
    devices_lost_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("wall_seconds", "lost_seconds", "lost_gpu_hours", "lost_share"):
            v = d[k]
            d[k] = None if v is None or not math.isfinite(v) else round(float(v), 6)
        d["devices_lost_seconds"] = {
            k: round(float(v), 6) for k, v in self.devices_lost_seconds.items()
        }
        return d


class _Grow:
    """An append-only array along axis 0 (amortised doubling)."""

    def __init__(self, shape_tail: tuple[int, ...], dtype, fill=0):
        self.a = np.full((64, *shape_tail), fill, dtype=dtype)
        self.n = 0
        self.fill = fill

    def extend(self, x: np.ndarray) -> None:
        need = self.n + x.shape[0]
        if need > self.a.shape[0]:
            cap = max(need, 2 * self.a.shape[0])
            b = np.full((cap, *self.a.shape[1:]), self.fill, dtype=self.a.dtype)
            b[: self.n] = self.a[: self.n]
            self.a = b
        self.a[self.n : need] = x
        self.n = need

    def view(self) -> np.ndarray:
        return self.a[: self.n]

    def drop_head(self, k: int) -> None:
        self.a[: self.n - k] = self.a[k : self.n].copy()
        self.n -= k


def _nanmax_rows(x: np.ndarray) -> np.ndarray:
    out = np.where(np.isnan(x), -np.inf, x).max(axis=-1)
    return np.where(np.isfinite(out), out, np.nan)


def _nansum_rows(x: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(x), 0.0, x).sum(axis=-1)


def _row_spread(x: np.ndarray) -> np.ndarray:
    """Per row: the standard deviation of the finite values (NaN with fewer than two).

    Garbage values (say 1e300) overflow the squares to inf; such rows are
    left out by the caller (which keeps finite spreads only), silently.
    """
    ok = np.isfinite(x)
    n = ok.sum(axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        xs = np.where(ok, x, 0.0)
        mean = xs.sum(axis=1) / np.maximum(n, 1)
        var = (np.where(ok, x - mean[:, None], 0.0) ** 2).sum(axis=1) / np.maximum(n - 1, 1)
        return np.where(n >= 2, np.sqrt(var), np.nan)


class _Job:
    """Per-step critical-path records of one job."""

    def __init__(self, key: Any, top_k: int, bucket: int):
        self.key = key
        self.K = top_k
        self.dev: dict[str, int] = {}  # device -> column in this job
        self.group: dict[str, Any] = {}  # device -> peer group
        self.pid: list[int] = []  # device -> pipeline id (its own column when no pipelines)
        self.pos: list[int] = []  # device -> stage position inside its pipeline
        self.pipes: dict[Any, int] = {}
        self.pipe_size: list[int] = []
        self.pipelined = False
        self.m = 1
        self.S = 1
        self.first: list[float] = []
        self.last: list[float] = []
        self.rows = 0
        self.step = _Grow((), np.float64)
        self.val = _Grow((top_k,), np.float64, np.nan)
        self.top = _Grow((top_k,), np.int64, -1)
        self.stage = _Grow((top_k, 1), np.float64, np.nan)
        self.wall = _Grow((), np.float64, np.nan)
        self.nact = _Grow((), np.float64)
        self.spread_x: list[float] = []
        self.spread_w: list[float] = []
        # per device, per bucket of `bucket` steps: rows present and the sum of its times
        self.bucket = bucket
        self.b0: float | None = None
        self.bcount = np.zeros((0, 0))
        self.bsum = np.zeros((0, 0))
        self.bjob = np.zeros(0)  # recorded steps per bucket
        # charged before the records were folded away (see CostMeter.fold)
        self.folded_dev: dict[str, float] = {}
        self.folded_job = 0.0
        self.folded_gpu_s = 0.0
        self.folded_wall = 0.0
        self.folded_steps = 0

    # ---------------------------------------------------------------- structure
    def _device_cols(self, ids, pipes) -> np.ndarray:
        cols = np.empty(len(ids), dtype=np.int64)
        for j, d in enumerate(ids):
            c = self.dev.get(d)
            p = None if pipes is None else pipes[j]
            if c is None:
                c = self.dev[d] = len(self.pid)
                self.pid.append(-1)
                self.pos.append(0)
                self.first.append(math.inf)
                self.last.append(-math.inf)
            if p is None:
                if self.pid[c] < 0:
                    self.pid[c] = self._pipe(("device", d))
            elif self.pid[c] < 0 or self.pipes.get(("pipe", p)) != self.pid[c]:
                self.pid[c] = self._pipe(("pipe", p))
                self.pos[c] = self.pipe_size[self.pid[c]]
                self.pipe_size[self.pid[c]] += 1
            cols[j] = c
        S = max(self.pipe_size, default=1)
        if S > self.S:
            old = self.stage
            self.stage = _Grow((self.K, S), np.float64, np.nan)
            if old.n:
                pad = np.full((old.n, self.K, S), np.nan)
                pad[:, :, : self.S] = old.view()
                self.stage.extend(pad)
            self.S = S
        return cols

    def _pipe(self, key) -> int:
        p = self.pipes.get(key)
        if p is None:
            p = self.pipes[key] = len(self.pipe_size)
            self.pipe_size.append(1 if key[0] == "device" else 0)
        return p

    def _grow_buckets(self, n_dev: int, b_hi: int) -> None:
        nb, nd = self.bcount.shape
        if n_dev > nd or b_hi >= nb:
            rows = max(b_hi + 1, min(2 * nb, _MAX_BUCKETS) if b_hi >= nb else nb)
            shape = (rows, max(n_dev, nd))
            for name in ("bcount", "bsum"):
                a = np.zeros(shape)
                a[:nb, :nd] = getattr(self, name)
                setattr(self, name, a)
            bj = np.zeros(shape[0])
            bj[: self.bjob.size] = self.bjob
            self.bjob = bj

    def _coarsen(self) -> None:
        nb = self.bcount.shape[0]
        half = (nb + 1) // 2
        for name in ("bcount", "bsum"):
            a = getattr(self, name)
            pad = np.zeros((2 * half, a.shape[1]))
            pad[:nb] = a
            setattr(self, name, pad[0::2] + pad[1::2])
        pad = np.zeros(2 * half)
        pad[:nb] = self.bjob
        self.bjob = pad[0::2] + pad[1::2]
        self.bucket *= 2

    # ---------------------------------------------------------------- add
    def add(self, ids, x, wall, steps, pipes, micro) -> None:
        T = x.shape[0]
        cols = self._device_cols(ids, pipes)
        if pipes is not None:
            self.pipelined = True
            if micro is not None and np.isfinite(micro) and micro >= 1:
                self.m = int(micro)
        n_dev = len(self.pid)
        st = steps
        if self.b0 is None:
            self.b0 = float(np.nanmin(st)) if np.isfinite(st).any() else 0.0
        b = np.maximum(np.floor((st - self.b0) / self.bucket).astype(np.int64), 0)
        while T and int(b.max()) >= _MAX_BUCKETS:
            # a long run: buckets twice as wide, so their memory stays bounded (devices x _MAX_BUCKETS)
            self._coarsen()
            b = np.maximum(np.floor((st - self.b0) / self.bucket).astype(np.int64), 0)
        self._grow_buckets(n_dev, int(b.max()) if T else 0)
        if not self.pipelined and _USE_KERNEL:
            self._add_kernel(x, wall, st, b, cols)
        else:
            self._add_numpy(x, wall, st, b, cols)
        if wall is not None and T:
            # synchronous or replicas: the spread of step times against that of compute times,
            # on at most 64 rows of the block (the verdict needs a median, not every row)
            rows = np.unique(np.linspace(0, T - 1, min(T, 64)).astype(np.int64))
            xr = x[rows]
            xr = np.where(np.isfinite(xr) & (xr > 0), xr, np.nan)
            wr = wall[rows]
            sw, sx = _row_spread(np.where(np.isfinite(wr) & (wr > 0), wr, np.nan)), _row_spread(xr)
            ok = np.isfinite(sw) & np.isfinite(sx) & (sx > 0)
            if ok.any():
                self.spread_w.append(float(np.median(sw[ok] / sx[ok])))
        self.rows += T

    def _add_kernel(self, x, wall, st, b, cols) -> None:
        from ._kernels_cost import _reduce_sync

        T = x.shape[0]
        K = self.K
        val = np.empty((T, K))
        top = np.empty((T, K), dtype=np.int64)
        nact = np.empty(T)
        wmean = np.empty(T)
        has_wall = wall is not None
        w = np.ascontiguousarray(wall, dtype=np.float64) if has_wall else np.empty((0, 0))
        pid = np.asarray(self.pid, dtype=np.int64)[cols]
        first = np.asarray(self.first)
        last = np.asarray(self.last)
        _reduce_sync(
            np.ascontiguousarray(x, dtype=np.float64),
            w,
            has_wall,
            pid,
            cols,
            b,
            st,
            K,
            val,
            top,
            nact,
            wmean,
            self.bcount,
            self.bsum,
            self.bjob,
            first,
            last,
        )
        self.first, self.last = first.tolist(), last.tolist()
        self.step.extend(st)
        self.val.extend(val)
        self.top.extend(top)
        s = np.full((T, K, self.S), np.nan)
        s[:, :, 0] = val
        self.stage.extend(s)
        self.nact.extend(nact)
        self.wall.extend(wmean)

    def _add_numpy(self, x, wall, st, b, cols) -> None:
        """The reference path (and the pipeline path): the same records with NumPy."""
        T = x.shape[0]
        present = np.isfinite(x) & (x > 0)
        xs = np.where(present, x, np.nan)
        np.add.at(self.bjob, b, 1.0)
        for j, c in enumerate(cols):
            pr = present[:, j]
            if pr.any():
                self.first[c] = min(self.first[c], float(st[pr].min()))
                self.last[c] = max(self.last[c], float(st[pr].max()))
                np.add.at(self.bcount[:, c], b[pr], 1.0)
                np.add.at(self.bsum[:, c], b[pr], xs[pr, j])
        # pipelines' times per step: (sum + (m - 1) max) / m over their stages
        R = len(self.pipe_size)
        if self.pipelined:
            grid = np.full((T, R, self.S), np.nan)
            grid[:, np.asarray(self.pid)[cols], np.asarray(self.pos)[cols]] = xs
            m = self.m
            P = (_nansum_rows(grid) + (m - 1) * _nanmax_rows(grid)) / m
            P = np.where(np.isfinite(grid).any(axis=2), P, np.nan)
        else:
            grid = np.full((T, R, 1), np.nan)
            grid[:, np.asarray(self.pid)[cols], 0] = xs
            P = grid[:, :, 0]
        K = self.K
        Pf = np.where(np.isnan(P), -np.inf, P)
        if R > K:
            idx = np.argpartition(-Pf, K - 1, axis=1)[:, :K]
        else:
            idx = np.broadcast_to(np.arange(R), (T, R)).copy()
        order = np.argsort(-np.take_along_axis(Pf, idx, axis=1), axis=1, kind="stable")
        idx = np.take_along_axis(idx, order, axis=1)
        vals = np.take_along_axis(P, idx, axis=1)
        stg = np.take_along_axis(grid, idx[:, :, None], axis=1)
        kk = idx.shape[1]
        v = np.full((T, K), np.nan)
        t_ = np.full((T, K), -1, dtype=np.int64)
        s = np.full((T, K, self.S), np.nan)
        v[:, :kk], t_[:, :kk], s[:, :kk, : stg.shape[2]] = vals, idx, stg
        t_[~np.isfinite(v)] = -1
        self.step.extend(st)
        self.val.extend(v)
        self.top.extend(t_)
        self.stage.extend(s)
        self.nact.extend(present.sum(axis=1).astype(np.float64))
        if wall is not None:
            w = np.where(np.isfinite(wall) & (wall > 0), wall, np.nan)
            # the first rank's step time (every rank's, in a synchronous job)
            ok = np.isfinite(w)
            first = np.argmax(ok, axis=1)
            self.wall.extend(np.where(ok.any(axis=1), w[np.arange(T), first], np.nan))
        else:
            self.wall.extend(np.full(T, np.nan))

    # ---------------------------------------------------------------- cost
    def topology(self) -> str:
        if self.pipelined:
            return "pipeline"
        if self.spread_w and float(np.median(self.spread_w)) > _REPLICA_SPREAD:
            return "replicas"
        return "synchronous"

    def _coverage(self, c: int, onset: float) -> tuple[float, float]:
        """(steps expected, steps present) of device column ``c`` from ``onset`` to its last step."""
        lo = max(onset, self.first[c])
        hi = self.last[c]
        if not math.isfinite(lo) or hi < lo:
            return 0.0, 0.0
        # the job's recorded steps in the device's window: a row of the device missing there
        # still cost the job its slow step; steps nobody logged are not extrapolated
        expected = self._from(self.bjob, lo) - self._from(self.bjob, hi + 1.0)
        have = self._from(self.bcount[:, c], lo) - self._from(self.bcount[:, c], hi + 1.0)
        return expected, have

    def _from(self, per_bucket: np.ndarray, lo: float) -> float:
        """Sum of a per-bucket quantity over steps >= lo (the first bucket pro rata)."""
        pos = (lo - (self.b0 or 0.0)) / self.bucket
        k = int(math.floor(pos))
        if k < 0:
            return float(per_bucket.sum())
        if k >= per_bucket.size:
            return 0.0
        frac = 1.0 - (pos - k)
        return float(per_bucket[k] * frac + per_bucket[k + 1 :].sum())

    def measured_slowdown(self, d: str, onset: float) -> float:
        """A charged device's excess over its group's median, from the per-bucket means (steps >= onset).

        For devices flagged without a slowdown estimate (a hard signal alone): the median over
        buckets of its mean time over the median of its peers' means, less one.
        """
        c = self.dev[d]
        g = self.group.get(d)
        peers = [self.dev[e] for e in self.dev if e != d and self.group.get(e) == g]
        if not peers:
            return 0.0
        nb = self.bcount.shape[0]
        k0 = (
            0
            if not math.isfinite(onset)
            else max(0, int(math.ceil((onset - (self.b0 or 0.0)) / self.bucket)))
        )
        if k0 >= nb:
            return 0.0
        cnt, tot = self.bcount[k0:], self.bsum[k0:]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(cnt > 0, tot / cnt, np.nan)
        own = mean[:, c]
        pm = mean[:, peers]
        okp = np.isfinite(pm).sum(axis=1) > 0
        ok = np.isfinite(own) & okp
        if not ok.any():
            return 0.0
        med = np.array([np.median(r[np.isfinite(r)]) for r in pm[ok]])
        return float(np.median(own[ok] / med)) - 1.0

    def whatif(self, factor_of) -> np.ndarray:
        """Per step, the critical path with stage times divided by ``factor_of`` (T, R, S) → (T,)."""
        n = self.step.n
        if n == 0:
            return np.zeros(0)
        val, top, stg = self.val.view(), self.top.view(), self.stage.view()
        f = factor_of(top)  # (T, K, S) divisors, 1 where nothing changes
        new = stg / f
        if self.pipelined:
            m = self.m
            Pn = (_nansum_rows(new) + (m - 1) * _nanmax_rows(new)) / m
        else:
            Pn = new[:, :, 0]
        Pn = np.where(top >= 0, Pn, np.nan)
        best = _nanmax_rows(Pn)
        lost = val[:, 0] - best
        return np.where(np.isfinite(lost), np.maximum(lost, 0.0), 0.0)

    def members(self) -> np.ndarray:
        """Devices in the job at each recorded step (their first-to-last step spans)."""
        st = self.step.view()
        first = np.sort(np.asarray(self.first))
        last = np.sort(np.asarray(self.last))
        return (
            np.searchsorted(first, st, side="right") - np.searchsorted(last, st, side="left")
        ).astype(float)

    def _divisors(self, top, p: int, q: int, s: float, onset: float, f: float | None) -> np.ndarray:
        """(T, K): what stage slot ``q`` of the entries of pipeline ``p`` is divided by in the what-if.

        A steady slowdown ``s`` divides every step from onset by ``1 + s``. Intermittent stalls
        (``f``: a slow step's time over a normal one, from the engine's stall evidence) divide
        only the stalled steps by ``f``: those where the entry is more than ``sqrt(f)`` times the
        slowest other entry of the step.
        """
        st = self.step.view()
        hit = (top == p) & (st >= onset)[:, None]
        if f is None or f <= 1.0:
            return np.where(hit, 1.0 + s, 1.0)
        val = self.val.view()
        K = val.shape[1]
        if K < 2:
            return np.ones(top.shape)
        first_other = np.where(np.arange(K)[None, :] == 0, val[:, 1:2], val[:, 0:1])
        with np.errstate(invalid="ignore", divide="ignore"):
            stalled = val / first_other > math.sqrt(f)
        return np.where(hit & stalled, f, 1.0)

    def cost(self, evidence: dict[str, tuple]) -> tuple[JobCost, dict[str, float]]:
        """``evidence``: device -> (slowdown, onset step[, stall factor]) of this job's charged devices."""
        topo = self.topology()
        flagged = {}
        for d, ev in evidence.items():
            if d not in self.dev:
                continue
            s, onset = ev[0], ev[1]
            f = ev[2] if len(ev) > 2 else None
            if s is None:  # flagged without a slowdown estimate: its measured excess, if clear
                s = self.measured_slowdown(d, onset)
                s = s if s >= _MEASURED_FLOOR else 0.0
            if s > 0:
                flagged[d] = (s, onset, f)
        st = self.step.view()
        per_dev: dict[str, float] = dict(self.folded_dev)
        for d in evidence:
            if d in self.dev and d not in flagged:
                per_dev.setdefault(d, 0.0)  # charged, with timings, but no measurable excess
        job_lost = self.folded_job
        gpu_s = self.folded_gpu_s
        wall = self.wall.view()
        w = np.where(np.isfinite(wall), wall, self.val.view()[:, 0] if self.step.n else wall)
        wall_s = self.folded_wall + float(np.nansum(w)) if self.step.n else self.folded_wall
        if topo == "replicas":
            for d, (s, onset, _f) in flagged.items():
                # intermittent stalls too: s is their mean excess, so the expected loss is the same
                c = self.dev[d]
                expected, have = self._coverage(c, onset)
                busy = self._from(self.bsum[:, c], max(onset, self.first[c]))
                scale = expected / have if have > 0 else 0.0
                per_dev[d] = per_dev.get(d, 0.0) + busy * s / (1.0 + s) * scale
            job_lost = float(sum(per_dev.values()))
            gpu_s = job_lost
        elif self.step.n:
            pid = np.asarray(self.pid)
            pos = np.asarray(self.pos)
            members = self.members()
            top_all = self.top.view()
            joint_f = np.ones((*top_all.shape, self.S))
            scales, weights = [], []
            for d, (s, onset, f) in flagged.items():
                c = self.dev[d]
                p, q = pid[c], pos[c]
                div = self._divisors(top_all, p, q, s, onset, f)
                joint_f[..., q] *= div

                def one(top, q=q, div=div):
                    out = np.ones((*top.shape, self.S))
                    out[..., q] = div
                    return out

                lost_t = self.whatif(one)
                expected, have = self._coverage(c, onset)
                scale = expected / have if have > 0 else 1.0
                lost = float(lost_t.sum()) * scale
                per_dev[d] = per_dev.get(d, 0.0) + lost
                scales.append(scale)
                weights.append(lost)

            if flagged:
                lost_t = self.whatif(lambda top: joint_f)
                scale = float(np.average(scales, weights=weights)) if sum(weights) > 0 else 1.0
                job_lost += float(lost_t.sum()) * scale
                gpu_s += float((lost_t * members).sum()) * scale
        steps = self.folded_steps + int(np.unique(st[np.isfinite(st)]).size if st.size else 0)
        n_dev = len(self.dev)
        jc = JobCost(
            job=None if self.key is None else str(self.key),
            topology=topo,
            devices=n_dev,
            steps=steps,
            wall_seconds=wall_s if topo != "replicas" and wall_s > 0 else None,
            lost_seconds=float(job_lost),
            lost_gpu_hours=float(gpu_s) / 3600.0,
            lost_share=(job_lost / wall_s) if topo != "replicas" and wall_s > 0 else None,
            devices_lost_seconds={
                d: float(v) for d, v in sorted(per_dev.items(), key=lambda kv: -kv[1])
            },
        )
        return jc, per_dev


class CostMeter:
    """Streaming critical-path records per job; lost time from verdicts on demand.

    Parameters
    ----------
    top_k : int
        Slowest pipelines (devices, in data parallel) kept per step: exact for
        up to ``top_k - 1`` flagged devices in one job's critical path.
    max_steps : int
        Steps kept per job. Older steps are charged with the evidence known
        when they leave (:meth:`fold`) and dropped, so memory stays bounded in
        a long-running loop.

    Examples
    --------
    >>> import numpy as np
    >>> m = CostMeter()
    >>> x = np.full((100, 4), 1.0); x[50:, 2] = 1.2          # gpu2 20 % slower from step 50
    >>> m.add(["g0", "g1", "g2", "g3"], x, x.max(axis=1, keepdims=True) + 0 * x, np.arange(100.0), "j")
    False
    >>> costs, per_dev = m.costs({"g2": (0.2, 50.0)})
    >>> round(costs[0].lost_seconds, 6), costs[0].topology
    (10.0, 'synchronous')
    """

    def __init__(self, top_k: int = 4, max_steps: int = 1 << 17, bucket: int = 16):
        self.top_k = int(top_k)
        self.max_steps = int(max_steps)
        self.bucket = int(bucket)
        self._jobs: dict[Any, _Job] = {}
        self._rows = 0

    def add(
        self, ids, x, wall, steps, job=None, pipelines=None, microbatches=None, groups=None
    ) -> bool:
        """Record a (T, N) block of the devices' times; returns True when a job needs :meth:`fold`.

        ``job`` is a label or one per device; ``steps`` (T,) or (T, N) (NaN:
        rows counted from the meter's start); ``pipelines`` one pipeline label
        per device (None: data parallel); ``microbatches`` a scalar or one per
        device; ``groups`` the peer group of each device (a device charged without a slowdown
        estimate is measured against the median of its group).
        """
        x = np.asarray(x, dtype=np.float64)
        T, N = x.shape
        if T == 0 or N == 0:
            return False
        st = np.asarray(steps, dtype=np.float64) if steps is not None else np.full(T, np.nan)
        if st.ndim == 2:
            st = _nanmax_rows(st) if st.shape[1] > 1 else st[:, 0]
        st = np.where(np.isfinite(st), st, self._rows + np.arange(T, dtype=np.float64))
        self._rows += T
        jobs = list(job) if isinstance(job, (list, tuple, np.ndarray)) else [job] * N
        pl = list(pipelines) if pipelines is not None else None
        mb = (
            np.broadcast_to(
                np.asarray(microbatches if microbatches is not None else np.nan, dtype=np.float64),
                (N,),
            )
            if microbatches is not None
            else None
        )
        order: dict[Any, list[int]] = {}
        for j, k in enumerate(jobs):
            order.setdefault(k, []).append(j)
        full = False
        for k, cols in order.items():
            rec = self._jobs.get(k)
            if rec is None:
                rec = self._jobs[k] = _Job(k, self.top_k, self.bucket)
            cols_a = np.asarray(cols)
            if groups is not None:
                for j in cols:
                    rec.group[ids[j]] = groups[j]
            pipes = None
            if pl is not None and any(pl[j] is not None for j in cols):
                pipes = [pl[j] if pl[j] is not None else f"device:{ids[j]}" for j in cols]
            micro = (
                float(np.nanmax(mb[cols_a]))
                if mb is not None and np.isfinite(mb[cols_a]).any()
                else None
            )
            whole = len(order) == 1  # one job in the block (the usual case): no copies
            w = None if wall is None else np.asarray(wall, dtype=np.float64)
            rec.add(
                list(ids) if whole else [ids[j] for j in cols],
                x if whole else x[:, cols_a],
                w if whole or w is None else w[:, cols_a],
                st,
                pipes,
                micro,
            )
            full |= rec.step.n > self.max_steps
        return full

    def costs(
        self, evidence: dict[str, tuple[float, float]]
    ) -> tuple[list[JobCost], dict[tuple, float]]:
        """Job costs and ``{(job, device): lost_seconds}`` for the charged devices."""
        out, per = [], {}
        for k, rec in self._jobs.items():
            jc, pd = rec.cost(evidence)
            out.append(jc)
            for d, v in pd.items():
                per[(k, d)] = v
        return out, per

    def fold(self, evidence: dict[str, tuple[float, float]]) -> None:
        """Charge the older half of any over-full job with ``evidence`` and drop those steps."""
        for rec in self._jobs.values():
            if rec.step.n <= self.max_steps:
                continue
            k = rec.step.n // 2
            head = _Job(rec.key, rec.K, rec.bucket)
            for name in (
                "dev",
                "pid",
                "pos",
                "pipes",
                "pipe_size",
                "pipelined",
                "m",
                "S",
                "first",
                "last",
                "b0",
                "bucket",
            ):
                setattr(head, name, getattr(rec, name))
            for name in ("step", "val", "top", "stage", "wall", "nact"):
                g = getattr(rec, name)
                h = _Grow(g.a.shape[1:], g.a.dtype, g.fill)
                h.extend(g.view()[:k])
                setattr(head, name, h)
            head.spread_w = rec.spread_w
            # replicas are charged from the per-bucket sums, kept whole; the sync path from the records
            head.bcount, head.bsum, head.bjob = rec.bcount, rec.bsum, rec.bjob
            head.folded_dev, head.folded_job = rec.folded_dev, rec.folded_job
            head.folded_gpu_s, head.folded_wall, head.folded_steps = (
                rec.folded_gpu_s,
                rec.folded_wall,
                rec.folded_steps,
            )
            if rec.topology() != "replicas":
                jc, pd = head.cost(evidence)
                rec.folded_job = jc.lost_seconds
                rec.folded_gpu_s = jc.lost_gpu_hours * 3600.0
                rec.folded_dev = dict(pd)
                rec.folded_wall = jc.wall_seconds or 0.0
                rec.folded_steps = jc.steps
            for name in ("step", "val", "top", "stage", "wall", "nact"):
                getattr(rec, name).drop_head(k)

    def reset(self) -> None:
        self._jobs.clear()
        self._rows = 0

    # ---------------------------------------------------------------- persistence (data only)
    _SCALARS = (
        "K",
        "pipelined",
        "m",
        "S",
        "rows",
        "bucket",
        "b0",
        "folded_job",
        "folded_gpu_s",
        "folded_wall",
        "folded_steps",
    )
    _GROWS = ("step", "val", "top", "stage", "wall", "nact")

    def state_dict(self) -> dict[str, Any]:
        """Plain data (lists, scalars, arrays) for :mod:`degrade._statefile`; see :meth:`load_state_dict`."""
        jobs = []
        for rec in self._jobs.values():
            d: dict[str, Any] = {k: getattr(rec, k) for k in self._SCALARS}
            d["key"] = rec.key
            d["devices"] = list(rec.dev)
            d["pid"], d["pos"] = list(rec.pid), list(rec.pos)
            d["pipes"] = [[k[0], k[1], v] for k, v in rec.pipes.items()]
            d["pipe_size"] = list(rec.pipe_size)
            d["first"], d["last"] = list(rec.first), list(rec.last)
            d["spread_w"] = list(rec.spread_w)
            d["folded_dev"] = dict(rec.folded_dev)
            for k in ("bcount", "bsum", "bjob"):
                d[k] = getattr(rec, k).copy()
            for k in self._GROWS:
                d[k] = getattr(rec, k).view().copy()
            jobs.append(d)
        return {"version": 1, "rows": self._rows, "jobs": jobs}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        from ..errors import InputError

        try:
            if d["version"] != 1:
                raise InputError(f"cost meter state version {d['version']!r}; expected 1")
            self.reset()
            self._rows = int(d["rows"])
            for j in d["jobs"]:
                rec = _Job(j["key"], int(j["K"]), int(j["bucket"]))
                for k in self._SCALARS:
                    setattr(rec, k, j[k])
                rec.dev = {str(x): i for i, x in enumerate(j["devices"])}
                rec.pid, rec.pos = [int(x) for x in j["pid"]], [int(x) for x in j["pos"]]
                rec.pipes = {(str(a), b): int(c) for a, b, c in j["pipes"]}
                rec.pipe_size = [int(x) for x in j["pipe_size"]]
                rec.first, rec.last = [float(x) for x in j["first"]], [float(x) for x in j["last"]]
                rec.spread_w = [float(x) for x in j["spread_w"]]
                rec.folded_dev = {str(k): float(v) for k, v in j["folded_dev"].items()}
                for k in ("bcount", "bsum", "bjob"):
                    setattr(rec, k, np.asarray(j[k], dtype=np.float64))
                for k in self._GROWS:
                    a = np.asarray(j[k])
                    g = getattr(rec, k)
                    tail = a.shape[1:] if k != "stage" else (rec.K, rec.S)
                    h = _Grow(tail, g.a.dtype, g.fill)
                    h.extend(a.reshape((a.shape[0], *tail)))
                    setattr(rec, k, h)
                self._jobs[rec.key] = rec
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"cost meter state: malformed ({exc!r}); expected CostMeter.state_dict() output"
            ) from None


def evidence_from(verdicts) -> dict[str, tuple[float | None, float]]:
    """Charged devices' ``(slowdown, onset_step)`` from verdicts (onset unknown: from the start;
    slowdown None: flagged by another signal, measured from the timings by the meter)."""
    ev = {}
    for v in verdicts:
        st = str(v.status)
        s = v.slowdown
        if st not in _CHARGED:
            continue
        if s is not None and (not math.isfinite(s) or s <= 0):
            continue
        if s is None and st == "failed":
            continue  # a device that died (XID 79) stopped its work: no slowdown to charge
        if s is not None:
            s = float(s)
        onset = v.onset_step if v.onset_step is not None else -math.inf
        ev[v.device] = (s, float(onset))
    return ev
