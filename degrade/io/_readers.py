"""Readers: files, directories, hive datasets and frames -> canonical LazyFrames.

Validation happens here, once. What is an error and what is dropped:

- error (:class:`~degrade.errors.SchemaError`): a file that cannot be parsed,
  a required column that is missing (timings: device, step and one of
  step_time/compute_time; counters: device or uuid or host+gpu, and
  timestamp), a column whose type cannot hold what it should (text where
  seconds are expected), or no rows at all in any input;
- reported and skipped: empty files (0 bytes or 0 rows), listed in
  :class:`ReadReport` ``.empty_files``; unreadable files only with
  ``on_bad_file="skip"`` (``.bad_files``); in a directory, files of the
  other kind (counters when reading timings) in ``.other_kind_files``;
- dropped rows, counted by :meth:`ReadReport.row_issues`: rows without a
  device or step/timestamp, and duplicates of (job, device, step) for timings
  or (device, timestamp) for counters (the first row is kept);
- kept as missing (null): non-finite or non-positive times, non-finite
  metric values.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError, SchemaError
from ._dcgm import device_id_expr, is_long_layout, long_to_wide, metric_for, strip_blank
from ._schema import (
    COUNTER_COLUMNS,
    COUNTER_METRICS,
    LABEL_ALIASES,
    TIMING_ALIASES,
    TIMING_COLUMNS,
    TIMING_MS_ALIASES,
    detect_kind,
)

__all__ = ["read_timings", "read_counters", "ReadReport", "inspect", "partitions", "DatasetInfo"]

_SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".arrow": "ipc",
    ".ipc": "ipc",
    ".feather": "ipc",
    ".prom": "prom",
}
_TRUTH_MARKERS = {"expected_status"}


def _pl():
    from .._optional import import_optional

    return import_optional("polars", "batch")


@dataclass
class ReadReport:
    """What a reader saw and skipped; pass one in with ``report=`` to fill it.

    File-level facts are filled when the reader returns; row counts are
    computed on demand by :meth:`row_issues` (one extra pass over the data).
    """

    files: list[str] = field(default_factory=list)
    empty_files: list[str] = field(default_factory=list)
    bad_files: list[str] = field(default_factory=list)
    other_kind_files: list[str] = field(default_factory=list)
    layouts: dict[str, str] = field(default_factory=dict)
    _raw: list[Any] = field(default_factory=list, repr=False)
    _keys: tuple[str, ...] = field(default=(), repr=False)

    def row_issues(self) -> dict[str, int]:
        """Counts of rows dropped by the reader: ``null_key`` and ``duplicate``.

        Returns
        -------
        dict
            ``{"rows": ..., "null_key": ..., "duplicate": ...}``.
        """
        pl = _pl()
        out = {"rows": 0, "null_key": 0, "duplicate": 0}
        if not self._raw:
            return out
        keys = list(self._keys)
        lf = pl.concat(self._raw, how="diagonal_relaxed")
        have = [k for k in keys if k in lf.collect_schema()]
        notnull = pl.all_horizontal([pl.col(k).is_not_null() for k in have if k != "job"])
        res = lf.select(
            pl.len().alias("rows"),
            (~notnull).sum().alias("null_key"),
            (notnull & pl.struct(have).is_duplicated() & ~pl.struct(have).is_first_distinct())
            .sum()
            .alias("duplicate"),
        ).collect()
        return {k: int(res[k][0]) for k in out}


@dataclass
class DatasetInfo:
    """Cheap description of a dataset, from file footers/headers only."""

    kind: str
    layout: str
    files: list[str]
    columns: dict[str, Any]
    n_rows: int | None
    hive_keys: list[str]


# --------------------------------------------------------------------------- sources


@dataclass
class _Part:
    label: str
    lf: Any
    schema: dict[str, Any]
    in_dir: bool = False  # found by listing a directory (not named by the caller)


def _file_format(path: str) -> str | None:
    low = path.lower()
    for suf, fmt in _SUFFIXES.items():
        if low.endswith(suf):
            return fmt
    return None


def _data_files(root: str) -> list[str]:
    out = []
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for f in sorted(files):
            if not f.startswith((".", "_")) and _file_format(f):
                out.append(os.path.join(dirpath, f))
    return _unique_regular(out)


def _unique_regular(files: list[str]) -> list[str]:
    """Regular files only, each once (a symlink to a file already listed is dropped).

    ``os.walk`` does not descend into symlinked directories, so a symlink loop
    ends the walk; a FIFO or socket named like a data file would block or
    fail the reader, and a file listed twice would be read twice.
    """
    import stat

    out, seen = [], set()
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            out.append(f)  # dangling link or loop: the reader reports it (or skips it)
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        key = (st.st_dev, st.st_ino)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _hive_values(path: str, root: str) -> dict[str, str]:
    rel = os.path.relpath(os.path.dirname(path), root)
    vals = {}
    for seg in rel.split(os.sep):
        if "=" in seg:
            k, v = seg.split("=", 1)
            vals[k] = v
    return vals


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _scan_one(path: str, fmt: str, report: ReadReport, on_bad_file: str, hive: dict[str, str]):
    pl = _pl()
    try:
        if os.path.getsize(path) == 0:
            report.empty_files.append(path)
            return None
        if fmt == "parquet":
            import pyarrow.parquet as pq

            n = pq.read_metadata(path).num_rows
            lf = pl.scan_parquet(path)
        elif fmt in ("csv", "tsv"):
            sep = "\t" if fmt == "tsv" else ","
            lf = pl.scan_csv(path, separator=sep, infer_schema_length=10_000)
            n = None
        elif fmt == "prom":
            lf, n = _prom_scan(path)  # a scrape without DCGM metrics counts as empty
        else:
            lf = pl.scan_ipc(path)
            n = None
        schema = dict(lf.collect_schema())
        if n is None:
            n = lf.head(1).select(pl.len()).collect().item()
    except Exception as exc:  # polars/pyarrow raise many types for a corrupt file
        if on_bad_file == "skip":
            report.bad_files.append(path)
            return None
        raise SchemaError(
            f"{path}: cannot read this {fmt} file ({_first_line(exc)}); expected a Parquet, CSV, "
            "Arrow IPC or Prometheus text (.prom) file in the schema of docs/schema.md"
        ) from None
    if n == 0:
        report.empty_files.append(path)
        return None
    for k, v in hive.items():
        if k not in schema:
            lf = lf.with_columns(pl.lit(v).alias(k))
            schema[k] = pl.String
    return _Part(path, lf, schema)


def _prom_scan(path: str):
    """A saved scrape as canonical counter rows (parsed once per file version, then cached)."""
    from ._promtext import cached_scrape, read_exposition

    def convert():
        df = read_exposition(path)
        lf, _ = _counters_part(_Part(path, df.lazy(), dict(df.schema)))
        return lf.collect()

    df = cached_scrape(path, convert)
    return df.lazy(), df.height


def _expand(source, report: ReadReport, on_bad_file: str) -> list[_Part]:
    pl = _pl()
    if isinstance(source, (pl.DataFrame, pl.LazyFrame)):
        lf = source.lazy()
        return [_Part("<frame>", lf, dict(lf.collect_schema()))]
    if isinstance(source, (list, tuple)):
        if not source:
            raise InputError("no input given: pass a file, a directory or a polars frame")
        parts = []
        for s in source:
            parts.extend(_expand(s, report, on_bad_file))
        return parts
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(
            f"cannot read {type(source).__name__}: expected a path, a list of paths or a polars (Lazy)DataFrame"
        )
    path = os.fspath(source)
    if os.path.isdir(path):
        files = _data_files(path)
        if not files:
            raise SchemaError(f"{path}: directory holds no .parquet, .csv, .tsv, .arrow or .prom files")
        hive_root = path
    elif os.path.exists(path):
        files, hive_root = [path], None
    elif any(ch in path for ch in "*?["):
        files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
        if not files:
            raise InputError(f"no file matches {path}")
        hive_root = None
    else:
        raise InputError(f"no such file or directory: {path}")
    parts = []
    for f in files:
        fmt = _file_format(f)
        if fmt is None:
            raise SchemaError(f"{f}: unknown file type; expected .parquet, .csv, .tsv, .arrow/.ipc/.feather or .prom")
        hive = _hive_values(f, hive_root) if hive_root else {}
        report.files.append(f)
        part = _scan_one(f, fmt, report, on_bad_file, hive)
        if part is not None and not (_TRUTH_MARKERS & set(part.schema)):
            part.in_dir = hive_root is not None
            parts.append(part)
    return parts


# --------------------------------------------------------------------------- typing helpers


def _is_numeric(dtype) -> bool:
    return dtype.is_numeric() or dtype.__class__.__name__ == "Boolean" or str(dtype) == "Boolean"


def _is_temporal(dtype) -> bool:
    return dtype.is_temporal()


def _epoch_seconds(col: str, dtype, label: str, what: str):
    pl = _pl()
    c = pl.col(col)
    if _is_temporal(dtype):
        if str(dtype).startswith("Datetime"):
            return c.dt.epoch("us").cast(pl.Float64) / 1e6
        if str(dtype) == "Date":
            return c.cast(pl.Datetime("us")).dt.epoch("us").cast(pl.Float64) / 1e6
        raise SchemaError(f"{label}: column {col!r} is {dtype}; expected {what}")
    if str(dtype) in ("String", "Utf8"):
        # ISO 8601 text in UTC ("...Z", "+00:00" or naive); anything else becomes null and,
        # for counters, a dropped row counted by ReadReport.row_issues
        iso = (
            c.str.strip_chars().str.replace(r"Z$", "").str.replace(r"[+-]00:?00$", "").str.replace("T", " ")
            .str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="us", strict=False)
        )
        return iso.dt.epoch("us").cast(pl.Float64) / 1e6
    if not _is_numeric(dtype):
        raise SchemaError(f"{label}: column {col!r} holds {dtype} values; expected {what}")
    return _numeric_epoch(c, dtype)


def _numeric_epoch(c, dtype):
    """Epoch seconds from numbers in s, ms, µs or ns, told apart by size (per value).

    1e11 s is the year 5138 and 1e11 ms is 1973, so after 1973 the ranges
    (1e11, 1e14] ms, (1e14, 1e17] µs and above 1e17 ns cannot be confused.
    Integers are split into whole seconds and the remainder before the
    division, so a nanosecond stamp loses nothing but float64's own
    rounding of the result (a float64 nanosecond count has already lost
    about 256 ns).
    """
    pl = _pl()
    x = c.cast(pl.Float64)
    if dtype.is_integer():
        i = c.cast(pl.Int64, strict=False)  # beyond int64 ns is after 2262: null

        def split(unit: int):
            return (i // unit).cast(pl.Float64) + (i % unit).cast(pl.Float64) / unit
    else:

        def split(unit: int):
            return x / unit
    return (pl.when(x > 1e17).then(split(1_000_000_000)).when(x > 1e14).then(split(1_000_000))
            .when(x > 1e11).then(split(1_000)).otherwise(x))


def _rename_map(columns, aliases: dict[str, str], canonical) -> dict[str, str]:
    taken = {c for c in columns if c in canonical}
    mapping = {}
    for c in columns:
        if c in canonical:
            continue
        low = c.lower()
        target = low if low in canonical else aliases.get(low)
        if target and target not in taken:
            mapping[c] = target
            taken.add(target)
    return mapping


# --------------------------------------------------------------------------- timings


def _timings_part(part: _Part):
    pl = _pl()
    label, schema = part.label, part.schema
    mapping = _rename_map(list(schema), TIMING_ALIASES, TIMING_COLUMNS)
    lf = part.lf
    ms = {}
    for c in schema:
        t = TIMING_MS_ALIASES.get(c.lower())
        if t and t not in schema and t not in mapping.values() and t not in ms.values():
            ms[c] = t
    exprs = []
    names = {mapping.get(c, c): c for c in schema}
    for c, t in ms.items():
        names.pop(c, None)
        names[t] = c
    if "device" not in names:
        if "rank" in names:
            r = pl.col(names["rank"]).cast(pl.String)
            exprs.append(
                (pl.col(names["host"]).cast(pl.String) + ":" + r if "host" in names else "rank" + r).alias("device")
            )
        else:
            raise SchemaError(
                f"{label}: no device column; expected 'device' (or uuid, gpu_uuid, device_id, worker, "
                f"or rank) among {list(schema)[:12]}"
            )
    if "step" not in names:
        raise SchemaError(
            f"{label}: no step column; expected 'step' (or iteration, iter, global_step) among {list(schema)[:12]}"
        )
    if "step_time" not in names and "compute_time" not in names:
        raise SchemaError(
            f"{label}: no timing column; expected 'step_time' and/or 'compute_time' in seconds "
            f"(aliases: batch_time, iter_time, step_time_ms, ...) among {list(schema)[:12]}"
        )
    out_cols = []
    for canon, src in names.items():
        dtype = schema[src]
        c = pl.col(src)
        if canon == "device" or canon in ("job", "host", "group"):
            e = c.cast(pl.String)
        elif canon in ("step", "rank", "pipeline", "microbatches"):
            if not _is_numeric(dtype):
                raise SchemaError(f"{label}: column {src!r} holds {dtype} values; expected integer {canon}")
            e = c.cast(pl.Float64).floor().cast(pl.Int64) if dtype.is_float() else c.cast(pl.Int64)
        elif canon == "timestamp":
            e = _epoch_seconds(src, dtype, label, "epoch seconds (float) or a datetime")
        elif canon.endswith("_time"):
            if not _is_numeric(dtype):
                raise SchemaError(f"{label}: column {src!r} holds {dtype} values; expected {canon} in seconds (float)")
            x = c.cast(pl.Float64)
            if src in ms:
                x = x / 1000.0
            e = pl.when(x.is_finite() & (x > 0)).then(x).otherwise(None)
        else:
            e = c
        out_cols.append(e.alias(canon))
    lf = lf.with_columns(exprs) if exprs else lf
    if exprs:
        out_cols.append(pl.col("device"))
    return lf.select(out_cols)


def _finish(parts, keys, sort_keys, report: ReadReport, what: str, label: str, *, sort: bool = True):
    pl = _pl()
    if not parts:
        raise SchemaError(f"{label}: no {what} rows (empty files: {len(report.empty_files)}); nothing to analyse")
    lf = parts[0] if len(parts) == 1 else pl.concat(parts, how="diagonal_relaxed")
    report._raw = [lf]
    have = [k for k in keys if k in lf.collect_schema()]
    report._keys = tuple(have)
    need = [k for k in have if k != "job"]
    lf = lf.filter(pl.all_horizontal([pl.col(k).is_not_null() for k in need]))
    if not sort:
        return lf
    sk = [k for k in sort_keys if k in have]
    # eager on purpose: data already in key order (a training job's own log, a file we
    # wrote) needs no sort at all, and otherwise an eager stable sort costs about half
    # of the lazy one here (bench/README.md "Simulator and readers"). Filters (jobs=,
    # where=) are applied above, so polars still pushes them into the scan.
    return lf.map_batches(lambda df: _sorted_unique(df, sk))


def _same_as_previous(keys):
    pl = _pl()
    return pl.all_horizontal([pl.col(k).eq_missing(pl.col(k).shift(1)).fill_null(False) for k in keys])


def _in_key_order(df, keys) -> bool:
    """Whether rows are already non-decreasing in ``keys`` (one vectorised pass)."""
    pl = _pl()
    for k in keys:
        s = df.get_column(k)
        if s.null_count() or (s.dtype.is_float() and s.is_nan().any()):
            return False  # nulls_last / NaN ordering: leave it to the sort
    cond = None
    for k in reversed(keys):
        c, p = pl.col(k), pl.col(k).shift(1)
        cond = (c >= p) if cond is None else ((c > p) | ((c == p) & cond))
    ordered = cond.fill_null(True).all()
    # unsorted data usually shows it within its first rows: don't pay the full pass then
    return bool(df.head(4096).select(ordered).item()) and bool(df.select(ordered).item())


def _sorted_unique(df, keys):
    """Rows sorted by ``keys``, the first of each duplicate key kept (stable)."""
    if df.height < 2 or not keys:
        return df
    if _in_key_order(df, keys):
        keep = df.select(~_same_as_previous(keys)).to_series()
        return df if keep.all() else df.filter(keep)
    df = df.sort(keys, nulls_last=True, maintain_order=True)
    keep = df.select(~_same_as_previous(keys)).to_series()
    return df if keep.all() else df.filter(keep)


def _label(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (list, tuple)):
        return ", ".join(_label(s) for s in source[:3]) + (" ..." if len(source) > 3 else "")
    return "<frame>"


def read_timings(
    paths,
    *,
    jobs=None,
    where=None,
    report: ReadReport | None = None,
    on_bad_file: str = "raise",
):
    """Read step timings into the canonical timings frame.

    Parameters
    ----------
    paths : str, path, list of them, or polars DataFrame/LazyFrame
        Parquet/CSV/TSV/Arrow IPC files, directories (hive partitions such as
        ``job=a/`` become columns), globs, or in-memory frames.
    jobs : str or sequence of str, optional
        Keep only these jobs (pushed down to the scan: read one job at a time
        with :func:`partitions` to bound memory).
    where : polars expression, optional
        A filter on canonical columns (``pl.col("step") < 1000``), applied
        before the sort and de-duplication so polars can push it to the scan.
    report : ReadReport, optional
        Filled with the files read, empty and skipped files; its
        :meth:`ReadReport.row_issues` counts dropped rows.
    on_bad_file : {"raise", "skip"}
        What to do with a file that cannot be parsed.

    Returns
    -------
    polars.LazyFrame
        Columns ``device, step`` and ``step_time``/``compute_time`` plus any
        optional columns, typed, deduplicated and sorted by (job, device, step).

    Raises
    ------
    SchemaError
        Naming the file and the column when the input does not fit.

    Examples
    --------
    >>> import polars as pl
    >>> df = pl.DataFrame({"uuid": ["a", "a", "b"], "iteration": [0, 1, 0],
    ...                    "batch_time_ms": [100.0, 110.0, 95.0]})
    >>> read_timings(df).collect().to_dicts()[0]
    {'device': 'a', 'step': 0, 'step_time': 0.1}
    """
    return _read_timings(paths, jobs=jobs, where=where, report=report, on_bad_file=on_bad_file)


def _read_timings(paths, *, jobs=None, where=None, report=None, on_bad_file="raise", sort=True):
    """:func:`read_timings`; with ``sort=False``, rows stay in input order and duplicates stay.

    The unsorted frame is what a caller that drops duplicates itself (first
    kept, in input order: the same rows the sort keeps) wants: no sort stands
    between its filters and the scan, and nothing is sorted twice.
    """
    if on_bad_file not in ("raise", "skip"):
        raise InputError(f"on_bad_file={on_bad_file!r}; expected 'raise' or 'skip'")
    pl = _pl()
    report = report if report is not None else ReadReport()
    parts = []
    for part in _expand(paths, report, on_bad_file):
        kind = _kind_or_none(part.schema)
        if kind == "counters" and part.in_dir:
            report.other_kind_files.append(part.label)  # a fleet directory holds both kinds
            continue
        if kind == "counters":
            raise SchemaError(
                f"{part.label}: holds device counters, not step timings; use read_counters for this file"
            )
        parts.append(_timings_part(part))
        report.layouts[part.label] = "timings"
    if jobs is not None:
        jobs = [jobs] if isinstance(jobs, str) else list(jobs)
        if parts and not all("job" in p.collect_schema() for p in parts):
            raise SchemaError(f"{_label(paths)}: jobs={jobs[:5]} given but the timings have no 'job' column")
        # before the sort: a filter after the neighbour comparison could not be pushed to the scan
        parts = [p.filter(pl.col("job").is_in(jobs)) for p in parts]
    if where is not None:
        parts = [p.filter(where) for p in parts]
    return _finish(parts, ("job", "device", "step"), ("job", "device", "step"), report, "timing", _label(paths),
                   sort=sort)


def _kind_or_none(schema) -> str | None:
    try:
        return detect_kind(list(schema))
    except SchemaError:
        return None


# --------------------------------------------------------------------------- counters


def _counters_part(part: _Part):
    pl = _pl()
    label, schema, lf = part.label, dict(part.schema), part.lf
    layout = "canonical"
    if is_long_layout(schema):
        layout = "dcgm-long"
        lf, schema = long_to_wide(lf, schema, label)
    renames, scaled = {}, {}
    dcgm = layout == "dcgm-long"
    from ._dcgm import DCGM_FIELDS, normalise_field

    order = {k: i for i, k in enumerate(DCGM_FIELDS)}
    # when two fields map to one column (aggregate and volatile ECC), the catalogue order decides
    ranked = sorted(schema, key=lambda c: order.get(normalise_field(c), len(order)))
    for c in ranked:
        if c in COUNTER_COLUMNS:
            continue
        hit = metric_for(c)
        if hit is not None:
            dcgm = True
            if hit[0] not in schema and hit[0] not in renames.values():
                renames[c] = hit[0]
                scaled[hit[0]] = hit[1]
            continue
        t = LABEL_ALIASES.get(c.lower())
        if t and t not in schema and t not in renames.values():
            renames[c] = t
    if dcgm and layout == "canonical":
        layout = "dcgm-wide"
    names = {renames.get(c, c): c for c in schema}
    if dcgm and "device" in names and "uuid" in names:
        # dcgm-exporter's `device` label is the device node (nvidia0), not an id
        names["dcgm_device"] = names.pop("device")
    if dcgm and "job" in names:
        # Prometheus' scrape-job label ("dcgm-exporter"), not a training job
        names["scrape_job"] = names.pop("job")
    exprs = []
    for canon, src in names.items():
        dtype = schema[src]
        c = pl.col(src)
        if canon in ("device", "host", "model", "uuid", "pci_bus_id", "dcgm_device", "mig_profile"):
            e = c.cast(pl.String)
        elif canon in ("gpu", "gpu_instance"):
            e = c.cast(pl.Int64, strict=False) if not _is_numeric(dtype) else c.cast(pl.Int64)
        elif canon == "timestamp":
            e = _epoch_seconds(src, dtype, label, "epoch seconds or a datetime")
        elif canon in COUNTER_METRICS:
            if not _is_numeric(dtype):
                raise SchemaError(f"{label}: column {src!r} holds {dtype} values; expected numbers for {canon}")
            x = strip_blank(c.cast(pl.Float64)) * scaled.get(canon, 1.0)
            x = pl.when(x.is_finite()).then(x).otherwise(None)
            e = x.round(0).cast(pl.Int64) if COUNTER_METRICS[canon] == "Int64" else x
        else:
            e = c
        exprs.append(e.alias(canon))
    if "timestamp" not in names:
        raise SchemaError(f"{label}: no 'timestamp' column; expected epoch seconds per counter sample")
    if "device" not in names:
        if "uuid" in names or ("host" in names and "gpu" in names):
            exprs.append(_dcgm_device(names).alias("device"))
        else:
            raise SchemaError(
                f"{label}: no device column; expected 'device', 'uuid'/'UUID', or 'Hostname' with 'gpu' "
                f"among {list(schema)[:12]}"
            )
    if not any(n in COUNTER_METRICS for n in names):
        raise SchemaError(
            f"{label}: no metric column; expected canonical counters (sm_clock_mhz, ...) or dcgm-exporter fields"
        )
    return _mig_model(lf.select(exprs)), layout


def _dcgm_device(names):
    """``device`` from dcgm-exporter labels: UUID (or host/gpuN), plus the MIG instance."""
    pl = _pl()
    col = {k: pl.col(names[k]) if k in names else None for k in ("uuid", "host", "gpu", "gpu_instance")}
    return device_id_expr(col["uuid"], col["host"], col["gpu"], col["gpu_instance"])


def _mig_model(lf):
    """A MIG instance's ``model`` names its profile, so it is never a peer of whole GPUs."""
    pl = _pl()
    schema = lf.collect_schema()
    if "mig_profile" not in schema:
        return lf
    p = pl.col("mig_profile")
    model = pl.col("model") if "model" in schema else pl.lit(None, dtype=pl.String)
    mig = p.is_not_null() & (p != "")
    return lf.with_columns(pl.when(mig).then(model.fill_null("?") + " MIG " + p).otherwise(model).alias("model"))


