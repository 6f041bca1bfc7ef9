"""From ``degrade analyze`` results to a :class:`~degrade.fleet.FleetHistory`."""

from __future__ import annotations

from typing import Any

from ._history import FleetConfig, FleetHistory

__all__ = ["history_from_result", "slots_from_sources"]


def slots_from_sources(sources: list) -> dict[str, tuple[Any, int]]:
    """``device -> (host, gpu index)`` from the counters among ``sources`` (``gpu`` column), else empty.

    Timings carry no GPU index (docs/schema.md), so only counters (NVML,
    dcgm-exporter's ``gpu`` label) place a device in a slot. A device seen
    at several slots keeps the last one.
    """
    from ..analyze._plan import scan_kind

    if not any(getattr(s, "kind", None) == "counters" for s in sources):
        return {}
    lf = scan_kind(sources, "counters", rows=True)
    if lf is None:
        return {}
    schema = lf.collect_schema()
    if "gpu" not in schema or "host" not in schema:
        return {}
    import polars as pl

    df = (
        lf.select("device", "host", "gpu", "timestamp")
        .filter(pl.col("host").is_not_null() & pl.col("gpu").is_not_null())
        .group_by("device")
        .agg(pl.col("host").sort_by("timestamp").last(), pl.col("gpu").sort_by("timestamp").last())
        .collect()
    )
    return {
        d: (h, int(g))
        for d, h, g in zip(df["device"].to_list(), df["host"].to_list(), df["gpu"].to_list())
    }


def history_from_result(
    result, *, config: FleetConfig | None = None, history: FleetHistory | None = None
) -> FleetHistory:
    """The fleet history of one :class:`~degrade.analyze.AnalysisResult` (added to ``history`` when given).

    ``config`` defaults to the analysis' own ``healthy_offset`` and
    ``min_slowdown``.
    """
    if config is None:
        c = result.config or {}
        config = FleetConfig(
            healthy_offset=float(c.get("healthy_offset", 0.03)),
            min_slowdown=float(c.get("min_slowdown", 0.05)),
        )
    h = history if history is not None else FleetHistory(config)
    h.add_verdicts(result.verdicts, slots=slots_from_sources(getattr(result, "_sources", []) or []))
    return h
