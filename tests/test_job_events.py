"""Job events an operator can read (issue 10 item 6): recurring events, attribution, no "job None"."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest

from degrade.simulate import NoiseSpec, simulate_times
from degrade.verdict import EngineConfig, JobEvent, Verdict, VerdictEngine
from degrade.verdict._events import _best_series, _merge_events


def _run(tm, *, job="llm", timestamps=True, **cfg):
    T, N = tm.compute.shape
    eng = VerdictEngine(EngineConfig(**cfg))
    ts = 1.767e9 + np.cumsum(tm.step[:, 0]) if timestamps else None
    eng.run(
        [f"gpu{i}" for i in range(N)],
        {"compute_time": tm.compute, "step_time": tm.step},
        steps=np.arange(T),
        timestamps=ts,
        job=job,
        groups=[0] * N,
    )
    return eng


def _ev(start, end=None, *, job="j", kind="job_slowdown", slowdown=1.0, devices=8, t0=None, dt=0.5):
    end = start if end is None else end
    return JobEvent(
        job=job,
        kind=kind,
        start_step=start,
        end_step=end,
        start_time=None if t0 is None else t0 + start * dt,
        end_time=None if t0 is None else t0 + end * dt,
        slowdown=slowdown,
        devices=devices,
        reason=f"job {job}: median step {100 * slowdown:.1f} % slower",
    )


# ---------------------------------------------------------------- recurring events
def test_checkpoints_every_1000_steps_are_one_recurring_event_with_its_cost():
    # the case: 30 checkpoints gave 30 rows ("median step 2294.8 % slower")
    T, N, secs = 30_000, 16, 10.0
    tm = simulate_times(T, N, NoiseSpec(sd=0.02, period=1000, period_seconds=secs), seed=1)
    eng = _run(tm)
    raw = [e for e in eng._raw_job_events() if e.kind == "job_slowdown"]
    assert len(raw) >= 29
    rec = [e for e in eng.job_events() if e.period is not None]
    assert len(rec) == 1
    e = rec[0]
    assert (e.period, e.count, e.start_step, e.end_step) == (1000, 29, 1000, 29_000)
    assert e.cause_device is None and e.devices == N
    # truth: 10 s x lognormal(0, 0.1) jitter per checkpoint; normal steps ~0.57 s
    ck = tm.step[1000::1000, 0] - np.median(tm.step[:, 0])
    assert e.extra_seconds == pytest.approx(ck.mean(), rel=0.05)
    s0 = np.median(tm.step[:, 0])
    assert e.extra_steps == pytest.approx(ck.mean() / s0, rel=0.05)
    assert e.time_share == pytest.approx(ck.mean() / (1000 * s0 + ck.mean()), rel=0.05)
    assert (
        "every 1000 steps" in e.reason
        and "29 times" in e.reason
        and "% of the wall time" in e.reason
    )
    # the other events are the few noise blips, not checkpoints
    assert len(eng.job_events()) <= 4


def test_recurring_events_without_timestamps_cost_in_steps():
    tm = simulate_times(6000, 8, NoiseSpec(sd=0.02, period=500, period_seconds=5.0), seed=2)
    e = next(e for e in _run(tm, timestamps=False).job_events() if e.period is not None)
    assert e.period == 500 and e.count == 11 and e.extra_seconds is None
    s0 = np.median(tm.step[:, 0])
    assert e.extra_steps == pytest.approx(5.0 / s0, rel=0.1)
    assert "steps extra" in e.reason


def test_two_rhythms_are_two_recurring_events():
    # checkpoints every 700 steps, evaluations every 300 (where they coincide the series skip a point)
    base = [_ev(s, s + 1, slowdown=20.0) for s in range(700, 20_000, 700)]
    ev = [_ev(s, s + 4, slowdown=1.0) for s in range(300, 20_000, 300) if s % 2100]
    out = _merge_events(sorted(base + ev, key=lambda e: e.start_step), gap=100)
    rec = sorted((e.period, e.count) for e in out if e.period is not None)
    assert [p for p, _ in rec] == [300, 700]
    assert dict(rec)[700] == len(base)
    assert sum(e.period is None for e in out) <= 2


def test_jittered_and_missed_occurrences_still_one_series():
    rng = np.random.default_rng(3)
    starts = [s + int(rng.integers(-2, 3)) for s in range(1000, 40_000, 1000)]
    del starts[7], starts[20]  # two checkpoints the detector missed
    out = _merge_events([_ev(s, s + 2, t0=1e9) for s in starts], gap=100)
    assert len(out) == 1 and out[0].period == 1000 and out[0].count == len(starts)


def test_random_stalls_are_not_declared_periodic():
    # a chance series needs 5 stalls within +-2 steps of a grid (measured: 0 of 300 runs of 12 or 40
    # stalls in 30,000 steps, 2 of 300 with 100)
    for n, allowed in ((12, 0), (40, 1)):
        hits = 0
        for seed in range(100):
            rng = np.random.default_rng(seed)
            starts = np.sort(rng.choice(30_000, size=n, replace=False))
            hits += _best_series([_ev(int(s), int(s) + 2) for s in starts]) is not None
        assert hits <= allowed


def test_pipeline_stages_seeing_one_stall_are_one_occurrence():
    evs = []
    for s in range(500, 5000, 500):
        evs += [_ev(s, s + 1, devices=4), _ev(s, s + 1, devices=4)]  # two peer groups
    out = _merge_events(evs, gap=100)
    assert len(out) == 1 and out[0].count == 9 and out[0].devices == 8


def test_merge_gap_zero_keeps_every_episode():
    evs = [_ev(s) for s in range(500, 5000, 500)]
    assert len(_merge_events(evs, gap=0)) == len(evs)


def test_recurring_event_is_the_same_streaming_and_batch():
    tm = simulate_times(8000, 8, NoiseSpec(sd=0.02, period=400, period_seconds=4.0), seed=4)
    batch = _run(tm)
    s = VerdictEngine()
    ts = 1.767e9 + np.cumsum(tm.step[:, 0])
    for lo in range(0, 8000, 250):
        sl = slice(lo, lo + 250)
        s.run(
            [f"gpu{i}" for i in range(8)],
            {"compute_time": tm.compute[sl], "step_time": tm.step[sl]},
            steps=np.arange(lo, lo + 250),
            timestamps=ts[sl],
            job="llm",
            groups=[0] * 8,
        )
    assert [e.to_dict() for e in s.job_events()] == [e.to_dict() for e in batch.job_events()]


# ---------------------------------------------------------------- attribution
def _straggler(job="llm"):
    rng = np.random.default_rng(0)
    T, N = 600, 8
    compute = 0.2 * np.exp(0.02 * rng.standard_normal((T, N)))
    compute[250:, 5] *= 1.10
    step = np.repeat(compute.max(axis=1, keepdims=True) + 0.05, N, axis=1)
    eng = VerdictEngine()
    eng.run(
        [f"gpu{i}" for i in range(N)],
        {"compute_time": compute, "step_time": step},
        steps=np.arange(T),
        job=job,
        groups=[0] * N,
    )
    return eng


@pytest.mark.parametrize("job", ["llm", None])
def test_job_slowdown_from_a_degraded_device_names_it(job):
    eng = _straggler(job)
    v = {x.device: x for x in eng.verdicts()}
    assert str(v["gpu5"].status) == "degraded"
    ev = [e for e in eng.job_events() if e.start_step is not None and abs(e.start_step - 250) <= 50]
    assert ev and all(e.cause_device == "gpu5" for e in ev)
    assert all("caused by device gpu5" in e.reason for e in ev)


def test_a_job_wide_change_blames_no_device():
    rng = np.random.default_rng(12)
    T, N = 800, 8
    c = 0.2 * np.exp(0.02 * rng.standard_normal((T, N)))
    c[500:] *= 1.25  # schedule change: every rank at once
    step = np.repeat(c.max(axis=1, keepdims=True) + 0.05, N, 1)
    eng = VerdictEngine()
    eng.run(
        [f"gpu{i}" for i in range(N)],
        {"compute_time": c, "step_time": step},
        steps=np.arange(T),
        job="j",
    )
    assert {str(v.status) for v in eng.verdicts()} == {"healthy"}
    ev = eng.job_events()
    assert any(e.kind == "sustained_job_slowdown" and e.start_step == 500 for e in ev)
    assert all(e.cause_device is None and "caused by" not in e.reason for e in ev)


def test_attribution_needs_the_same_job_time_and_size():
    e = _ev(250, 400, kind="sustained_job_slowdown", slowdown=0.06)
    v = Verdict(device="gpu5", status="degraded", job="j", slowdown=0.10, onset_step=240)
    assert _merge_events([e], 100, [v])[0].cause_device == "gpu5"
    far = Verdict(device="gpu5", status="degraded", job="j", slowdown=0.10, onset_step=100)
    other = Verdict(device="gpu5", status="degraded", job="k", slowdown=0.10, onset_step=250)
    small = Verdict(device="gpu5", status="degraded", job="j", slowdown=0.01, onset_step=250)
    suspect = Verdict(device="gpu5", status="suspect", job="j", slowdown=0.10, onset_step=250)
    for w in (far, other, small, suspect):
        assert _merge_events([e], 100, [w])[0].cause_device is None
    by_time = Verdict(device="gpu7", status="degraded", job="j", slowdown=0.10, onset_time=1000.0)
    et = JobEvent(
        job="j", kind="sustained_job_slowdown", start_time=1060.0, slowdown=0.05, reason="job j: x"
    )
    assert _merge_events([et], 100, [by_time])[0].cause_device == "gpu7"


# ---------------------------------------------------------------- messages and contract
@pytest.mark.parametrize(("groups", "where"), [(None, "all devices"), ([0] * 16, "group 0")])
def test_verdict_reasons_and_raw_events_never_say_job_none(groups, where):
    # no job column (and with or without a group column): the degraded device's reason and
    # the job events its straggling causes name no "job None" (they said "job None group 0")
    from degrade.simulate import Fault

    T, N = 1500, 16
    tm = simulate_times(
        T,
        N,
        NoiseSpec(sd=0.02),
        seed=5,
        faults=[Fault(device=3, kind="step", onset=500, magnitude=0.2)],
    )
    eng = VerdictEngine(EngineConfig(latch=True))
    eng.run(
        [f"gpu{i}" for i in range(N)],
        {"compute_time": tm.compute, "step_time": tm.step},
        steps=np.arange(T),
        groups=groups,
    )
    v = {x.device: x for x in eng.verdicts()}["gpu3"]
    assert str(v.status) == "degraded"
    assert f"above peers ({where})" in v.reasons[0], v.reasons
    raw = eng._raw_job_events()
    assert raw
    texts = [*v.reasons, *(e.reason for e in raw), *(e.reason for e in eng.job_events())]
    assert not [t for t in texts if "None" in t]
    assert all(e.reason.startswith(where) for e in raw)


def test_no_job_none_in_messages_without_a_job_column():
    tm = simulate_times(5000, 8, NoiseSpec(sd=0.02, period=500, period_seconds=5.0), seed=5)
    eng = _run(tm, job=None)
    ev = eng.job_events()
    assert ev
    assert all("job None" not in e.reason and "None" not in e.reason.split(":")[0] for e in ev)
    assert any(e.reason.startswith("all devices") for e in ev)
    raw = _merge_events(
        [
            JobEvent(
                job=None,
                kind="job_slowdown",
                start_step=3,
                end_step=4,
                slowdown=0.5,
                reason="job None group 0: median step 50.0 % slower",
            )
        ],
        0,
    )
    assert raw[0].reason == "group 0: median step 50.0 % slower"


def test_job_events_validate_against_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(
        resources.files("degrade").joinpath("schemas/verdicts.schema.json").read_text()
    )
    sub = {"$defs": schema["$defs"], **schema["$defs"]["job_event"]}
    tm = simulate_times(6000, 8, NoiseSpec(sd=0.02, period=500, period_seconds=5.0), seed=6)
    events = _run(tm).job_events() + _straggler().job_events()
    assert any(e.period for e in events) and any(e.cause_device for e in events)
    for e in events:
        d = e.to_dict()
        jsonschema.validate(d, sub)
        json.dumps(d, allow_nan=False)
    bad = {**events[0].to_dict(), "period": "often"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, sub)


def test_recurring_cost_does_not_count_other_stalls_as_normal_time():
    # 0.5 s steps; a checkpoint (+10 s) every 1000 steps and 40 other stalls (+5 s) in between
    rng = np.random.default_rng(8)
    dt, t0 = 0.5, 1e9
    ck = list(range(1000, 20_001, 1000))
    other = sorted(
        int(s) for s in rng.choice(np.arange(1050, 19_950), 40, replace=False) if s % 1000 > 20
    )
    extra = {**{s: 10.0 for s in ck}, **{s: 5.0 for s in other}}
    starts = sorted(extra)
    cum = np.cumsum([extra[s] for s in starts])

    def t(step):  # timestamp at the end of ``step``
        k = np.searchsorted(starts, step, side="right")
        return t0 + (step + 1) * dt + (cum[k - 1] if k else 0.0)

    evs = [
        JobEvent(
            job="j",
            kind="job_slowdown",
            start_step=s,
            end_step=s,
            start_time=t(s),
            end_time=t(s),
            slowdown=extra[s] / dt,
            devices=8,
            reason="job j: x",
        )
        for s in starts
    ]
    rec = [e for e in _merge_events(evs, gap=100) if e.period]
    assert len(rec) == 1 and rec[0].count == len(ck)
    assert rec[0].extra_steps == pytest.approx(20.0)
    assert rec[0].extra_seconds == pytest.approx(10.0, rel=0.01)
    assert rec[0].time_share == pytest.approx(20 / 1020)


def test_dense_stalls_make_no_series_and_stay_fast():
    import time

    rng = np.random.default_rng(0)
    starts = np.sort(rng.choice(100_000, 4000, replace=False))
    evs = [_ev(int(s), int(s) + 1) for s in starts]
    t0 = time.perf_counter()
    out = _merge_events(evs, gap=100)
    assert time.perf_counter() - t0 < 2.0  # the loop monitor asks for job events every K steps
    assert not [e for e in out if e.period]
    # a real rhythm among 300 random stalls is found
    evs = [_ev(int(s), int(s) + 1) for s in np.sort(rng.choice(100_000, 300, replace=False))]
    evs += [_ev(s, s + 1, slowdown=20.0) for s in range(1000, 100_000, 1000)]
    out = _merge_events(sorted(evs, key=lambda e: e.start_step), gap=100)
    assert [(e.period, e.count) for e in out if e.period] == [(1000, 99)]


# ---------------------------------------------------------------- among heavy-tailed stalls
_HEAVY = {"family": "t", "nu": 3.0, "sd": 0.03, "phi": 0.8, "spike_prob": 1e-4}


@pytest.mark.parametrize("seed", [0, 2])
def test_checkpoints_among_sporadic_heavy_tailed_stalls_are_one_recurring_event(seed):
    # issue 10's healthy_heavy job, smaller: t(3) AR(0.8) 3 % noise and GC spikes on 64 ranks
    # give ~20 all-rank slow steps per 1000 (one rank's tail sets every rank's synchronous step),
    # as costly as the checkpoint every 1000 steps. They hid it: the period was looked for only
    # among gaps to the next 8 occurrences and from the first 8 occurrences, a stall next to a
    # checkpoint took its place in the chain, an episode spanning one did not count (0 recurring
    # events before the fix, for both seeds).
    T, N = 20_000, 64
    tm = simulate_times(T, N, NoiseSpec(**_HEAVY, period=1000, period_seconds=10.0), seed=seed)
    eng = _run(tm)
    raw = [e for e in eng._raw_job_events() if e.kind == "job_slowdown"]
    assert len(raw) >= 300  # the point: dense sporadic stalls
    rec = [e for e in eng.job_events() if e.period is not None]
    assert [(e.period, e.count) for e in rec] == [(1000, 19)]
    e = rec[0]
    assert abs(e.start_step - 1000) <= 8 and abs(e.end_step - 19_000) <= 8
    # a sane cost: the checkpoint's extra wall time (10 s x jitter), not a stall's or a sum of them
    ck = tm.step[1000::1000, 0] - np.median(tm.step[:, 0])
    assert 0.7 * ck.mean() <= e.extra_seconds <= 1.3 * ck.mean(), (e.extra_seconds, ck.mean())
    # the rest: one "sporadic stalls" summary with their count, not dozens of rows
    events = eng.job_events()
    spor = [x for x in events if x.sporadic]
    assert len(spor) == 1 and spor[0].period is None and spor[0].count >= 250
    assert "sporadic short slowdowns" in spor[0].reason and 0 < spor[0].time_share < 1
    assert len(events) <= 10  # was ~50 (bursts merged within job_merge_gap); longer episodes stay


def test_heavy_tailed_stalls_without_checkpoints_make_no_recurring_event():
    # the same noise, no rhythm: ~350 sporadic all-rank stalls, none declared periodic
    for seed in (0, 1):
        tm = simulate_times(20_000, 64, NoiseSpec(**_HEAVY), seed=seed)
        eng = _run(tm)
        assert len(eng._raw_job_events()) >= 300
        assert not [e for e in eng.job_events() if e.period is not None]


def test_sporadic_short_stalls_are_one_summary_long_ones_and_blamed_ones_stay():
    jsonschema = pytest.importorskip("jsonschema")
    rng = np.random.default_rng(9)
    starts = sorted(int(x) for x in rng.choice(np.arange(0, 30_000, 20), 40, replace=False))
    evs = [_ev(s, s + 1, slowdown=4.0, t0=1e9) for s in starts if not 14_000 <= s <= 14_400]
    long = _ev(14_100, 14_160, slowdown=0.5, t0=1e9)  # a 61-step slowdown is not "short"
    blamed = _ev(20_005, 20_005, slowdown=0.08, t0=1e9)  # echo of a degraded device
    v = Verdict(device="gpu5", status="degraded", job="j", slowdown=0.10, onset_step=20_000)
    allev = sorted([*evs, long, blamed], key=lambda e: e.start_step)
    out = _merge_events(allev, gap=100, verdicts=[v])
    spor = [e for e in out if e.sporadic]
    assert len(spor) == 1
    e = spor[0]
    assert e.count == len(evs) and e.start_step == evs[0].start_step
    assert e.extra_steps == pytest.approx(8.0)  # 4.0 x 2 steps each
    assert e.cause_device is None and f"{len(evs)} sporadic short slowdowns" in e.reason
    rest = [x for x in out if not x.sporadic]
    assert [(x.start_step, x.cause_device) for x in rest] == [(14_100, None), (20_005, "gpu5")]
    schema = json.loads(
        resources.files("degrade").joinpath("schemas/verdicts.schema.json").read_text()
    )
    sub = {"$defs": schema["$defs"], **schema["$defs"]["job_event"]}
    for x in out:
        jsonschema.validate(x.to_dict(), sub)
    # fewer than SPORADIC_MIN: left as they are (merged in bursts within the gap as before)
    irregular = [1000, 2300, 3100, 4800, 6200, 7000, 8900, 9500, 9570]
    few = _merge_events([_ev(s, s + 1) for s in irregular], gap=100)
    assert not [x for x in few if x.sporadic or x.period] and [x.count for x in few] == [1] * 7 + [
        2
    ]
