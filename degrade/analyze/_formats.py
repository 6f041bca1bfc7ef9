"""Output formats of ``degrade analyze``: a terminal table, Parquet rows (JSON lives on the result).

The table fits the terminal it is printed on. Each flagged device gets one
row (status, a short device id, slowdown, onset, then job, host and
detection time while they fit) and, below it, every reason and the
recommended action, wrapped at word boundaries so no identifier is ever
broken across lines. Columns that do not fit move into those lines instead
of being squeezed. Times are ISO 8601 in UTC (``2026-01-01T00:09:45Z``);
step numbers are written ``step N``. GPU UUIDs are shortened to the
shortest prefix that is unique among the analysed devices (``GPU-50d0``);
``wide=True`` (``--wide``) prints full ids and every column on one line
per device, and the JSON document always carries the full UUID.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import textwrap
from typing import Any

from .._optional import import_optional

__all__ = [
    "render_table", "verdict_frame", "write_parquet", "read_parquet_document",
    "short_ids", "format_time", "format_when", "humanize", "score_text",
]

_STATUS_STYLE = {
    "failed": "bold white on red",
    "degraded": "bold red",
    "suspect": "yellow",
    "unknown": "dim",
    "healthy": "green",
}

#: Parquet column order and types of one verdict row
_COLUMNS = (
    ("device", "String"), ("job", "String"), ("host", "String"), ("status", "String"),
    ("k8s_health", "String"), ("slowdown", "Float64"), ("onset_step", "Int64"),
    ("onset_time", "Float64"), ("detected_step", "Int64"), ("detected_time", "Float64"),
    ("score", "Float64"), ("reasons", "List[String]"), ("action", "String"), ("signals", "String"),
    ("lost_seconds", "Float64"),  # since schema 1.1 (docs/cost.md)
)


#: a time below this (1973-03-03) is not a Unix time but seconds since some start
_EPOCH_MIN = 1e8
#: scores at or above this are the engine's marker for a hard fault (XID, failed remap)
_HARD_SCORE = 1e5
_UUID = re.compile(r"^(?:GPU|MIG)-[0-9a-fA-F]{8}-")
_T_EQ = re.compile(r"\bt=(-?\d+(?:\.\d+)?)")
_INDENT, _GAP, _LABEL = 2, 2, 8


def format_time(t: float | None) -> str:
    """A Unix time as ISO 8601 UTC to the second; a small (relative) time as ``t=N s``.

    >>> format_time(1767226185.4)
    '2026-01-01T00:09:45Z'
    >>> format_time(12.0)
    't=12 s'
    """
    if t is None or not math.isfinite(t):
        return ""
    if abs(t) >= _EPOCH_MIN:
        try:
            return _dt.datetime.fromtimestamp(round(t), _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        except (OverflowError, OSError, ValueError):
            pass
    return f"t={t:,.0f} s"


def format_when(step: int | None, t: float | None) -> str:
    """``step N`` when the step is known, else the time (:func:`format_time`), else ``""``."""
    if step is not None:
        return f"step {step}"
    return format_time(t)


def humanize(text: str) -> str:
    """A reason with every ``t=<Unix time>`` written as ISO 8601 UTC.

    >>> humanize("XID 79 (GPU has fallen off the bus) at t=1767226185")
    'XID 79 (GPU has fallen off the bus) at 2026-01-01T00:09:45Z'
    """

    def sub(m: re.Match) -> str:
        v = float(m.group(1))
        return format_time(v) if abs(v) >= _EPOCH_MIN else m.group(0)

    return _T_EQ.sub(sub, text)


def _with_ids(text: str, ids: dict[str, str]) -> str:
    """``text`` with every full device id it names written as the table's short id."""
    for full in sorted((d for d in ids if ids[d] != d and d in text), key=len, reverse=True):
        text = text.replace(full, ids[full])
    return text


def score_text(score: float | None) -> str:
    """The evidence score for people: hard faults say so instead of a sentinel number."""
    if score is None or not math.isfinite(score):
        return ""
    if score >= _HARD_SCORE:
        return "hard fault"
    return f"{score:.1f}"