def read_counters(
    paths,
    *,
    where=None,
    report: ReadReport | None = None,
    on_bad_file: str = "raise",
):
    """Read device counters (degrade's schema or dcgm-exporter's) into the canonical frame.

    Parameters
    ----------
    paths : str, path, list of them, or polars DataFrame/LazyFrame
        Files, directories, globs or frames; wide (one column per metric) or
        long (Prometheus export: metric name, labels, value, timestamp).
    where : polars expression, optional
        A filter on canonical columns (``pl.col("host") == "node-0001"``),
        applied before the sort and de-duplication.
    report : ReadReport, optional
        Filled with files read and skipped and the layout of each.
    on_bad_file : {"raise", "skip"}
        What to do with a file that cannot be parsed.

    Returns
    -------
    polars.LazyFrame
        ``device, timestamp`` (epoch seconds) and metric columns in base
        units, deduplicated and sorted by (device, timestamp).

    Examples
    --------
    >>> import polars as pl
    >>> df = pl.DataFrame({"UUID": ["GPU-1"], "Hostname": ["n1"], "timestamp": [1.7e9],
    ...                    "DCGM_FI_DEV_GPU_UTIL": [87.0], "DCGM_FI_DEV_XID_ERRORS": [79]})
    >>> row = read_counters(df).collect().row(0, named=True)
    >>> row["device"], row["host"], row["gpu_util_ratio"], row["xid_last"]
    ('GPU-1', 'n1', 0.87, 79)
    """
    return _read_counters(paths, where=where, report=report, on_bad_file=on_bad_file)


