"""``degrade.analyze.analyze``: end to end on small fleets, the JSON contract, Parquet, HTML."""

from __future__ import annotations

import json
import math
import re
from importlib import resources

import numpy as np
import pytest
from conftest import require

pl = require("polars")

from degrade.analyze import AnalysisResult, analyze  # noqa: E402
from degrade.errors import InputError, SchemaError  # noqa: E402


def fleet(seed=0, *, jobs=2, n_dev=8, n_step=400, slow=None, onset=200, factor=1.3, noise=0.02,
          timestamps=True):
    """A synchronous data-parallel fleet: compute_time per rank, step_time = slowest rank + comm.

    ``slow`` maps job index -> device index that slows by ``factor`` from ``onset``.
    Noise is AR(1) (autocorrelated) lognormal with occasional heavy-tailed spikes.
    """
    rng = np.random.default_rng(seed)
    slow = {0: 3} if slow is None else slow
    parts = []
    for j in range(jobs):
        base = 0.25 * (1 + 0.007 * rng.standard_normal(n_dev))  # static offsets, ~1-2 % apart
        e = np.zeros((n_step, n_dev))
        z = rng.standard_normal((n_step, n_dev)) * noise
        for t in range(1, n_step):
            e[t] = 0.5 * e[t - 1] + z[t]
        ct = base * np.exp(e)
        spikes = rng.random((n_step, n_dev)) < 0.003
        ct[spikes] *= rng.pareto(3.0, spikes.sum()) + 1.5
        if j in slow:
            ct[onset:, slow[j]] *= factor
        st = ct.max(axis=1, keepdims=True) + 0.02
        st = np.broadcast_to(st, ct.shape)
        steps = np.arange(n_step)
        cols = {
            "job": f"job{j}",
            "device": np.tile([f"job{j}-gpu{d}" for d in range(n_dev)], n_step),
            "host": np.tile([f"node{j}-{d // 4}" for d in range(n_dev)], n_step),
            "step": np.repeat(steps, n_dev),
            "compute_time": ct.ravel(),
            "step_time": st.ravel(),
        }
        if timestamps:
            cols["timestamp"] = 1.7e9 + j * 1e4 + np.repeat(np.cumsum(st[:, 0]), n_dev)
        parts.append(pl.DataFrame(cols))
    return pl.concat(parts)


@pytest.fixture(scope="module")
def result():
    return analyze(fleet())


class _MiniValidator:
    """The subset of JSON Schema 2020-12 that verdicts.schema.json uses.

    Used when jsonschema is not installed (it is not a dependency of degrade);
    the tests check it against jsonschema when both are there.
    """

    _TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}

    def __init__(self, schema):
        self.root = schema

    def _errors(self, x, s, path="$"):
        if "$ref" in s:
            node = self.root
            for part in s["$ref"].lstrip("#/").split("/"):
                node = node[part]
            yield from self._errors(x, node, path)
        types = s.get("type")
        if types is not None:
            types = [types] if isinstance(types, str) else types
            ok = any(
                (t == "integer" and isinstance(x, int) and not isinstance(x, bool))
                or (t == "number" and isinstance(x, (int, float)) and not isinstance(x, bool))
                or (t in self._TYPES and isinstance(x, self._TYPES[t]))
                for t in types
            )
            if not ok:
                yield f"{path}: {x!r} is not of type {types}"
                return
        if "enum" in s and x not in s["enum"]:
            yield f"{path}: {x!r} not in {s['enum']}"
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            if "minimum" in s and x < s["minimum"]:
                yield f"{path}: {x} < {s['minimum']}"
            if "exclusiveMinimum" in s and x <= s["exclusiveMinimum"]:
                yield f"{path}: {x} <= {s['exclusiveMinimum']}"
            if "exclusiveMaximum" in s and x >= s["exclusiveMaximum"]:
                yield f"{path}: {x} >= {s['exclusiveMaximum']}"
        if isinstance(x, str):
            if len(x) < s.get("minLength", 0):
                yield f"{path}: too short"
            if "pattern" in s and not re.search(s["pattern"], x):
                yield f"{path}: {x!r} does not match {s['pattern']}"
        if isinstance(x, dict):
            for k in s.get("required", []):
                if k not in x:
                    yield f"{path}: missing {k!r}"
            props = s.get("properties", {})
            for k, v in x.items():
                if k in props:
                    yield from self._errors(v, props[k], f"{path}.{k}")
                elif isinstance(s.get("additionalProperties"), dict):
                    yield from self._errors(v, s["additionalProperties"], f"{path}.{k}")
        if isinstance(x, list) and "items" in s:
            for i, v in enumerate(x):
                yield from self._errors(v, s["items"], f"{path}[{i}]")

    def is_valid(self, doc) -> bool:
        return next(self._errors(doc, self.root), None) is None

    def validate(self, doc) -> None:
        err = next(self._errors(doc, self.root), None)
        if err is not None:
            raise AssertionError(err)


