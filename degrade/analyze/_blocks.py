"""Rows of one job (or one host) → sorted contiguous (T, N) blocks for the engine.

Everything here is vectorised: polars for the join of device ids, small
numba kernels for the rest (step positions, first-row-wins de-duplication,
the scatter of values into the block and their validation, one pass over
the rows each). No Python loop runs per row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._config import njit
from ._warnings import WarningLog

__all__ = ["Block", "timing_block", "counter_block", "step_chunks", "COUNTER_META"]

#: counter columns that describe a device rather than measure it
COUNTER_META = ("device", "timestamp", "host", "model", "uuid", "gpu", "pci_bus_id", "job",
                "pod", "namespace", "container", "_slot", "_d")


@dataclass
class Block:
    """A dense (T, N) slice of telemetry: rows are steps (or time slots), columns devices."""

    kind: str  # "timings" or "counters"
    job: Any
    devices: list[str]
    values: dict[str, np.ndarray]
    steps: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    groups: list[Any] | None = None
    hosts: list[Any] | None = None
    rows: int = 0  # input rows that went into the block
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return (0 if not self.values else next(iter(self.values.values())).shape[0],
                len(self.devices))

    @property
    def start_time(self) -> float:
        if self.timestamps is not None and len(self.timestamps):
            finite = self.timestamps[np.isfinite(self.timestamps)]
            if finite.size:
                return float(finite[0])
        return float("nan")


def step_chunks(step_min: int, step_max: int, rows: int, chunk_rows: int) -> list[tuple[int, int]]:
    """Half-open step ranges holding about ``chunk_rows`` rows each (rows spread evenly).

    >>> step_chunks(0, 99, 1000, 400)
    [(0, 33), (33, 66), (66, 100)]
    """
    span = int(step_max) - int(step_min) + 1
    n = max(1, min(span, -(-int(rows) // max(1, int(chunk_rows)))))
    edges = [int(step_min) + (span * k) // n for k in range(n + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _device_index(df, meta):
    """The rows of ``df`` whose device ``meta`` lists, and each one's ``_d`` in ``meta``.

    The devices are cast to an Enum of ``meta``'s ids: its physical codes are
    positions in ``meta``, found at a third of the CPU time of a join (which
    also copies every column into a new frame).
    """
    import polars as pl

    d_of = np.ascontiguousarray(meta.get_column("_d").to_numpy(), dtype=np.int64)
    ids = meta.get_column("device")
    if ids.null_count() == 0 and ids.n_unique() == ids.len():
        code = df.get_column("device").cast(pl.Enum(ids.to_list()), strict=False)
        if code.null_count():
            # rows of devices the plan did not see cannot happen for one scan; guard anyway
            keep = code.is_not_null()
            df, code = df.filter(keep), code.filter(keep)
        return df, d_of[code.to_physical().cast(pl.Int64).to_numpy()]
    joined = df.join(meta.select("device", "_d"), on="device", how="left", maintain_order="left")
    joined = joined.filter(pl.col("_d").is_not_null())
    return joined.drop("_d"), np.ascontiguousarray(joined.get_column("_d").to_numpy(), dtype=np.int64)


@njit
def _min_max(values):
    lo = values[0]
    hi = values[0]
    for r in range(1, values.size):
        v = values[r]
        if v < lo:
            lo = v
        elif v > hi:
            hi = v
    return lo, hi


@njit
def _offsets(values, lo, span):
    """``values - lo`` and whether every position of ``0..span-1`` occurs."""
    seen = np.zeros(span, dtype=np.bool_)
    out = np.empty(values.size, dtype=np.int64)
    n_seen = 0
    for r in range(values.size):
        k = values[r] - lo
        out[r] = k
        if not seen[k]:
            seen[k] = True
            n_seen += 1
    return out, seen, n_seen == span


def _axis_index(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique axis values and each row's position in them."""
    values = np.ascontiguousarray(values, dtype=np.int64)
    if values.size == 0:
        return values, values
    lo, hi = (int(x) for x in _min_max(values))
    span = hi - lo + 1
    if span <= 2 * values.size:
        pos, seen, full = _offsets(values, lo, span)
        if full:  # contiguous steps: the common case, O(rows)
            return np.arange(lo, hi + 1, dtype=np.int64), pos
        axis = np.flatnonzero(seen).astype(np.int64) + lo
    else:
        axis = np.unique(values)
    return axis, np.searchsorted(axis, values).astype(np.int64)


