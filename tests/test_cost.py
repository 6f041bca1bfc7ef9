"""Lost time (docs/cost.md): the meter against NumPy references and the simulator's ground truth."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.conftest import require

pl = require("polars")

from degrade.analyze import analyze  # noqa: E402
from degrade.errors import InputError  # noqa: E402
from degrade.simulate import FaultSpec, JobSpec, Scenario, simulate  # noqa: E402
from degrade.verdict import JobCost, VerdictEngine  # noqa: E402
from degrade.verdict._cost import CostMeter, evidence_from  # noqa: E402

TOL = 0.15  # the accuracy target


# ------------------------------------------------------------------ the meter against references


def _sync_reference(x, flagged):
    """Naive critical path: sum over steps of max(x) - max(x with flagged columns divided by 1+s from onset)."""
    T, N = x.shape
    y = x.copy()
    for j, (s, onset) in flagged.items():
        y[int(max(onset, 0)) :, j] /= 1.0 + s
    return float((np.nanmax(x, axis=1) - np.nanmax(y, axis=1)).sum())


def _pipeline_reference(x, pipe, m, flagged):
    def wall(z):
        R = pipe.max() + 1
        P = np.full((z.shape[0], R), -np.inf)
        for r in range(R):
            c = z[:, pipe == r]
            P[:, r] = (c.sum(axis=1) + (m - 1) * c.max(axis=1)) / m
        return P.max(axis=1)

    y = x.copy()
    for j, (s, onset) in flagged.items():
        y[int(max(onset, 0)) :, j] /= 1.0 + s
    return float((wall(x) - wall(y)).sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synchronous_meter_matches_the_naive_critical_path(seed):
    rng = np.random.default_rng(seed)
    T, N = 300, 12
    x = 0.5 * np.exp(0.02 * rng.standard_normal((T, N)))
    x[100:, 3] *= 1.15
    x[:, 7] *= 1.07  # slow from step 0
    x[200:, 10] *= 1.15  # two equally slow ranks hide each other
    ids = [f"g{i}" for i in range(N)]
    wall = np.broadcast_to(x.max(axis=1, keepdims=True) + 0.05, (T, N))
    meter = CostMeter()
    # fed in three blocks: streaming equals batch
    for a, b in ((0, 50), (50, 51), (51, T)):
        meter.add(ids, x[a:b], wall[a:b], np.arange(a, b, dtype=float), job="j")
    flagged = {3: (0.15, 100.0), 7: (0.07, -math.inf), 10: (0.15, 200.0)}
    ev = {f"g{j}": v for j, v in flagged.items()}
    costs, per = meter.costs(ev)
    (jc,) = costs
    assert jc.topology == "synchronous" and jc.devices == N and jc.steps == T
    assert jc.lost_seconds == pytest.approx(_sync_reference(x, flagged), rel=1e-9)
    for j, v in flagged.items():
        assert per[("j", f"g{j}")] == pytest.approx(_sync_reference(x, {j: v}), rel=1e-9, abs=1e-12)
    # two equally slow ranks hide each other: the job loses more than either alone
    assert jc.lost_seconds > max(per.values()) + 1.0
    assert jc.lost_gpu_hours == pytest.approx(jc.lost_seconds * N / 3600.0)
    assert jc.wall_seconds == pytest.approx(float(wall[:, 0].sum()))


def test_kernel_equals_the_numpy_reference(monkeypatch):
    import degrade.verdict._cost as C

    rng = np.random.default_rng(9)
    T, N = 500, 10
    x = 0.3 * np.exp(0.03 * rng.standard_normal((T, N)))
    x[rng.random((T, N)) < 0.05] = np.nan
    x[7, 4], x[9, 5] = 0.0, -1.0  # not times: missing
    x[200:, 2] *= 1.2
    x[:, 6] *= 1.08
    wall = np.nanmax(x, axis=1, keepdims=True) + 0.02 + 0 * x
    ids = [f"g{i}" for i in range(N)]
    ev = {"g2": (0.2, 200.0), "g6": (0.08, -math.inf)}
    out = []
    for use in (True, False):
        monkeypatch.setattr(C, "_USE_KERNEL", use)
        m = CostMeter(top_k=3)
        for a in range(0, T, 70):
            m.add(
                ids,
                x[a : a + 70],
                wall[a : a + 70],
                np.arange(a, min(a + 70, T), dtype=float),
                job="j",
            )
        out.append(m.costs(ev))
    (ck, pk), (cn, pn) = out
    assert [c.to_dict() for c in ck] == [c.to_dict() for c in cn]
    assert pk == pytest.approx(pn, rel=1e-12)


def test_pipeline_meter_matches_the_schedule_formula():
    rng = np.random.default_rng(4)
    T, R, S, m = 200, 3, 4, 6
    N = R * S
    pipe = np.repeat(np.arange(R), S)
    x = (
        0.3
        * np.array([1.0, 0.9, 0.95, 1.1])[np.tile(np.arange(S), R)]
        * np.exp(0.02 * rng.standard_normal((T, N)))
    )
    x[50:, 5] *= 1.3  # stage 1 of pipeline 1: slack at first
    x[120:, 11] *= 1.2  # the bottleneck stage of pipeline 2
    meter = CostMeter()
    ids = [f"g{i}" for i in range(N)]
    meter.add(
        ids, x, None, np.arange(T, dtype=float), job="pp", pipelines=list(pipe), microbatches=m
    )
    flagged = {5: (0.3, 50.0), 11: (0.2, 120.0)}
    costs, per = meter.costs({f"g{j}": v for j, v in flagged.items()})
    (jc,) = costs
    assert jc.topology == "pipeline"
    assert jc.lost_seconds == pytest.approx(_pipeline_reference(x, pipe, m, flagged), rel=1e-9)
    for j, v in flagged.items():
        assert per[("pp", f"g{j}")] == pytest.approx(
            _pipeline_reference(x, pipe, m, {j: v}), rel=1e-9, abs=1e-12
        )


def test_replicas_are_charged_their_own_excess():
    rng = np.random.default_rng(5)
    T, N = 400, 6
    x = 0.2 * np.exp(0.03 * rng.standard_normal((T, N)))
    x[100:, 2] *= 1.25
    wall = x + 0.01  # nobody waits: each device's own step
    meter = CostMeter()
    meter.add([f"r{i}" for i in range(N)], x, wall, np.arange(T, dtype=float), job="serve")
    costs, per = meter.costs({"r2": (0.25, 100.0)})
    assert costs[0].topology == "replicas"
    want = float(x[100:, 2].sum()) * 0.25 / 1.25
    assert per[("serve", "r2")] == pytest.approx(want, rel=0.02)  # the onset falls inside a bucket
    assert costs[0].lost_seconds == pytest.approx(per[("serve", "r2")])
    assert costs[0].lost_gpu_hours == pytest.approx(per[("serve", "r2")] / 3600.0)


def test_missing_rows_of_the_slow_device_are_made_up_for():
    rng = np.random.default_rng(6)
    T, N = 400, 8
    x = 0.5 * np.exp(0.01 * rng.standard_normal((T, N)))
    x[:, 1] *= 1.2
    full = CostMeter()
    full.add([f"g{i}" for i in range(N)], x, None, np.arange(T, dtype=float), job="j")
    holes = x.copy()
    holes[rng.random(T) < 0.2, 1] = np.nan
    part = CostMeter()
    part.add([f"g{i}" for i in range(N)], holes, None, np.arange(T, dtype=float), job="j")
    ev = {"g1": (0.2, -math.inf)}
    a, b = full.costs(ev)[1][("j", "g1")], part.costs(ev)[1][("j", "g1")]
    assert b == pytest.approx(a, rel=0.05)


def test_fold_keeps_memory_bounded_and_the_total():
    rng = np.random.default_rng(7)
    T, N = 1000, 4
    x = 0.5 * np.exp(0.01 * rng.standard_normal((T, N)))
    x[300:, 0] *= 1.1
    ev = {"g0": (0.1, 300.0)}
    whole = CostMeter()
    whole.add([f"g{i}" for i in range(N)], x, None, np.arange(T, dtype=float), job="j")
    small = CostMeter(max_steps=128)
    for a in range(0, T, 50):
        if small.add(
            [f"g{i}" for i in range(N)],
            x[a : a + 50],
            None,
            np.arange(a, a + 50, dtype=float),
            job="j",
        ):
            small.fold(ev)
    assert small._jobs["j"].step.n <= 2 * 128
    assert small.costs(ev)[0][0].lost_seconds == pytest.approx(
        whole.costs(ev)[0][0].lost_seconds, rel=1e-9
    )


def test_long_runs_merge_buckets_and_keep_the_figures(monkeypatch):
    import degrade.verdict._cost as C

    rng = np.random.default_rng(8)
    T, N = 20000, 6
    x = 0.2 * np.exp(0.02 * rng.standard_normal((T, N)))
    x[rng.random((T, N)) < 0.05] = np.nan
    x[5000:, 1] *= 1.15
    ids = [f"g{i}" for i in range(N)]
    ev = {"g1": (0.15, 5000.0), "g4": (None, -math.inf)}
    out = []
    for cap in (512, 10**6):
        monkeypatch.setattr(C, "_MAX_BUCKETS", cap)
        m = CostMeter()
        for a in range(0, T, 3000):
            m.add(ids, x[a : a + 3000], None, np.arange(a, min(a + 3000, T), dtype=float), job="j")
        rec = m._jobs["j"]
        out.append((m.costs(ev), rec.bcount.shape[0], rec.bucket))
    (small, nb, width), (big, nb_big, _) = out
    assert nb <= 512 < nb_big and width == 64
    assert small[0][0].lost_seconds == pytest.approx(big[0][0].lost_seconds, rel=1e-3)
    assert small[1] == pytest.approx(big[1], rel=1e-3, abs=1e-9)


def test_engine_fills_lost_seconds_and_job_costs():
    rng = np.random.default_rng(0)
    t = 0.1 * np.exp(0.01 * rng.standard_normal((400, 4)))
    t[100:, 2] *= 1.2
    eng = VerdictEngine()
    eng.run(["g0", "g1", "g2", "g3"], {"compute_time": t}, steps=np.arange(400), job="j1")
    v = {x.device: x for x in eng.verdicts()}
    assert str(v["g2"].status) == "degraded"
    # 300 slow steps, about 0.02 s each above the next-slowest rank
    assert v["g2"].lost_seconds == pytest.approx(300 * 0.1 * 0.2, rel=0.25)
    assert v["g0"].lost_seconds is None and "lost_seconds" in v["g0"].to_dict()
    (jc,) = eng.job_costs()
    assert isinstance(jc, JobCost) and jc.job == "j1"
    assert jc.lost_seconds == pytest.approx(v["g2"].lost_seconds)
    json.dumps(jc.to_dict(), allow_nan=False)


def test_engine_rejects_bad_pipelines():
    eng = VerdictEngine()
    with pytest.raises(InputError, match="pipelines"):
        eng.run(["a", "b"], {"compute_time": np.ones((3, 2))}, pipelines=[0])


def test_evidence_skips_healthy_and_unknown():
    from degrade.verdict import Status, Verdict

    vs = [
        Verdict("a", Status.HEALTHY, slowdown=0.2),
        Verdict("b", Status.DEGRADED, slowdown=0.2, onset_step=5),
        Verdict("c", Status.UNKNOWN, slowdown=0.3),
        Verdict("d", Status.FAILED),
    ]
    assert evidence_from(vs) == {"b": (0.2, 5.0)}


# ------------------------------------------------------------------ against the simulator's truth


def _scenarios():
    dp = Scenario(
        name="dp",
        seed=11,
        jobs=[
            JobSpec(
                name="dp",
                hosts=2,
                gpus_per_host=8,
                steps=900,
                compute_time=0.5,
                comm_time=0.08,
                ar=0.3,
                checkpoint_every=300,
                checkpoint_time=8.0,
                missing_rate=0.03,
            ),
            JobSpec(
                name="dp-elastic",
                hosts=1,
                gpus_per_host=8,
                steps=900,
                compute_time=0.4,
                comm_time=0.05,
                elastic=[[500, 2, 2]],
            ),
        ],
        faults=[
            FaultSpec(job="dp", device=3, type="slowdown", onset_step=300, magnitude=0.15),
            FaultSpec(job="dp", device=9, type="slowdown", onset_step=0, magnitude=0.1),
            FaultSpec(job="dp-elastic", device=5, type="thermal", onset_step=200, magnitude=0.2),
        ],
    )
    pp = Scenario(
        name="pp",
        seed=12,
        jobs=[
            JobSpec(
                name="pp",
                kind="pipeline",
                hosts=2,
                gpus_per_host=8,
                steps=900,
                compute_time=0.8,
                comm_time=0.1,
                stage_times=[1.0, 0.9, 0.95, 1.1],
                microbatches=8,
                ar=0.3,
            ),
        ],
        faults=[
            FaultSpec(job="pp", device=7, type="slowdown", onset_step=200, magnitude=0.2),
            FaultSpec(job="pp", device=9, type="slowdown", onset_step=400, magnitude=0.25),
        ],
    )
    rep = Scenario(
        name="rep",
        seed=13,
        jobs=[
            JobSpec(
                name="serve",
                kind="inference",
                hosts=1,
                gpus_per_host=8,
                steps=1200,
                compute_time=0.25,
                comm_time=0.01,
                noise=0.04,
                missing_rate=0.02,
            ),
        ],
        faults=[
            FaultSpec(job="serve", device=2, type="slowdown", onset_step=300, magnitude=0.12),
            FaultSpec(job="serve", device=6, type="drift", onset_step=200, magnitude=0.3),
        ],
    )
    hard = Scenario(
        name="hard",
        seed=14,
        jobs=[
            JobSpec(
                name="noisy",
                hosts=2,
                gpus_per_host=8,
                steps=1200,
                compute_time=0.5,
                comm_time=0.08,
                noise=0.04,
                ar=0.6,
                spike_prob=0.01,
                noise_family="t",
            ),
        ],
        faults=[
            FaultSpec(job="noisy", device=5, type="drift", onset_step=200, magnitude=0.25),
            FaultSpec(job="noisy", device=11, type="stall", onset_step=300, magnitude=0.3),
            FaultSpec(job="noisy", device=13, type="pcie_downgrade", onset_step=100),
        ],
    )
    return {"synchronous": dp, "pipeline": pp, "replicas": rep, "hard": hard}


@pytest.fixture(scope="module")
def analysed():
    out = {}
    for topo, sc in _scenarios().items():
        sim = simulate(sc)
        out[topo] = (sim, analyze([sim.timings, sim.counters]))
    return out


@pytest.mark.parametrize("topo", ["synchronous", "pipeline", "replicas", "hard"])
def test_lost_time_within_15_percent_of_the_truth(analysed, topo):
    """Intermittent stalls and a hard-signal device (PCIe x8) under heavy-tailed noise in "hard"."""
    sim, res = analysed[topo]
    est = {(v.job, v.device): v.lost_seconds for v in res.verdicts}
    costs = {c.job: c for c in res.costs}
    checked = 0
    for row in sim.lost.iter_rows(named=True):
        assert row["topology"] == (topo if topo != "hard" else "synchronous")
        if row["device"] is None:
            c = costs[row["job"]]
            assert c.topology == row["topology"]
            got, true = c.lost_seconds, row["lost_seconds"]
            assert c.lost_gpu_hours == pytest.approx(row["lost_gpu_hours"], rel=TOL)
        else:
            got, true = est[(row["job"], row["device"])], row["lost_seconds"]
        if true < 2.0:  # a fault hidden by slack: the estimate must say so too
            assert got is not None and got < 2.0
            continue
        assert got == pytest.approx(true, rel=TOL), (row, got)
        checked += 1
    assert checked >= 2


def test_the_straggler_hidden_by_slack_costs_little(analysed):
    sim, res = analysed["pipeline"]
    truth = {r["device"]: r["lost_seconds"] for r in sim.lost.iter_rows(named=True) if r["device"]}
    est = {v.device: v.lost_seconds for v in res.verdicts}
    slow_fast_stage = min(
        truth, key=truth.get
    )  # stage 1 at 0.9: 25 % slower mostly inside the slack
    slow_bottleneck = max(truth, key=truth.get)
    assert est[slow_fast_stage] < 0.2 * est[slow_bottleneck]


def test_json_document_carries_the_costs(analysed):
    jsonschema = require("jsonschema")
    from importlib import resources

    sim, res = analysed["synchronous"]
    doc = json.loads(res.to_json())
    schema = json.loads(
        resources.files("degrade").joinpath("schemas/verdicts.schema.json").read_text()
    )
    jsonschema.validate(doc, schema)
    assert doc["schema_version"] == "1.1"
    assert [c["job"] for c in doc["costs"]][0] in ("dp", "dp-elastic")
    gh = [c["lost_gpu_hours"] for c in doc["costs"]]
    assert gh == sorted(gh, reverse=True)  # costliest first
    assert doc["summary"]["lost_gpu_hours"] == pytest.approx(sum(gh), abs=1e-5)
    flagged = [v for v in doc["verdicts"] if v["status"] == "degraded"]
    assert flagged and all(v["lost_seconds"] > 0 for v in flagged)


def test_pipeline_columns_round_trip_through_parquet(tmp_path, analysed):
    sim, res = analysed["pipeline"]
    assert {"pipeline", "microbatches"} <= set(sim.timings.columns)
    sim.write(tmp_path)
    again = analyze(tmp_path)
    assert [c.to_dict() | {"wall_seconds": None} for c in again.costs] == [
        c.to_dict() | {"wall_seconds": None} for c in res.costs
    ]


def test_default_scenarios_have_no_pipeline_columns():
    sim = simulate("tiny", seed=1)
    assert "pipeline" not in sim.timings.columns
    assert set(sim.lost.columns) >= {"job", "device", "lost_seconds", "lost_gpu_hours"}


def test_microbatches_only_for_pipelines():
    from degrade.simulate._scenario import scenario_from_dict

    with pytest.raises(InputError, match="microbatches"):
        scenario_from_dict({"job": [{"name": "j", "microbatches": 4}]})


# ------------------------------------------------------------------ persistence, loop, Prometheus


def _slow_fleet(seed=0, T=400, N=4):
    rng = np.random.default_rng(seed)
    t = 0.1 * np.exp(0.01 * rng.standard_normal((T, N)))
    t[100:, 2] *= 1.2
    return t


def test_engine_state_round_trips_the_cost_records(tmp_path):
    from degrade import _statefile

    t = _slow_fleet()
    ids = ["g0", "g1", "g2", "g3"]
    full = VerdictEngine()
    full.run(ids, {"compute_time": t}, steps=np.arange(400), job="j")
    half = VerdictEngine()
    half.run(ids, {"compute_time": t[:250]}, steps=np.arange(250), job="j")
    path = tmp_path / "engine.state"
    _statefile.dump(path, half.state_dict(), kind="engine", version=1)
    restored = VerdictEngine()
    restored.load_state_dict(dict(_statefile.load(path, kind="engine", version=1)))
    restored.run(ids, {"compute_time": t[250:]}, steps=np.arange(250, 400), job="j")
    assert [c.to_dict() for c in restored.job_costs()] == [c.to_dict() for c in full.job_costs()]
    assert VerdictEngine().state_dict().get("cost") is None  # nothing seen: nothing stored


def test_loop_status_and_collector_report_the_lost_time():
    prom = require("prometheus_client")
    from degrade.loop import Monitor

    T, N = 240, 6
    compute = _slow_fleet(1, T, N)
    wall = compute.max(axis=1, keepdims=True).repeat(N, axis=1) + 0.01

    def gather(s):
        idx = np.asarray(s["steps"]) - 1
        return [
            dict(
                s,
                device=f"gpu{r}",
                rank=r,
                compute_time=compute[idx, r].tolist(),
                step_time=wall[idx, r].tolist(),
            )
            for r in range(N)
        ]

    mon = Monitor(
        every=20, gather=gather, device="gpu0", background=False, action="none", job="train"
    )
    for t in range(T):
        mon.step(step_time=wall[t, 0], compute_time=compute[t, 0])
    mon.close()
    ref = VerdictEngine(mon._engine_config())
    ref.run(
        [f"gpu{r}" for r in range(N)],
        {"compute_time": compute, "step_time": wall},
        steps=np.arange(1, T + 1),
        groups=["0"] * N,
        job="train",
    )
    (want,) = ref.job_costs()
    cost = mon.status()["cost"]
    assert cost["lost_seconds"] == pytest.approx(want.lost_seconds) and cost["lost_seconds"] > 1.0
    assert cost["topology"] == "synchronous"
    reg = prom.CollectorRegistry()
    reg.register(mon.collector())
    text = prom.generate_latest(reg).decode()
    assert (
        f'degrade_job_lost_seconds_total{{job="train",topology="synchronous"}} {want.lost_seconds!r}'
        in text
    )
    assert 'degrade_device_lost_seconds{device="gpu2",job="train"}' in text


def test_agent_exporter_exposes_the_job_lost_time():
    prom = require("prometheus_client")
    from degrade.agent._exporter import DegradeCollector

    eng = VerdictEngine()
    eng.run(
        ["g0", "g1", "g2", "g3"], {"compute_time": _slow_fleet()}, steps=np.arange(400), job="j"
    )
    verdicts = eng.verdicts()
    snap = {
        "host": "n1",
        "gpus": {},
        "verdicts": verdicts,
        "errors": {},
        "timeouts_total": 0,
        "polls_total": 1,
        "samples_total": 4,
        "poll_seconds_total": 0.1,
        "last_poll_seconds": 0.1,
        "last_poll_time": 1.0,
        "state_saves_total": 0,
        "agent_errors": {},
        "job_costs": eng.job_costs(verdicts),
    }

    class Source:
        def get(self):
            return snap

    reg = prom.CollectorRegistry()
    reg.register(DegradeCollector(None, source=Source()))
    text = prom.generate_latest(reg).decode()
    lost = eng.job_costs()[0].lost_seconds
    assert f'degrade_job_lost_seconds_total{{job="j",topology="synchronous"}} {lost!r}' in text
    assert "degrade_job_lost_gpu_hours_total" in text


def test_lost_time_counters_never_decrease_when_the_estimate_is_revised_down():
    prom = require("prometheus_client")
    from types import SimpleNamespace

    from degrade.loop._prometheus import cost_families

    def scrape(lost, high):
        c = SimpleNamespace(
            job="j", topology="synchronous", lost_seconds=lost, lost_gpu_hours=lost / 900
        )

        class One:
            def collect(self):
                yield from cost_families([c], (), high)

        reg = prom.CollectorRegistry()
        reg.register(One())
        return prom.generate_latest(reg).decode()

    high = {}
    first = scrape(120.0, high)
    assert 'degrade_job_lost_seconds_total{job="j",topology="synchronous"} 120.0' in first
    revised = scrape(80.0, high)  # the evidence shrank: the counter holds, the gauge follows
    assert 'degrade_job_lost_seconds_total{job="j",topology="synchronous"} 120.0' in revised
    assert 'degrade_job_lost_seconds_estimate{job="j",topology="synchronous"} 80.0' in revised
    assert (
        'degrade_job_lost_gpu_hours_total{job="j",topology="synchronous"} ' + repr(120.0 / 900)
        in revised
    )
    grown = scrape(150.0, high)
    assert 'degrade_job_lost_seconds_total{job="j",topology="synchronous"} 150.0' in grown


def test_table_and_html_show_the_cost_costliest_first(analysed):
    from rich.console import Console

    from degrade.analyze._formats import render_table
    from degrade.analyze._report import render_report

    sim, res = analysed["synchronous"]
    console = Console(width=80, record=True, no_color=True)
    render_table(res, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    section = text[text.index("What it cost") :]
    jobs = [c.job for c in res.costs if c.lost_seconds > 0]
    assert jobs == sorted(
        jobs, key=lambda j: -next(c.lost_gpu_hours for c in res.costs if c.job == j)
    )
    assert section.index(jobs[0]) < section.index(jobs[1])
    html = render_report(res)
    assert html.count('class="job-cost"') == len(jobs) and "What it cost" in html