def _schema():
    return json.loads(resources.files("degrade").joinpath("schemas/verdicts.schema.json").read_text())


def _validator():
    """jsonschema's Draft 2020-12 validator when installed, else the structural one above."""
    try:
        import jsonschema
    except ImportError:
        return _MiniValidator(_schema())
    jsonschema.Draft202012Validator.check_schema(_schema())
    return jsonschema.Draft202012Validator(_schema())


def test_mini_validator_agrees_with_jsonschema(result):
    jsonschema = pytest.importorskip("jsonschema")
    full, mini = jsonschema.Draft202012Validator(_schema()), _MiniValidator(_schema())
    doc = result.to_dict()
    broken = []
    for mutate in (lambda d: d["verdicts"][0].update(status="sick"),
                   lambda d: d["verdicts"][0].pop("onset_step"),
                   lambda d: d["verdicts"][0].update(slowdown="12 %"),
                   lambda d: d["summary"].update(devices=-1),
                   lambda d: d.update(schema_version="2.0"),
                   lambda d: d["jobs"].append({"job": None})):
        d = json.loads(json.dumps(doc))
        mutate(d)
        broken.append(d)
    for d in [doc, *broken]:
        assert full.is_valid(d) == mini.is_valid(d)


def test_slow_device_is_flagged_and_nobody_else(result):
    assert isinstance(result, AnalysisResult)
    assert len(result.verdicts) == 16
    bad = {v.device: v for v in result.verdicts if str(v.status) in ("degraded", "failed")}
    assert set(bad) == {"job0-gpu3"}
    v = bad["job0-gpu3"]
    assert v.job == "job0" and v.host == "node0-0"
    assert v.slowdown == pytest.approx(0.3, abs=0.08)
    if v.onset_step is not None:
        assert abs(v.onset_step - 200) <= 20
    assert v.reasons
    assert not [v for v in result.verdicts if v.job == "job1" and str(v.status) != "healthy"]


def test_document_follows_the_json_schema(result):
    doc = result.to_dict()
    _validator().validate(doc)
    text = result.to_json()
    assert json.loads(text)["summary"]["by_status"]["degraded"] >= 1
    assert "NaN" not in text and "Infinity" not in text
    keys = {"device", "job", "host", "status", "slowdown", "onset_step", "onset_time",
            "detected_step", "detected_time", "score", "reasons"}
    assert all(keys <= set(v) for v in doc["verdicts"])
    assert [(v["job"], v["device"]) for v in doc["verdicts"]] == sorted(
        (v["job"], v["device"]) for v in doc["verdicts"])


def test_schema_rejects_a_broken_document(result):
    validator = _validator()
    doc = result.to_dict()
    doc["verdicts"][0]["status"] = "sick"
    assert not validator.is_valid(doc)
    doc = result.to_dict()
    del doc["verdicts"][0]["onset_step"]
    assert not validator.is_valid(doc)
    doc = result.to_dict()
    doc["verdicts"][0]["slowdown"] = "12 %"
    assert not validator.is_valid(doc)


def test_parquet_round_trip(result, tmp_path):
    from degrade.analyze._formats import read_parquet_document

    path = tmp_path / "v.parquet"
    result.to_parquet(path)
    back = pl.read_parquet(path)
    assert back.height == len(result.verdicts)
    assert back.schema["reasons"] == pl.List(pl.String)
    doc = read_parquet_document(path)
    want = result.to_dict()
    assert doc["summary"] == want["summary"] and doc["jobs"] == want["jobs"]
    for got, exp in zip(doc["verdicts"], want["verdicts"]):
        for k in ("device", "job", "status", "onset_step", "detected_step", "reasons"):
            assert got[k] == exp[k]
        for k in ("slowdown", "score"):
            assert (got[k] is None and exp[k] is None) or math.isclose(got[k], exp[k])


