"""Cohort comparison (degrade compare / degrade.compare) on simulated roll-outs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

pl = pytest.importorskip("polars")

import degrade  # noqa: E402
from degrade.cli import main  # noqa: E402
from degrade.cohort import compare  # noqa: E402
from degrade.cohort._stats import Stratum, contrast, t_quantile, t_sf  # noqa: E402
from degrade.errors import InputError  # noqa: E402
from degrade.simulate import simulate_rollout  # noqa: E402

LABEL = "DCGM_FI_DRIVER_VERSION"
OLD, NEW = "550.54.15", "570.86.10"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- the statistics


@pytest.mark.parametrize(
    "p, df, want",  # Student t quantiles from the standard tables
    [
        (0.975, 1, 12.706204736),
        (0.975, 3, 3.182446305),
        (0.975, 10, 2.228138852),
        (0.975, 30, 2.042272456),
        (0.95, 5, 2.015048373),
        (0.995, 20, 2.845339707),
        (0.975, math.inf, 1.959963985),
    ],
)
def test_t_quantile_matches_tables(p, df, want):
    assert t_quantile(p, df) == pytest.approx(want, rel=1e-7)
    assert t_sf(want, df) == pytest.approx(1 - p, rel=1e-6)


def test_one_stratum_is_the_pooled_two_sample_t():
    rng = np.random.default_rng(5)
    new, ref = rng.normal(0.03, 0.01, 7), rng.normal(0.0, 0.01, 9)
    k = contrast([Stratum("j", "g", ref=ref, new=new)])
    sp2 = (((new - new.mean()) ** 2).sum() + ((ref - ref.mean()) ** 2).sum()) / (7 + 9 - 2)
    se = math.sqrt(sp2 * (1 / 7 + 1 / 9))
    assert k.estimate == pytest.approx(new.mean() - ref.mean(), abs=1e-15)
    assert k.se == pytest.approx(se, rel=1e-12)
    assert k.df == pytest.approx(14.0, rel=1e-12)
    q = t_quantile(0.975, 14)
    assert (k.ci_low, k.ci_high) == pytest.approx(
        (k.estimate - q * se, k.estimate + q * se), rel=1e-9
    )


def test_strata_are_weighted_by_size_and_their_variances_combine():
    rng = np.random.default_rng(6)
    s1 = Stratum("a", "g", ref=rng.normal(0, 0.01, 4), new=rng.normal(0.02, 0.01, 4))
    s2 = Stratum("b", "g", ref=rng.normal(0, 0.03, 12), new=rng.normal(0.02, 0.03, 12))
    k = contrast([s1, s2])
    w = np.array([1 / (1 / 4 + 1 / 4), 1 / (1 / 12 + 1 / 12)])
    d = np.array([s.new.mean() - s.ref.mean() for s in (s1, s2)])
    assert k.estimate == pytest.approx(float((w * d).sum() / w.sum()), abs=1e-15)
    var = [
        (((s.new - s.new.mean()) ** 2).sum() + ((s.ref - s.ref.mean()) ** 2).sum())
        / (2 * s.n_new - 2)
        for s in (s1, s2)
    ]
    terms = [w[i] ** 2 * var[i] * (2 / [4, 12][i]) / w.sum() ** 2 for i in range(2)]
    assert k.se == pytest.approx(math.sqrt(sum(terms)), rel=1e-12)
    assert k.df == pytest.approx(
        sum(terms) ** 2 / (terms[0] ** 2 / 6 + terms[1] ** 2 / 22), rel=1e-12
    )
    assert min(6, 22) <= k.df <= 28


# --------------------------------------------------------------------------- roll-outs


def _compare(ro, **kw):
    return compare(ro.timings, LABEL, labels=ro.labels, **kw)


def test_three_percent_regression_on_a_new_driver_is_found():
    ro = simulate_rollout(jobs=4, hosts=4, steps=200, slowdown=0.03, seed=11)
    res = _compare(ro)
    r = res.result(NEW)
    assert res.reference == OLD  # equal sizes: the oldest version
    assert r.verdict == "regression"
    assert r.ci_low < 0.03 < r.ci_high
    assert 0.02 < r.slowdown < 0.04
    assert r.jobs == 4 and r.devices == 4 * 16
    assert res.exit_code("regression") == 4 and res.exit_code(None) == 0


def test_a_faster_driver_is_an_improvement_not_a_regression():
    ro = simulate_rollout(jobs=3, hosts=4, steps=150, slowdown=-0.03, seed=12)
    r = _compare(ro).result(NEW)
    assert r.verdict == "improvement" and r.ci_high < 0


def test_null_rollouts_are_not_flagged():
    verdicts = [
        _compare(simulate_rollout(jobs=4, hosts=4, steps=150, slowdown=0.0, seed=s))
        .result(NEW)
        .verdict
        for s in range(5)
    ]
    # each is a 2.5 % one-sided false positive at most; five seeds, at most one may be flagged
    assert sum(v == "regression" for v in verdicts) <= 1
    assert all(v in ("no difference", "regression", "improvement") for v in verdicts)


def test_mixed_job_kinds_compare_within_each_stage():
    ro = simulate_rollout(
        jobs=3,
        hosts=4,
        steps=150,
        slowdown=0.04,
        kinds=("pipeline", "inference", "data_parallel"),
        seed=13,
    )
    r = _compare(ro).result(NEW)
    groups = {(s["job"], s["group"]) for s in r.strata}
    assert ("job000", "stage0") in groups and ("job001", "replica") in groups
    assert r.verdict == "regression" and r.ci_low < 0.04 < r.ci_high


def test_ci_coverage_and_false_positive_rate_by_simulation():
    """95 % CIs cover the true slowdown about 95 % of the time; null roll-outs flagged rarely.

    R = 60 replicates per setting: the binomial sd of a 0.95 coverage is 0.028, so the
    lower bound 0.85 is 3.5 sd below; the mean standard error must match the spread of
    the estimates (0.7..1.4: the sd of a sample sd of 60 is about 9 %).
    """
    R = 60
    for slow in (0.0, 0.02):
        cover, est, se, flagged = 0, [], [], 0
        for s in range(R):
            ro = simulate_rollout(jobs=3, hosts=2, steps=100, slowdown=slow, seed=500 + s)
            r = _compare(ro).result(NEW)
            cover += r.ci_low <= slow <= r.ci_high
            flagged += r.verdict == "regression"
            est.append(math.log1p(r.slowdown))
            se.append(
                (math.log1p(r.ci_high) - math.log1p(r.ci_low)) / (2 * t_quantile(0.975, r.df))
            )
        assert cover / R >= 0.85, (slow, cover)
        assert 0.7 < np.mean(se) / np.std(est, ddof=1) < 1.4, (slow, np.mean(se), np.std(est))
        assert abs(np.mean(est) - math.log1p(slow)) < 3 * np.std(est) / math.sqrt(R)
        if slow == 0.0:
            assert flagged / R <= 0.1  # one-sided 2.5 % expected; 6 of 60 is 4.6 sd above
        else:
            assert flagged / R >= 0.9


def test_confounded_cohorts_are_refused():
    ro = simulate_rollout(jobs=4, hosts=2, steps=100, slowdown=0.03, confounded=True, seed=14)
    # the new driver ran only on the inference jobs: any difference would be between different work
    with pytest.raises(InputError, match="never ran the same work") as exc:
        _compare(ro)
    assert "confounded" in str(exc.value) and NEW in str(exc.value)


def test_too_few_devices_in_each_cohort_is_not_enough_overlap():
    ro = simulate_rollout(jobs=2, hosts=2, gpus_per_host=2, steps=100, slowdown=0.03, seed=15)
    with pytest.raises(InputError, match="never ran the same work"):
        _compare(ro, min_devices=3)
    # by hosts there is one unit of each cohort per job: no spread to estimate, refused too
    with pytest.raises(InputError, match="hosts of both"):
        _compare(ro, unit="host")


def test_one_cohort_without_overlap_among_others_gets_its_verdict():
    ro = simulate_rollout(jobs=3, hosts=4, steps=100, slowdown=0.03, seed=16)
    # a third driver on one host of a job of its own: reported, not refused
    extra = simulate_rollout(
        jobs=1, hosts=2, steps=100, slowdown=0.0, seed=17, old="535.1", new="535.2"
    )
    extra_t = extra.timings.with_columns(
        pl.lit("job-x").alias("job"),
        ("x-" + pl.col("device")).alias("device"),
        ("x-" + pl.col("host")).alias("host"),
    )
    lab = pl.concat(
        [
            ro.labels,
            pl.DataFrame({"host": extra_t["host"].unique().to_list()}).with_columns(
                pl.lit("580.1").alias(LABEL)
            ),
        ]
    )
    res = compare(pl.concat([ro.timings, extra_t]), LABEL, labels=lab)
    assert res.result("580.1").verdict == "not enough overlap"
    assert res.result(NEW).verdict == "regression"


def test_host_units_give_an_honest_interval():
    ro = simulate_rollout(jobs=4, hosts=6, steps=100, slowdown=0.03, seed=18)
    by_dev, by_host = _compare(ro).result(NEW), _compare(ro, unit="host").result(NEW)
    assert by_host.devices == 4 * 3 and by_dev.devices == 4 * 3 * 8
    assert by_host.df < by_dev.df
    assert by_host.ci_low < 0.03 < by_host.ci_high


def test_outlier_gpu_is_left_out_and_listed():
    ro = simulate_rollout(jobs=2, hosts=4, steps=150, slowdown=0.0, seed=19)
    bad = ro.timings["device"][0]
    t = ro.timings.with_columns(
        pl.when(pl.col("device") == bad)
        .then(pl.col("compute_time") * 1.25)
        .otherwise(pl.col("compute_time"))
    )
    res = compare(t, LABEL, labels=ro.labels)
    assert [e["device"] for e in res.to_dict()["excluded"]] == [bad]
    kept = compare(t, LABEL, labels=ro.labels, outlier=None)
    assert kept.to_dict()["excluded"] == []
    assert abs(kept.result(NEW).slowdown - res.result(NEW).slowdown) > 0.003


# --------------------------------------------------------------------------- where the label comes from


def test_label_from_the_counters_follows_the_rollout_in_time():
    """A GPU upgraded between two jobs is in the old cohort for the first, the new for the second."""
    ro = simulate_rollout(jobs=1, hosts=4, steps=150, slowdown=0.03, seed=20)
    a = ro.timings
    span = a["timestamp"].max() - a["timestamp"].min() + 3600.0
    b = a.with_columns(pl.lit("job-later").alias("job"), pl.col("timestamp") + span)
    c = ro.counters.select("device", "timestamp", "host", "sm_clock_mhz", LABEL)
    # before the upgrade every host ran the old driver: the first job's new hosts were upgraded later
    c_old = c.with_columns(pl.lit(OLD).alias(LABEL))
    c_new = c.with_columns(pl.col("timestamp") + span)
    timings = pl.concat(
        [
            a.with_columns(
                pl.col("compute_time")
                / pl.when(
                    pl.col("host").is_in(ro.labels.filter(pl.col(LABEL) == NEW)["host"].to_list())
                )
                .then(1.03)
                .otherwise(1.0)
            ),
            b,
        ]
    )
    res = compare([timings, pl.concat([c_old, c_new])], LABEL)
    assert res.label_source.startswith("counters")
    r = res.result(NEW)
    # in the first job every GPU still had the old driver
    assert [s["job"] for s in r.strata] == ["job-later"]
    assert r.verdict == "regression"


def test_dcgm_exporter_label_passes_through_the_readers(tmp_path):
    """dcgm-exporter writes a ``label`` row's field name as the label (gpu_collector.go toMetric)."""
    from degrade.io import read_counters

    long = pl.DataFrame(
        {
            "__name__": ["DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_SM_CLOCK"],
            "UUID": ["GPU-a", "GPU-a", "GPU-b"],
            "Hostname": ["n1", "n1", "n2"],
            LABEL: [OLD, OLD, NEW],
            "value": [1980.0, 61.0, 1965.0],
            "timestamp": [1.7e9, 1.7e9, 1.7e9],
        }
    )
    wide = pl.DataFrame(
        {
            "UUID": ["GPU-a"],
            "Hostname": ["n1"],
            "timestamp": [1.7e9],
            "DCGM_FI_DEV_SM_CLOCK": [1980.0],
            LABEL: [OLD],
        }
    )
    scrape = tmp_path / "scrape.prom"  # a saved scrape, as dcgm-exporter prints it
    scrape.write_text(
        "# TYPE DCGM_FI_DEV_SM_CLOCK gauge\n"
        'DCGM_FI_DEV_SM_CLOCK{gpu="0",UUID="GPU-a",device="nvidia0",Hostname="n1",'
        f'{LABEL}="{OLD}"}} 1980 1767225600000\n'
        'DCGM_FI_DEV_SM_CLOCK{gpu="1",UUID="GPU-b",device="nvidia1",Hostname="n2",'
        f'{LABEL}="{NEW}"}} 1965 1767225600000\n'
    )
    got = read_counters(str(scrape)).collect()
    assert dict(zip(got["device"], got[LABEL])) == {"GPU-a": OLD, "GPU-b": NEW}
    for frame in (long, wide):
        got = read_counters(frame).collect()
        assert LABEL in got.columns
        assert dict(zip(got["device"], got[LABEL])) == (
            {"GPU-a": OLD, "GPU-b": NEW} if frame is long else {"GPU-a": OLD}
        )


