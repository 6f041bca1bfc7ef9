"""Per-device levels and their cohort labels, from canonical frames (polars).

A device's *level* in a job is the mean over steps of ``log(x) -
median_group(log(x))``: its compute time relative to the median of its
peer group (same job, same ``group``) at the same step, winsorised at the
device's own median +- 5 robust SDs (spikes). Steps where fewer than two
devices of the group reported are left out. The reference is one number per
group and step, common to every device of the group, so it cancels exactly
from a difference of cohort means. The leave-one-out median of
:class:`degrade.core.PeerComparison` (right for judging one device) would
not: it moves away from whichever cohort the device belongs to and inflates
the contrast by O(1/n); a median over steps of the same deviations shrinks
it (measured on 150 roll-outs of 3 jobs x 16 GPUs, 8 per cohort, a true
3 %: 3.20 % and 2.85 %; this level 2.98 %, Monte Carlo sd 0.03 %).
"""

from __future__ import annotations

import os
import re

from ..errors import InputError, SchemaError

__all__ = [
    "device_levels",
    "label_from_timings",
    "label_from_counters",
    "label_from_file",
    "find_column",
]

#: columns of the labels file that key a label by device, then by host
_DEVICE_KEYS = ("device", "uuid", "gpu_uuid", "device_uuid")
_HOST_KEYS = ("host", "hostname", "node", "node_name")


def _pl():
    from .._optional import import_optional

    return import_optional("polars", "batch")


def find_column(columns, label: str) -> str | None:
    """The column named ``label`` (exact, else case-insensitive), or None."""
    cols = [str(c) for c in columns]
    if label in cols:
        return label
    low = [c for c in cols if c.lower() == label.lower()]
    return low[0] if len(low) == 1 else None


def pick_metric(schema, metric: str | None) -> str:
    if metric is not None:
        if metric not in schema:
            raise SchemaError(
                f"the timings have no {metric!r} column; they have {sorted(schema)[:12]}"
            )
        return metric
    return "compute_time" if "compute_time" in schema else "step_time"


def device_levels(timings, metric: str):
    """One row per (job, group, device): ``level``, ``steps``, ``host``, ``t0``, ``t1``, ``spread``.

    ``timings`` is a canonical timings LazyFrame (:func:`degrade.io.read_timings`).
    ``spread`` is the stratum's largest |log-ratio| (0 when every device
    reports the same value: a synchronous ``step_time``).
    """
    pl = _pl()
    schema = timings.collect_schema()
    v = pl.col(metric)
    cols = [
        (pl.col("job").cast(pl.String).fill_null("") if "job" in schema else pl.lit("")).alias(
            "job"
        ),
        (
            pl.col("group").cast(pl.String).fill_null("all") if "group" in schema else pl.lit("all")
        ).alias("group"),
        pl.col("device"),
        (pl.col("host") if "host" in schema else pl.lit(None, dtype=pl.String)).alias("host"),
        pl.col("step"),
        (pl.col("timestamp") if "timestamp" in schema else pl.lit(None, dtype=pl.Float64)).alias(
            "timestamp"
        ),
        v.log().alias("lv"),
    ]
    keys = ["job", "group", "step"]
    lf = (
        timings.filter(v.is_not_null() & v.is_finite() & (v > 0))
        .select(cols)
        .with_columns(
            pl.col("lv").median().over(keys).alias("ref"), pl.len().over(keys).alias("n_at_step")
        )
        .filter(pl.col("n_at_step") >= 2)
        .with_columns((pl.col("lv") - pl.col("ref")).alias("dev"))
    )
    # the mean over steps, not the median: the reference is common to the whole group at a step,
    # so it cancels exactly from a difference of means; a median over steps would not let it
    # cancel (the device's own value is part of the reference). Heavy-tailed spikes are
    # winsorised at the device's own median +- 5 robust SDs first.
    dkey = ["job", "group", "device"]
    med = pl.col("dev").median().over(dkey)
    mad = 1.4826 * (pl.col("dev") - med).abs().median().over(dkey)
    lf = lf.with_columns(pl.col("dev").clip(med - 5.0 * mad, med + 5.0 * mad).alias("dev_w"))
    out = lf.group_by(dkey).agg(
        pl.col("dev_w").mean().alias("level"),
        pl.len().alias("steps"),
        pl.col("host").drop_nulls().first().alias("host"),
        pl.col("timestamp").min().alias("t0"),
        pl.col("timestamp").max().alias("t1"),
        pl.col("dev").abs().max().alias("dev_max"),
    )
    out = out.with_columns(pl.col("dev_max").max().over(["job", "group"]).alias("spread")).drop(
        "dev_max"
    )
    return out.collect().sort(["job", "group", "device"])


def _check_unique(frame, keys, label: str, where: str):
    pl = _pl()
    many = frame.group_by(keys).agg(
        pl.col("cohort").n_unique().alias("k"), pl.col("cohort").unique().alias("v")
    )
    many = many.filter(pl.col("k") > 1)
    if many.height:
        r = many.row(0, named=True)
        key = ", ".join(f"{k}={r[k]!r}" for k in keys)
        raise InputError(
            f"{where}: {key} has {r['k']} values of {label!r} ({sorted(map(str, r['v']))[:4]}); "
            f"expected one per {' and '.join(keys)}"
        )


