"""Rows of one job (or one host) → sorted contiguous (T, N) blocks for the engine.

Everything here is vectorised: polars for joins and de-duplication, NumPy
for the scatter of values into the block. No Python loop runs per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
    """Column index of each row's device in ``meta`` (sorted device table with ``_d``)."""
    import polars as pl

    joined = df.join(meta.select("device", "_d"), on="device", how="left", maintain_order="left")
    d = joined.get_column("_d")
    if d.null_count():
        # rows of devices the plan did not see cannot happen for one scan; guard anyway
        joined = joined.filter(pl.col("_d").is_not_null())
    return joined


def _axis_index(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique axis values and each row's position in them."""
    lo, hi = int(values.min()), int(values.max())
    span = hi - lo + 1
    if span <= 2 * values.size:
        present = np.zeros(span, dtype=bool)
        present[values - lo] = True
        if present.all():  # contiguous steps: the common case, O(rows)
            return np.arange(lo, hi + 1, dtype=np.int64), (values - lo).astype(np.int64)
        axis = np.flatnonzero(present).astype(np.int64) + lo
    else:
        axis = np.unique(values)
    return axis, np.searchsorted(axis, values).astype(np.int64)


def _scatter(df, meta, axis_col: str, value_cols, log: WarningLog, source: str | None,
             kind_dup: str, first_wins: bool = True):
    """Scatter the rows of ``df`` into (T, N) arrays; returns (axis, t_idx, devices mask, values)."""
    import polars as pl

    df = _device_index(df, meta)
    n = meta.height
    t_raw = df.get_column(axis_col).to_numpy()
    axis, t_idx = _axis_index(t_raw)
    d_idx = df.get_column("_d").to_numpy().astype(np.int64)
    flat = t_idx * n + d_idx
    cells = axis.size * n
    occupied = np.zeros(cells, dtype=bool)
    occupied[flat] = True
    n_dup = flat.size - int(np.count_nonzero(occupied))
    if n_dup:
        log.add(kind_dup, n_dup, source=source)
        keep = np.ones(flat.size, dtype=bool)
        # stable sort keeps input order among equal keys, so the first row wins
        order = np.argsort(flat, kind="stable")
        sf = flat[order]
        keep[order[1:][sf[1:] == sf[:-1]]] = False
        df = df.filter(pl.Series(keep))
        flat, t_idx, d_idx = flat[keep], t_idx[keep], d_idx[keep]
    present = np.bincount(d_idx, minlength=n) > 0
    out = {}
    for c in value_cols:
        v = df.get_column(c).cast(pl.Float64).to_numpy()
        block = np.full(cells, np.nan)
        block[flat] = v
        out[c] = block.reshape(axis.size, n)
    return df, axis, t_idx, present, out


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
    df, axis, t_idx, present, blocks = _scatter(df, meta, "step", value_cols, log, source,
                                                "duplicate_rows")
    values = {}
    for c, block in blocks.items():
        # degrade.io turns non-finite and non-positive timings into nulls; frames that
        # bypass it may still hold them: both end up as NaN (missing) and are counted
        bad = ~(block > 0) | np.isinf(block)
        n_bad = int(np.count_nonzero(bad)) - (block.size - df.height)
        log.add("invalid_timing", n_bad, source=source, column=c)
        block[bad] = np.nan
        values[c] = block
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
    df, axis, _, present, blocks = _scatter(df, meta, "_slot", metric_cols, log, source,
                                            "duplicate_samples")
    values = {}
    for c, block in blocks.items():
        inf = np.isinf(block)
        log.add("nonfinite_counter", int(np.count_nonzero(inf)), source=source, column=c)
        block[inf] = np.nan
        values[c] = block
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
