"""The terminal table of ``degrade analyze``: fits 80 and 120 columns, never breaks an identifier."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import require

pl = require("polars")
require("rich")

from degrade.analyze._formats import (  # noqa: E402
    format_time,
    format_when,
    humanize,
    score_text,
    short_ids,
)
from degrade.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "datasets" / "demo"
ISO = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z"


@pytest.fixture(scope="module")
def demo_doc(tmp_path_factory):
    out = tmp_path_factory.mktemp("table") / "v.json"
    assert main(["analyze", str(DEMO), "--format", "json", "-o", str(out), "--no-progress"]) == 0
    return json.loads(out.read_text())


def _table(args, columns, monkeypatch, capsys) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    capsys.readouterr()
    assert main(["analyze", *args, "--no-progress"]) == 0
    return capsys.readouterr().out


def _broken(ident: str, lines: list[str]) -> bool:
    """True when ``ident`` is split over the end of one line and the start of the next."""
    for a, b in zip(lines, lines[1:]):
        a, b = a.rstrip(), b.lstrip()
        for k in range(1, len(ident)):
            if a.endswith(ident[:k]) and b.startswith(ident[k:]) and not a.endswith(ident):
                return True
    return False


def _norm(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("columns", [80, 120])
def test_demo_table_fits_and_keeps_identifiers_whole(columns, demo_doc, monkeypatch, capsys):
    out = _table([str(DEMO)], columns, monkeypatch, capsys)
    lines = out.splitlines()
    too_long = [ln for ln in lines if len(ln) > columns]
    assert not too_long, too_long
    flagged = [v for v in demo_doc["verdicts"] if v["status"] != "healthy"]
    assert f"Devices that are not healthy: {len(flagged)} of {len(demo_doc['verdicts'])}" in out
    ids = short_ids(v["device"] for v in demo_doc["verdicts"])
    idents = set()
    for v in flagged:
        idents |= {ids[v["device"]], v["job"], v["host"]}
        # the row itself names the device, its status and (at >= 80 columns) job and host
        row = next(ln for ln in lines if f" {ids[v['device']]} " in ln and v["status"] in ln)
        assert v["job"] in row and v["host"] in row
        # every reason, not cut, with times in ISO 8601 UTC, and the action
        for r in v["reasons"]:
            assert _norm(humanize(r)) in _norm(out)
        assert _norm(v["action"]) in _norm(out)
    for e in demo_doc["jobs"]:
        idents.add(e["job"])
    assert not [i for i in idents if _broken(i, lines)]
    # short ids are unique prefixes of the UUIDs, and the full UUID is not needed to fit
    assert len(set(ids.values())) == len(ids)
    assert all(v["device"].startswith(ids[v["device"]]) for v in flagged)
    # human times: no raw epoch, no yearless date; onsets say "step N" or an ISO time
    assert not re.search(r"\bt=\d{9,}", out)
    assert not re.search(r"(?<!\d{4}-)\b\d{2}-\d{2} \d{2}:\d{2}", out)
    assert re.search(r"step \d+\b", out) and re.search(ISO, out)
    # ground truth next to the data is a note, not a warning
    assert "warning: ignored" not in out and "note: ignored" in out


def test_wide_prints_full_uuids_and_scores(demo_doc, monkeypatch, capsys):
    out = _table([str(DEMO), "--wide"], 80, monkeypatch, capsys)
    for v in demo_doc["verdicts"]:
        if v["status"] != "healthy":
            assert v["device"] in out
    assert "hard fault" in out  # the XID 79 device's score, not 1000000.0
    assert "1000000" not in out
    # the same at 80 columns without --wide: prefixes only
    narrow = _table([str(DEMO)], 80, monkeypatch, capsys)
    assert not any(v["device"] in narrow for v in demo_doc["verdicts"])
    assert "--wide or --format json for the full UUID" in _norm(narrow)


def test_200_columns_shows_full_uuids_on_one_row(demo_doc, monkeypatch, capsys):
    out = _table([str(DEMO)], 200, monkeypatch, capsys)
    assert max(len(ln) for ln in out.splitlines()) <= 200
    for v in demo_doc["verdicts"]:
        if v["status"] != "healthy":
            row = next(ln for ln in out.splitlines() if v["device"] in ln)
            assert v["job"] in row and v["host"] in row


def test_long_names_move_out_of_the_row_instead_of_wrapping(tmp_path, monkeypatch, capsys):
    from test_analyze import fleet

    df = fleet(3, jobs=1, n_step=300)
    long_job = "a-very-long-training-job-name-for-the-table-test"
    df = df.with_columns(pl.lit(long_job).alias("job"),
                         ("rack-17-node-" + pl.col("device")).alias("host"))
    df.write_parquet(tmp_path / "t.parquet")
    for columns in (80, 60):
        out = _table([str(tmp_path / "t.parquet")], columns, monkeypatch, capsys)
        lines = out.splitlines()
        assert max(len(ln) for ln in lines) <= columns, out
        assert any(long_job in ln for ln in lines)
        assert not _broken(long_job, lines)
        assert "job0-gpu3" in out and "degraded" in out


def test_short_ids_are_unique_prefixes():
    rng = np.random.default_rng(4)
    # UUIDs sharing long prefixes force longer short forms, never a clash
    base = "GPU-50d010b5-3b5f-bd65-b895-"
    uuids = [base + "".join(rng.choice(list("0123456789abcdef"), 12)) for _ in range(40)]
    uuids += [f"GPU-{i:08x}-0000-0000-0000-000000000000" for i in range(40)]
    ids = short_ids([*uuids, "gpu3", "node1:rank2"])
    assert len(set(ids.values())) == len(ids)
    assert ids["gpu3"] == "gpu3" and ids["node1:rank2"] == "node1:rank2"
    for u in uuids:
        assert u.startswith(ids[u]) and not ids[u].endswith("-") and len(ids[u]) >= 8


def test_time_formats():
    assert format_time(1767226185.0) == "2026-01-01T00:09:45Z"
    assert format_time(None) == "" and format_time(float("nan")) == ""
    assert format_time(42.4) == "t=42 s"
    assert format_when(12, 1767226185.0) == "step 12"
    assert format_when(None, 1767226185.0) == "2026-01-01T00:09:45Z"
    assert humanize("from t=1767226260 until t=1767228045 (recovered); t=12") == (
        "from 2026-01-01T00:11:00Z until 2026-01-01T00:40:45Z (recovered); t=12")
    assert score_text(1e6) == "hard fault" and score_text(2.04) == "2.0" and score_text(None) == ""


def test_synthetic_result_with_many_job_events_fits(capsys):
    """Grouped job events, time-only onsets, suspect/unknown rows, long reasons: all fit."""
    from rich.console import Console

    from degrade.analyze import AnalysisResult
    from degrade.analyze._formats import render_table
    from degrade.verdict import JobEvent, Status, Verdict

    t0 = 1767225600.0
    verdicts = [
        Verdict(device=f"GPU-{i:08x}-1111-2222-3333-444455556666", status=st, job="j" * (5 + i),
                host=f"ip-10-0-{i}-17.ec2.internal", slowdown=0.071 if st != Status.UNKNOWN else None,
                onset_time=t0 + 60 * i, detected_time=t0 + 90 * i, score=1e6 if st == Status.FAILED else 1.5,
                reasons=[f"reason {i}: PCIe link width below its maximum (x8) since t={t0 + 60 * i:.0f}; "
                         + "more words " * 12],
                action="check the PCIe link (reseat the card or riser, check the slot); drain the device")
        for i, st in enumerate([Status.FAILED, Status.DEGRADED, Status.SUSPECT, Status.UNKNOWN, Status.HEALTHY])
    ]
    jobs = [JobEvent(job="a-long-job-name-0001", kind="job_slowdown" if k % 2 else "sustained_job_slowdown",
                     start_step=10 * k, end_step=10 * k + 5, slowdown=0.3, devices=64, reason="r")
            for k in range(20)]
    res = AnalysisResult(verdicts=verdicts, jobs=jobs, stats={"jobs": 5, "rows": 10, "seconds": 0.1})
    few = AnalysisResult(verdicts=verdicts, jobs=jobs[:2], stats={"jobs": 5})
    few.jobs[0].cause_device = verdicts[1].device  # the engine may name the device that caused it
    render_table(few, Console(width=80, no_color=True))
    out = capsys.readouterr().out
    assert re.search(r"^\s+cause\s+GPU-00000001$", out, re.M), out
    for width in (80, 120):
        render_table(res, Console(width=width, no_color=True))
        out = capsys.readouterr().out
        lines = out.splitlines()
        assert max(len(ln) for ln in lines) <= width, out
        assert "Job events: 20" in out  # grouped: one row per (job, kind)
        assert sum("a-long-job-name-0001" in ln for ln in lines) == 2
        assert "hard fault" not in out  # no score column unless --wide
        assert "2026-01-01T00:01:00Z" in out and "t=17" not in out
        for v in verdicts[:4]:
            assert v.host in out and not _broken(v.host, lines)
        assert "ip-10-0-4-17" not in out  # the healthy device is not listed