def test_label_from_a_timings_column_and_by_device_file(tmp_path):
    ro = simulate_rollout(jobs=2, hosts=4, steps=100, slowdown=0.03, seed=21)
    t = ro.timings.join(ro.labels.rename({LABEL: "driver"}), on="host")
    res = compare(t, "DRIVER")  # case-insensitive
    assert res.label_source == "timings column 'driver'" and res.result(NEW).verdict == "regression"
    by_dev = t.select("device", "driver").unique()
    path = tmp_path / "labels.csv"
    by_dev.write_csv(path)
    # a device upgraded during its job belongs to neither cohort there
    dev = t["device"][0]
    moved = t.with_columns(
        pl.when((pl.col("device") == dev) & (pl.col("step") > 50))
        .then(pl.lit("999.1"))
        .otherwise(pl.col("driver"))
        .alias("driver")
    )
    res3 = compare(moved, "driver")
    assert any("1 devices changed driver during their job" in w for w in res3.warnings)
    assert dev not in res3.devices["device"].to_list()
    res2 = compare(ro.timings, "driver", labels=str(path))
    assert "by device" in res2.label_source
    assert res2.result(NEW).slowdown == pytest.approx(res.result(NEW).slowdown, abs=1e-12)


# --------------------------------------------------------------------------- bad input


