"""Evaluation harness on hand-built cases with known scores."""

from __future__ import annotations

import json

import pytest

from tests.conftest import require

pl = require("polars")

from degrade.errors import InputError, SchemaError  # noqa: E402
from degrade.evaluate import evaluate  # noqa: E402
from degrade.verdict import Status, Verdict  # noqa: E402


def _truth():
    return pl.DataFrame({
        "device": ["a", "b", "c", "d", "e"],
        "job": ["j"] * 5,
        "fault": ["thermal", "slowdown", "xid79", "slowdown", "nvlink_crc"],
        "onset_step": [100, 0, 500, 200, 300],
        "onset_time": [1100.0, 1000.0, 1500.0, 1200.0, 1300.0],
        "magnitude": [0.2, 0.1, 0.0, 0.03, 0.05],
        "end_step": [None, None, None, None, None],
        "expected_status": ["degraded", "degraded", "failed", "suspect", "suspect"],
    })


def _verdicts():
    return [
        Verdict("a", Status.DEGRADED, onset_step=104, onset_time=1104.0, detected_step=140, detected_time=1140.0),
        Verdict("b", Status.HEALTHY),                                            # missed
        Verdict("c", Status.DEGRADED, onset_step=500, detected_step=501),      # found, wrong status
        Verdict("d", Status.SUSPECT, onset_step=210, detected_step=260),       # suspect-class found
        Verdict("e", Status.HEALTHY),                                            # suspect-class missed
        Verdict("h1", Status.HEALTHY),
        Verdict("h2", Status.FAILED),                                            # false alarm
        Verdict("h3", Status.SUSPECT),
        Verdict("h4", Status.UNKNOWN),
    ]


def test_scores_by_hand():
    hours = {d: 2.0 for d in ["a", "b", "c", "d", "e", "h1", "h2", "h3", "h4"]}
    rep = evaluate(_verdicts(), _truth(), device_hours=hours)
    s = rep.summary
    assert (s["tp"], s["fp"], s["fn"]) == (2, 1, 1)
    assert rep.precision == pytest.approx(2 / 3) and rep.recall == pytest.approx(2 / 3)
    assert rep.f1 == pytest.approx(2 / 3)
    assert s["status_accuracy"] == 0.5  # a right (degraded), c wrong (degraded, expected failed)
    assert s["healthy_devices"] == 4 and s["healthy_device_hours"] == 8.0
    assert s["false_alarms_per_1000_device_hours"] == pytest.approx(1000 / 8)
    # exact Poisson bound for 1 event: P(X <= 1; 4.744) = 0.05
    assert s["false_alarms_per_1000_device_hours_upper95"] == pytest.approx(1000 * 4.7439 / 8, rel=1e-4)
    assert s["suspect_on_healthy"] == 1 and s["unknown"] == 1 and s["suspect_faults"] == 2
    assert s["onset_error_steps_median"] == pytest.approx(2.0)  # (4 + 0) / 2
    assert s["delay_steps_median"] == pytest.approx(20.5)  # (40 + 1) / 2
    assert s["delay_seconds_median"] == pytest.approx(40.0)  # only a has times
    pf = {r["fault"]: r for r in rep.per_fault}
    assert pf["slowdown"]["n"] == 2 and pf["slowdown"]["positives"] == 1 and pf["slowdown"]["found"] == 0
    assert pf["slowdown"]["suspect"] == 1 and pf["thermal"]["recall"] == 1.0 and pf["xid79"]["found"] == 1
    outcomes = {d["device"]: d["outcome"] for d in rep.devices}
    assert outcomes == {"a": "tp", "b": "fn", "c": "tp", "d": "suspect_flagged", "e": "suspect_missed",
                        "h1": "tn", "h2": "fp", "h3": "tn", "h4": "tn"}
    assert rep.per_magnitude == [
        {"slowdown": "0%-5%", "n": 1, "found": 1, "recall": 1.0},  # c: xid79, no speed effect
        {"slowdown": "10%-20%", "n": 1, "found": 0, "recall": 0.0},  # b: 0.10 missed
        {"slowdown": "20%-50%", "n": 1, "found": 1, "recall": 1.0},  # a: 0.20 found
    ]
    text = rep.table()
    assert "precision 0.667" in text and "thermal" in text
    json.dumps(rep.to_dict())