def short_ids(devices) -> dict[str, str]:
    """Each GPU/MIG UUID shortened to the shortest prefix unique among ``devices``.

    Prefixes keep at least four hex digits (``GPU-50d0``) and never end on a
    hyphen; other device names are kept as they are.

    >>> short_ids(["GPU-50d010b5-3b5f-bd65-b895-c6c283cf0a76", "GPU-50d1aaaa-0000-0000-0000-000000000000", "gpu7"])
    {'GPU-50d010b5-3b5f-bd65-b895-c6c283cf0a76': 'GPU-50d0', 'GPU-50d1aaaa-0000-0000-0000-000000000000': 'GPU-50d1', 'gpu7': 'gpu7'}
    """
    ids = list(dict.fromkeys(str(d) for d in devices))
    out = {d: d for d in ids}
    uu = sorted({d for d in ids if _UUID.match(d)})
    if not uu:
        return out
    n = 8
    longest = max(len(d) for d in uu)
    while n < longest:
        if len({d[:n] for d in uu}) == len(uu) and all(d[n - 1 : n] != "-" for d in uu):
            break
        n += 1
    others = set(ids) - set(uu)
    for d in uu:
        out[d] = d if d[:n] in others else d[:n]
    return out


def _pct(x) -> str:
    return "" if x is None else f"{100.0 * x:+.1f} %"


def format_seconds(x: float | None) -> str:
    """Lost time, short: ``"41 s"``, ``"12.5 min"``, ``"3.2 h"`` (docs/cost.md)."""
    if x is None or not math.isfinite(x):
        return ""
    if x < 90:
        return f"{x:.1f} s" if x < 10 else f"{x:.0f} s"
    if x < 5400:
        return f"{x / 60:.1f} min"
    return f"{x / 3600:.1f} h"


def _num(x, fmt="{:,}") -> str:
    return "" if x is None else fmt.format(x)


def _fit(rows: list[dict[str, str]], cols: list[tuple[str, str, str]], priority: list[str],
         width: float, keep: int = 2) -> list[tuple[str, str, str, int]]:
    """The columns (key, header, align, width) that fit in ``width``, in display order.

    The first ``keep`` keys of ``priority`` are always shown; the others in
    priority order while they fit. Columns empty in every row are left out.
    """
    header = {k: h for k, h, _ in cols}
    natural = {k: max([len(h)] + [len(r.get(k, "")) for r in rows]) for k, h, _ in cols}
    nonempty = {k for k, _, _ in cols if any(r.get(k) for r in rows)}
    chosen: set[str] = set()
    used = _INDENT
    for i, k in enumerate(priority):
        if k not in header or (k not in nonempty and i >= keep):
            continue
        need = natural[k] + (_GAP if chosen else 0)
        if i < keep or used + need <= width:
            chosen.add(k)
            used += need
    return [(k, h, a, natural[k]) for k, h, a in cols if k in chosen]


def _row_text(cells: dict[str, str], layout, style_of=None):
    from rich.text import Text

    line = Text(" " * _INDENT)
    for i, (k, _, align, w) in enumerate(layout):
        if i:
            line.append(" " * _GAP)
        v = cells.get(k, "")
        pad = " " * (w - len(v))
        if align == "r":
            line.append(pad)
        line.append(v, style=(style_of(k, v) if style_of else None) or "")
        if align != "r" and i < len(layout) - 1:
            line.append(pad)
    return line


def _wrap(label: str, paragraphs: list[str], width: float, *, bullet: bool) -> list[str]:
    """``label`` then each paragraph wrapped at word boundaries under a hanging indent.

    Words are never broken: when one is longer than the space beside the
    label, the label gets a line of its own and the text a smaller indent.
    """
    lead = " " * (_INDENT + 2)
    hang = " " * (_INDENT + 2 + _LABEL + 1)
    finite = math.isfinite(width)
    longest = max((len(w) for p in paragraphs for w in p.split()), default=0) + 2
    out: list[str] = []
    if finite and longest > width - len(hang):
        out.append(lead + label)
        hang = lead + "  "
    avail = int(max(24, width - len(hang))) if finite else 10**9
    for p in paragraphs:
        first, rest = ("- ", "  ") if bullet else ("", "")
        lines = textwrap.wrap(p, avail, initial_indent=first, subsequent_indent=rest,
                              break_on_hyphens=False, break_long_words=False) or [""]
        for line in lines:
            head = lead + label.ljust(_LABEL) + " " if not out else hang
            out.append(head + line)
    return out