def test_bad_input_gives_one_clear_error(tmp_path):
    ro = simulate_rollout(jobs=2, hosts=2, steps=60, slowdown=0.0, seed=22)
    with pytest.raises(InputError, match="no label 'FIRMWARE'"):
        compare(ro.timings, "FIRMWARE")
    with pytest.raises(InputError, match="only one value of DCGM_FI_DRIVER_VERSION"):
        compare(ro.timings, LABEL, labels=ro.labels.with_columns(pl.lit(OLD).alias(LABEL)))
    with pytest.raises(InputError, match="reference '999' is not a value"):
        compare(ro.timings, LABEL, labels=ro.labels, reference="999")
    with pytest.raises(InputError, match="no device or host column"):
        compare(ro.timings, LABEL, labels=ro.labels.rename({"host": "where"}))
    two = pl.concat([ro.labels, ro.labels.head(1).with_columns(pl.lit("x").alias(LABEL))])
    with pytest.raises(InputError, match="host='node-0000' has 2 values"):
        compare(ro.timings, LABEL, labels=two)
    with pytest.raises(InputError, match="no such labels file"):
        compare(ro.timings, LABEL, labels=str(tmp_path / "nope.csv"))
    with pytest.raises(InputError, match="synchronous steps"):
        compare(ro.timings.drop("compute_time"), LABEL, labels=ro.labels)
    with pytest.raises(InputError, match="no step timings"):
        compare(ro.counters, LABEL)
    path = tmp_path / "labels.csv"
    ro.labels.write_csv(path)
    with pytest.raises(InputError, match="goes to --labels FILE"):
        compare([ro.timings, str(path)], LABEL)
    for kw in ({"unit": "rack"}, {"confidence": 1.5}, {"min_devices": 1}, {"metric": "power"}):
        with pytest.raises(InputError):
            compare(ro.timings, LABEL, labels=ro.labels, **kw)


