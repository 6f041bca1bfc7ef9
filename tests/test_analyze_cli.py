"""``degrade analyze`` on the command line: formats, files, errors (one line, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

pl = require("polars")

from test_analyze import fleet  # noqa: E402

from degrade.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    fleet(11, jobs=2, n_step=300).write_parquet(d / "timings.parquet")
    return d


def test_table_lists_the_slow_device_and_a_summary(files, capsys):
    assert main(["analyze", str(files / "timings.parquet")]) == 0
    out = capsys.readouterr().out
    assert "job0-gpu3" in out and "degraded" in out
    assert "16 devices in 2 jobs" in out.splitlines()[-1]
    assert "job1-gpu" not in out


def test_json_output_follows_the_schema(files, tmp_path, capsys):
    from test_analyze import _validator

    validator = _validator()
    assert main(["analyze", str(files), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    validator.validate(doc)
    assert doc["summary"]["devices"] == 16
    out = tmp_path / "v.json"
    assert main(["analyze", str(files), "--format", "json", "-o", str(out),
                 "--min-slowdown", "0.1"]) == 0
    doc2 = json.loads(out.read_text())
    validator.validate(doc2)
    assert doc2["config"]["min_slowdown"] == 0.1


def test_parquet_output_and_report(files, tmp_path, capsys):
    out, report = tmp_path / "v.parquet", tmp_path / "r.html"
    assert main(["analyze", str(files), "--format", "parquet", "-o", str(out),
                 "--report", str(report)]) == 0
    assert pl.read_parquet(out).height == 16
    assert report.read_text().count("<svg") >= 1
    assert "devices in 2 jobs" in capsys.readouterr().err


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "degrade", "analyze", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=300)


def test_nonexistent_and_unreadable_files_exit_with_one_line(tmp_path):
    p = _cli(str(tmp_path / "missing.parquet"))
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        f"degrade analyze: error: no such file or directory: {tmp_path / 'missing.parquet'}"]
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"PAR1 but not really")
    p = _cli(str(bad))
    assert p.returncode != 0 and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken.parquet" in lines[0]


def test_usage_errors(files, capsys):
    assert main(["analyze", str(files), "--format", "parquet"]) == 2
    assert "--output" in capsys.readouterr().err
    assert main(["analyze", str(files), "--scheduler", "tcp://x:1"]) == 2
    assert main(["analyze", str(files), "--chunk-rows", "0"]) == 2


def test_truncated_parquet_inside_a_dataset_is_named(tmp_path):
    good = tmp_path / "ds"
    good.mkdir()
    fleet(1, jobs=1, n_step=50).write_parquet(good / "a.parquet")
    data = (good / "a.parquet").read_bytes()
    (good / "b.parquet").write_bytes(data[: len(data) // 2])
    # inside a directory it is skipped with a warning naming it (docs/schema.md) ...
    p = _cli(str(good), "--no-progress")
    assert p.returncode == 0 and "Traceback" not in p.stderr
    warn = [x for x in p.stderr.splitlines() if "warning" in x]
    assert len(warn) == 1 and "b.parquet" in warn[0] and "skipped" in warn[0]
    # ... and --strict makes it the one-line error it used to be
    p = _cli(str(good), "--strict")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "b.parquet" in p.stderr


def test_demo_dataset_if_present():
    demo = REPO / "datasets" / "demo"
    if not (demo / "timings.parquet").exists():
        pytest.skip("datasets/demo not generated yet")
    p = _cli(str(demo), "--format", "json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    truth = pl.read_parquet(demo / "truth.parquet")
    assert doc["summary"]["devices"] >= truth.height
    flagged = {v["device"]: v["status"] for v in doc["verdicts"] if v["status"] in ("degraded", "failed")}
    for row in truth.iter_rows(named=True):  # every planted fault is found, at its severity
        assert flagged.get(row["device"]) == row["expected_status"], row
