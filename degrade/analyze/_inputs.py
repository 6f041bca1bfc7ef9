"""Resolve what the user handed to ``analyze``: files, directories, hive datasets, frames.

Each input becomes a :class:`Source` of one kind (timings or counters),
read through :mod:`degrade.io`'s readers, which validate the schema once at
the edge. Ground-truth files of the simulator are recognised and left out.
"""

from __future__ import annotations

import glob
import os
import stat
from dataclasses import dataclass, field
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
    #: files of a hive directory found empty or unreadable at resolve time (left out)
    skip: frozenset = field(default_factory=frozenset)

    @property
    def on_bad_file(self) -> str:
        """What the readers do with a file they cannot parse: skip it when resolve did."""
        return "skip" if self.skip else "raise"

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
        lf = reader(target, report=report, on_bad_file=self.on_bad_file)
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
        files = self._files()
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
        files = self._files()
        if files and all(f.lower().endswith((".parquet", ".pq")) for f in files):
            import pyarrow.parquet as pq

            return sum(pq.read_metadata(f).num_rows for f in files)
        return None

    def _files(self) -> list[str]:
        """The data files this source reads (a directory's, less those resolve skipped)."""
        files = []
        for p in self.paths or []:
            files.extend(_data_files(p) if os.path.isdir(p) else [p])
        return [f for f in files if f not in self.skip]

    def describe(self) -> dict[str, Any]:
        return {"source": self.name, "kind": self.kind}


def _is_hive_dir(path: str) -> bool:
    try:
        entries = os.listdir(path)
    except OSError:
        return False
    return any("=" in e and os.path.isdir(os.path.join(path, e)) for e in entries)


def _data_files(path: str) -> list[str]:
    """Data files under ``path`` as degrade.io's readers list them (no symlinked directories).

    Only regular files (a FIFO named x.parquet would block the reader), and a
    file reached twice (a symlink to a file of the same tree) once.
    """
    from ..io._readers import _unique_regular

    return _unique_regular(sorted(
        os.path.join(root, f)
        for root, _, files in os.walk(path)
        for f in files
        if f.lower().endswith(_DATA_SUFFIXES) and not f.startswith((".", "_"))
    ))


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


def _no_rows(path: str) -> bool:
    """Whether a data file holds a header (schema) but no rows; cheap (footer, first row)."""
    import polars as pl

    low = path.lower()
    try:
        if low.endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            return pq.read_metadata(path).num_rows == 0
        if low.endswith((".csv", ".tsv")):
            sep = "\t" if low.endswith(".tsv") else ","
            return pl.scan_csv(path, separator=sep, n_rows=1).collect().height == 0
        if low.endswith((".arrow", ".ipc", ".feather")):
            return pl.scan_ipc(path).head(1).collect().height == 0
    except Exception as exc:  # polars/pyarrow raise many types for a corrupt file
        raise InputError(f"cannot read {path}: {type(exc).__name__}: {_first_line(exc)}") from None
    return False  # other formats: their reader decides


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


class _Walk:
    """State of one resolve: files and directories already reached (by device and inode)."""

    def __init__(self, log: WarningLog, strict: bool):
        self.log, self.strict = log, strict
        self.seen: dict[tuple[int, int], str] = {}

    def first(self, path: str, st) -> str | None:
        """The path this file or directory was first reached by, or None (and remember it)."""
        key = (st.st_dev, st.st_ino)
        if key in self.seen:
            return self.seen[key]
        self.seen[key] = path
        return None

    def bad(self, kind: str, path: str, why: str) -> None:
        """A file inside a directory that cannot be used: fatal with strict, else a warning."""
        if self.strict:
            raise InputError(f"{path}: {why} (--strict: remove the file or drop --strict to skip it)")
        self.log.add(kind, 1, source=path, column=why)