def test_html_report_is_self_contained(result, tmp_path):
    path = tmp_path / "r.html"
    result.to_html(path)
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert "<script" not in text and "<link" not in text and "<img" not in text
    # no URL anywhere but the SVG namespace: the report works offline
    assert set(re.findall(r"https?://[^\s\"'<>]+", text)) <= {"http://www.w3.org/2000/svg"}
    flagged = [v for v in result.flagged() if str(v.status) in ("suspect", "degraded", "failed")]
    assert text.count("<svg") == len(flagged) >= 1
    assert "job0-gpu3" in text and "median of 7 peers" in text
    if flagged[0].onset_step is not None:
        assert ">onset</text>" in text


def test_chunked_equals_whole(tmp_path):
    df = fleet(1, jobs=2, n_step=300)
    whole = analyze(df, chunk_rows=10**9)
    chunked = analyze(df, chunk_rows=500)
    assert chunked.stats["peak_block_rows"] <= 1000 < whole.stats["peak_block_rows"]
    assert [v.to_dict() for v in chunked.verdicts] == [v.to_dict() for v in whole.verdicts]
    assert [e.to_dict() for e in chunked.jobs] == [e.to_dict() for e in whole.jobs]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_chunks_of_aliased_input_filter_in_the_scan(tmp_path, fmt):
    from degrade.analyze._inputs import resolve_inputs
    from degrade.analyze._plan import _timing_where, scan_kind
    from degrade.analyze._warnings import WarningLog

    df = fleet(4, jobs=2, n_step=300, slow={1: 6}, onset=120)
    # column aliases and a row order of (job, step, device) then shuffled, with duplicates
    aliased = pl.concat([df, df.slice(700, 5)]).sample(fraction=1.0, shuffle=True, seed=2).rename(
        {"device": "uuid", "step": "iteration", "compute_time": "compute_seconds", "job": "job_id"})
    path = tmp_path / f"t.{fmt}"
    getattr(aliased, f"write_{fmt}")(path)
    sources = resolve_inputs([str(path)], WarningLog())
    plan = scan_kind(sources, "timings", where=_timing_where("job1", 100, 200), rows=True).explain()
    assert "SORT" not in plan and "OPAQUE" not in plan  # nothing between the filter and the scan
    selection = plan.split("SCAN")[1]
    assert '"job1"' in selection and "100" in selection and "200" in selection
    chunked = analyze(str(path), chunk_rows=700)
    whole = analyze(df)
    assert chunked.stats["peak_block_rows"] <= 1400 and chunked.stats["blocks"] > 4
    assert [v.to_dict() for v in chunked.verdicts] == [v.to_dict() for v in whole.verdicts]
    assert {(w.kind, w.count) for w in chunked.warnings} == {("duplicate_rows", 5)}
    assert "job1-gpu6" in {v.device for v in chunked.flagged()}


def test_counter_chunks_filter_in_the_scan(tmp_path):
    from degrade.analyze._inputs import resolve_inputs
    from degrade.analyze._plan import scan_kind
    from degrade.analyze._warnings import WarningLog
    from degrade.simulate import simulate

    paths = simulate("tiny").write(tmp_path)
    sources = resolve_inputs([paths["counters"]], WarningLog())
    dev = scan_kind(sources, "counters").collect().get_column("device")[0]
    cond = (pl.col("device").is_in([dev])) & (pl.col("timestamp") >= 0.0)
    plan = scan_kind(sources, "counters", where=cond).explain()
    # below the reader's sort/de-duplication (an opaque node) the scan already filters
    assert dev in plan.split("SCAN")[1]
    got = scan_kind(sources, "counters", where=cond).collect()
    assert got.equals(scan_kind(sources, "counters").collect().filter(cond))