# --------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def rollout_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("rollout")
    simulate_rollout(jobs=3, hosts=4, steps=150, slowdown=0.03, seed=23).write(d)
    return str(d)


def test_cli_table_json_and_fail_on(rollout_dir, tmp_path, capsys):
    assert main(["compare", rollout_dir, "--by", LABEL]) == 0
    out = capsys.readouterr().out
    assert "regression" in out and NEW in out and "95% CI" in out
    assert main(["compare", rollout_dir, "--by", LABEL, "--fail-on", "regression"]) == 4
    capsys.readouterr()
    path = tmp_path / "out.json"
    assert main(["compare", rollout_dir, "--by", LABEL, "--format", "json", "-o", str(path)]) == 0
    doc = json.loads(path.read_text())
    jsonschema = pytest.importorskip("jsonschema")
    with open(
        os.path.join(ROOT, "degrade", "schemas", "compare.schema.json"), encoding="utf-8"
    ) as fh:
        jsonschema.validate(doc, json.load(fh))
    assert doc["reference"] == OLD and doc["cohorts"][1]["verdict"] == "regression"
    # a gate at 10 %: the 3 % regression is not confidently above it
    assert (
        main(
            [
                "compare",
                rollout_dir,
                "--by",
                LABEL,
                "--min-slowdown",
                "0.1",
                "--fail-on",
                "regression",
            ]
        )
        == 0
    )