def _header(console, layout) -> None:
    """A table's header row and the rule under it."""
    _print(console, _row_text({k: h for k, h, *_ in layout}, layout), "bold")
    _print(console, _row_text({k: "─" * w for k, _, _, w in layout}, layout), "dim")


def _simple_table(console, rows, cols, layout, width: float, overflow_style: str | None = None) -> None:
    """Header, then one line per row; a column that did not fit goes on wrapped lines below its row."""
    shown = {k for k, *_ in layout}
    _header(console, layout)
    for cells in rows:
        _print(console, _row_text(cells, layout))
        for k, h, _ in cols:
            if k not in shown and cells.get(k):
                for line in _wrap(h, [cells[k]], width, bullet=False):
                    _print(console, line, overflow_style)


def _print(console, line, style: str | None = None) -> None:
    from rich.text import Text

    if isinstance(line, str):
        line = Text(line, style=style or "")
    line.rstrip()
    console.print(line, soft_wrap=True, highlight=False)


def _device_rows(result, flagged, full_ids: bool) -> list[dict[str, str]]:
    ids = short_ids(v.device for v in result.verdicts) if not full_ids else {}
    rows = []
    for v in flagged:
        rows.append({
            "status": str(v.status), "device": ids.get(v.device, v.device),
            "job": _num(v.job, "{}"), "host": _num(v.host, "{}"), "slowdown": _pct(v.slowdown),
            "onset": format_when(v.onset_step, v.onset_time),
            "detected": format_when(v.detected_step, v.detected_time),
            "score": score_text(v.score),
            "lost": format_seconds(getattr(v, "lost_seconds", None)),
        })
    return rows


_DEVICE_COLS = [("status", "status", "l"), ("device", "device", "l"), ("job", "job", "l"),
                ("host", "host", "l"), ("slowdown", "slowdown", "r"), ("onset", "onset", "l"),
                ("detected", "detected", "l"), ("score", "score", "r"), ("lost", "job lost", "r")]
_DEVICE_PRIORITY = ["status", "device", "slowdown", "onset", "job", "host", "lost", "detected"]


def _devices(result, flagged, console, width: float, wide: bool) -> bool:
    """Print the device rows; True when device ids were shortened."""
    priority = _DEVICE_PRIORITY + (["score"] if wide else [])
    rows = _device_rows(result, flagged, full_ids=True)
    layout = _fit(rows, _DEVICE_COLS, priority, width)
    wanted = {k for k in priority if any(r.get(k) for r in rows)}
    short = not wide and not wanted <= {k for k, *_ in layout}
    if short:  # full UUIDs would push columns out: shortest unique prefixes instead
        rows = _device_rows(result, flagged, full_ids=False)
        layout = _fit(rows, _DEVICE_COLS, priority, width)
    shown = {k for k, *_ in layout}
    _header(console, layout)
    for i, (v, cells) in enumerate(zip(flagged, rows)):
        if i:
            _print(console, "")
        status_style = _STATUS_STYLE.get(cells["status"])
        _print(console, _row_text(cells, layout,
                                  lambda k, _, s=status_style: s if k == "status" else None))
        extra = [(h, cells[k]) for k, h, _ in _DEVICE_COLS
                 if k not in shown and cells.get(k) and (k != "score" or wide)]
        lines: list[str] = []
        for h, val in extra:
            lines += _wrap(h, [val], width, bullet=False)
        reasons = [humanize(r) for r in v.reasons]
        if reasons:
            lines += _wrap("why", reasons, width, bullet=len(reasons) > 1)
        if v.action:
            lines += _wrap("action", [v.action], width, bullet=False)
        for line in lines:
            _print(console, line, "dim" if line.lstrip().startswith(tuple(h for h, _ in extra)) else None)
    return short


_EVENT_COLS = [("job", "job", "l"), ("kind", "kind", "l"), ("from", "from", "l"), ("to", "to", "l"),
               ("slowdown", "slowdown", "r"), ("devices", "devices", "r")]
_GROUP_COLS = [("job", "job", "l"), ("kind", "kind", "l"), ("events", "events", "r"),
               ("first", "first", "l"), ("last", "last", "l"), ("largest", "largest slowdown", "r")]


def _key(step, t):
    return (step if step is not None else float("-inf"), t if t is not None else float("-inf"))


