"""Telemetry in: the canonical schema, readers and dcgm-exporter mapping.

See docs/schema.md. Importing this package does not import polars; the
readers do on first call.
"""

from __future__ import annotations

from ._dcgm import DCGM_FIELDS
from ._prometheus import read_prometheus
from ._readers import DatasetInfo, ReadReport, inspect, partitions, read_counters, read_timings
from ._schema import COUNTER_COLUMNS, COUNTER_METRICS, TIMING_COLUMNS, detect_kind

__all__ = [
    "read_timings",
    "read_counters",
    "inspect",
    "partitions",
    "detect_kind",
    "ReadReport",
    "DatasetInfo",
    "TIMING_COLUMNS",
    "COUNTER_COLUMNS",
    "COUNTER_METRICS",
    "DCGM_FIELDS",
    "read_prometheus",
]