def test_json_document_path_and_dicts_agree(tmp_path):
    doc = {"schema_version": "1.0", "verdicts": [v.to_dict() for v in _verdicts()]}
    p = tmp_path / "v.json"
    p.write_text(json.dumps(doc))
    tp = tmp_path / "truth.parquet"
    _truth().write_parquet(tp)
    a = evaluate(str(p), str(tp)).to_dict()
    b = evaluate(_verdicts(), _truth()).to_dict()
    assert a == b
    assert a["summary"]["false_alarms_per_1000_device_hours"] is None


def test_missing_verdict_is_a_miss_and_perfect_case():
    rep = evaluate([], _truth().filter(pl.col("device") == "a"))
    assert rep.summary["fn"] == 1 and rep.summary["missing_verdicts"] == 1 and rep.precision is None
    perfect = [Verdict("a", Status.DEGRADED), Verdict("b", Status.DEGRADED), Verdict("c", Status.FAILED),
               Verdict("z", Status.HEALTHY)]
    rep = evaluate(perfect, _truth().head(3))
    assert (rep.precision, rep.recall, rep.f1, rep.summary["status_accuracy"]) == (1.0, 1.0, 1.0, 1.0)


def test_device_hours_from_timings():
    timings = pl.DataFrame({"device": ["h"] * 3 + ["a"] * 3, "step": [0, 1, 2] * 2,
                            "step_time": [1.0] * 6, "timestamp": [0.0, 1800.0, 3599.0] * 2})
    rep = evaluate([Verdict("h", Status.DEGRADED), Verdict("a", Status.DEGRADED)],
                   _truth().head(1), timings=timings)
    assert rep.summary["healthy_device_hours"] == pytest.approx(1.0)
    assert rep.summary["false_alarms_per_1000_device_hours"] == pytest.approx(1000.0)


def test_bad_inputs():
    with pytest.raises(SchemaError, match="lacks column"):
        evaluate([], pl.DataFrame({"device": ["a"]}))
    with pytest.raises(SchemaError, match="expected_status"):
        evaluate([], _truth().with_columns(pl.lit("broken").alias("expected_status")))
    with pytest.raises(SchemaError, match="two verdicts"):
        evaluate([Verdict("a"), Verdict("a")], _truth())
    with pytest.raises(SchemaError, match="'device' or 'status'"):
        evaluate([{"dev": "a"}], _truth())
    with pytest.raises(InputError, match="cannot read verdicts"):
        evaluate("/nonexistent/v.json", _truth())


def test_cli_roundtrip(tmp_path, capsys):
    from degrade.cli import main

    assert main(["simulate", "tiny", "--out", str(tmp_path), "--seed", "2"]) == 0
    truth = pl.read_parquet(tmp_path / "truth.parquet")
    verdicts = [{"device": d, "status": "degraded"} for d in truth["device"]]
    (tmp_path / "v.json").write_text(json.dumps(verdicts))
    out = tmp_path / "scores.json"
    assert main(["evaluate", str(tmp_path / "v.json"), str(tmp_path / "truth.parquet"), "--json", str(out)]) == 0
    scores = json.loads(out.read_text())
    assert scores["summary"]["recall"] == 1.0
    assert scores["summary"]["healthy_device_hours"] > 0  # timings.parquet beside the truth was used
    assert scores["summary"]["fp"] == 0 and scores["summary"]["devices"] == 8
    assert "recall 1.000" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "nope.json"), str(tmp_path / "truth.parquet")]) == 2
