"""Counted warnings: rows that were skipped or repaired, never silently."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["AnalysisWarning", "WarningLog"]

# kind -> message template (``{count}`` rows, ``{column}``, ``{source}``)
_MESSAGES = {
    "invalid_timing": "{count} rows with a missing, non-finite, zero or negative {column} were treated as missing",
    "nonfinite_counter": "{count} non-finite {column} values were treated as missing",
    "duplicate_rows": "{count} duplicate (device, step) rows were dropped (first kept)",
    "null_key": "{count} rows without a device, step or timestamp were dropped",
    "duplicate_samples": "{count} counter samples that fell on an occupied time slot were dropped (first kept)",
    "ignored_file": "ignored {source}: {column}",
    "group_changed": "{count} devices changed peer group within a job (first group used)",
    "no_timestamp": "{count} counter rows without a timestamp were dropped",
    "empty_file": "skipped {source}: empty file ({column})",
    "unreadable_file": "skipped {source}: cannot read it ({column})",
    "duplicate_file": "skipped {source}: the same file or directory as {column}, read once (a symbolic link)",
}

#: kinds about whole files, not rows (their message names the file itself)
_FILE_KINDS = frozenset({"ignored_file", "empty_file", "unreadable_file", "duplicate_file"})


@dataclass(frozen=True)
class AnalysisWarning:
    """One kind of skipped or repaired input, with how many rows it touched."""

    kind: str
    count: int
    message: str
    source: str | None = None
    column: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "count": int(self.count),
            "message": self.message,
            "source": self.source,
            "column": self.column,
        }


class WarningLog:
    """Accumulates counts per (kind, source, column); merges across units."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str | None, str | None], int] = {}

    def add(self, kind: str, count: int = 1, *, source: str | None = None,
            column: str | None = None) -> None:
        count = int(count)
        if count <= 0:
            return
        key = (kind, source, column)
        self._counts[key] = self._counts.get(key, 0) + count

    def merge(self, other: WarningLog) -> None:
        for (kind, source, column), count in other._counts.items():
            self.add(kind, count, source=source, column=column)

    def __len__(self) -> int:
        return len(self._counts)

    def items(self) -> list[AnalysisWarning]:
        out = []
        for (kind, source, column), count in sorted(
            self._counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or "", kv[0][2] or "")
        ):
            text = _MESSAGES.get(kind, kind).format(count=count, column=column, source=source)
            if source and kind not in _FILE_KINDS:
                text = f"{source}: {text}"
            out.append(AnalysisWarning(kind, count, text, source, column))
        return out
