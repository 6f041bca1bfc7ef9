"""dcgm-exporter field names and units, mapped onto the canonical counters.

The mapping is data: ``degrade/data/dcgm_fields.csv`` lists every DCGM field
(and dcgm-exporter metric) degrade reads, with its DCGM field id, type, the
unit dcgm-exporter publishes, the canonical column it fills and the factor
to that column's unit. It was checked against DCGM 4.6 and dcgm-exporter
(docs/schema.md cites the files); tests/test_dcgm.py checks it.

Names are matched with or without the ``DCGM_FI_DEV_`` / ``DCGM_FI_PROF_`` /
``DCGM_EXP_`` / ``DCGM_FI_`` / ``DCGM_`` prefix and in any case. Both the
names before DCGM 4.6 (``GPU_UTIL``, ``POWER_USAGE``, ...) and the 4.6
unit-suffixed ones (``GPU_UTIL_RATIO``, ``BOARD_POWER_WATTS``, ...) are
accepted. A 4.6 suffix does not change the value: ``GPU_UTIL_RATIO`` is
still field 203, INT64, 0-100, and becomes a ratio 0..1 here.

``DCGM_FI_DEV_XID_ERRORS`` (``XID_ERROR`` in 4.6) is the value of the *last*
XID seen, not a count; it maps onto ``xid_last``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

__all__ = [
    "DCGM_FIELDS",
    "FIELD_TABLE",
    "DcgmField",
    "metric_for",
    "is_long_layout",
    "normalise_field",
    "METRIC_NAME_COLUMNS",
    "SERIES_LABELS",
]

_TABLE_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "dcgm_fields.csv")


@dataclass(frozen=True)
class DcgmField:
    """One row of ``degrade/data/dcgm_fields.csv``."""

    name: str
    field_id: int
    type: str
    unit: str
    column: str
    factor: float
    agg: str
    naming: str

    @property
    def key(self) -> str:
        return normalise_field(self.name)


_PREFIXES = ("DCGM_FI_DEV_", "DCGM_FI_PROF_", "DCGM_EXP_", "DCGM_FI_", "DCGM_")


def normalise_field(name: str) -> str:
    """Upper-case field name without the DCGM prefixes.

    >>> normalise_field("dcgm_fi_dev_gpu_temp")
    'GPU_TEMP'
    >>> normalise_field("DCGM_FI_PROF_SM_ACTIVE")
    'SM_ACTIVE'
    """
    up = str(name).upper()
    for p in _PREFIXES:
        if up.startswith(p):
            return up[len(p) :]
    return up


def _load_table() -> tuple[DcgmField, ...]:
    with open(_TABLE_PATH, encoding="utf-8", newline="") as fh:
        rows = csv.DictReader(line for line in fh if not line.startswith("#"))
        return tuple(
            DcgmField(
                r["name"],
                int(r["field_id"]),
                r["type"],
                r["unit"],
                r["column"],
                float(r["factor"]),
                r["agg"],
                r["naming"],
            )
            for r in rows
        )


#: every field degrade reads, in order of preference per column
FIELD_TABLE: tuple[DcgmField, ...] = _load_table()

#: normalised field name -> (canonical column, factor to base units)
DCGM_FIELDS: dict[str, tuple[str, float]] = {f.key: (f.column, f.factor) for f in FIELD_TABLE}

_AGG: dict[str, str] = {f.key: f.agg for f in FIELD_TABLE}

#: labels that split one device's metric into several series (one per clock-event
#: reason, one per XID) for the ``agg = sum`` metrics; they are not device labels
SERIES_LABELS = ("clock_event", "xid")

#: column names that hold the metric name in a long (Prometheus) export
METRIC_NAME_COLUMNS = ("__name__", "metric_name", "metric", "name", "field")
_VALUE_COLUMNS = ("value", "metric_value", "val")


def aggregation(key: str) -> str:
    """``"last"`` or ``"sum"``: how series of one device and time combine for this field."""
    return _AGG.get(key, "last")


def metric_for(name: str) -> tuple[str, float] | None:
    """(canonical column, factor) for a dcgm-exporter field name, or None.

    Plain names without a ``DCGM`` prefix are only accepted when they are not
    already a canonical column (those pass through unchanged).

    >>> metric_for("DCGM_FI_DEV_GPU_UTIL")
    ('gpu_util_ratio', 0.01)
    >>> metric_for("DCGM_FI_DEV_GPU_UTIL_RATIO")   # DCGM 4.6: same field 203, still percent
    ('gpu_util_ratio', 0.01)
    >>> metric_for("step_time") is None
    True
    """
    up = str(name).upper()
    key = normalise_field(name)
    hit = DCGM_FIELDS.get(key)
    if hit is None:
        return None
    if up == key and str(name) != up:
        # a lower-case plain name like "gpu_temp" is ambiguous; need DCGM spelling
        return None
    return hit


def _find(columns, candidates) -> str | None:
    lower = {str(c).lower(): str(c) for c in columns}
    for c in candidates:
        if c in lower:
            return lower[c]
    return None


def is_long_layout(columns) -> bool:
    """True for a long export: one metric-name column and one value column.

    >>> is_long_layout(["__name__", "UUID", "value", "timestamp"])
    True
    """
    return (
        _find(columns, METRIC_NAME_COLUMNS) is not None
        and _find(columns, _VALUE_COLUMNS) is not None
    )


def long_columns(columns) -> tuple[str, str]:
    """(metric-name column, value column) of a long export."""
    return _find(columns, METRIC_NAME_COLUMNS), _find(columns, _VALUE_COLUMNS)


def device_id_expr(uuid, host, gpu, instance):
    """The polars expression of a counter row's ``device``.

    A whole GPU is its UUID (or ``host/gpuN`` without one). A MIG instance
    (dcgm-exporter's ``GPU_I_ID`` label set) is ``<UUID>/mig<GPU_I_ID>``: the
    exporter gives every instance of a GPU the parent's UUID, so without the
    instance all of them would collapse onto one device.
    """
    import polars as pl

    if uuid is not None:
        base = uuid.cast(pl.String)
    else:
        base = host.cast(pl.String) + "/gpu" + gpu.cast(pl.String)
    if instance is None:
        return base
    gi = instance.cast(pl.String)
    return pl.when(gi.is_null() | (gi == "")).then(base).otherwise(base + "/mig" + gi)


def long_to_wide(lf, schema: dict, label: str):
    """A long (Prometheus) export as one row per device and timestamp, one column per field.

    Rows of one scrape (same device and timestamp) become one row. They are
    matched on the device's identity only (``UUID``, else ``Hostname`` +
    ``gpu``, plus ``GPU_I_ID`` for MIG instances), so metrics that carry
    fewer labels still join; the other labels are taken where present.
    Metrics split by a reason or XID label (``DCGM_EXP_*_COUNT``) are summed
    over that label. Fields not in the table are dropped.

    Returns ``(lazy frame, schema)`` with canonical metric columns, already
    in base units, and the label columns as they were.
    """
    import polars as pl

    from ..errors import SchemaError

    name_col, value_col = long_columns(schema)
    dtype = schema[value_col]
    if not (dtype.is_numeric() or str(dtype) == "Boolean"):
        raise SchemaError(f"{label}: column {value_col!r} holds {dtype} values; expected numbers")
    ts_col = next((c for c in schema if c.lower() in ("timestamp", "ts", "time")), None)
    if ts_col is None:
        raise SchemaError(f"{label}: long (Prometheus) export without a 'timestamp' column")
    labels = [c for c in schema if c not in (name_col, value_col, ts_col)]
    low = {c.lower(): c for c in labels}
    if "uuid" in low:
        ident = [low["uuid"]]
    elif "hostname" in low and "gpu" in low:
        ident = [low["hostname"], low["gpu"]]
    else:
        ident = [c for c in labels if c.lower() not in SERIES_LABELS]
    if "gpu_i_id" in low and low["gpu_i_id"] not in ident:
        ident.append(low["gpu_i_id"])
    others = [c for c in labels if c not in ident and c.lower() not in SERIES_LABELS]
    field = (
        pl.col(name_col)
        .cast(pl.String)
        .str.to_uppercase()
        .str.replace(r"^DCGM_FI_DEV_|^DCGM_FI_PROF_|^DCGM_EXP_|^DCGM_FI_|^DCGM_", "")
    )
    # other exporters' metrics in the same scrape (go_*, process_*, degrade's own) are not counters
    lf = lf.with_columns(field.alias("__field")).filter(
        pl.col("__field").is_in([f.key for f in FIELD_TABLE])
    )
    val = strip_blank(pl.col(value_col).cast(pl.Float64))
    by_column: dict[str, list] = {}
    # dcgm-exporter's clock-events collector counts every reason bit, GPU idle included
    # (internal/pkg/collector/clock_events_collector.go); an idle GPU is not a slow one
    busy = (
        pl.col("clock_event").fill_null("") != "gpu_idle"
        if "clock_event" in schema
        else pl.lit(True)
    )
    for f in FIELD_TABLE:
        hit = pl.col("__field") == f.key
        if f.agg == "sum":
            hit = hit & busy
            e = pl.when(hit.any()).then((val * f.factor).filter(hit).sum())
        else:
            e = (val * f.factor).filter(hit).last()
        by_column.setdefault(f.column, []).append(e)
    # one canonical column per metric, the first field present (table order) wins
    aggs = [(es[0] if len(es) == 1 else pl.coalesce(es)).alias(c) for c, es in by_column.items()]
    aggs += [pl.col(c).drop_nulls().first().alias(c) for c in others]
    lf = lf.group_by([*ident, ts_col], maintain_order=True).agg(aggs)
    return lf, dict(lf.collect_schema())


#: DCGM's "no value" sentinels, which dcgm-exporter prints as numbers (dcgm_structs.h:
#: DCGM_INT64_BLANK = 0x7ffffffffffffff0 and the codes just above it; DCGM_FP64_BLANK = 2**47 + 0..3)
_INT64_BLANK = float(0x7FFFFFFFFFFFFFF0)
_FP64_BLANK = float(2**47)


def strip_blank(x):
    """The polars float expression ``x`` with DCGM's blank sentinels made null (before any unit factor)."""
    import polars as pl

    blank = (x >= _INT64_BLANK) | ((x >= _FP64_BLANK) & (x <= _FP64_BLANK + 16))
    return pl.when(blank).then(None).otherwise(x)
