"""``degrade.analyze.analyze``: a fleet's telemetry in, one verdict per device out."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ._warnings import _FILE_KINDS, AnalysisWarning, WarningLog

_SKIPPED = ("empty_file", "unreadable_file")

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

    from ..verdict import EngineConfig, JobEvent, Verdict

__all__ = ["AnalysisResult", "analyze", "SCHEMA_VERSION"]

#: version of the JSON document (docs/json-contract.md): the major part on breaking changes,
#: the minor part on additive ones (1.1: lost time, ``costs`` and ``verdicts[].lost_seconds``)
SCHEMA_VERSION = "1.1"

_ENGINES = ("polars", "dask")


@dataclass
class AnalysisResult:
    """What :func:`analyze` found.

    Attributes
    ----------
    verdicts : list of Verdict
        One per (device, job), sorted by job then device.
    jobs : list of JobEvent
        Slowdowns that hit a whole job (or peer group) at once.
    warnings : list of AnalysisWarning
        Input rows that were skipped or repaired, counted.
    inputs : list of dict
        Each source: path (or ``<frame i>``) and kind.
    stats : dict
        Rows, devices, units, seconds, engine, and the peak block size
        (rows and cells) — the memory footprint indicator.
    config : dict
        The engine configuration used.
    costs : list of JobCost
        What each job's flagged devices cost it (docs/cost.md), costliest first.
    """

    verdicts: list[Verdict]
    jobs: list[JobEvent]
    warnings: list[AnalysisWarning] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    _sources: list = field(default_factory=list, repr=False)
    costs: list = field(default_factory=list)
    _fleet: Any = field(default=None, repr=False)

    @property
    def fleet(self):
        """The :class:`degrade.fleet.FleetHistory` of these verdicts (each device's jobs, repeat offenders)."""
        if self._fleet is None:
            from ..fleet import history_from_result

            self._fleet = history_from_result(self)
        return self._fleet

    def counts(self) -> dict[str, int]:
        """Number of verdicts per status (every status present, zeros included)."""
        from ..verdict import Status

        out = {s.value: 0 for s in Status}
        for v in self.verdicts:
            out[str(v.status)] += 1
        return out

    def flagged(self) -> list[Verdict]:
        """Verdicts that are not healthy, worst first."""
        from ..verdict import Status

        bad = [v for v in self.verdicts if Status(v.status) is not Status.HEALTHY]
        return sorted(bad, key=lambda v: (-Status(v.status).severity, -(v.slowdown or 0.0),
                                          str(v.job), v.device))

    def summary(self) -> str:
        """One line: devices, jobs, rows, time, and the count per status."""
        c = self.counts()
        s = self.stats
        parts = [f"{c[k]} {k}" for k in ("failed", "degraded", "suspect", "unknown", "healthy") if c[k]]
        return (
            f"{len(self.verdicts)} devices in {s.get('jobs', 0)} jobs "
            f"({s.get('rows', 0):,} rows, {s.get('seconds', 0.0):.1f} s): "
            + (", ".join(parts) if parts else "nothing analysed")
            + f"; {len(self.jobs)} job events"
            + (f"; {sum(w.count for w in self.warnings if w.kind not in _FILE_KINDS):,} rows skipped or repaired"
               if any(w.kind not in _FILE_KINDS for w in self.warnings) else "")
            + (f"; {sum(w.count for w in self.warnings if w.kind in _SKIPPED):,} files skipped"
               if any(w.kind in _SKIPPED for w in self.warnings) else "")
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``degrade analyze --format json`` (docs/json-contract.md)."""
        from .. import __version__

        stats = dict(self.stats)
        return {
            "schema_version": SCHEMA_VERSION,
            "degrade_version": __version__,
            "generated_at": stats.pop("generated_at", None),
            "config": self.config,
            "inputs": self.inputs,
            "summary": {
                "devices": len(self.verdicts),
                "jobs": int(stats.get("jobs", 0)),
                "rows": int(stats.get("rows", 0)),
                "job_events": len(self.jobs),
                "warnings": len(self.warnings),
                "by_status": self.counts(),
                "engine": stats.get("engine"),
                "seconds": stats.get("seconds"),
                "peak_block_rows": int(stats.get("peak_block_rows", 0)),
                "peak_block_cells": int(stats.get("peak_block_cells", 0)),
                "lost_seconds": round(sum(c.lost_seconds for c in self.costs), 6),
                "lost_gpu_hours": round(sum(c.lost_gpu_hours for c in self.costs), 6),
            },
            "verdicts": [v.to_dict() for v in self.verdicts],
            "jobs": [e.to_dict() for e in self.jobs],
            "costs": [c.to_dict() for c in self.costs],
            "warnings": [w.to_dict() for w in self.warnings],
            "fleet": self.fleet.to_dict(),
        }

    def to_json(self, path: str | os.PathLike | None = None, *, indent: int | None = 2) -> str:
        """The document as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        return text

    def to_polars(self) -> pl.DataFrame:
        """One row per verdict (signals as a JSON string column)."""
        from ._formats import verdict_frame

        return verdict_frame(self)

    def to_parquet(self, path: str | os.PathLike) -> None:
        """Verdicts as Parquet rows; the rest of the document in the file's metadata (key ``degrade``)."""
        from ._formats import write_parquet

        write_parquet(self, path)

    def to_html(self, path: str | os.PathLike, *, max_devices: int = 50) -> None:
        """A self-contained HTML report: each flagged device against its peers."""
        from ._report import write_report

        write_report(self, path, max_devices=max_devices)


def _engine_config(config, min_slowdown):
    from ..verdict import EngineConfig

    # batch analysis reports the worst episode in the history, not only the state at its end
    if config is None:
        cfg = EngineConfig(latch=True)
    elif isinstance(config, dict):
        cfg = EngineConfig(**{"latch": True, **config})
    elif isinstance(config, EngineConfig):
        cfg = config
    else:
        raise InputError(f"config must be an EngineConfig or a dict, got {type(config).__name__}")
    if min_slowdown is not None:
        ms = float(min_slowdown)
        if not (0.0 < ms < 1.0):
            raise InputError(f"min_slowdown must be a fraction in (0, 1), got {min_slowdown!r}")
        cfg = dataclasses.replace(cfg, min_slowdown=ms)
    return cfg


def _config_dict(cfg) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, (int, float, str, bool)) or v is None:
            out[f.name] = v
        elif isinstance(v, (tuple, list)) and all(isinstance(x, (int, float, str, bool)) for x in v):
            out[f.name] = list(v)
    return out


def analyze(
    paths_or_frames: str | os.PathLike | pl.DataFrame | pl.LazyFrame | Sequence[Any],
    *,
    min_slowdown: float | None = 0.05,
    engine: str = "polars",
    config: EngineConfig | dict | None = None,
    progress: bool | Callable[[int, int], None] = False,
    chunk_rows: int | None = None,
    client: Any = None,
    strict: bool = False,
) -> AnalysisResult:
    """Analyse a fleet's telemetry and return one verdict per device.

    Parameters
    ----------
    paths_or_frames : path, glob, directory, polars frame, or a sequence of them
        Any mix of step timings, device counters and dcgm-exporter exports
        (docs/schema.md). Directories are searched for data files;
        hive-partitioned directories are read as one dataset. Ground-truth
        files written by the simulator are recognised and ignored.
    min_slowdown : float, default 0.05
        Smallest sustained slowdown (fraction) worth flagging. ``None`` keeps
        the value of ``config``.
    engine : {"polars", "dask"}
        ``polars`` runs on this machine, one job at a time; ``dask`` runs
        the same per-job function on a dask.distributed cluster (``client``,
        or the current default client, or a new LocalCluster).
    config : EngineConfig or dict, optional
        Verdict engine settings (see docs/verdicts.md).
    progress : bool or callable
        ``True`` draws a progress bar on stderr when it is a terminal; a
        callable receives ``(rows_done, rows_total)``.
    chunk_rows : int, optional
        Rows read at once (default 4,000,000). Two jobs are analysed at a
        time, each holding at most two chunks: the bound on memory.
    client : dask.distributed.Client, optional
        For ``engine="dask"``.
    strict : bool, default False
        A file inside a directory that is empty, not a regular file or cannot
        be read is skipped with a warning (kinds ``empty_file``,
        ``unreadable_file``); with ``strict=True`` it is an :class:`InputError`.

    Returns
    -------
    AnalysisResult

    Raises
    ------
    InputError
        Nonexistent or unreadable path, unknown engine, bad argument.
    SchemaError
        A file that does not match the schema (names file and column).

    Examples
    --------
    >>> import polars as pl
    >>> from degrade.analyze import analyze
    >>> rows = [
    ...     {"device": f"gpu{d}", "step": s, "compute_time": 0.1 * (1.3 if d == 3 and s >= 150 else 1.0)}
    ...     for s in range(300) for d in range(8)
    ... ]
    >>> res = analyze(pl.DataFrame(rows))
    >>> len(res.verdicts)
    8
    >>> sorted(res.to_dict())[:4]
    ['config', 'costs', 'degrade_version', 'fleet']
    """
    if engine not in _ENGINES:
        raise InputError(f"engine must be one of {', '.join(_ENGINES)}, got {engine!r}")
    if chunk_rows is not None and int(chunk_rows) < 1:
        raise InputError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    from ._inputs import resolve_inputs
    from ._plan import DEFAULT_CHUNK_ROWS, plan_units, run_unit

    t0 = time.perf_counter()
    cfg = _engine_config(config, min_slowdown)
    log = WarningLog()
    sources = resolve_inputs(paths_or_frames, log, strict=bool(strict))
    units, info = plan_units(sources, log)
    chunk = int(chunk_rows or DEFAULT_CHUNK_ROWS)
    total = int(info["rows"])

    if engine == "dask":
        from ._dask import run_units_dask

        results = run_units_dask(units, sources, cfg, chunk, client=client)
    else:
        with _progress(progress, total) as tick:
            workers = min(len(units), max(1, min(2, os.cpu_count() or 1)))
            if workers <= 1:
                results = [run_unit(unit, sources, cfg, chunk, progress=tick) for unit in units]
            else:
                # units are independent (one engine each) and the kernels release the GIL:
                # two at a time keep both cores busy; results keep the units' order
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="degrade-unit") as pool:
                    results = list(pool.map(
                        lambda u: run_unit(u, sources, cfg, chunk, progress=tick), units))

    verdicts, events, costs = [], [], []
    for r in results:
        verdicts.extend(r.verdicts)
        events.extend(r.events)
        costs.extend(getattr(r, "costs", []))
        log.merge(r.log)
    verdicts.sort(key=lambda v: (v.job is not None, str(v.job), v.device))
    events.sort(key=lambda e: (e.job is not None, str(e.job), e.start_step if e.start_step is not None else -1,
                               e.start_time if e.start_time is not None else -1.0, e.kind))
    jobs = {v.job for v in verdicts if v.job is not None}
    # rows kept, exact: the plan counts timing rows duplicates included (see _plan_timings)
    timing_rows = sum(r.timing_rows for r in results)
    counter_rows = int(info["counter_rows"])
    stats = {
        "engine": engine,
        "rows": timing_rows + counter_rows,
        "timing_rows": timing_rows,
        "counter_rows": counter_rows,
        "units": len(units),
        "jobs": len(jobs) if jobs else (1 if any(u.timing_meta is not None for u in units) else 0),
        "blocks": sum(r.blocks for r in results),
        "peak_block_rows": max((r.peak_rows for r in results), default=0),
        "peak_block_cells": max((r.peak_cells for r in results), default=0),
        "seconds": round(time.perf_counter() - t0, 3),
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return AnalysisResult(
        verdicts=verdicts, jobs=events, warnings=log.items(),
        inputs=[s.describe() for s in sources], stats=stats,
        config={**_config_dict(cfg), "engine": engine}, _sources=sources,
        costs=sorted(costs, key=lambda c: (-c.lost_gpu_hours, -c.lost_seconds, str(c.job))),
    )


class _progress:
    """Progress over rows: a rich bar on a terminal, a callback, or nothing."""

    def __init__(self, progress, total: int):
        self.progress, self.total, self.done, self._bar = progress, total, 0, None

    def __enter__(self):
        import sys

        if callable(self.progress):
            import threading

            cb, lock = self.progress, threading.Lock()

            def tick(n):
                with lock:  # units may run on two threads
                    self.done += n
                    cb(self.done, self.total)

            return tick
        if self.progress and sys.stderr.isatty():
            from .._optional import import_optional

            rp = import_optional("rich.progress", "batch", "rich")
            rc = import_optional("rich.console", "batch", "rich")
            self._bar = rp.Progress(
                rp.TextColumn("analysing"), rp.BarColumn(), rp.MofNCompleteColumn(),
                rp.TextColumn("rows"), rp.TimeRemainingColumn(),
                console=rc.Console(stderr=True), transient=True,
            )
            self._bar.start()
            task = self._bar.add_task("rows", total=self.total)
            return lambda n: self._bar.advance(task, n)
        return None

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()
        return False