@njit
def _first_rows(t_idx, d_idx, n, cells):
    """Flat cell of each row, which rows come first in their cell, and the devices present."""
    occupied = np.zeros(cells, dtype=np.bool_)
    keep = np.empty(t_idx.size, dtype=np.bool_)
    flat = np.empty(t_idx.size, dtype=np.int64)
    present = np.zeros(n, dtype=np.bool_)
    n_dup = 0
    for r in range(t_idx.size):
        f = t_idx[r] * n + d_idx[r]
        flat[r] = f
        if occupied[f]:
            keep[r] = False
            n_dup += 1
        else:
            occupied[f] = True
            keep[r] = True
            present[d_idx[r]] = True
    return flat, keep, present, n_dup


@njit
def _scatter_values(flat, v, cells, timing):
    """A NaN-filled block with ``v`` at ``flat``; bad values become NaN and are counted.

    Bad is not finite and positive for timings (``timing``), infinite for
    counters.
    """
    block = np.empty(cells)
    block[:] = np.nan
    n_bad = 0
    for r in range(flat.size):
        x = v[r]
        if timing:
            if not (x > 0.0) or math.isinf(x):
                x = np.nan
                n_bad += 1
        elif math.isinf(x):
            x = np.nan
            n_bad += 1
        block[flat[r]] = x
    return block, n_bad


def _warmup() -> None:
    """Compile the kernels above once, on the dtypes the block builders pass."""
    steps = np.array([3, 4, 4], dtype=np.int64)
    _axis_index(steps)
    _axis_index(np.array([0, 10**9], dtype=np.int64))
    flat, _, _, _ = _first_rows(np.array([0, 1, 1], dtype=np.int64), np.zeros(3, dtype=np.int64), 1, 2)
    for timing in (True, False):
        _scatter_values(flat, np.ones(3), 2, timing)


def _scatter(df, meta, axis_col: str, value_cols, log: WarningLog, source: str | None,
             kind_dup: str, timing: bool):
    """Scatter the rows of ``df`` into (T, N) arrays.

    Returns (rows kept, axis, t_idx, devices mask, values, bad values per
    column): duplicate (axis, device) rows are dropped, the first in input
    order kept, and counted; values that are bad (see :func:`_scatter_values`)
    are NaN in the block.
    """
    import polars as pl

    df, d_idx = _device_index(df, meta)
    n = meta.height
    axis, t_idx = _axis_index(df.get_column(axis_col).to_numpy())
    cells = axis.size * n
    flat, keep, present, n_dup = _first_rows(t_idx, d_idx, n, cells)
    if n_dup:
        log.add(kind_dup, n_dup, source=source)
        df = df.filter(pl.Series(keep))
        flat, t_idx = flat[keep], t_idx[keep]
    out, bad = {}, {}
    for c in value_cols:
        v = np.ascontiguousarray(df.get_column(c).cast(pl.Float64).to_numpy(), dtype=np.float64)
        block, bad[c] = _scatter_values(flat, v, cells, timing)
        out[c] = block.reshape(axis.size, n)
    return df, axis, t_idx, present, out, bad