def _job_events(events, console, width: float, *, detail_limit: int = 12, ids=None) -> None:
    """Job events one per row (with the reason below) when few; else one row per (job, kind)."""
    ids = ids or {}
    if len(events) <= detail_limit:
        _paragraph(console, "", "Job events (the whole job or peer group slowed; a device is named "
                   "only if it caused it)", width, "bold")
        rows = [{"job": _num(e.job, "{}"), "kind": e.kind, "from": format_when(e.start_step, e.start_time),
                 "to": format_when(e.end_step, e.end_time), "slowdown": _pct(e.slowdown),
                 "devices": _num(e.devices)} for e in events]
        layout = _fit(rows, _EVENT_COLS, ["job", "kind", "from", "to", "slowdown", "devices"], width,
                      keep=1)
        shown = {k for k, *_ in layout}
        _header(console, layout)
        for e, cells in zip(events, rows):
            _print(console, _row_text(cells, layout))
            lines: list[str] = []
            for k, h, _ in _EVENT_COLS:
                if k not in shown and cells.get(k):
                    lines += _wrap(h, [cells[k]], width, bullet=False)
            cause = getattr(e, "cause_device", None)  # the degraded device that slowed the job
            if cause:
                lines += _wrap("cause", [ids.get(cause, cause)], width, bullet=False)
            if e.reason:
                lines += _wrap("why", [_with_ids(humanize(e.reason), ids)], width, bullet=False)
            for line in lines:
                _print(console, line)
        return
    groups: dict[tuple, list] = {}
    for e in events:
        groups.setdefault((str(e.job), e.kind), []).append(e)
    _paragraph(console, "", f"Job events: {len(events)} (the whole job or peer group slowed; a device "
               "is named only if it caused it; each one in --format json)", width, "bold")
    rows = []
    for (job, kind), evs in sorted(groups.items()):
        first = min(evs, key=lambda e: _key(e.start_step, e.start_time))
        last = max(evs, key=lambda e: _key(e.end_step, e.end_time))
        worst = max((e.slowdown for e in evs if e.slowdown is not None), default=None)
        rows.append({"job": job, "kind": kind, "events": f"{len(evs):,}",
                     "first": format_when(first.start_step, first.start_time),
                     "last": format_when(last.end_step, last.end_time), "largest": _pct(worst)})
    layout = _fit(rows, _GROUP_COLS, ["job", "kind", "events", "largest", "first", "last"], width,
                  keep=1)
    _simple_table(console, rows, _GROUP_COLS, layout, width)


_COST_COLS = [("job", "job", "l"), ("lost", "lost", "r"), ("gpu_h", "GPU-hours", "r"), ("share", "share", "r"),
              ("topology", "topology", "l"), ("worst", "costliest", "l")]


def _costs(costs, console, width: float, ids) -> None:
    """What each job lost to its flagged devices, costliest first (docs/cost.md)."""
    _paragraph(console, "", "What it cost (wall time lost had each flagged device run at its peer "
               "median; GPU-hours = lost time x devices in the job)", width, "bold")
    rows = []
    for c in sorted(costs, key=lambda c: (-c.lost_gpu_hours, -c.lost_seconds, str(c.job))):
        worst = next(iter(c.devices_lost_seconds), None)
        rows.append({"job": _num(c.job, "{}"), "lost": format_seconds(c.lost_seconds),
                     "gpu_h": f"{c.lost_gpu_hours:,.2f}", "share": "" if c.lost_share is None
                     else f"{100.0 * c.lost_share:.1f} %", "topology": c.topology,
                     "worst": "" if worst is None else ids.get(worst, worst)})
    layout = _fit(rows, _COST_COLS, ["job", "lost", "gpu_h", "share", "worst", "topology"], width, keep=1)
    _simple_table(console, rows, _COST_COLS, layout, width, overflow_style="dim")


def _paragraph(console, prefix: str, text: str, width: float, style: str | None = None) -> None:
    avail = int(width) if math.isfinite(width) else 10**9
    for line in textwrap.wrap(prefix + text, max(24, avail), subsequent_indent="  ",
                              break_on_hyphens=False, break_long_words=False) or [prefix]:
        _print(console, line, style)