def resolve_inputs(inputs, log: WarningLog, strict: bool = False) -> list[Source]:
    """Turn paths, globs, directories and frames into typed sources.

    Inside a directory, a file that is empty, not a regular file, or cannot
    be read is skipped with a counted warning (an error with ``strict``); a
    file or directory reached twice (symbolic links, loops included) is read
    once. A file named by the caller must be readable.
    """
    import polars as pl

    if isinstance(inputs, (str, os.PathLike, pl.DataFrame, pl.LazyFrame)):
        inputs = [inputs]
    inputs = list(inputs)
    if not inputs:
        raise InputError("analyze: no input given; pass files, directories or polars frames")
    sources: list[Source] = []
    walk = _Walk(log, strict)
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
            # a glob is a listing, like a directory: a broken match is skipped, not fatal
            sources.extend(_sources_for_paths(matches, walk))
            continue
        if not os.path.exists(path):
            raise InputError(f"no such file or directory: {path}")
        sources.extend(_sources_for_paths([path], walk, named=True))
    if not sources:
        raise InputError(
            "analyze: none of the inputs holds timings or counters "
            f"({', '.join(os.fspath(x) if not isinstance(x, (pl.DataFrame, pl.LazyFrame)) else 'frame' for x in inputs)})"
        )
    return sources


def _sources_for_paths(paths: list[str], walk: _Walk, named: bool = False) -> list[Source]:
    out: list[Source] = []
    log = walk.log
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:  # a dangling link, a symlink loop (ELOOP), EACCES
            if named:
                raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
            walk.bad("unreadable_file", path, exc.strerror or str(exc))
            continue
        if stat.S_ISDIR(st.st_mode):
            again = walk.first(path, st)
            if again is not None:
                log.add("duplicate_file", 1, source=path, column=again)
                continue
            if _is_hive_dir(path):
                out.extend(_hive_source(path, walk))
                continue
            entries = sorted(e for e in os.listdir(path) if not e.startswith((".", "_")))
            files = [os.path.join(path, e) for e in entries
                     if e.lower().endswith(_DATA_SUFFIXES) and not os.path.isdir(os.path.join(path, e))]
            subdirs = [os.path.join(path, e) for e in entries if os.path.isdir(os.path.join(path, e))]
            if not files and not subdirs:
                if named:
                    raise InputError(f"{path}: directory holds no .parquet, .csv or .arrow files")
                continue
            out.extend(_sources_for_paths(files + subdirs, walk))
            continue
        if not stat.S_ISREG(st.st_mode):
            if named:
                raise InputError(f"cannot read {path}: not a regular file (a FIFO, socket or device)")
            walk.bad("unreadable_file", path, "not a regular file")
            continue
        again = walk.first(path, st)
        if again is not None:
            log.add("duplicate_file", 1, source=path, column=again)
            continue
        if not os.access(path, os.R_OK):
            if named:
                raise InputError(f"cannot read {path}: permission denied")
            walk.bad("unreadable_file", path, "permission denied")
            continue
        if st.st_size == 0:
            walk.bad("empty_file", path, "0 bytes")
            continue
        try:
            kind = classify(_columns_of(path), path)
            empty = _no_rows(path)
        except InputError as exc:
            if named:
                raise
            walk.bad("unreadable_file", path, str(exc).split(": ", 2)[-1])
            continue
        if empty:
            # a header without rows: alone it would make its reader fail the whole run
            walk.bad("empty_file", path, "no rows")
            continue
        if kind == "truth":
            log.add("ignored_file", 1, source=path, column="ground truth (use degrade evaluate)")
            continue
        out.append(Source(kind, path, paths=[path]))
    return out


def _hive_source(path: str, walk: _Walk) -> list[Source]:
    """One source for a hive-partitioned directory; its empty or unreadable files left out."""
    files, skip, kind = [], set(), None
    for f in _data_files(path):
        try:
            st = os.stat(f)
        except OSError as exc:
            walk.bad("unreadable_file", f, exc.strerror or str(exc))
            skip.add(f)
            continue
        if walk.first(f, st) is not None:
            skip.add(f)
            continue
        if st.st_size == 0:
            walk.bad("empty_file", f, "0 bytes")
            skip.add(f)
            continue
        try:
            cols = _columns_of(f)  # Parquet footer or CSV header: cheap
            empty = _no_rows(f)
        except InputError as exc:
            walk.bad("unreadable_file", f, str(exc).split(": ", 2)[-1])
            skip.add(f)
            continue
        if empty:
            walk.bad("empty_file", f, "no rows")
            skip.add(f)
            continue
        files.append(f)
        if kind is None:
            kind = classify(cols, path)
    if not files:
        raise InputError(f"{path}: hive-partitioned directory without readable data files")
    if kind == "truth":
        walk.log.add("ignored_file", 1, source=path, column="ground truth (use degrade evaluate)")
        return []
    return [Source(kind, path, paths=[path], skip=frozenset(skip))]