def test_hive_partitioned_dataset_equals_frame(tmp_path):
    df = fleet(2, jobs=3, n_step=250, slow={1: 5}, onset=100)
    ct = df["compute_time"].to_numpy().copy()
    ct[[3, 4000]] = [-1.0, np.inf]
    # duplicates and bad values in a hive dataset read in chunks and in one frame: both
    # must drop, count and judge the same way
    df = pl.concat([df.with_columns(pl.Series("compute_time", ct)), df.slice(500, 4)])
    root = tmp_path / "hive"
    df.write_parquet(root, partition_by="job")
    from_files = analyze(root, chunk_rows=1000)
    from_frame = analyze(df)
    assert [v.to_dict() for v in from_files.verdicts] == [v.to_dict() for v in from_frame.verdicts]
    assert [e.to_dict() for e in from_files.jobs] == [e.to_dict() for e in from_frame.jobs]
    wf = [(w.kind, w.column, w.count) for w in from_files.warnings]
    assert wf == [(w.kind, w.column, w.count) for w in from_frame.warnings]
    assert sum(c for k, _, c in wf if k == "duplicate_rows") == 4
    assert sum(c for k, _, c in wf if k == "invalid_timing") == 2
    assert from_files.stats["peak_block_rows"] <= 2000  # never a whole partition in memory
    assert "job1-gpu5" in {v.device for v in from_files.flagged()}


def test_bad_rows_are_counted_not_silent():
    df = fleet(3, jobs=1, n_step=300)
    n = df.height
    ct = df["compute_time"].to_numpy().copy()
    ct[[5, 50, 500]] = [np.nan, -1.0, 0.0]
    df = df.with_columns(pl.Series("compute_time", ct))
    df = pl.concat([df, df.slice(100, 7)])  # 7 duplicate (device, step) rows
    res = analyze(df)
    w = {(x.kind, x.column): x.count for x in res.warnings}
    assert w[("duplicate_rows", None)] == 7
    assert w[("invalid_timing", "compute_time")] == 3
    assert res.stats["timing_rows"] == n  # duplicates dropped by the reader, and counted
    assert "rows skipped or repaired" in res.summary()
    assert {d["kind"] for d in res.to_dict()["warnings"]} >= {"duplicate_rows", "invalid_timing"}


def test_unsorted_input_gives_the_same_verdicts():
    df = fleet(4, jobs=1, n_step=300)
    shuffled = df.sample(fraction=1.0, shuffle=True, seed=7)
    a, b = analyze(df), analyze(shuffled)
    assert [v.to_dict() for v in a.verdicts] == [v.to_dict() for v in b.verdicts]


def test_elastic_device_leaves_and_joins():
    df = fleet(5, jobs=1, n_step=400, slow={})
    gone = (pl.col("device") == "job0-gpu2") & (pl.col("step") >= 150) & (pl.col("step") < 300)
    res = analyze(df.filter(~gone))
    assert len(res.verdicts) == 8
    assert not [v for v in res.verdicts if str(v.status) in ("degraded", "failed")]


def test_truth_file_is_ignored_and_inputs_recorded(tmp_path):
    df = fleet(6, jobs=1, n_step=200, slow={})
    df.write_parquet(tmp_path / "timings.parquet")
    pl.DataFrame({"device": ["job0-gpu1"], "job": ["job0"], "fault": ["none"], "onset_step": [None],
                  "expected_status": ["healthy"]}).write_parquet(tmp_path / "truth.parquet")
    res = analyze(tmp_path)
    assert res.inputs == [{"source": str(tmp_path / "timings.parquet"), "kind": "timings"}]
    assert any(w.kind == "ignored_file" and "truth.parquet" in w.message for w in res.warnings)


def test_bad_arguments_raise_one_clear_error(tmp_path):
    df = fleet(0, jobs=1, n_step=50)
    with pytest.raises(InputError, match="no such file or directory: .*nope"):
        analyze(tmp_path / "nope.parquet")
    with pytest.raises(InputError, match="engine must be one of polars, dask"):
        analyze(df, engine="spark")
    with pytest.raises(InputError, match="min_slowdown"):
        analyze(df, min_slowdown=1.5)
    with pytest.raises(InputError, match="no file matches"):
        analyze(str(tmp_path / "*.parquet"))
    (tmp_path / "junk.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(InputError, match="cannot read .*junk.parquet"):
        analyze(tmp_path / "junk.parquet")
    with pytest.raises(SchemaError, match="cannot tell timings from counters"):
        analyze(pl.DataFrame({"a": [1], "b": [2]}))


def test_progress_callback_sees_every_row():
    df = fleet(7, jobs=2, n_step=100)
    seen = []
    analyze(df, progress=lambda done, total: seen.append((done, total)), chunk_rows=300)
    assert seen[-1] == (df.height, df.height)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_min_slowdown_is_passed_to_the_engine():
    df = fleet(8, jobs=1, n_step=200)
    assert analyze(df, min_slowdown=0.2).config["min_slowdown"] == 0.2
