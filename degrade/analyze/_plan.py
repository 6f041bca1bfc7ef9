"""Plan an analysis as independent units, and run one unit.

A unit is one job (its timings plus the counters of its devices) or, for
devices that appear only in counters, one host. A unit is read and fed to a
fresh :class:`~degrade.verdict.VerdictEngine` in step (or time) chunks of
bounded size, so memory depends on the chunk, not on the dataset. The
polars engine runs the units one after the other; the Dask engine runs the
very same :func:`run_unit` on workers, so both give identical verdicts.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from ._blocks import COUNTER_META, counter_block, step_chunks, timing_block
from ._inputs import Source
from ._warnings import WarningLog

__all__ = ["Unit", "UnitResult", "plan_units", "run_unit", "scan_kind"]

DEFAULT_CHUNK_ROWS = 4_000_000


@dataclass
class Unit:
    """One independent piece of work. Small and picklable (sent to Dask workers)."""

    key: str
    job: Any
    timing_meta: Any = None  # polars DataFrame: device, _d, host, group, rows, step_min, ...
    counter_meta: Any = None  # polars DataFrame: device, _d, host, group, rows, ts_min, ts_max
    host: Any = None  # for counter-only units
    ts_range: tuple[float, float] | None = None  # restrict counters to the job's time span
    value_cols: list[str] = field(default_factory=list)  # timing columns this job has
    rows: int = 0


@dataclass
class UnitResult:
    key: str
    verdicts: list = field(default_factory=list)
    events: list = field(default_factory=list)
    log: WarningLog = field(default_factory=WarningLog)
    rows: int = 0
    timing_rows: int = 0  # rows kept (duplicates dropped), exact
    counter_rows: int = 0
    peak_rows: int = 0
    peak_cells: int = 0
    blocks: int = 0
    costs: list = field(default_factory=list)  # JobCost per job (docs/cost.md)


@contextmanager
def _clock(profile: dict, stage: str):
    """Add the wall and CPU seconds of the block to ``profile[stage]`` (bench_analyze's split)."""
    w0, c0 = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        w, c = profile.get(stage, (0.0, 0.0))
        profile[stage] = (w + time.perf_counter() - w0, c + time.process_time() - c0)


def _stage(profile: dict | None, stage: str):
    return nullcontext() if profile is None else _clock(profile, stage)


def _timing_where(job, a=None, b=None):
    """Filter on (job, step range) for :func:`scan_kind`, given a schema (raw or canonical)."""
    import polars as pl

    def where(schema):
        step_t = schema.get("step")
        if step_t is None or not step_t.is_integer():
            return None
        if "job" in schema:
            if schema["job"] != pl.String:
                return None
            cond = _job_filter(job)
        elif job is not None:
            return pl.lit(False)  # a source without jobs holds no rows of this job
        else:
            cond = pl.lit(True)
        if a is not None:
            cond = cond & (pl.col("step") >= a) & (pl.col("step") < b)
        return cond

    return where


def scan_kind(sources: list[Source], kind: str, reports: list | None = None, where=None,
              rows: bool = False):
    """One LazyFrame over every source of ``kind`` (columns unioned), or None.

    ``reports``, when given, receives one ``(source, ReadReport)`` per source;
    ``where(schema) -> expr | None`` filters on canonical columns (for
    counters, a plain expression on device and timestamp is accepted too). With
    ``rows=True`` timings come validated and typed but neither sorted nor
    de-duplicated (input order, duplicates kept: the block builder drops them,
    first kept, as the reader would), so ``where`` reaches the Parquet/CSV/IPC
    scan whatever the format or column aliases, and no chunk sorts the source.
    """
    import polars as pl

    from ..io import ReadReport, read_counters
    from ..io._readers import _read_counters, _read_timings

    frames = []
    for s in sources:
        if s.kind != kind:
            continue
        rep = ReadReport()
        if rows and kind == "timings":
            lf = _read_timings(s.target, report=rep, sort=False, on_bad_file=s.on_bad_file)
            expr = where(lf.collect_schema()) if where is not None else None
            frames.append(lf if expr is None else lf.filter(expr))
        elif rows and kind == "counters" and where is None:
            frames.append(_read_counters(s.target, report=rep, sort=False, on_bad_file=s.on_bad_file))
        elif kind == "counters" and where is not None and not callable(where):
            # an expression on (device, timestamp), the de-duplication keys: applied before
            # the reader's sort (same rows kept), so it reaches the scan and a chunk does
            # not sort every counter of the dataset
            frames.append(read_counters(s.target, report=rep, where=where, on_bad_file=s.on_bad_file))
        else:
            frames.append(s.scan(report=rep, where=where))
        if reports is not None:
            reports.append((s, rep))
    if not frames:
        return None
    lf = frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")
    if kind == "timings" and "job" not in lf.collect_schema():
        lf = lf.with_columns(pl.lit(None, dtype=pl.String).alias("job"))
    return lf


def _count_counter_drops(reports, cmeta, log: WarningLog) -> None:
    """Counter rows the reader would drop: null keys (raw rows - valid) and duplicate samples."""
    import polars as pl

    valid = int(cmeta.get_column("_n").sum()) if cmeta.height else 0
    kept = int(cmeta.get_column("rows").sum()) if cmeta.height else 0
    total = 0
    for s, rep in reports:
        n = s.raw_rows()  # Parquet footers, a frame's height: free
        if n is None:
            n = pl.concat(rep._raw, how="diagonal_relaxed").select(pl.len()).collect(
                engine="streaming").item()
        total += n
    name = reports[0][0].name if len(reports) == 1 else "counters"
    log.add("null_key", total - valid, source=name)
    log.add("duplicate_samples", valid - kept, source=name)


def _timing_columns(schema) -> list[str]:
    return [c for c in schema if c.endswith("_time")]


def _counter_columns(schema) -> list[str]:
    """Counter columns the engine reads (the others are accepted and not loaded)."""
    from ..verdict.engine import COUNTER_COLUMNS

    return [c for c, t in schema.items() if c in COUNTER_COLUMNS and c not in COUNTER_META
            and (t.is_numeric() or t.is_(__import__("polars").Boolean))]


def _job_filter(job):
    import polars as pl

    return pl.col("job").is_null() if job is None else pl.col("job") == job


def _indexed(meta):
    import polars as pl

    return meta.sort("device").with_row_index("_d").with_columns(pl.col("_d").cast(pl.Int64))


def plan_units(sources: list[Source], log: WarningLog) -> tuple[list[Unit], dict[str, Any]]:
    """Scan the metadata once (device, job, host, group, row counts) and cut units."""
    import polars as pl

    info: dict[str, Any] = {"timing_rows": 0, "counter_rows": 0}
    units: list[Unit] = []
    t_reports: list = []
    c_reports: list = []
    tl = scan_kind(sources, "timings", t_reports, rows=True)
    cl = scan_kind(sources, "counters", c_reports, rows=True)
    job_devices: set = set()
    if tl is not None:
        schema = tl.collect_schema()
        tcols = _timing_columns(schema)
        meta_all = _plan_timings(tl, schema, tcols, t_reports, log)
        info["timing_rows"] = int(meta_all.get_column("rows").sum()) if meta_all.height else 0
        jobs = meta_all.get_column("job").unique().to_list()
        for job in sorted(jobs, key=lambda j: (j is not None, str(j))):
            meta = _indexed(meta_all.filter(_job_filter(job)).drop("job"))
            job_devices.update(meta.get_column("device").to_list())
            # a column no row of this job has (mixed sources) is not passed: the
            # engine would otherwise compare on an all-missing compute_time
            value_cols = [c for c in tcols if int(meta.get_column(f"_n_{c}").sum()) > 0]
            meta = meta.drop([f"_n_{c}" for c in tcols])
            ts_range = None
            if "ts_min" in meta.columns and meta.get_column("ts_min").null_count() < meta.height:
                ts_range = (float(meta.get_column("ts_min").min()), float(meta.get_column("ts_max").max()))
            units.append(Unit(key=f"job {job}" if job is not None else "timings", job=job,
                              timing_meta=meta, ts_range=ts_range, value_cols=value_cols,
                              rows=int(meta.get_column("rows").sum())))
    if cl is not None:
        schema = cl.collect_schema()
        # unsorted rows with duplicates (see scan_kind), on the streaming engine: the reader's
        # sort of every counter column was 1.3 GB at 5e6 rows; distinct timestamps per device
        # are the rows its de-duplication keeps, so the plan is the same
        aggs = [pl.len().alias("_n"), pl.col("timestamp").n_unique().alias("rows"),
                pl.col("timestamp").cast(pl.Float64).min().alias("ts_min"),
                pl.col("timestamp").cast(pl.Float64).max().alias("ts_max")]
        # a missing label is added after the group-by: a literal among the aggregations
        # makes polars run the whole query on the in-memory engine
        missing = [c for c in ("host", "model") if c not in schema]
        aggs += [pl.col(c).drop_nulls().first().alias(c) for c in ("host", "model") if c in schema]
        cmeta = cl.group_by("device").agg(aggs).collect(engine="streaming")
        if missing:
            cmeta = cmeta.with_columns([pl.lit(None, dtype=pl.String).alias(c) for c in missing])
        info["counter_rows"] = int(cmeta.get_column("rows").sum()) if cmeta.height else 0
        _count_counter_drops(c_reports, cmeta, log)
        cmeta = cmeta.drop("_n")
        # counters' peer group: GPUs of the same model on the same host
        cmeta = cmeta.with_columns(
            pl.concat_str([pl.col("host").fill_null("?"), pl.col("model").fill_null("?")],
                          separator="/").alias("group")
        )
        for unit in units:
            devs = unit.timing_meta.select("device")
            sub = cmeta.join(devs, on="device", how="semi")
            if sub.height:
                unit.counter_meta = _indexed(sub)
                unit.rows += int(sub.get_column("rows").sum())
        rest = cmeta.filter(~pl.col("device").is_in(list(job_devices))) if job_devices else cmeta
        hosts = rest.get_column("host").unique().to_list()
        for host in sorted(hosts, key=lambda h: (h is not None, str(h))):
            sub = rest.filter(pl.col("host").is_null() if host is None else pl.col("host") == host)
            units.append(Unit(key=f"host {host}" if host is not None else "counters", job=None,
                              counter_meta=_indexed(sub), host=host,
                              rows=int(sub.get_column("rows").sum())))
    info["rows"] = info["timing_rows"] + info["counter_rows"]
    return units, info


def _plan_timings(tl, schema, tcols, reports, log: WarningLog):
    """Per (job, device): rows kept, step range, host, group, time span; one hash group-by.

    ``tl`` holds the validated rows in input order with duplicates (see
    :func:`scan_kind`), so nothing is sorted to be planned. ``rows`` counts
    them duplicates included (an upper bound, enough to cut chunks): an exact
    per-device ``n_unique(step)`` holds a hash set of every step of every
    device at once, and was most of the peak memory of an analysis (0.98 GB
    at 1e7 rows, 4.3 GB at 5e7, whatever ``chunk_rows``). The rows kept are
    counted exactly by the block builder, chunk by chunk, which also counts
    the duplicates. Rows without device or step were dropped by the reader
    and are counted here. The query runs on polars' streaming engine, so
    its memory is one morsel plus one entry per (job, device).
    """
    import polars as pl

    aggs = [pl.len().alias("_n"), pl.len().alias("rows")]
    aggs += [pl.col("step").min().alias("step_min"), pl.col("step").max().alias("step_max")]
    for opt in ("host", "group", "pipeline", "microbatches"):
        if opt in schema:
            aggs.append(pl.col(opt).drop_nulls().first().alias(opt))
    if "timestamp" in schema:
        aggs += [pl.col("timestamp").min().alias("ts_min"), pl.col("timestamp").max().alias("ts_max")]
    aggs += [pl.col(c).is_not_null().sum().alias(f"_n_{c}") for c in tcols]
    try:
        meta = tl.group_by(["job", "device"]).agg(aggs).collect(engine="streaming")
    except Exception as exc:
        if type(exc).__name__ != "InvalidOperationError":
            raise
        _raise_step_range([s for s, _ in reports], exc)
    if meta.height:
        lo, hi = meta.get_column("step_min").min(), meta.get_column("step_max").max()
        if lo < -_EXACT_STEP or hi > _EXACT_STEP:
            _raise_step_range([s for s, _ in reports], None)
    valid = int(meta.get_column("_n").sum()) if meta.height else 0
    total = 0
    for s, rep in reports:
        n = s.raw_rows()  # Parquet footers, a frame's height: free
        if n is None:
            n = pl.concat(rep._raw, how="diagonal_relaxed").select(pl.len()).collect().item()
        total += n
    tsrc = [s for s, _ in reports]
    log.add("null_key", total - valid, source=tsrc[0].name if len(tsrc) == 1 else "timings")
    return meta.drop("_n")


#: steps beyond this magnitude are not exact in float64, which the verdict engine keeps
_EXACT_STEP = 2**53


def _raise_step_range(sources, exc) -> None:
    """Name the source and column whose steps do not fit (int64, or float64 exactly)."""
    import polars as pl

    from ..errors import SchemaError
    from ..io._readers import _read_timings

    why = "" if exc is None else f" ({str(exc).strip().splitlines()[0]})"
    for s in sources:
        lf = _read_timings(s.target, sort=False, on_bad_file=s.on_bad_file)
        try:
            lo, hi = lf.select(pl.col("step").min(), pl.col("step").max().alias("hi")).collect().row(0)
        except Exception as e:
            if type(e).__name__ != "InvalidOperationError":
                raise
            raise SchemaError(
                f"{s.name}: column 'step' holds values beyond the int64 range{why}; "
                "expected integer training steps") from None
        if lo is not None and (lo < -_EXACT_STEP or hi > _EXACT_STEP):
            bad = hi if hi > _EXACT_STEP else lo
            raise SchemaError(
                f"{s.name}: column 'step' holds {bad:,}, beyond ±2**53 ({_EXACT_STEP:,}); steps "
                "that large cannot be kept exactly (the verdict engine stores them as float64): "
                "expected a training step counter, not a timestamp or an id") from None
    raise SchemaError(f"timings: column 'step' holds values beyond the int64 range{why}")


def _counter_interval(meta) -> float:
    import numpy as np

    rows = meta.get_column("rows").to_numpy()
    span = (meta.get_column("ts_max") - meta.get_column("ts_min")).to_numpy()
    ok = rows > 1
    if not ok.any():
        return 1.0
    per = span[ok] / (rows[ok] - 1)
    per = per[np.isfinite(per) & (per > 0)]
    return float(np.median(per)) if per.size else 1.0


def iter_blocks(unit: Unit, sources: list[Source], log: WarningLog, chunk_rows: int,
                profile: dict | None = None):
    """The unit's blocks in (approximate) time order, built chunk by chunk.

    With ``profile`` (a dict), the chunks are read and pivoted inline, one
    after the other, and the wall and CPU seconds of each stage (``read``,
    ``pivot``) are added to it: the split bench/bench_analyze.py prints.
    """
    import polars as pl

    pending: list[tuple[float, int, Any]] = []  # (start time, order, thunk)
    order = 0
    if unit.timing_meta is not None:
        schema = scan_kind(sources, "timings", rows=True).collect_schema()
        value_cols = list(unit.value_cols)
        cols = ["device", "step", *value_cols]
        if "timestamp" in schema:
            cols.append("timestamp")
        meta = unit.timing_meta
        smin, smax = int(meta.get_column("step_min").min()), int(meta.get_column("step_max").max())
        t_lo, t_hi = unit.ts_range if unit.ts_range else (math.nan, math.nan)
        for a, b in step_chunks(smin, smax, unit.rows, chunk_rows):
            start = t_lo + (t_hi - t_lo) * (a - smin) / max(1, smax - smin + 1)
            cond = _job_filter(unit.job) & (pl.col("step") >= a) & (pl.col("step") < b)
            tl = scan_kind(sources, "timings", where=_timing_where(unit.job, a, b), rows=True)
            q = tl.filter(cond).select(cols)

            def thunk(q=q, meta=meta, value_cols=value_cols):
                with _stage(profile, "read"):
                    df = q.collect()
                with _stage(profile, "pivot"):
                    return timing_block(df, meta, value_cols, job=unit.job, log=log,
                                        source=str(unit.key))

            pending.append((start if math.isfinite(start) else -math.inf, order, thunk))
            order += 1
    if unit.counter_meta is not None:
        schema = scan_kind(sources, "counters").collect_schema()
        metric_cols = _counter_columns(schema)
        meta = unit.counter_meta
        mine = pl.col("device").is_in(meta.get_column("device").to_list())
        lo, hi = float(meta.get_column("ts_min").min()), float(meta.get_column("ts_max").max())
        interval = _counter_interval(meta)
        if unit.ts_range is not None:
            # A device that dies (XID 79, fell off the bus) stops the job: its last,
            # decisive counter sample lands just after the last step. Keep a grace
            # of a few counter intervals past the job's end so it is not cut off.
            grace = max(5.0 * interval, 30.0)
            lo, hi = max(lo, unit.ts_range[0] - grace), min(hi, unit.ts_range[1] + grace)
        rows = int(meta.get_column("rows").sum())
        if hi >= lo and metric_cols:
            n = max(1, -(-rows // chunk_rows))
            edges = [lo + (hi - lo) * k / n for k in range(n + 1)]
            for k in range(n):
                ts = pl.col("timestamp").cast(pl.Float64)
                cond = mine & (ts >= edges[k]) & ((ts < edges[k + 1]) if k < n - 1 else (ts <= hi))
                q = scan_kind(sources, "counters", where=cond).select(["device", "timestamp", *metric_cols])

                def thunk(q=q, meta=meta, lo=lo, interval=interval):
                    with _stage(profile, "read"):
                        df = q.collect()
                    with _stage(profile, "pivot"):
                        return counter_block(df, meta, metric_cols, t0=lo, interval=interval,
                                             job=unit.job, log=log, source=str(unit.key))

                pending.append((edges[k], order, thunk))
                order += 1
    pending.sort(key=lambda p: (p[0], p[1]))
    if len(pending) == 1 or profile is not None:
        for _, _, thunk in pending:
            block = thunk()
            if block is not None:
                yield block
        return
    # read and pivot the next chunk while the engine runs on this one: polars and the
    # numba kernel both release the GIL, and at most two chunks are in memory
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="degrade-read") as pool:
        nxt = pool.submit(pending[0][2])
        for k in range(len(pending)):
            block = nxt.result()
            if k + 1 < len(pending):
                nxt = pool.submit(pending[k + 1][2])
            if block is not None:
                yield block


def make_engine(config):
    from ..verdict import VerdictEngine

    return VerdictEngine(config)


def run_unit(unit: Unit, sources: list[Source], config, chunk_rows: int = DEFAULT_CHUNK_ROWS,
             progress=None, profile: dict | None = None) -> UnitResult:
    """Analyse one unit with a fresh engine; the same function on every engine.

    ``profile``: see :func:`iter_blocks` (bench/bench_analyze.py times the
    engine's calls itself).
    """
    res = UnitResult(key=unit.key)
    engine = make_engine(config)
    for block in iter_blocks(unit, sources, res.log, chunk_rows, profile):
        T, N = block.shape
        res.blocks += 1
        res.rows += block.rows
        if block.kind == "timings":
            res.timing_rows += block.rows
        else:
            res.counter_rows += block.rows
        res.peak_rows = max(res.peak_rows, block.rows)
        res.peak_cells = max(res.peak_cells, T * N)
        kwargs = {"timestamps": block.timestamps, "groups": block.groups, "job": block.job,
                  "hosts": block.hosts}
        if block.steps is not None:
            kwargs["steps"] = block.steps
        if "pipelines" in block.extra:
            kwargs["pipelines"] = block.extra["pipelines"]
            kwargs["microbatches"] = block.extra.get("microbatches")
        engine.run(block.devices, block.values, **kwargs)
        if progress is not None:
            # rows read, duplicates included: the plan's total counts them too
            progress(block.extra.get("input_rows", block.rows))
    res.verdicts = list(engine.verdicts())
    res.events = list(engine.job_events())
    job_costs = getattr(engine, "job_costs", None)
    if job_costs is not None and unit.timing_meta is not None:
        res.costs = list(job_costs(res.verdicts))
    return res
