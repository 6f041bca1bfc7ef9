"""Resolve what the user handed to ``analyze``: files, directories, hive datasets, frames.

Each input becomes a :class:`Source` of one kind (timings or counters),
read through :mod:`degrade.io`'s readers, which validate the schema once at
the edge. Ground-truth files of the simulator are recognised and left out.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any

from ..errors import InputError, SchemaError
from ._warnings import WarningLog

__all__ = ["Source", "resolve_inputs"]

_DATA_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv", ".arrow", ".ipc", ".feather", ".prom")
_TRUTH_MARKERS = ("expected_status", "fault")


@dataclass
class Source:
    """One input of one kind. ``paths`` for files, ``frame`` for in-memory data."""

    kind: str  # "timings" | "counters"
    name: str
    paths: list[str] | None = None
    frame: Any = None

    @property
    def target(self):
        if self.frame is not None:
            return self.frame
        return self.paths[0] if len(self.paths) == 1 else self.paths

    def scan(self, report=None, where=None):
        """The canonical, validated, de-duplicated LazyFrame of this source (:mod:`degrade.io`).

        ``where(raw_schema) -> expr | None`` builds a filter on canonical
        columns. It is applied to the raw Parquet scan *before* the reader
        when the raw columns already carry the canonical names and types (the
        reader's sort and de-duplication would otherwise stop polars from
        pushing it down, and every chunk would sort the whole source), and
        always again after the reader, so the result is the same either way.
        """
        from .. import io as dio

        reader = dio.read_timings if self.kind == "timings" else dio.read_counters
        target = self.target
        if where is not None:
            raw = self._raw_parquet()
            if raw is not None:
                expr = where(raw.collect_schema())
                if expr is not None:
                    target = raw.filter(expr)
        lf = reader(target, report=report)
        if where is not None:
            expr = where(lf.collect_schema())
            if expr is not None:
                lf = lf.filter(expr)
        return lf

    def _raw_parquet(self):
        """A plain polars scan of this source when it is Parquet only (hive keys as columns)."""
        import polars as pl

        if self.frame is not None or not self.paths:
            return None
        files = []
        for p in self.paths:
            files.extend(_data_files(p) if os.path.isdir(p) else [p])
        if not files or not all(f.lower().endswith((".parquet", ".pq")) for f in files):
            return None
        try:
            if len(self.paths) == 1 and os.path.isdir(self.paths[0]):
                return pl.scan_parquet(files, hive_partitioning=True)
            return pl.scan_parquet(files)
        except Exception:
            return None

    def raw_rows(self) -> int | None:
        """Rows before the reader dropped any, from file footers (None when unknown)."""
        import polars as pl

        if isinstance(self.frame, pl.DataFrame):
            return self.frame.height
        if self.frame is not None:
            return None
        from ..io import inspect

        return inspect(self.target).n_rows

    def describe(self) -> dict[str, Any]:
        return {"source": self.name, "kind": self.kind}


def _is_hive_dir(path: str) -> bool:
    try:
        entries = os.listdir(path)
    except OSError:
        return False
    return any("=" in e and os.path.isdir(os.path.join(path, e)) for e in entries)


def _data_files(path: str) -> list[str]:
    return sorted(
        os.path.join(root, f)
        for root, _, files in os.walk(path)
        for f in files
        if f.lower().endswith(_DATA_SUFFIXES) and not f.startswith((".", "_"))
    )


def _columns_of(path: str) -> list[str]:
    import polars as pl

    try:
        low = path.lower()
        if low.endswith((".parquet", ".pq")):
            return list(pl.read_parquet_schema(path))
        if low.endswith((".csv", ".tsv")):
            sep = "\t" if low.endswith(".tsv") else ","
            return list(pl.scan_csv(path, separator=sep, n_rows=5).collect_schema())
        if low.endswith(".prom"):  # a saved scrape: the long layout's columns (counters)
            from ..io._promtext import exposition_columns

            return exposition_columns(path)
        return list(pl.scan_ipc(path).collect_schema())
    except Exception as exc:  # polars/pyarrow raise many types for a corrupt file
        raise InputError(f"cannot read {path}: {type(exc).__name__}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def classify(columns, name: str) -> str:
    """``timings``, ``counters`` or ``truth`` (the simulator's labels) from column names."""
    from ..io import detect_kind

    lower = {str(c).lower() for c in columns}
    if "expected_status" in lower or all(m in lower for m in _TRUTH_MARKERS):
        return "truth"
    try:
        return detect_kind(list(columns))
    except SchemaError as exc:
        raise SchemaError(f"{name}: {exc}") from None


def resolve_inputs(inputs, log: WarningLog) -> list[Source]:
    """Turn paths, globs, directories and frames into typed sources."""
    import polars as pl

    if isinstance(inputs, (str, os.PathLike, pl.DataFrame, pl.LazyFrame)):
        inputs = [inputs]
    inputs = list(inputs)
    if not inputs:
        raise InputError("analyze: no input given; pass files, directories or polars frames")
    sources: list[Source] = []
    for i, item in enumerate(inputs):
        if isinstance(item, (pl.DataFrame, pl.LazyFrame)):
            cols = list(item.collect_schema()) if isinstance(item, pl.LazyFrame) else item.columns
            name = f"<frame {i}>"
            kind = classify(cols, name)
            if kind == "truth":
                log.add("ignored_file", 1, source=name, column="ground truth (use degrade evaluate)")
                continue
            sources.append(Source(kind, name, frame=item))
            continue
        from ..io._prometheus import is_prometheus_url, read_prometheus

        if is_prometheus_url(item):  # dcgm-exporter counters from a Prometheus server
            sources.append(Source("counters", item.split("?", 1)[0], frame=read_prometheus(item)))
            continue
        scrapes = _data_files(item) if os.path.isdir(item) and not _is_hive_dir(item) else []
        if scrapes and all(f.lower().endswith(".prom") for f in scrapes):  # saved scrapes: one source
            sources.append(Source("counters", os.fspath(item), paths=scrapes))
            continue
        path = os.fspath(item)
        if any(ch in path for ch in "*?[") and not os.path.exists(path):
            matches = sorted(glob.glob(path, recursive=True))
            if not matches:
                raise InputError(f"no file matches {path}")
            sources.extend(_sources_for_paths(matches, log))
            continue
        if not os.path.exists(path):
            raise InputError(f"no such file or directory: {path}")
        sources.extend(_sources_for_paths([path], log))
    if not sources:
        raise InputError(
            "analyze: none of the inputs holds timings or counters "
            f"({', '.join(os.fspath(x) if not isinstance(x, (pl.DataFrame, pl.LazyFrame)) else 'frame' for x in inputs)})"
        )
    return sources


def _sources_for_paths(paths: list[str], log: WarningLog) -> list[Source]:
    out: list[Source] = []
    for path in paths:
        if os.path.isdir(path):
            if _is_hive_dir(path):
                files = _data_files(path)
                if not files:
                    raise InputError(f"{path}: hive-partitioned directory without data files")
                kind = classify(_columns_of(files[0]), path)
                if kind == "truth":
                    log.add("ignored_file", 1, source=path, column="ground truth (use degrade evaluate)")
                    continue
                out.append(Source(kind, path, paths=[path]))
                continue
            files = [f for f in _data_files(path) if os.path.dirname(f) == path.rstrip(os.sep)]
            subdirs = sorted(
                os.path.join(path, e) for e in os.listdir(path)
                if os.path.isdir(os.path.join(path, e)) and not e.startswith((".", "_"))
            )
            if not files and not subdirs:
                raise InputError(f"{path}: directory holds no .parquet, .csv or .arrow files")
            out.extend(_sources_for_paths(files + subdirs, log))
            continue
        if not os.access(path, os.R_OK):
            raise InputError(f"cannot read {path}: permission denied")
        kind = classify(_columns_of(path), path)
        if kind == "truth":
            log.add("ignored_file", 1, source=path, column="ground truth (use degrade evaluate)")
            continue
        out.append(Source(kind, path, paths=[path]))
    return out