def _read_counters(paths, *, where=None, report=None, on_bad_file="raise", sort=True):
    """:func:`read_counters`; with ``sort=False``, rows stay in input order and duplicates stay.

    For a planner that needs per-device counts and time spans only: no sort
    materialises the dataset, so polars' streaming engine can run it.
    """
    if on_bad_file not in ("raise", "skip"):
        raise InputError(f"on_bad_file={on_bad_file!r}; expected 'raise' or 'skip'")
    report = report if report is not None else ReadReport()
    parts = []
    for part in _expand(paths, report, on_bad_file):
        kind = _kind_or_none(part.schema)
        if kind == "timings" and part.in_dir:
            report.other_kind_files.append(part.label)
            continue
        if kind == "timings":
            raise SchemaError(f"{part.label}: holds step timings, not device counters; use read_timings")
        if part.label.lower().endswith(".prom"):  # _prom_scan made it canonical already
            lf, layout = part.lf, "prom"
        else:
            lf, layout = _counters_part(part)
        report.layouts[part.label] = layout
        parts.append(lf if where is None else lf.filter(where))
    return _finish(parts, ("device", "timestamp"), ("device", "timestamp"), report, "counter", _label(paths),
                   sort=sort)


# --------------------------------------------------------------------------- cheap inspection


