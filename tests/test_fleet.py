"""Fleet memory: per-job evidence, its combination across jobs, the history, the simulator, CLI and agent."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[1]


def _engine_job(x, step=None):
    from degrade.verdict import VerdictEngine

    n = x.shape[1]
    eng = VerdictEngine()
    vals = {"compute_time": x}
    if step is not None:
        vals["step_time"] = step
    eng.run([f"g{i}" for i in range(n)], vals)
    return eng


def _job(spec, offsets, seed, steps=200):
    """Verdict (status, excess, se) per device of one simulated job with persistent offsets."""
    from degrade.simulate import simulate_times

    tm = simulate_times(steps, offsets.size, spec, seed=seed)
    x = tm.compute * (1.0 + offsets)[None, :]
    eng = _engine_job(x)
    return [
        (str(v.status), v.signals["peer_excess"], v.signals["peer_excess_se"])
        for v in eng.verdicts()
    ]


# ------------------------------------------------------------ per-job evidence


def test_peer_excess_matches_numpy_reference():
    from degrade.verdict import _layout as K

    rng = np.random.default_rng(4)
    T, N = 180, 7
    x = 0.2 * np.exp(rng.normal(0.0, 0.03, (T, N)))
    x[:, 2] *= 1.05
    x[17, 4] = np.nan  # missing sample: not a deviation
    eng = _engine_job(x)
    snap = eng.snapshot()
    lx = np.log(x)
    for i in range(N):
        others = np.delete(lx, i, axis=1)
        ref = lx[:, i] - np.nanmedian(others, axis=1)
        ref = ref[np.isfinite(ref)]
        n = int(snap.timing_peer[i, K.C_HN])
        assert n == ref.size
        np.testing.assert_allclose(snap.history_peer[i, :n], ref, rtol=0, atol=1e-12)
        row = snap.timing_peer[i]
        phi = min(max(row[K.C_PHIU], 0.0), 0.999)
        lim = 3.0 * row[K.C_SIGE] / math.sqrt(1 - phi * phi)
        med = np.median(ref)
        w = np.clip(ref, med - lim, med + lim)
        bm = w[: 10 * (w.size // 10)].reshape(10, -1).mean(axis=1)
        se_ref = max(row[K.C_SIG] / math.sqrt(w.size), bm.std(ddof=1) / math.sqrt(10))
        s = eng.verdicts()[i].signals
        assert s["peer_excess"] == pytest.approx(w.mean(), abs=1e-12)
        assert s["peer_excess_se"] == pytest.approx(se_ref, rel=1e-12)
        assert s["peer_excess_samples"] == ref.size
    assert eng.verdicts()[2].signals["peer_excess"] == pytest.approx(math.log(1.05), abs=0.01)


def test_peer_excess_uses_the_last_256_deviations_in_time_order():
    rng = np.random.default_rng(1)
    x = 0.1 * np.exp(rng.normal(0.0, 0.02, (600, 6)))
    x[:300, 0] *= 1.5  # slow early, healthy for the last 300 steps
    s = _engine_job(x).verdicts()[0].signals
    assert s["peer_excess_samples"] == 256
    assert abs(s["peer_excess"]) < 0.01


def test_too_little_data_has_no_estimate():
    x = np.full((5, 4), 0.1)
    s = _engine_job(x).verdicts()[0].signals
    assert s["peer_excess"] is None and s["peer_excess_samples"] == 0


# ------------------------------------------------------------ combination


def test_accumulate_is_inverse_variance_weighting_with_alpha_spending():
    from degrade.fleet import accumulate, threshold

    ev = [
        ("a", 0.05, 0.02),
        ("b", None, 0.01),
        ("c", 0.02, 0.01),
        ("d", 0.04, 0.005),
        ("e", 0.1, 0.0),
    ]
    acc = accumulate(ev, mu0=0.01, alpha=1e-3)
    x = np.array([0.05, 0.02, 0.04])
    w = 1.0 / np.array([0.02, 0.01, 0.005]) ** 2
    m = (w * x).sum() / w.sum()
    assert acc.looks == 3
    assert acc.estimate == pytest.approx(m)
    assert acc.se == pytest.approx(w.sum() ** -0.5)
    assert acc.z == pytest.approx((m - 0.01) * math.sqrt(w.sum()))
    assert acc.threshold == pytest.approx(threshold(3, 1e-3))
    # the spent levels sum to alpha over any number of looks
    from statistics import NormalDist

    spent = sum(1 - NormalDist().cdf(threshold(k, 0.01)) for k in range(1, 20001))
    assert spent == pytest.approx(0.01 * (1 - 1 / 20001), rel=1e-6)
    # once found, found stays (with the look and job where it crossed)
    acc = accumulate([("a", 0.2, 0.01), ("b", -0.3, 0.01)], mu0=0.03, alpha=1e-4)
    assert acc.found and acc.found_job == "a" and acc.found_look == 1 and acc.z < 0


def test_power_six_percent_in_five_short_jobs():
    """A device 6 % slow in five 200-step jobs: found by the history, rarely by one job alone."""
    from degrade.fleet import accumulate
    from degrade.simulate import NoiseSpec

    spec = NoiseSpec(family="t", nu=3.0, sd=0.04, phi=0.5)
    trials, found, single = 24, 0, 0
    for r in range(trials):
        rng = np.random.default_rng(1000 + r)
        ev = []
        for j in range(5):
            off = rng.uniform(-0.02, 0.02, 8)
            off[0] = 0.06
            status, x, s = _job(spec, off, int(rng.integers(2**62)))[0]
            single += status == "degraded"
            ev.append((f"j{j}", x, s))
        found += accumulate(ev, mu0=math.log1p(0.03), alpha=1e-4).found
    # bench/bench_fleet.py: 1.000 over 200 trials; single job ~0.06 of jobs
    assert found >= 21, found
    assert single / (5 * trials) < 0.3


def test_false_positive_rate_of_healthy_devices_at_the_boundary():
    """Devices exactly healthy_offset above their peers, 8 short jobs each: flagged at most at rate alpha."""
    from degrade.fleet import accumulate
    from degrade.simulate import NoiseSpec

    spec = NoiseSpec(sd=0.03, phi=0.7)
    alpha, n = 0.05, 16
    flagged = total = 0
    zs = []
    for r in range(12):
        rng = np.random.default_rng(5000 + r)
        off = np.zeros(n)
        off[:4] = 0.03
        ev = [[] for _ in range(4)]
        for j in range(8):
            for d, (_, x, s) in enumerate(_job(spec, off, int(rng.integers(2**62)))[:4]):
                ev[d].append((f"j{j}", x, s))
                zs.append((x - math.log1p(0.03)) / s)
        for d in range(4):
            flagged += accumulate(ev[d], mu0=math.log1p(0.03), alpha=alpha).found
            total += 1
    zs = np.asarray(zs)
    # 48 histories: binomial(48, <=0.05) exceeds 7 with probability < 1e-3
    assert flagged <= 7, flagged
    # per-job z: no more than the nominal one-sided 5 % above 1.645 (384 jobs, 3 sigma slack)
    assert (zs > 1.645).mean() <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / zs.size)


# ------------------------------------------------------------ history


def _v(dev, job, status, t, host="n0", slowdown=None, excess=None, se=None):
    return {
        "device": dev,
        "job": job,
        "status": status,
        "host": host,
        "slowdown": slowdown,
        "signals": {
            "first_time": t,
            "last_time": t + 600,
            "peer_excess": excess,
            "peer_excess_se": se,
            "peer_excess_samples": 200,
        },
    }


def test_history_repeat_offender_replacement_and_lookup(tmp_path):
    from degrade.errors import InputError
    from degrade.fleet import FleetHistory

    h = FleetHistory()
    for k, job in enumerate(("a", "b", "c")):
        h.add_verdicts(
            [
                _v(
                    "GPU-aa01",
                    job,
                    "degraded" if job != "b" else "healthy",
                    1e6 + k * 1e4,
                    slowdown=0.1,
                ),
                _v("GPU-bb02", job, "healthy", 1e6 + k * 1e4),
                _v("GPU-bb03", job, "healthy", 1e6 + k * 1e4),
            ],
            slots={"GPU-aa01": ("n0", 0), "GPU-bb02": ("n0", 1), "GPU-bb03": ("n0", 2)},
        )
    rep = h.repeat_offenders()
    assert [r["device"] for r in rep] == ["GPU-aa01"]
    assert [j["job"] for j in rep[0]["jobs"]] == ["a", "c"] and rep[0]["jobs"][0][
        "job_devices"
    ] == 3
    # the same job analysed again replaces its episode, it does not add one
    h.add_verdicts([_v("GPU-aa01", "c", "healthy", 1e6 + 2e4)], slots={"GPU-aa01": ("n0", 0)})
    assert h.repeat_offenders() == [] and len(h.record("GPU-aa01")["episodes"]) == 3
    # a new UUID in slot n0:0 replaces GPU-aa01 and starts fresh
    h.add_verdicts([_v("GPU-cc04", "d", "degraded", 2e6)], slots={"GPU-cc04": ("n0", 0)})
    assert h.resolve("n0:0") == "GPU-cc04"
    new, old = h.record("n0:0"), h.record("GPU-aa01")
    assert (
        new["replaces"] == "GPU-aa01" and len(new["episodes"]) == 1 and not new["repeat_offender"]
    )
    assert old["replaced_by"] == "GPU-cc04" and old["replaced_at"] == 2e6
    assert h.replacements() == [{"slot": "n0:0", "old": "GPU-aa01", "new": "GPU-cc04", "at": 2e6}]
    assert h.resolve("GPU-cc") == "GPU-cc04"
    for bad, msg in (
        ("GPU-bb", "ambiguous"),
        ("GPU-zz", "not in the history"),
        ("n9:0", "no device at"),
    ):
        with pytest.raises(InputError, match=msg):
            h.resolve(bad)
    # data only, round trip through the JSON section and the state file
    again = FleetHistory.from_dict(json.loads(json.dumps(h.to_dict(), allow_nan=False)))
    assert again.to_dict() == h.to_dict()
    p = tmp_path / "fleet.state"
    h.save(p)
    assert FleetHistory.load(p).to_dict() == h.to_dict()
    with pytest.raises(InputError, match="status"):
        FleetHistory.from_dict({"devices": [{"device": "x", "episodes": [{"status": "bad"}]}]})
    with pytest.raises(InputError, match="'devices' list"):
        FleetHistory.from_dict({"devices": 3})


def test_merge_accumulates_evidence_across_analyses():
    from degrade.fleet import FleetHistory

    days = []
    for k in range(5):
        h = FleetHistory()
        h.add_verdicts([_v("GPU-1", f"job{k}", "healthy", 1e6 + k * 1e5, excess=0.058, se=0.008)])
        days.append(h)
    assert not any(d.evidence("GPU-1").found for d in days)  # z = 3.5 < 3.89 in each alone
    total = days[0]
    for d in days[1:]:
        total.merge(d)
    ev = total.record("GPU-1")["evidence"]
    assert ev["looks"] == 5 and ev["found"] and ev["status"] == "degraded"


# ------------------------------------------------------------ simulator and analyze


@pytest.fixture(scope="module")
def fleet_run(tmp_path_factory):
    require("polars")
    from degrade.analyze import analyze
    from degrade.simulate import FleetScenario, NoiseSpec, simulate_fleet

    sc = FleetScenario(
        hosts=4,
        jobs=7,
        job_hosts=(2, 2),
        noise=NoiseSpec(sd=0.04, phi=0.5),
        offenders=[{"host": 1, "gpu": 3, "magnitude": 0.08}],
        episodes=[{"host": 2, "gpu": 0, "jobs": [0, 2], "magnitude": 0.3, "onset_step": 40}],
        replacements=[{"host": 2, "gpu": 0, "job": 4}],
        must_run=[{"host": 1, "jobs": [0, 1, 2, 3, 4]}, {"host": 2, "jobs": [0, 2, 4, 5]}],
    )
    res = simulate_fleet(sc, seed=2)
    d = tmp_path_factory.mktemp("fleet")
    res.write(d)
    return res, analyze(str(d)), d


def test_simulate_fleet_keeps_uuids_and_replaces_slots(fleet_run):
    from degrade.simulate import simulate_fleet

    res, _, _ = fleet_run
    t = res.truth
    dev = res.devices
    assert dev.height == 4 * 8 + 1
    old = dev.filter((dev["host"] == "node-0002") & (dev["gpu"] == 0)).sort("installed_before_job")
    assert old["replaced_before_job"].to_list() == [4, None]
    # the same physical GPU keeps its UUID and offset in every job it runs
    import polars as pl

    off = t.group_by("device").agg(pl.col("offset").n_unique().alias("k"))
    assert off["k"].max() == 1
    offender = dev.filter(dev["offender"] > 0)["device"][0]
    assert t.filter(t["device"] == offender).height >= 5
    assert set(res.counters["gpu"].unique().to_list()) == set(range(8))
    # deterministic by seed
    again = simulate_fleet(res.scenario, seed=2)
    assert again.timings.equals(res.timings) and again.counters.equals(res.counters)


def test_analyze_reports_offenders_slow_devices_and_replacement(fleet_run):
    res, r, _ = fleet_run
    dev = res.devices
    offender = dev.filter(dev["offender"] > 0)["device"][0]
    old, new = dev.filter((dev["host"] == "node-0002") & (dev["gpu"] == 0)).sort(
        "installed_before_job"
    )["device"]
    f = r.fleet
    assert [x["device"] for x in f.repeat_offenders()] == [old]
    assert {x["job"] for x in f.repeat_offenders()[0]["jobs"]} == {"job-000", "job-002"}
    slow = {x["device"] for x in f.slow_across_jobs()}
    assert offender in slow
    healthy = set(dev.filter(dev["offender"] == 0)["device"].to_list()) - {old}
    assert not (slow & healthy), slow & healthy
    assert f.replacements()[0]["old"] == old and f.replacements()[0]["new"] == new
    assert f.resolve("node-0002:0") == new and f.record(new)["repeat_offender"] is False
    doc = r.to_dict()
    assert doc["fleet"]["repeat_offenders"][0]["device"] == old
    from tests.test_analyze import _validator

    _validator().validate(json.loads(json.dumps(doc, allow_nan=False)))


def test_table_and_html_have_the_fleet_block(fleet_run, tmp_path):
    require("rich")
    import rich.console

    _, r, _ = fleet_run
    out = tmp_path / "t.txt"
    from degrade.analyze._formats import render_table

    with open(out, "w") as fh:
        render_table(r, rich.console.Console(file=fh, width=120, no_color=True))
    text = out.read_text()
    assert "Fleet memory" in text and "repeat offender" in text and "replaced" in text
    r.to_html(tmp_path / "r.html")
    assert '<section id="fleet">' in (tmp_path / "r.html").read_text()


def _cli(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "degrade", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def test_cli_history(fleet_run, tmp_path):
    res, r, _ = fleet_run
    dev = res.devices
    old = dev.filter((dev["host"] == "node-0002") & (dev["gpu"] == 0)).sort("installed_before_job")[
        "device"
    ][0]
    doc = tmp_path / "a.json"
    r.to_json(doc)
    p = _cli("history", old[:13], str(doc), "--save", str(tmp_path / "h.state"))
    assert p.returncode == 0, p.stderr
    assert "REPEAT OFFENDER" in p.stdout and "replaced by" in p.stdout and "job-002" in p.stdout
    p = _cli("history", "node-0002:0", str(tmp_path / "h.state"), "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["replaces"] == old
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    other = tmp_path / "other.json"
    other.write_text("{}")
    for args, msg in (
        (("GPU-nope", str(doc)), "not in the history"),
        ((old, str(tmp_path / "missing.json")), "no such file"),
        ((old, str(bad_json)), "not JSON"),
        ((old, str(other)), "without a 'fleet' section"),
        ((old, str(tmp_path)), "not a regular file"),
    ):
        p = _cli("history", *args)
        assert p.returncode != 0
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and msg in lines[0] and "Traceback" not in p.stderr, p.stderr


# ------------------------------------------------------------ agent


def test_agent_persists_its_episodes(tmp_path):
    require("pynvml")
    from degrade.agent import Agent, AgentConfig
    from tests.test_agent import _collector, _fake_from_arrays

    T, G = 160, 4
    reasons = np.zeros((T, G))
    reasons[30:45, 2] = 0x8  # HW slowdown twice, with a recovery between
    reasons[110:125, 2] = 0x8
    fake, _ = _fake_from_arrays(T=T, G=G, clock_event_reasons=reasons)
    state = tmp_path / "agent.state"
    agent = Agent(
        _collector(fake, xid_events=False),
        AgentConfig(state_path=str(state), save_interval=1e-9),
        advance=fake.advance,
    )
    with agent:
        agent.run(max_polls=T, realtime=False)
    p = _cli("history", "node-a:2", str(state))
    assert p.returncode == 0, p.stderr
    assert "REPEAT OFFENDER" in p.stdout and p.stdout.count("agent@") == 2
    # restored on restart: the history continues
    agent2 = Agent(_collector(fake, xid_events=False), AgentConfig(state_path=str(state)))
    agent2.start()
    try:
        assert agent2.fleet.record("node-a:2")["degraded_jobs"] == 2
    finally:
        agent2.close()


def test_mig_instances_and_overlapping_devices_are_not_replacements():
    from degrade.fleet import FleetHistory

    h = FleetHistory()
    h.add_verdicts(
        [_v("GPU-m/mig1", "a", "healthy", 1e6), _v("GPU-m/mig2", "a", "healthy", 1e6 + 5)],
        slots={"GPU-m/mig1": ("n0", 0), "GPU-m/mig2": ("n0", 0)},
    )
    # a second device reported at n0:1 while the first still was: ambiguous, not a replacement
    h.add_verdicts(
        [_v("GPU-x", "b", "healthy", 1e6), _v("GPU-y", "b", "healthy", 1e6 + 60)],
        slots={"GPU-x": ("n0", 1), "GPU-y": ("n0", 1)},
    )
    assert h.replacements() == []
    assert h.resolve("n0:0/mig2") == "GPU-m/mig2" and h.record("GPU-m/mig1")["slot"] == "n0:0/mig1"
