"""Output formats of ``degrade analyze``: a rich table, Parquet rows (JSON lives on the result)."""

from __future__ import annotations

import json
import os
from typing import Any

from .._optional import import_optional

__all__ = ["render_table", "verdict_frame", "write_parquet", "read_parquet_document"]

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
)


def _pct(x) -> str:
    return "" if x is None else f"{100.0 * x:+.1f} %"


def _num(x, fmt="{:,}") -> str:
    return "" if x is None else fmt.format(x)


def _when(step, t) -> str:
    if step is not None:
        return f"{step:,}"
    if t is not None:
        import datetime as dt

        try:
            return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%m-%d %H:%M:%S")
        except (OverflowError, OSError, ValueError):
            return f"{t:.0f}"
    return ""


def _short(reasons: list[str], width: int = 110) -> str:
    if not reasons:
        return ""
    first = reasons[0] if len(reasons[0]) <= width else reasons[0][: width - 1] + "…"
    return first + (f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else "")


def _job_table(events, console, rich_table, *, detail_limit: int = 12) -> None:
    """Job events one per row when few; otherwise one row per (job, kind) with counts."""
    if len(events) <= detail_limit:
        t = rich_table.Table(title="Job events (whole job or peer group slowed; a device is named only if it caused it)",
                             title_justify="left", header_style="bold")
        for name in ("job", "kind", "from", "to", "slowdown", "devices", "why"):
            t.add_column(name, justify="right" if name in ("from", "to", "slowdown", "devices") else "left",
                         no_wrap=name != "why")
        for e in events:
            t.add_row(_num(e.job, "{}"), e.kind, _when(e.start_step, e.start_time),
                      _when(e.end_step, e.end_time), _pct(e.slowdown), _num(e.devices), _short([e.reason]))
        console.print(t)
        return
    groups: dict[tuple, list] = {}
    for e in events:
        groups.setdefault((str(e.job), e.kind), []).append(e)
    t = rich_table.Table(title=f"Job events: {len(events)} (whole job or peer group slowed; a device is "
                         "named only if it caused it; each one in --format json)", title_justify="left", header_style="bold")
    for name in ("job", "kind", "events", "first", "last", "largest slowdown"):
        t.add_column(name, justify="left" if name in ("job", "kind") else "right", no_wrap=True)
    for (job, kind), evs in sorted(groups.items()):
        firsts = [(_key(e.start_step, e.start_time), e) for e in evs]
        lasts = [(_key(e.end_step, e.end_time), e) for e in evs]
        first = min(firsts, key=lambda p: p[0])[1]
        last = max(lasts, key=lambda p: p[0])[1]
        worst = max((e.slowdown for e in evs if e.slowdown is not None), default=None)
        t.add_row(job, kind, f"{len(evs):,}", _when(first.start_step, first.start_time),
                  _when(last.end_step, last.end_time), _pct(worst))
    console.print(t)


def _key(step, t):
    return (step if step is not None else float("-inf"), t if t is not None else float("-inf"))


def render_table(result, console=None, *, limit: int = 200) -> None:
    """Print devices that are not healthy, job events, warnings and a one-line summary."""
    rich_console = import_optional("rich.console", "batch", "rich")
    rich_table = import_optional("rich.table", "batch", "rich")
    if console is None:
        console = rich_console.Console()
        if not console.is_terminal:  # piped: 80 columns would fold every reason
            console = rich_console.Console(width=180)
    flagged = result.flagged()
    if flagged:
        t = rich_table.Table(title="Devices that are not healthy", title_justify="left",
                             header_style="bold", expand=False)
        nw = {"no_wrap": True}
        for name, kw in (("status", nw), ("device", {"overflow": "fold"}), ("job", {}),
                         ("host", {}), ("slowdown", {"justify": "right", **nw}),
                         ("onset", {"justify": "right", **nw}), ("detected", {"justify": "right", **nw}),
                         ("why", {"overflow": "fold", "ratio": 1, "min_width": 36})):
            t.add_column(name, **kw)
        for v in flagged[:limit]:
            st = str(v.status)
            t.add_row(
                f"[{_STATUS_STYLE.get(st, '')}]{st}[/]", v.device, _num(v.job, "{}"),
                _num(v.host, "{}"), _pct(v.slowdown), _when(v.onset_step, v.onset_time),
                _when(v.detected_step, v.detected_time), _short(v.reasons),
            )
        console.print(t)
        if len(flagged) > limit:
            console.print(f"[dim]… and {len(flagged) - limit} more (use --format json)[/]")
    else:
        console.print("[green]No device is suspect, degraded, failed or unknown.[/]")
    if result.jobs:
        _job_table(result.jobs, console, rich_table)
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w.message}", highlight=False)
    console.print(f"[bold]{result.summary()}[/]", highlight=False)


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