def inspect(paths) -> DatasetInfo:
    """Describe a dataset from file footers and headers, without reading its data.

    Examples
    --------
    >>> import polars as pl
    >>> info = inspect(pl.DataFrame({"device": ["a"], "step": [1], "step_time": [0.5]}))
    >>> info.kind, sorted(info.columns)
    ('timings', ['device', 'step', 'step_time'])
    """
    report = ReadReport()
    parts = _expand(paths, report, "raise")
    if not parts:
        raise SchemaError(f"{_label(paths)}: no rows in any file")
    kind = detect_kind(list(parts[0].schema))
    if kind == "timings":
        lfs = [_timings_part(p) for p in parts]
        layout = "timings"
    else:
        out = [_counters_part(p) for p in parts]
        lfs = [o[0] for o in out]
        layout = out[0][1]
    columns: dict[str, Any] = {}
    for lf in lfs:
        columns.update(dict(lf.collect_schema()))
    n_rows = 0
    for f in report.files:
        if _file_format(f) != "parquet" or f in report.empty_files:
            n_rows = None
            break
        import pyarrow.parquet as pq

        n_rows += pq.read_metadata(f).num_rows
    if not report.files:
        n_rows = None
    root = paths if isinstance(paths, (str, os.PathLike)) and os.path.isdir(paths) else None
    hive = sorted({k for f in report.files for k in _hive_values(f, root)}) if root else []
    return DatasetInfo(kind, layout, list(report.files), columns, n_rows, hive)


