"""Saved Prometheus text expositions (``curl node:9400/metrics > x.prom``) as long frames.

Parsed with prometheus_client's text parser (the reference parser of the
Prometheus text format 0.0.4). One file is one scrape. A sample without
its own timestamp (the usual case: exporters do not write them) gets the
scrape time from the file name when it ends in ``-<epoch seconds>.prom`` or
``-<epoch milliseconds>.prom`` (``node-0001-1767225600.prom``), else the
file's modification time.
"""

from __future__ import annotations

import math
import os
import re

__all__ = ["read_exposition", "exposition_columns", "scrape_time", "dcgm_samples", "cached_scrape"]

_NAME_TIME = re.compile(r"[-_.](\d{10}(?:\d{3})?)(?:\.\d+)?\.prom$", re.IGNORECASE)


def scrape_time(path: str) -> float:
    """Epoch seconds of a saved scrape: from its name when it carries one, else its mtime.

    >>> scrape_time("/data/node-0001-1767225600.prom")
    1767225600.0
    >>> scrape_time("/data/node-0001-1767225600123.prom")
    1767225600.123
    """
    m = _NAME_TIME.search(os.path.basename(path))
    if m:
        digits = m.group(1)
        return int(digits) / (1000.0 if len(digits) == 13 else 1.0)
    return os.path.getmtime(path)


def _parser():
    from .._optional import import_optional

    return import_optional("prometheus_client.parser", "batch", "prometheus-client")


def _samples(path: str):
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    return text, [s for fam in _parser().text_string_to_metric_families(text) for s in fam.samples]


def read_exposition(path: str):
    """The samples of one saved scrape as a long polars frame.

    Columns: ``__name__``, ``value``, ``timestamp`` (epoch seconds) and one
    column per label. Raises whatever the parser raises on a malformed file
    (the reader turns it into a SchemaError naming the file).
    """
    import polars as pl

    _, samples = _samples(path)
    ts = scrape_time(path)
    names, values, stamps = [], [], []
    labels: dict[str, list] = {}
    for i, smp in enumerate(samples):
        names.append(smp.name)
        v = float(smp.value)
        values.append(v if math.isfinite(v) else None)
        stamps.append(float(smp.timestamp) if smp.timestamp is not None else ts)
        for k, v in smp.labels.items():
            col = labels.get(k)
            if col is None:
                col = labels[k] = [None] * i
            col.append(v)
        for col in labels.values():
            if len(col) < i + 1:
                col.append(None)
    data = {
        "__name__": pl.Series(names, dtype=pl.String),
        "value": pl.Series(values, dtype=pl.Float64),
        "timestamp": pl.Series(stamps, dtype=pl.Float64),
    }
    for k, col in labels.items():
        if k not in data:
            data[k] = pl.Series(col, dtype=pl.String)
    return pl.DataFrame(data)


def exposition_columns(path: str) -> list[str]:
    """Column names :func:`read_exposition` gives for this file (labels included)."""
    _, samples = _samples(path)
    cols = {"__name__": None, "value": None, "timestamp": None}
    for smp in samples:
        for k in smp.labels:
            cols.setdefault(k, None)
    return list(cols)


def dcgm_samples(df) -> int:
    """Samples of a :func:`read_exposition` frame that are dcgm-exporter metrics degrade reads."""
    from ._dcgm import DCGM_FIELDS, normalise_field

    names = df.get_column("__name__").unique().to_list()
    known = [n for n in names if n is not None and normalise_field(n) in DCGM_FIELDS]
    return int(df.get_column("__name__").is_in(known).sum()) if known else 0


#: converted scrapes by (path, mtime, size); a directory of scrapes is read on every pass of
#: an analysis (plan, then each chunk), and parsing text is the slow part
_CACHE: dict = {}
_CACHE_BYTES = 256 * 1024 * 1024
_cache_size = [0]


def cached_scrape(path: str, convert):
    """``convert()`` for this version of the file, from the cache when it was converted before."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_mtime_ns, st.st_size)
    hit = _CACHE.pop(key, None)
    if hit is None:
        hit = convert()
        _cache_size[0] += hit.estimated_size()
    _CACHE[key] = hit  # most recent last
    while _cache_size[0] > _CACHE_BYTES and len(_CACHE) > 1:
        _cache_size[0] -= _CACHE.pop(next(iter(_CACHE))).estimated_size()
    return hit