def render_table(result, console=None, *, limit: int = 200, wide: bool = False) -> None:
    """Print devices that are not healthy, job events, warnings and a one-line summary.

    Every line fits ``console.width`` unless ``wide`` (then nothing is
    shortened or moved: full device ids and every column on the row line).
    """
    rich_console = import_optional("rich.console", "batch", "rich")
    if console is None:
        console = rich_console.Console()
    width: float = float("inf") if wide else max(int(console.width), 40)
    # worst status first, and within a status the costliest (docs/cost.md); ties keep flagged()'s order
    from ..verdict import Status

    flagged = sorted(result.flagged(),
                     key=lambda v: (-Status(v.status).severity, -(getattr(v, "lost_seconds", None) or 0.0)))
    if flagged:
        n = len(result.verdicts)
        _paragraph(console, "", f"Devices that are not healthy: {len(flagged)} of {n} (times in UTC)",
                   width, "bold")
        short = _devices(result, flagged[:limit], console, width, wide)
        if len(flagged) > limit:
            _print(console, f"  … and {len(flagged) - limit} more (use --format json)", "dim")
        if short and any(_UUID.match(v.device) for v in flagged):
            _paragraph(console, "", "device: the shortest unique prefix of each GPU UUID; --wide or "
                       "--format json for the full UUID", width, "dim")
    else:
        _paragraph(console, "", "No device is suspect, degraded, failed or unknown.", width, "green")
    costs = [c for c in getattr(result, "costs", []) if c.lost_seconds > 0]
    if costs:
        _print(console, "")
        _costs(costs, console, width, {} if wide else short_ids(v.device for v in result.verdicts))
    if result.jobs:
        _print(console, "")
        _job_events(result.jobs, console, width,
                    ids={} if wide else short_ids(v.device for v in result.verdicts))
    for w in result.warnings:
        if w.kind == "ignored_file":  # e.g. the simulator's truth.parquet next to the data
            _paragraph(console, "note: ", w.message, width, "dim")
        else:
            _paragraph(console, "warning: ", w.message, width, "yellow")
    _fleet_block(result, console, width)
    _paragraph(console, "", result.summary(), width, "bold")


def _fleet_block(result, console, width: float) -> None:
    """Repeat offenders, devices slow across jobs and replacements (degrade.fleet; several jobs only)."""
    if int(result.stats.get("jobs", 0)) < 2:
        return
    from ..fleet._text import offender_lines

    lines = offender_lines(result.fleet)
    for k, line in enumerate(lines):
        _paragraph(console, "", line, width, "bold" if k == 0 else None)


def verdict_frame(result):
    """One row per verdict with a fixed schema (empty results keep the columns)."""
    pl = import_optional("polars", "batch")
    dtypes = {"String": pl.String, "Float64": pl.Float64, "Int64": pl.Int64,
              "List[String]": pl.List(pl.String)}
    schema = {name: dtypes[t] for name, t in _COLUMNS}
    rows: list[dict[str, Any]] = []
    for v in result.verdicts:
        d = v.to_dict()
        row = {name: d.get(name) for name, _ in _COLUMNS}
        row["job"] = None if row["job"] is None else str(row["job"])
        row["host"] = None if row["host"] is None else str(row["host"])
        row["signals"] = json.dumps(d.get("signals") or {}, sort_keys=True)
        rows.append(row)
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def write_parquet(result, path: str | os.PathLike) -> None:
    """Verdict rows; jobs, warnings, inputs and summary as JSON under metadata key ``degrade``."""
    pq = import_optional("pyarrow.parquet", "batch", "pyarrow")
    table = verdict_frame(result).to_arrow()
    doc = result.to_dict()
    doc.pop("verdicts")
    meta = dict(table.schema.metadata or {})
    meta[b"degrade"] = json.dumps(doc).encode()
    pq.write_table(table.replace_schema_metadata(meta), os.fspath(path))


def read_parquet_document(path: str | os.PathLike) -> dict[str, Any]:
    """Read a file written by :func:`write_parquet` back into the JSON document's shape."""
    pq = import_optional("pyarrow.parquet", "batch", "pyarrow")
    pl = import_optional("polars", "batch")
    table = pq.read_table(os.fspath(path))
    doc = json.loads((table.schema.metadata or {}).get(b"degrade", b"{}"))
    rows = pl.from_arrow(table).to_dicts()
    for r in rows:
        r["signals"] = json.loads(r["signals"]) if r.get("signals") else {}
    doc["verdicts"] = rows
    return doc
