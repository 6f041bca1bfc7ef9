"""Batch analysis of fleet telemetry: ``degrade analyze`` and its Python API.

Reads timings, counters and dcgm-exporter exports (files, hive-partitioned
datasets or polars frames), runs the verdict engine one job at a time in
bounded chunks, on this machine (polars) or on a Dask cluster, and renders
the verdicts as a table, JSON (docs/json-contract.md), Parquet or an HTML
report. Importing this package imports neither polars nor dask.
"""

from __future__ import annotations

from ._api import SCHEMA_VERSION, AnalysisResult, analyze
from ._warnings import AnalysisWarning

__all__ = ["AnalysisResult", "AnalysisWarning", "SCHEMA_VERSION", "analyze"]


def _warmup() -> None:
    """Compile the block builder's kernels (``degrade.warmup``); NumPy only, no polars."""
    from ._blocks import _warmup as blocks

    blocks()


# `degrade.analyze(...)` works whether or not the subpackage was imported first.
from .._callable_module import make_callable as _make_callable  # noqa: E402

_make_callable(__name__, "analyze")
