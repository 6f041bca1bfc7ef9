"""dcgm-exporter data from a Prometheus server, through its HTTP API.

``read_prometheus("prometheus+http://prom:9090", since="6h")`` finds the
dcgm-exporter metric names degrade reads (``/api/v1/label/__name__/values``),
chooses the query step from the scrape interval it sees in the data, counts
the series (``/api/v1/series``), and reads ``/api/v1/query_range`` one time
page at a time. Each page becomes canonical counter rows (the long-layout
reader of :mod:`degrade.io`) written to a Parquet file in a spill directory,
so memory holds one page, never the whole range; the result is a lazy scan
of those files. Standard library HTTP only (urllib), no new dependency.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import json
import math
import os
import re
import shutil
import statistics
import tempfile
import time
import urllib.parse
from typing import Any

from ..errors import InputError

__all__ = ["read_prometheus", "is_prometheus_url", "prometheus_url", "parse_duration"]

_SCHEMES = ("prometheus+http://", "prometheus+https://")
#: Prometheus refuses a range query of more than 11,000 points per series
_MAX_POINTS = 11_000
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}


def is_prometheus_url(text) -> bool:
    """Whether an input names a Prometheus server (``prometheus+http(s)://...``).

    >>> is_prometheus_url("prometheus+http://localhost:9090"), is_prometheus_url("data/x.parquet")
    (True, False)
    """
    return isinstance(text, str) and text.lower().startswith(_SCHEMES)


def prometheus_url(url: str, **params) -> str:
    """``url`` with ``since``/``until``/``match``/``step`` set in its query (None: left as is).

    >>> prometheus_url("prometheus+http://p:9090", since="6h", match='{Hostname="a"}')
    'prometheus+http://p:9090?since=6h&match=%7BHostname%3D%22a%22%7D'
    """
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    query.update({k: str(v) for k, v in params.items() if v is not None})
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def parse_duration(text, what: str = "duration") -> float:
    """Seconds in a Prometheus-style duration: ``90s``, ``30m``, ``6h``, ``2d``, ``1w``, ``500ms``.

    >>> parse_duration("6h"), parse_duration("500ms"), parse_duration(15)
    (21600.0, 0.5, 15.0)
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = _DURATION.match(str(text))
        if not m:
            raise InputError(f"{what} {text!r}: expected a duration such as 90s, 30m, 6h, 2d or 1w")
        value = float(m.group(1)) * _UNIT[m.group(2)]
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{what} {text!r}: expected a positive duration")
    return value


def _time(text, ref: float, what: str) -> float:
    """Epoch seconds from epoch seconds, an ISO 8601 time, ``now``, or a duration before ``ref``."""
    if isinstance(text, _dt.datetime):
        return (
            text.timestamp() if text.tzinfo else text.replace(tzinfo=_dt.timezone.utc).timestamp()
        )
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text) if text > 1e8 else ref - parse_duration(text, what)
    s = str(text).strip()
    if s == "now":
        return time.time()
    try:
        v = float(s)
    except ValueError:
        v = None
    if v is not None:
        return v if v > 1e8 else ref - parse_duration(v, what)
    if _DURATION.match(s):
        return ref - parse_duration(s, what)
    try:
        t = _dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            f"{what} {text!r}: expected a duration before now (6h), epoch seconds or an ISO 8601 time"
        ) from None
    return t.timestamp() if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc).timestamp()


def _matchers(match) -> str:
    """The label matchers inside ``{...}`` (empty string for none)."""
    if match is None or str(match).strip() in ("", "{}"):
        return ""
    m = str(match).strip()
    if not (m.startswith("{") and m.endswith("}")):
        raise InputError(
            f"match {match!r}: expected label matchers in braces, e.g. '{{Hostname=~\"node-0[0-9]\"}}'"
        )
    return m[1:-1].strip().rstrip(",")