def test_cli_bad_label_is_one_line_exit_2(rollout_dir):
    env = {**os.environ, "PYTHONPATH": ROOT}
    p = subprocess.run(
        [sys.executable, "-m", "degrade", "compare", rollout_dir, "--by", "VBIOS"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "no label 'VBIOS'" in lines[0] and "Traceback" not in p.stderr


def test_cli_unwritable_output_is_one_line_and_leaves_the_old_file(rollout_dir, tmp_path, capsys):
    out = tmp_path / "old.txt"
    out.write_text("previous\n")
    missing = tmp_path / "no-such-dir" / "x.txt"
    assert main(["compare", rollout_dir, "--by", LABEL, "-o", str(missing)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("degrade compare: error: cannot write the output")
    assert not missing.parent.exists()
    assert main(["compare", rollout_dir, "--by", LABEL, "-o", str(out)]) == 0
    assert "95% CI" in out.read_text()  # replaced whole, by rename
    assert [p.name for p in tmp_path.iterdir()] == ["old.txt"]  # no temp file left behind


def test_demo_worked_example_runs():
    """The example of docs/compare.md: the demo fleet with a driver label joined by host."""
    labels = os.path.join(ROOT, "docs", "examples", "demo-driver-labels.csv")
    res = compare(os.path.join(ROOT, "datasets", "demo"), LABEL, labels=labels, reference=OLD)
    r = res.result(NEW)
    assert r.verdict == "no difference" and r.jobs == 2  # serve ran on one host: no overlap there
    assert r.ci_low < 0 < r.ci_high


def test_public_api():
    assert degrade.compare is compare
    assert "compare" in degrade.__all__ and "CohortComparison" in degrade.__all__


def test_simulated_rollout_layout():
    ro = simulate_rollout(jobs=4, hosts=3, steps=40, new_fraction=0.34, seed=24)
    per_job = ro.timings.join(ro.labels, on="host").group_by("job").agg(pl.col(LABEL).n_unique())
    assert per_job[LABEL].to_list() == [2] * 4  # both cohorts in every job
    conf = simulate_rollout(jobs=4, hosts=2, steps=40, confounded=True, seed=24)
    j = (
        conf.timings.join(conf.labels, on="host")
        .group_by("job")
        .agg(pl.col(LABEL).first(), pl.col(LABEL).n_unique().alias("k"), pl.col("group").first())
    )
    assert j["k"].to_list() == [1] * 4
    assert set(zip(j[LABEL], j["group"])) == {(OLD, "dp"), (NEW, "replica")}
    with pytest.raises(InputError):
        simulate_rollout(kinds=("batch",))


def test_devices_the_engine_flags_can_be_left_out():
    """The verdict engine's evidence: a GPU it judges degraded is a device fault, not its cohort's."""
    ro = simulate_rollout(jobs=2, hosts=4, steps=300, slowdown=0.0, seed=30)
    bad = ro.timings["device"][0]
    t = ro.timings.with_columns(
        pl.when(pl.col("device") == bad)
        .then(pl.col("compute_time") * 1.12)
        .otherwise(pl.col("compute_time"))
    )
    res = compare(t, LABEL, labels=ro.labels, outlier=None, exclude_flagged=True)
    ex = res.to_dict()["excluded"]
    assert [e["device"] for e in ex] == [bad] and "verdict engine" in ex[0]["reason"]
    # the same with an analysis already made
    res2 = compare(t, LABEL, labels=ro.labels, outlier=None, exclude_flagged=degrade.analyze(t))
    assert res2.result(NEW).slowdown == pytest.approx(res.result(NEW).slowdown, abs=1e-12)
    kept = compare(t, LABEL, labels=ro.labels, outlier=None)
    assert kept.to_dict()["excluded"] == []
    with pytest.raises(InputError, match="exclude_flagged"):
        compare(t, LABEL, labels=ro.labels, exclude_flagged="yes")


def test_a_host_wide_effect_is_reported_and_host_units_stay_honest():
    """Drivers are per node: when hosts differ besides the driver, devices are not independent."""
    ro = simulate_rollout(jobs=4, hosts=6, steps=100, slowdown=0.03, host_sd=0.02, seed=31)
    res = _compare(ro)
    assert res.host_clustering["p_value"] < 0.01
    assert any("--unit host" in w for w in res.warnings)
    by_host = _compare(ro, unit="host")
    assert by_host.host_clustering is None
    r = by_host.result(NEW)
    assert r.ci_low < 0.03 < r.ci_high
    assert (r.ci_high - r.ci_low) > (res.result(NEW).ci_high - res.result(NEW).ci_low)
    # without a host effect no warning (the ANOVA's 1 % level; seeded)
    calm = _compare(simulate_rollout(jobs=4, hosts=6, steps=100, slowdown=0.03, seed=31))
    assert calm.host_clustering["p_value"] > 0.01
    assert not any("--unit host" in w for w in calm.warnings)


def test_jobs_read_in_chunks_give_the_same_answer(tmp_path):
    """Bounded memory: whole jobs at a time, from files split by rank, equal to one read."""
    ro = simulate_rollout(jobs=4, hosts=2, steps=80, slowdown=0.03, seed=32)
    t = ro.timings.join(ro.labels, on="host")
    # a job's devices spread over two files: every chunk must read its jobs from both
    t.filter(pl.col("rank") % 2 == 0).write_parquet(tmp_path / "even.parquet")
    t.filter(pl.col("rank") % 2 == 1).write_parquet(tmp_path / "odd.parquet")
    whole = compare(t, LABEL).to_dict()
    for chunk in (1, 3000, 10**9):
        got = compare(str(tmp_path), LABEL, chunk_rows=chunk).to_dict()
        for a, b in zip(got["cohorts"], whole["cohorts"], strict=True):
            # the same numbers up to the order of float sums (rows come in another order)
            assert (a["cohort"], a["verdict"], a["devices"]) == (
                b["cohort"],
                b["verdict"],
                b["devices"],
            )
            for k in ("slowdown", "ci_low", "ci_high", "p_value", "df"):
                assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-15), (chunk, k)