def partitions(paths, by: str = "job", *, kind: str | None = None) -> list:
    """Distinct values of ``by`` (default: jobs) in a dataset, reading only that column.

    Use with ``read_timings(paths, jobs=value)`` to analyse one job at a time
    in bounded memory.

    Examples
    --------
    >>> import polars as pl
    >>> df = pl.DataFrame({"device": ["a", "b"], "step": [1, 1], "step_time": [1.0, 1.0], "job": ["j2", "j1"]})
    >>> partitions(df)
    ['j1', 'j2']
    """
    pl = _pl()
    report = ReadReport()
    parts = _expand(paths, report, "raise")
    if not parts:
        raise SchemaError(f"{_label(paths)}: no rows in any file")
    kind = kind or detect_kind(list(parts[0].schema))
    # the normalised frames before sorting and deduplication: listing the jobs must
    # read one column, not sort the whole dataset
    lfs = [_timings_part(p) if kind == "timings" else _counters_part(p)[0] for p in parts]
    lf = lfs[0] if len(lfs) == 1 else pl.concat(lfs, how="diagonal_relaxed")
    if by not in lf.collect_schema():
        raise SchemaError(f"{_label(paths)}: no column {by!r} to partition by")
    vals = lf.select(pl.col(by).drop_nulls().unique()).collect().get_column(by).to_list()
    return sorted(vals)