class _Client:
    """The few Prometheus HTTP API calls degrade makes, with timeouts and one-line errors."""

    def __init__(self, base: str, timeout: float):
        self.base = base.rstrip("/")
        self.timeout = timeout

    def get(self, endpoint: str, params: list[tuple[str, str]]) -> Any:
        import urllib.error
        import urllib.request

        # GET: every endpoint used accepts it (label values accept nothing else)
        req = urllib.request.Request(
            f"{self.base}{endpoint}?{urllib.parse.urlencode(params)}",
            headers={"Accept": "application/json"},
        )
        where = f"Prometheus at {self.base} ({endpoint})"
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = ""
            try:
                doc = json.loads(exc.read() or b"{}")
                detail = f": {doc.get('errorType', '')} {doc.get('error', '')}".rstrip()
            except (ValueError, OSError):
                pass
            raise InputError(f"{where} answered HTTP {exc.code}{detail}") from None
        except TimeoutError:
            raise InputError(
                f"{where} did not answer within {self.timeout:g} s; raise --timeout"
            ) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise InputError(f"{where} did not answer within {self.timeout:g} s") from None
            raise InputError(f"cannot reach Prometheus at {self.base}: {reason}") from None
        except OSError as exc:
            raise InputError(f"cannot reach Prometheus at {self.base}: {exc}") from None
        try:
            doc = json.loads(raw)
        except ValueError:
            raise InputError(
                f"{where} did not answer with Prometheus API JSON; is this a Prometheus server?"
            ) from None
        if not isinstance(doc, dict) or doc.get("status") != "success":
            err = (
                doc.get("error", "unknown error") if isinstance(doc, dict) else "not an API answer"
            )
            raise InputError(f"{where} answered an error: {err}")
        return doc.get("data")


def _split_url(url: str) -> tuple[str, dict[str, str]]:
    if not is_prometheus_url(url) and not str(url).lower().startswith(("http://", "https://")):
        raise InputError(f"{url!r}: expected prometheus+http://HOST:PORT (or prometheus+https://)")
    u = str(url)
    if is_prometheus_url(u):
        u = u[len("prometheus+") :]
    parts = urllib.parse.urlsplit(u)
    if not parts.netloc:
        raise InputError(f"{url!r}: no host; expected prometheus+http://HOST:PORT")
    params = dict(urllib.parse.parse_qsl(parts.query))
    base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return base, params


def _known_names(client: _Client, matchers: str, start: float, end: float) -> list[str]:
    from ._dcgm import FIELD_TABLE

    sel = "{" + ",".join(x for x in ('__name__=~"DCGM_.+"', matchers) if x) + "}"
    names = (
        client.get(
            "/api/v1/label/__name__/values",
            [("match[]", sel), ("start", f"{start:.3f}"), ("end", f"{end:.3f}")],
        )
        or []
    )
    wanted = {f.name for f in FIELD_TABLE}
    return sorted(n for n in names if n in wanted)


def _scrape_interval(
    client: _Client, name: str, matchers: str, start: float, end: float
) -> float | None:
    """The median spacing of raw samples of one metric near ``end`` (None when no samples)."""
    window = max(1.0, min(600.0, end - start))
    sel = name + ("{" + matchers + "}" if matchers else "")
    data = client.get(
        "/api/v1/query", [("query", f"{sel}[{int(math.ceil(window))}s]"), ("time", f"{end:.3f}")]
    )
    gaps = []
    for series in (data or {}).get("result", [])[:50]:
        ts = [float(v[0]) for v in series.get("values", [])]
        gaps += [b - a for a, b in zip(ts, ts[1:]) if b > a]
    return statistics.median(gaps) if gaps else None


def _page_frame(result: list[dict]):
    """A query_range matrix as the long layout (``__name__``, labels, ``timestamp``, ``value``).

    Samples and series are built apart and joined, so a label is stored once
    per series in Python and repeated per sample only inside polars.
    """
    import numpy as np
    import polars as pl

    sids, stamps, values, labels = [], [], [], []
    for sid, series in enumerate(result):
        pts = series.get("values") or []
        if not pts:
            continue
        arr = np.array(pts, dtype=object)
        sids.append(np.full(len(pts), sid, dtype=np.int64))
        stamps.append(arr[:, 0].astype(np.float64))
        values.append(arr[:, 1].astype(np.float64))  # "NaN", "+Inf" parse; the reader nulls them
        labels.append({"__sid": sid, **series.get("metric", {})})
    if not labels:
        return pl.DataFrame(
            {"__name__": [], "timestamp": [], "value": []},
            schema={"__name__": pl.String, "timestamp": pl.Float64, "value": pl.Float64},
        )
    samples = pl.DataFrame(
        {
            "__sid": np.concatenate(sids),
            "timestamp": np.concatenate(stamps),
            "value": np.concatenate(values),
        }
    )
    keys = list(dict.fromkeys(k for m in labels for k in m))
    series_df = pl.DataFrame(
        {k: [m.get(k) for m in labels] for k in keys},
        schema={k: (pl.Int64 if k == "__sid" else pl.String) for k in keys},
    )
    return samples.join(series_df, on="__sid", how="left").drop("__sid")