def timing_block(df, meta, value_cols, *, job=None, log: WarningLog, source: str | None = None,
                 ) -> Block | None:
    """One job's timing rows (any order) → a :class:`Block` with steps as rows.

    ``meta`` is the job's device table (``device``, ``_d``, optional ``host``,
    ``group``) sorted by device; ``df`` holds ``device``, ``step``, the
    ``value_cols`` and optionally ``timestamp``. Non-finite and non-positive
    timings become NaN (missing) and are counted in ``log``; duplicate
    (device, step) rows are dropped, first kept, and counted.
    """
    import polars as pl

    if df.height == 0:
        return None
    input_rows = df.height
    nulls = df.select(pl.col("device").is_null().sum(), pl.col("step").is_null().sum()).row(0)
    if any(nulls):
        log.add("null_key", df.height - df.drop_nulls(["device", "step"]).height, source=source)
        df = df.drop_nulls(["device", "step"])
        if df.height == 0:
            return None
    # degrade.io turns non-finite and non-positive timings into nulls; frames that
    # bypass it may still hold them: both end up as NaN (missing) and are counted
    df, axis, t_idx, present, values, bad = _scatter(df, meta, "step", value_cols, log, source,
                                                     "duplicate_rows", timing=True)
    for c in values:
        log.add("invalid_timing", bad[c], source=source, column=c)
    timestamps = None
    if "timestamp" in df.columns:
        ts = df.get_column("timestamp").cast(pl.Float64).to_numpy()
        ok = np.isfinite(ts)
        cnt = np.bincount(t_idx[ok], minlength=axis.size)
        tot = np.bincount(t_idx[ok], weights=ts[ok], minlength=axis.size)
        with np.errstate(invalid="ignore", divide="ignore"):
            timestamps = tot / cnt  # mean over the devices that logged the step; NaN if none
    block = _finish("timings", job, meta, present, values, axis, timestamps, df.height)
    block.extra["input_rows"] = input_rows
    return block


def counter_block(df, meta, metric_cols, *, t0: float, interval: float, job=None,
                  log: WarningLog, source: str | None = None) -> Block | None:
    """Counter samples → a :class:`Block` on a regular time grid (slot = ``interval`` s).

    Samples are placed in the slot nearest to their timestamp; a second
    sample in an occupied slot is dropped (first kept) and counted.
    """
    import polars as pl

    if df.height == 0:
        return None
    bad = df.select(pl.col("timestamp").is_null() | ~pl.col("timestamp").cast(pl.Float64).is_finite())
    n_bad = int(bad.to_series().sum())
    if n_bad:
        log.add("no_timestamp", n_bad, source=source)
        df = df.filter(~bad.to_series())
        if df.height == 0:
            return None
    df = df.with_columns(
        ((pl.col("timestamp").cast(pl.Float64) - t0) / interval).round(0).cast(pl.Int64).alias("_slot")
    )
    df, axis, _, present, values, bad = _scatter(df, meta, "_slot", metric_cols, log, source,
                                                 "duplicate_samples", timing=False)
    for c in values:
        log.add("nonfinite_counter", bad[c], source=source, column=c)
    timestamps = t0 + axis.astype(np.float64) * interval
    return _finish("counters", job, meta, present, values, None, timestamps, df.height)


def _finish(kind, job, meta, present, values, steps, timestamps, rows) -> Block:
    devices = meta.get_column("device").to_list()
    groups = meta.get_column("group").to_list() if "group" in meta.columns else None
    hosts = meta.get_column("host").to_list() if "host" in meta.columns else None
    if not present.all():
        # devices absent from this slice are not passed at all (elastic jobs):
        # the engine keeps their state by id until they return
        idx = np.flatnonzero(present)
        devices = [devices[i] for i in idx]
        groups = None if groups is None else [groups[i] for i in idx]
        hosts = None if hosts is None else [hosts[i] for i in idx]
        values = {c: np.ascontiguousarray(v[:, idx]) for c, v in values.items()}
    block = Block(kind=kind, job=job, devices=devices, values=values, steps=steps,
                  timestamps=timestamps, groups=groups, hosts=hosts, rows=rows)
    for col, key in (("pipeline", "pipelines"), ("microbatches", "microbatches")):
        # pipeline structure for the lost-time estimate (docs/cost.md)
        if kind == "timings" and col in meta.columns and meta.get_column(col).null_count() < meta.height:
            vals = meta.get_column(col).to_list()
            block.extra[key] = vals if present.all() else [vals[i] for i in np.flatnonzero(present)]
    return block