def label_from_timings(timings, column: str, label: str):
    """(job, device) -> cohort from a label column of the timings, one row per value seen.

    A device with two values in one job (upgraded during it) has two rows;
    the caller leaves it out.
    """
    pl = _pl()
    schema = timings.collect_schema()
    job = pl.col("job").cast(pl.String).fill_null("") if "job" in schema else pl.lit("")
    lab = (
        timings.select(
            job.alias("job"), pl.col("device"), pl.col(column).cast(pl.String).alias("cohort")
        )
        .filter(pl.col("cohort").is_not_null() & (pl.col("cohort") != ""))
        .unique()
        .collect()
    )
    return lab


def label_from_counters(counters, column: str, levels, label: str):
    """(job, device) -> cohort from a label column of the counters (dcgm-exporter's label).

    A device's label may change over time (a roll-out): each (job, device) takes
    the value(s) seen by the counters during the job's time span; a device whose
    label changed within the span is left out (returned in ``changed``).
    Without timestamps in the timings (or no counter sample in the span), a
    device that only ever had one value takes it.
    """
    pl = _pl()
    spans = (
        counters.select(
            pl.col("device"), pl.col("timestamp"), pl.col(column).cast(pl.String).alias("cohort")
        )
        .filter(pl.col("cohort").is_not_null() & (pl.col("cohort") != ""))
        .group_by(["device", "cohort"])
        .agg(pl.col("timestamp").min().alias("c0"), pl.col("timestamp").max().alias("c1"))
        .collect()
    )
    jobs = (
        levels.select("job", "device", "t0", "t1")
        .group_by(["job", "device"])
        .agg(pl.col("t0").min(), pl.col("t1").max())
    )
    cand = jobs.join(spans, on="device", how="inner")
    in_span = cand.filter(
        pl.col("t0").is_not_null() & (pl.col("c1") >= pl.col("t0")) & (pl.col("c0") <= pl.col("t1"))
    )
    n_in = in_span.group_by(["job", "device"]).agg(
        pl.col("cohort").n_unique().alias("k"), pl.col("cohort").first()
    )
    one = n_in.filter(pl.col("k") == 1).select("job", "device", "cohort")
    changed = n_in.filter(pl.col("k") > 1).select("job", "device")
    # no sample in the job's span (or no timestamps): a device with one value ever takes it
    only = spans.group_by("device").agg(
        pl.col("cohort").n_unique().alias("k"), pl.col("cohort").first()
    )
    only = only.filter(pl.col("k") == 1).select("device", "cohort")
    rest = jobs.join(n_in.select("job", "device"), on=["job", "device"], how="anti").join(
        only, on="device"
    )
    return pl.concat([one, rest.select("job", "device", "cohort")]), changed


def read_label_file(source):
    """A labels file or frame as a polars DataFrame (CSV, TSV, Parquet, Arrow)."""
    pl = _pl()
    if isinstance(source, (pl.DataFrame, pl.LazyFrame)):
        return source.lazy().collect()
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise InputError(f"no such labels file: {path}")
    low = path.lower()
    try:
        if low.endswith((".parquet", ".pq")):
            return pl.read_parquet(path)
        if low.endswith((".arrow", ".ipc", ".feather")):
            return pl.read_ipc(path)
        if low.endswith((".csv", ".tsv")):
            return pl.read_csv(
                path, separator="\t" if low.endswith(".tsv") else ",", infer_schema_length=0
            )
    except Exception as exc:  # polars raises many types for a corrupt file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{path}: cannot read this labels file ({first})") from None
    raise InputError(f"{path}: unknown labels file type; expected .csv, .tsv, .parquet or .arrow")


def label_from_file(frame, label: str, where: str):
    """(key kind, frame of key -> cohort) from a labels file: by ``device`` (UUID) or by ``host``."""
    pl = _pl()
    col = find_column(frame.columns, label)
    if col is None:
        raise InputError(
            f"{where}: no column {label!r}; it has {frame.columns[:12]} "
            "(a labels file holds device or host, and one column per label)"
        )
    low = {c.lower(): c for c in frame.columns}
    key = next((low[k] for k in _DEVICE_KEYS if k in low and low[k] != col), None)
    kind = "device"
    if key is None:
        key = next((low[k] for k in _HOST_KEYS if k in low and low[k] != col), None)
        kind = "host"
    if key is None:
        raise InputError(
            f"{where}: no device or host column; expected one of {list(_DEVICE_KEYS + _HOST_KEYS)} "
            f"beside {col!r} (it has {frame.columns[:12]})"
        )
    lab = (
        frame.select(
            pl.col(key).cast(pl.String).alias(kind), pl.col(col).cast(pl.String).alias("cohort")
        )
        .filter(
            pl.col(kind).is_not_null() & pl.col("cohort").is_not_null() & (pl.col("cohort") != "")
        )
        .unique()
    )
    _check_unique(lab, [kind], label, where)
    return kind, lab


_NUM = re.compile(r"(\d+)")


def natural_key(value: str):
    """Sort key that orders ``535.104.05`` before ``550.54.15`` and ``r9`` before ``r10``."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in _NUM.split(str(value)) if p]