def _spill_dir(spill_dir) -> str:
    if spill_dir is not None:
        os.makedirs(spill_dir, exist_ok=True)
        return os.fspath(spill_dir)
    path = tempfile.mkdtemp(prefix="degrade-prometheus-")
    atexit.register(shutil.rmtree, path, True)
    return path


def read_prometheus(
    url: str,
    *,
    since="1h",
    until=None,
    match: str | None = None,
    step=None,
    timeout: float = 30.0,
    max_samples: int = 250_000,
    spill_dir=None,
):
    """Read dcgm-exporter counters from a Prometheus server into the canonical counters frame.

    Parameters
    ----------
    url : str
        ``prometheus+http://HOST:PORT[/prefix]`` (or ``prometheus+https://``;
        a plain ``http://`` URL is accepted too). Query parameters ``since``,
        ``until``, ``match``, ``step`` and ``timeout`` in the URL override the
        keyword arguments' defaults (``...:9090?since=6h``).
    since : str, float or datetime, default "1h"
        Start: a duration before ``until`` (``6h``), epoch seconds or ISO 8601.
    until : str, float or datetime, optional
        End (default: now).
    match : str, optional
        Label matchers in braces added to every query, e.g.
        ``'{Hostname=~"node-0[0-9]"}'``.
    step : str or float, optional
        Query resolution; default: the scrape interval seen in the data.
    timeout : float, default 30
        Seconds per HTTP request (also sent to Prometheus as its query timeout).
    max_samples : int, default 250,000
        Samples per query_range page; with the series count, it sets the
        page length and so the memory held at once.
    spill_dir : path, optional
        Where the pages are written as Parquet (default: a temporary
        directory removed when the process exits).

    Returns
    -------
    polars.LazyFrame
        The canonical counters (docs/schema.md), one Parquet file per page.

    Raises
    ------
    InputError
        Unreachable server, timeout, an API error, bad ``since``/``match``,
        or no dcgm-exporter series in the range.
    """
    import polars as pl

    from ._readers import read_counters

    base, q = _split_url(url)
    since = q.get("since", since)
    until = q.get("until", until)
    match = q.get("match", match)
    step = q.get("step", step)
    timeout = parse_duration(q.get("timeout", timeout), "timeout")
    now = time.time()
    end = _time(until, now, "until") if until is not None else now
    start = _time(since, end, "since")
    if not start < end:
        raise InputError(f"since {since!r} is not before until {until!r}; nothing to read")
    matchers = _matchers(match)
    client = _Client(base, timeout)
    names = _known_names(client, matchers, start, end)
    if not names:
        raise InputError(
            f"Prometheus at {base} holds no dcgm-exporter series degrade reads"
            f"{' matching ' + match if matchers else ''} between "
            f"{_dt.datetime.fromtimestamp(start, _dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ} and "
            f"{_dt.datetime.fromtimestamp(end, _dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ} "
            "(expected DCGM_FI_* metrics, e.g. DCGM_FI_DEV_SM_CLOCK; see docs/schema.md)"
        )
    if step is None:
        key = "DCGM_FI_DEV_SM_CLOCK" if "DCGM_FI_DEV_SM_CLOCK" in names else names[0]
        interval = _scrape_interval(client, key, matchers, start, end)
        step_s = interval if interval else 15.0
    else:
        step_s = parse_duration(step, "step")
    step_s = max(step_s, 0.001)
    selector = "{" + ",".join(x for x in (f'__name__=~"{"|".join(names)}"', matchers) if x) + "}"
    series = client.get(
        "/api/v1/series", [("match[]", selector), ("start", f"{start:.3f}"), ("end", f"{end:.3f}")]
    )
    n_series = max(1, len(series or []))
    points = int(min(_MAX_POINTS, max(1, max_samples // n_series)))
    span = points * step_s
    out = _spill_dir(spill_dir)
    files = []
    t = start
    page = 0
    while t <= end:
        t_end = min(end, t + (points - 1) * step_s)
        data = client.get(
            "/api/v1/query_range",
            [
                ("query", selector),
                ("start", f"{t:.3f}"),
                ("end", f"{t_end:.3f}"),
                ("step", f"{step_s:.3f}"),
                ("timeout", f"{timeout:g}s"),
            ],
        )
        result = (data or {}).get("result", [])
        if result:
            frame = read_counters(_page_frame(result)).collect()
            if frame.height:
                path = os.path.join(out, f"page-{page:06d}.parquet")
                frame.write_parquet(path)
                files.append(path)
        page += 1
        t += span
    if not files:
        raise InputError(
            f"Prometheus at {base}: the dcgm-exporter series hold no samples in the range"
        )
    return pl.scan_parquet(files)
