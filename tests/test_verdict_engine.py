"""Verdict engine: seeded scenarios, streaming == batch, job events, hard signals, state, bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from degrade.errors import InputError
from degrade.verdict import EngineConfig, Status, VerdictEngine
from degrade.verdict import _kernels as K  # constants re-exported from _layout
from tests.conftest import require


def _ids(n, prefix="gpu"):
    return [f"{prefix}{i}" for i in range(n)]


def _fleet(rng, T, N, noise=0.02, offset=0.015, base=0.2):
    off = rng.uniform(-offset, offset, N)
    return base * np.exp(off + noise * rng.standard_normal((T, N)))


def _by_dev(engine):
    return {v.device: v for v in engine.verdicts()}


def _state_arrays(engine):
    d = engine.state_dict()
    return {k: v for k, v in d.items() if isinstance(v, np.ndarray)}


# ---------------------------------------------------------------- seeded scenarios
def test_sustained_slowdown_flagged_with_onset_and_delay():
    rng = np.random.default_rng(7)
    T, N = 600, 8
    x = _fleet(rng, T, N)
    x[250:, 5] *= 1.10
    eng = VerdictEngine()
    eng.run(_ids(N), {"compute_time": x}, steps=np.arange(T), job="j1", groups=[0] * N)
    v = _by_dev(eng)
    bad = [d for d, x in v.items() if x.status is not Status.HEALTHY]
    assert bad == ["gpu5"]
    g = v["gpu5"]
    assert g.status is Status.DEGRADED
    assert abs(g.onset_step - 250) <= 10
    assert 250 <= g.detected_step <= 250 + 20
    assert 0.07 < g.slowdown < 0.14
    assert g.k8s_health == "Unhealthy"
    assert "above peers (job j1 group 0)" in g.reasons[0]
    assert g.to_dict()["status"] == "degraded"


def test_device_slow_from_first_step_is_caught():
    rng = np.random.default_rng(8)
    x = _fleet(rng, 300, 6)
    x[:, 1] *= 1.08
    eng = VerdictEngine()
    eng.run(_ids(6), {"compute_time": x}, steps=np.arange(300))
    v = _by_dev(eng)
    assert v["gpu1"].status is Status.DEGRADED
    assert v["gpu1"].detected_step < 60
    assert v["gpu1"].onset_step == 0
    assert all(v[d].status is Status.HEALTHY for d in v if d != "gpu1")


def test_static_healthy_offsets_are_not_flagged():
    rng = np.random.default_rng(9)
    x = _fleet(rng, 3000, 8, offset=0.0)
    x *= np.exp(np.array([-0.02, -0.01, 0.0, 0.0, 0.01, 0.015, 0.02, 0.0]))
    eng = VerdictEngine()
    eng.run(_ids(8), {"compute_time": x}, steps=np.arange(3000))
    assert {str(v.status) for v in eng.verdicts()} == {"healthy"}


def test_pair_and_singleton():
    rng = np.random.default_rng(10)
    T = 400
    x = _fleet(rng, T, 3)
    x[200:, 1] *= 1.2  # one of a pair
    x[150:, 2] *= 1.3  # a singleton, judged against its own baseline
    eng = VerdictEngine()
    eng.run(_ids(3), {"compute_time": x}, steps=np.arange(T), groups=["a", "a", "b"])
    v = _by_dev(eng)
    assert v["gpu0"].status is Status.HEALTHY
    assert v["gpu1"].status is Status.DEGRADED and abs(v["gpu1"].onset_step - 200) <= 5
    assert v["gpu2"].status is Status.DEGRADED and abs(v["gpu2"].onset_step - 150) <= 5
    assert "own baseline" in v["gpu2"].reasons[0]


def test_groups_and_jobs_are_not_mixed():
    rng = np.random.default_rng(11)
    # stage 1 is naturally 40 % slower than stage 0: not a fault
    x = _fleet(rng, 400, 8)
    x[:, 4:] *= 1.4
    eng = VerdictEngine()
    eng.run(_ids(8), {"compute_time": x}, steps=np.arange(400), groups=[0] * 4 + [1] * 4)
    assert {str(v.status) for v in eng.verdicts()} == {"healthy"}
    eng = VerdictEngine()
    eng.run(_ids(8), {"compute_time": x}, steps=np.arange(400), job=["a"] * 4 + ["b"] * 4)
    assert {str(v.status) for v in eng.verdicts()} == {"healthy"}


def test_intermittent_stalls_are_flagged_but_rare_spikes_are_not():
    rng = np.random.default_rng(22)
    T, N = 3000, 8
    x = _fleet(rng, T, N)
    stall = rng.random(T) < 0.04
    x[1000:, 4] *= np.where(stall[1000:], 5.0, 1.0)  # 4 % of steps 5x slower: 16 % on average
    x[rng.random((T, N)) < 0.002] *= 3.0  # healthy GC pauses on random ranks
    eng = VerdictEngine()
    eng.run(_ids(N), {"compute_time": x}, steps=np.arange(T))
    v = _by_dev(eng)
    assert v["gpu4"].status is Status.DEGRADED and "stalls" in v["gpu4"].reasons[0]
    assert 1000 <= v["gpu4"].detected_step <= 1600
    assert sum(x.status is not Status.HEALTHY for x in v.values()) == 1


# ---------------------------------------------------------------- job events
def test_common_slowdown_is_job_event_not_device_fault():
    rng = np.random.default_rng(12)
    T, N = 800, 8
    c = _fleet(rng, T, N)
    c[300:305] *= 3.0  # checkpoint: every rank at once
    c[500:] *= 1.25  # schedule change: every rank at once
    step = c.max(axis=1, keepdims=True) + 0.05
    eng = VerdictEngine()
    eng.run(
        _ids(N),
        {"compute_time": c, "step_time": np.repeat(step, N, 1)},
        steps=np.arange(T),
        job="j",
    )
    assert {str(v.status) for v in eng.verdicts()} == {"healthy"}
    kinds = [(e.kind, e.start_step) for e in eng.job_events()]
    assert ("job_slowdown", 300) in kinds
    assert ("sustained_job_slowdown", 500) in kinds
    assert all(e.job == "j" for e in eng.job_events())


def test_step_time_only_never_blames_a_device():
    rng = np.random.default_rng(13)
    T, N = 600, 8
    c = _fleet(rng, T, N)
    c[300:, 2] *= 1.3  # rank 2 slow, but only wall step time is reported
    step = np.repeat(c.max(axis=1, keepdims=True) + 0.05, N, 1)
    eng = VerdictEngine()
    eng.run(_ids(N), {"step_time": step}, steps=np.arange(T), job="j")
    assert {str(v.status) for v in eng.verdicts()} == {"healthy"}
    ev = eng.job_events()
    assert ev and ev[0].start_step == 300 and ev[0].devices == N


# ---------------------------------------------------------------- streaming == batch
def _mixed_block(rng, T, N):
    c = _fleet(rng, T, N)
    c[T // 2 :, 1] *= 1.3
    c[rng.random((T, N)) < 0.05] = np.nan
    c[3, 2] = -1.0
    c[40:60] *= 2.0
    clk = np.full((T, N), 1980.0) * np.exp(0.005 * rng.standard_normal((T, N)))
    clk[T // 3 :, 3] *= 0.8
    clk[rng.random((T, N)) < 0.05] = np.nan
    reasons = np.zeros((T, N))
    reasons[T // 4 :, 0] = 0x40
    reasons[:, 5] = 0x1
    width = np.full((T, N), 16.0)
    width[T // 2 :, 4] = 8
    xid = np.zeros((T, N))
    xid[T - 10 :, 6] = 79
    replay = np.cumsum(rng.random((T, N)) < 0.01, axis=0).astype(float)
    return {
        "compute_time": c,
        "step_time": np.repeat(np.nanmax(c, axis=1, keepdims=True), N, 1),
        "sm_clock_mhz": clk,
        "sm_clock_max_mhz": np.full((T, N), 1980.0),
        "gpu_util_ratio": np.where(reasons == 0x1, 0.0, 0.95),
        "clock_event_reasons": reasons,
        "pcie_link_width": width,
        "pcie_link_width_max": np.full((T, N), 16.0),
        "pcie_replay_total": replay,
        "xid_last": xid,
    }


def test_run_equals_update_bit_for_bit():
    rng = np.random.default_rng(14)
    T, N = 300, 7
    vals = _mixed_block(rng, T, N)
    groups = [0, 0, 0, 0, 1, 1, 2]
    steps = np.arange(T) + 1000
    times = 1.7e9 + 0.5 * np.arange(T)
    a = VerdictEngine()
    a.run(_ids(N), vals, steps=steps, timestamps=times, groups=groups, job="j")
    b = VerdictEngine()
    for t in range(T):
        b.update(
            _ids(N),
            {k: v[t] for k, v in vals.items()},
            step=int(steps[t]),
            timestamp=float(times[t]),
            groups=groups,
            job="j",
        )
    sa, sb = _state_arrays(a), _state_arrays(b)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
    assert [v.to_dict() for v in a.verdicts()] == [v.to_dict() for v in b.verdicts()]
    assert [e.to_dict() for e in a.job_events()] == [e.to_dict() for e in b.job_events()]
    # and in uneven chunks
    c = VerdictEngine()
    for lo, hi in [(0, 1), (1, 57), (57, 200), (200, T)]:
        c.run(
            _ids(N),
            {k: v[lo:hi] for k, v in vals.items()},
            steps=steps[lo:hi],
            timestamps=times[lo:hi],
            groups=groups,
            job="j",
        )
    sc = _state_arrays(c)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sc[k], err_msg=k)


def test_device_order_and_time_scale_do_not_matter():
    rng = np.random.default_rng(24)
    T, N = 300, 7
    vals = _mixed_block(rng, T, N)
    groups = np.array([0, 0, 0, 0, 1, 1, 2])
    perm = rng.permutation(N)
    a = VerdictEngine()
    a.run(_ids(N), vals, steps=np.arange(T), groups=groups, job="j")
    b = VerdictEngine()
    scaled = {k: (v[:, perm] * 3.7 if k.endswith("_time") else v[:, perm]) for k, v in vals.items()}
    b.run([_ids(N)[p] for p in perm], scaled, steps=np.arange(T), groups=groups[perm], job="j")
    va, vb = _by_dev(a), _by_dev(b)
    for d in va:
        x, y = va[d].to_dict(), vb[d].to_dict()
        assert x["status"] == y["status"] and x["onset_step"] == y["onset_step"], d
        assert x["detected_step"] == y["detected_step"], d
        if x["slowdown"] is not None:
            assert abs(x["slowdown"] - y["slowdown"]) < 1e-9


def test_mixed_block_verdicts():
    rng = np.random.default_rng(14)
    T, N = 300, 7
    vals = _mixed_block(rng, T, N)
    eng = VerdictEngine()
    eng.run(_ids(N), vals, steps=np.arange(T), groups=[0, 0, 0, 0, 1, 1, 2], job="j")
    v = _by_dev(eng)
    assert v["gpu0"].status is Status.DEGRADED and "HW thermal" in v["gpu0"].reasons[0]
    assert v["gpu1"].status is Status.DEGRADED and v["gpu1"].slowdown > 0.2
    assert v["gpu3"].status is Status.DEGRADED and "SM clock" in " ".join(v["gpu3"].reasons)
    assert v["gpu4"].status is Status.DEGRADED and "PCIe link width" in " ".join(v["gpu4"].reasons)
    assert v["gpu6"].status is Status.FAILED and "XID 79" in v["gpu6"].reasons[0]
    assert v["gpu6"].onset_step == T - 10
    # idle device: low utilisation and the idle bit are not degradation
    assert v["gpu5"].status is Status.HEALTHY and v["gpu5"].signals["idle"]


# ---------------------------------------------------------------- hard signals, one by one
@pytest.mark.parametrize(
    ("column", "healthy", "faulty", "expected", "text"),
    [
        ("clock_event_reasons", 0, 0x8, Status.DEGRADED, "HW slowdown"),
        ("clock_event_reasons", 0, 0x80, Status.DEGRADED, "power brake"),
        ("clock_event_reasons", 0, 0x4, Status.HEALTHY, ""),  # routine power capping alone
        ("remap_pending", 0, 1, Status.DEGRADED, "row remap pending"),
        ("remap_failure", 0, 1, Status.DEGRADED, "row remapping failure"),
        ("xid_last", 0, 74, Status.DEGRADED, "XID 74"),
        ("xid_last", 0, 13, Status.HEALTHY, ""),  # application error, not the GPU
        ("xid_last", 0, 48, Status.FAILED, "XID 48"),
        ("device_lost", 0, 1, Status.FAILED, "device lost"),
    ],
)
def test_hard_signal(column, healthy, faulty, expected, text):
    T, N = 100, 4
    x = np.full((T, N), float(healthy))
    x[50:, 2] = faulty
    eng = VerdictEngine()
    eng.run(_ids(N), {column: x}, timestamps=np.arange(T) * 1.0)
    v = _by_dev(eng)
    assert v["gpu2"].status is expected
    if text:
        assert text in " ".join(v["gpu2"].reasons)
        assert v["gpu2"].onset_time == 50.0
    assert all(v[d].status is Status.HEALTHY for d in ("gpu0", "gpu1", "gpu3"))


def test_pcie_generation_ignored_when_idle():
    T, N = 100, 4
    gen = np.full((T, N), 5.0)
    gen[:, 1] = 1.0  # idle link power saving
    gen[50:, 2] = 3.0  # busy and below max: degraded
    util = np.full((T, N), 0.9)
    util[:, 1] = 0.0
    eng = VerdictEngine()
    eng.run(
        _ids(N),
        {"pcie_link_gen": gen, "pcie_link_gen_max": np.full((T, N), 5.0), "gpu_util_ratio": util},
        timestamps=np.arange(T) * 1.0,
    )
    v = _by_dev(eng)
    assert v["gpu1"].status is Status.HEALTHY
    assert v["gpu2"].status is Status.DEGRADED


def test_rising_error_counters():
    T, N = 200, 4
    x = np.zeros((T, N))
    x[100:, 1] = np.arange(100)  # rises every sample: suspect (timings decide "slower")
    x[185:, 2] = 5  # one recent jump: suspect
    eng = VerdictEngine()
    eng.run(_ids(N), {"nvlink_crc_errors_total": x}, timestamps=np.arange(T) * 1.0)
    v = _by_dev(eng)
    assert v["gpu1"].status is Status.SUSPECT and "(+99, in 97 % of recent samples) since t=101" in v["gpu1"].reasons[0]
    assert v["gpu2"].status is Status.SUSPECT
    assert v["gpu2"].k8s_health == "Healthy"


def test_mark_lost_and_hysteresis_of_hard_signal():
    T, N = 200, 3
    r = np.zeros((T, N))
    r[50:60, 0] = 0x40  # thermal episode that ends
    eng = VerdictEngine(recovery=20)
    eng.run(_ids(N), {"clock_event_reasons": r}, steps=np.arange(T))
    assert _by_dev(eng)["gpu0"].status is Status.HEALTHY
    latched = VerdictEngine(recovery=20, latch=True)
    latched.run(_ids(N), {"clock_event_reasons": r}, steps=np.arange(T))
    assert _by_dev(latched)["gpu0"].status is Status.DEGRADED
    eng.mark_lost("gpu1", step=199, reason="XID 79 from the event set")
    v = _by_dev(eng)["gpu1"]
    assert v.status is Status.FAILED and v.onset_step == 199 and "XID 79" in v.reasons[0]


def test_verdicts_do_not_flap():
    rng = np.random.default_rng(15)
    T, N = 1500, 8
    x = _fleet(rng, T, N)
    x[500:, 3] *= 1.06  # just above the 5 % threshold
    eng = VerdictEngine()
    statuses = []
    ids = _ids(N)
    for lo in range(0, T, 10):
        eng.run(ids, {"compute_time": x[lo : lo + 10]}, steps=np.arange(lo, lo + 10))
        statuses.append(_by_dev(eng)["gpu3"].status)
    changes = sum(a is not b for a, b in zip(statuses, statuses[1:]))
    assert statuses[-1] in (Status.DEGRADED, Status.SUSPECT)
    assert changes <= 3


# ---------------------------------------------------------------- unknown
def test_unknown_during_warmup_and_after_data_stops():
    rng = np.random.default_rng(16)
    x = _fleet(rng, 200, 5)
    eng = VerdictEngine(warmup=20, data_timeout_steps=30)
    eng.run(_ids(5), {"compute_time": x[:10]}, steps=np.arange(10))
    assert {str(v.status) for v in eng.verdicts()} == {"unknown"}
    eng.run(_ids(5), {"compute_time": x[10:100]}, steps=np.arange(10, 100))
    assert {str(v.status) for v in eng.verdicts()} == {"healthy"}
    eng.run(_ids(4), {"compute_time": x[100:200, :4]}, steps=np.arange(100, 200))
    v = _by_dev(eng)["gpu4"]
    assert v.status is Status.UNKNOWN and "no data since step 99" in v.reasons[0]
    assert v.k8s_health == "Unknown"


# ---------------------------------------------------------------- elastic and state
def test_elastic_membership_and_state_round_trip():
    rng = np.random.default_rng(17)
    T, N = 600, 8
    x = _fleet(rng, T, N)
    x[350:, 6] *= 1.2
    ids = _ids(N)
    full = VerdictEngine()

    def feed(eng, lo, hi):
        # elastic: gpu7 leaves at 200 and gpu8 joins at 300
        for a, b in [(lo, min(hi, 200)), (max(lo, 200), min(hi, 300)), (max(lo, 300), hi)]:
            if a >= b:
                continue
            if a < 200:
                eng.run(ids, {"compute_time": x[a:b]}, steps=np.arange(a, b), job="j")
            elif a < 300:
                eng.run(ids[:7], {"compute_time": x[a:b, :7]}, steps=np.arange(a, b), job="j")
            else:
                eng.run(
                    ids[:7] + ["gpu8"], {"compute_time": x[a:b]}, steps=np.arange(a, b), job="j"
                )

    feed(full, 0, T)
    half = VerdictEngine()
    feed(half, 0, 400)
    restored = VerdictEngine()
    restored.load_state_dict(pickle.loads(pickle.dumps(half.state_dict())))
    feed(restored, 400, T)
    for k, a in _state_arrays(full).items():
        np.testing.assert_array_equal(a, _state_arrays(restored)[k], err_msg=k)
    assert [v.to_dict() for v in full.verdicts()] == [v.to_dict() for v in restored.verdicts()]
    v = _by_dev(full)
    assert v["gpu6"].status is Status.DEGRADED
    assert v["gpu7"].status is Status.UNKNOWN
    assert v["gpu8"].status is Status.HEALTHY
    clone = pickle.loads(pickle.dumps(full))
    assert [x.to_dict() for x in clone.verdicts()] == [x.to_dict() for x in full.verdicts()]
    full.forget(["gpu7"])
    assert "gpu7" not in {x.device for x in full.verdicts()}


# ---------------------------------------------------------------- false alarms (simulation)
def _ar1_t(rng, T, N, phi, df, scale):
    e = rng.standard_t(df, size=(T, N)) * scale
    out = np.empty((T, N))
    out[0] = e[0]
    c = np.sqrt(1 - phi * phi)
    for t in range(1, T):
        out[t] = phi * out[t - 1] + c * e[t]
    return out


@pytest.mark.parametrize(("phi", "df"), [(0.0, 1e9), (0.6, 1e9), (0.0, 3.0), (0.6, 3.0)])
def test_no_degraded_verdicts_on_healthy_fleets(phi, df):
    rng = np.random.default_rng(18)
    T, N = 4000, 64
    noise = _ar1_t(rng, T, N, phi, df, 0.02)
    x = 0.2 * np.exp(noise + rng.uniform(-0.02, 0.02, N))
    spikes = rng.random((T, N)) < 0.002  # GC pauses on random ranks
    x[spikes] *= 3.0
    eng = VerdictEngine()
    eng.run(_ids(N), {"compute_time": x}, steps=np.arange(T), groups=np.arange(N) // 8)
    st = [v.status for v in eng.verdicts()]
    assert st.count(Status.DEGRADED) == 0
    assert st.count(Status.SUSPECT) <= 1


def test_frequent_heavy_spikes_on_every_rank_are_not_degradation():
    rng = np.random.default_rng(23)
    T, N = 4000, 32
    x = _fleet(rng, T, N, noise=0.04)
    spikes = rng.random((T, N)) < 0.01  # 1 % of steps, Pareto-sized, on every rank: twice stall_rate
    x[spikes] *= 1.0 + rng.pareto(1.2, spikes.sum())
    eng = VerdictEngine()
    eng.run(_ids(N), {"compute_time": x}, steps=np.arange(T))
    assert [v.device for v in eng.verdicts() if v.status in (Status.DEGRADED, Status.FAILED)] == []


def test_detection_under_heavy_tailed_autocorrelated_noise():
    rng = np.random.default_rng(19)
    T, N = 1500, 8
    x = 0.2 * np.exp(_ar1_t(rng, T, N, 0.5, 3.0, 0.02))
    x[700:, 2] *= 1.15
    eng = VerdictEngine()
    eng.run(_ids(N), {"compute_time": x}, steps=np.arange(T))
    v = _by_dev(eng)
    assert v["gpu2"].status is Status.DEGRADED
    assert abs(v["gpu2"].onset_step - 700) <= 15
    assert sum(x.status is not Status.HEALTHY for x in v.values()) == 1


# ---------------------------------------------------------------- kernel vs reference
def _loo_reference(logx):
    """Naive leave-one-out median deviation over one row (NaN = missing)."""
    out = np.full(logx.shape, np.nan)
    ok = np.isfinite(logx)
    if ok.sum() < 2:
        return out
    for j in np.flatnonzero(ok):
        peers = np.delete(logx, j)
        out[j] = logx[j] - np.median(peers[np.isfinite(peers)])
    return out


def test_peer_deviation_matches_numpy_reference():
    rng = np.random.default_rng(20)
    for n in (2, 3, 5, 8, 33, 40):
        x = np.exp(rng.standard_normal((30, n)))
        x[rng.random(x.shape) < 0.15] = np.nan
        eng = VerdictEngine()
        for t in range(30):
            eng.update(_ids(n), {"compute_time": x[t]}, step=t)
            ref = _loo_reference(np.log(x[t]))
            got = eng._ST[:n, K.C_LASTX]
            got_step = eng._ST[:n, K.C_LASTSTEP]
            fresh = got_step == t
            np.testing.assert_allclose(got[fresh], ref[fresh], rtol=0, atol=1e-12)
            assert np.array_equal(fresh, np.isfinite(ref))


def _channel_reference(xs, P, dz, hz):
    """Plain-Python transcription of the spatial channel (no numba).

    Prewhitened, winsorised CUSUM: score ((d - m) - phi (d_prev - m)) / sigma_e,
    Huber (proposal 2) innovation scale, winsorised lag-1 autocorrelation with
    Kendall's bias correction, h interpolated in log shift.
    """
    from degrade.core._kernels_common import winsorised_var_factor

    c = P[K.P_CLIP]
    wk = winsorised_var_factor(c)
    n = 0
    loc = scale = prev = np.nan
    ac = sq = xp = 0.0
    hit = 0
    alarm = False
    S = 0.0
    h = sig = sige = phiu = np.nan
    last = np.nan
    Ss = []
    for x in xs:
        if not np.isfinite(x):
            Ss.append(S)
            continue
        s_prev = S
        if n >= P[K.P_WARM]:
            redesign = (s_prev == 0 or (not alarm and s_prev < 0.5 * h)) and (n % 8 == 0 or np.isnan(h))
            if redesign:
                n_eff = min(n, (2 - P[K.P_LAMPHI]) / P[K.P_LAMPHI])
                phi = min(ac + np.sqrt(max(1 - ac * ac, 0.0) / max(n_eff, 1.0)), P[K.P_PHIMAX])
                sm = max(scale * (1 + 1 / np.sqrt(max(n_eff, 1.0))) / np.sqrt(1 - phi * phi), P[K.P_MINSCALE])
                sig_new = sm * np.sqrt((1 + phi) / (1 - phi))
                if not abs(sig_new - sig) <= 0.01 * sig and (s_prev == 0 or sig_new < sig):
                    sig = sig_new
                    if s_prev > 0:
                        s_prev *= sige / (sm * np.sqrt(1 - phi * phi))
                    sige = sm * np.sqrt(1 - phi * phi)
                    phiu = phi
                    h = float(np.interp(np.log((P[K.P_MU1] - P[K.P_MU0]) / sig), np.log(dz), hz))
            if redesign:
                n_eff = min(n, (2 - P[K.P_LAMPHI]) / P[K.P_LAMPHI])
                mu0 = P[K.P_MU0] + max(min(loc + 2 * sig / np.sqrt(max(n_eff, 1.0)), 0.0), -P[K.P_MU0])
            e = (x - mu0) - phiu * (last - mu0) if np.isfinite(last) else (x - mu0) * (1 - phiu)
            z = float(np.clip(e / sige, -c, c)) - 0.5 * (P[K.P_MU1] - P[K.P_MU0]) / sig
            S = min(max(0.0, s_prev + z), P[K.P_CAP] * h)
            hit = hit + 1 if S > h else 0
        alarm = alarm or hit >= P[K.P_PERSIST]
        if not alarm:
            move_loc = n < P[K.P_WARM] or S < 0.5 * h
            if n == 0:
                loc, scale, prev, ac, sq, xp = x, np.nan, np.nan, 0.0, 0.0, 0.0
            elif np.isnan(scale):
                r = x - loc
                scale = abs(r) * 0.886227
                sq = 0.25 * r * r
                loc += 0.5 * r
                prev = 0.5 * r
            else:
                lphi = max(1 / (n + 1), P[K.P_LAMPHI])
                phi = ac
                se = max(scale, 0.1 * P[K.P_MINSCALE] * np.sqrt(1 - phi * phi))
                sm = se / np.sqrt(1 - phi * phi)
                rc = float(np.clip(x - loc, -c * sm, c * sm))
                if move_loc:
                    loc += lphi * rc
                if not np.isnan(prev):
                    zc = float(np.clip((rc - phi * prev) / se, -c, c))
                    scale = np.sqrt((1 - lphi) * se * se + lphi * se * se * zc * zc / wk)
                    sq += lphi * (rc * rc - sq)
                    xp += lphi * (prev * rc - xp)
                    if sq > 0:
                        ph = xp / sq
                        n_eff = min(n, (2 - P[K.P_LAMPHI]) / P[K.P_LAMPHI])
                        ph += (1 + 3 * max(ph, 0.0)) / n_eff
                        ac = min(max(ph, 0.0), P[K.P_PHIMAX])
                prev = rc
        n += 1
        last = x
        Ss.append(S)
    return np.array(Ss)


def test_cusum_channel_matches_python_reference():
    rng = np.random.default_rng(21)
    eng = VerdictEngine()
    P = eng._params
    xs = 0.02 * rng.standard_normal(400) + np.where(np.arange(400) > 200, 0.08, 0.0)
    xs[rng.random(400) < 0.1] = np.nan
    S = np.zeros((1, K.C_FIELDS))
    S[0] = eng._fresh_channel()
    H = np.full((1, K.HIST_FIELDS), np.nan)
    got = []
    for t, x in enumerate(xs):
        if np.isfinite(x):
            K._channel_update(S, H, 0, x, False, float(t), np.nan, P, eng._dz, eng._hz)
        got.append(S[0, K.C_S])
    np.testing.assert_allclose(
        got, _channel_reference(xs, P, eng._dz, eng._hz), rtol=1e-9, atol=1e-9
    )


# ---------------------------------------------------------------- bad input
def test_bad_input_raises_input_error():
    eng = VerdictEngine()
    with pytest.raises(InputError, match="shape"):
        eng.update(["a", "b"], {"compute_time": np.ones(3)})
    with pytest.raises(InputError, match="unknown column 'bogus'"):
        eng.update(["a"], {"bogus": np.ones(1)})
    with pytest.raises(InputError, match="listed twice"):
        eng.update(["a", "a"], {"compute_time": np.ones(2)})
    with pytest.raises(InputError, match="expected \\(T, 2\\)"):
        eng.run(["a", "b"], {"compute_time": np.ones(2)})
    with pytest.raises(InputError, match="numeric"):
        eng.update(["a"], {"compute_time": ["x"]})
    with pytest.raises(InputError, match="groups"):
        eng.update(["a", "b"], {"compute_time": np.ones(2)}, groups=[1])
    with pytest.raises(InputError, match="non-empty"):
        eng.update(["a"], {})
    with pytest.raises(InputError, match="min_slowdown"):
        EngineConfig(min_slowdown=-1)
    with pytest.raises(InputError, match="unknown option"):
        VerdictEngine(min_slowdonw=0.1)
    with pytest.raises(InputError, match="missing key"):
        eng.load_state_dict({"version": 1})
    # bad values are missing data, not errors
    eng.update(["a", "b"], {"compute_time": np.array([np.inf, -1.0])}, step=0)
    assert eng.verdicts()[0].signals["timing_missing"] == 1


# ---------------------------------------------------------------- wave 2: accuracy follow-ups
@pytest.mark.parametrize(("shift", "min_slowdown", "expect"), [
    # between the CUSUM's reference (4 %) and min_slowdown, long and well measured
    (0.045, 0.05, Status.SUSPECT),
    (0.16, 0.20, Status.SUSPECT),
    (0.26, 0.20, Status.DEGRADED),
    (0.07, 0.05, Status.DEGRADED),
])
def test_min_slowdown_is_a_floor_for_degraded(shift, min_slowdown, expect):
    rng = np.random.default_rng(23)
    T, N = 2000, 16
    x = _fleet(rng, T, N, noise=0.02, offset=0.0)
    x[500:, 5] *= 1.0 + shift
    eng = VerdictEngine(min_slowdown=min_slowdown, healthy_offset=min(0.03, 0.6 * min_slowdown), latch=True)
    eng.run(_ids(N), {"compute_time": x}, steps=np.arange(T))
    v = _by_dev(eng)["gpu5"]
    assert v.status is expect, (v.slowdown, v.reasons)
    if v.status is Status.DEGRADED:
        assert v.slowdown >= min_slowdown - 0.01


def test_reason_states_the_statistic_that_crossed_h():
    import re

    rng = np.random.default_rng(24)
    T, N = 3000, 8
    x = _fleet(rng, T, N)
    x[400:700, 2] *= 1.12  # first episode, recovers
    x[2000:2300, 2] *= 1.08  # second, smaller episode
    x[1000:, 6] *= 1.10
    for latch in (False, True):
        eng = VerdictEngine(latch=latch)
        for lo in range(0, T, 250):  # block by block, as after restarts
            eng.run(_ids(N), {"compute_time": x[lo : lo + 250]}, steps=np.arange(lo, lo + 250))
            eng = pickle.loads(pickle.dumps(eng))
        seen = 0
        for v in eng.verdicts():
            for r in v.reasons:
                for a, b in re.findall(r"CUSUM ([0-9.]+) > h ([0-9.]+)", r):
                    assert float(a) > float(b), r
                    seen += 1
        assert seen >= 1


def test_old_state_without_crossing_fields_loads():
    rng = np.random.default_rng(25)
    eng = VerdictEngine()
    eng.run(_ids(4), {"compute_time": _fleet(rng, 50, 4)}, steps=np.arange(50))
    d = eng.state_dict()
    for k in ("timing_peer", "timing_own", "clock_peer", "stall_peer"):
        d[k] = d[k][:, : K.C_FIELDS_V1]
    eng2 = VerdictEngine()
    eng2.load_state_dict(d)
    assert eng2.state_dict()["timing_peer"].shape == (4, K.C_FIELDS)
    assert np.isnan(eng2.state_dict()["timing_peer"][:, K.C_XS]).all()


def test_recurring_job_events_are_merged_with_a_count():
    rng = np.random.default_rng(26)
    T, N = 3000, 8
    c = _fleet(rng, T, N)
    stalls = list(range(300, 1300, 50))  # 20 checkpoints, every 50 steps
    for s0 in stalls:
        c[s0 : s0 + 2] *= 3.0
    c[2500:2503] *= 3.0  # a lone stall, far from the others
    ids = _ids(N)
    groups = [0] * 4 + [1] * 4  # two peer groups see every stall
    raw = VerdictEngine(job_merge_gap=0)
    raw.run(ids, {"compute_time": c}, steps=np.arange(T), job="j", groups=groups)
    assert len([e for e in raw.job_events() if e.kind == "job_slowdown"]) == 2 * (len(stalls) + 1)
    eng = VerdictEngine()
    eng.run(ids, {"compute_time": c}, steps=np.arange(T), job="j", groups=groups)
    ev = [e for e in eng.job_events() if e.kind == "job_slowdown"]
    assert [(e.start_step, e.end_step, e.count, e.devices) for e in ev] == [
        (300, stalls[-1] + 1, len(stalls), 8), (2500, 2502, 1, 8)]
    assert "every 50 steps" in ev[0].reason and ev[0].slowdown == pytest.approx(2.0, rel=0.1)
    assert {str(v.status) for v in eng.verdicts()} == {"healthy"}
    # merging is a view: streaming gives the same list, and the state keeps every event
    s = VerdictEngine()
    for lo in range(0, T, 100):
        s.run(ids, {"compute_time": c[lo : lo + 100]}, steps=np.arange(lo, lo + 100), job="j", groups=groups)
    assert [e.to_dict() for e in s.job_events()] == [e.to_dict() for e in eng.job_events()]
    with pytest.raises(InputError, match="job_merge_gap"):
        EngineConfig(job_merge_gap=-1)


# ---------------------------------------------------------------- large-shift rule (PAI straggler)
def _ar_fleet(rng, T, N, noise, phi, df=None, offset=0.015):
    """AR(1) noise of marginal std ``noise``; Student-t innovations when ``df`` is given."""
    e = rng.standard_normal((T, N)) if df is None else rng.standard_t(df, (T, N)) * np.sqrt((df - 2) / df)
    e *= noise * np.sqrt(1 - phi * phi)
    z = np.empty((T, N))
    z[0] = e[0] / np.sqrt(1 - phi * phi)
    for t in range(1, T):
        z[t] = phi * z[t - 1] + e[t]
    return 0.2 * np.exp(rng.uniform(-offset, offset, N) + z)


def test_pai_job1_straggler_worker6_is_reported():
    # real data, Alibaba PAI cluster trace (cluster-trace-gpu-v2020), AntMan OSDI 2020,
    # CC BY 4.0: worker 6 is 1.2-2.4x its peers for ~14 logged steps from step 181
    pl = require("polars")
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "datasets" / "pai" / "timings.parquet"
    d = pl.read_parquet(path).filter(pl.col("job") == "pai-job1")
    w = d.pivot(on="device", index="step", values="compute_time").sort("step")
    ids = [c for c in w.columns if c != "step"]
    eng = VerdictEngine(latch=True)
    eng.run(ids, {"compute_time": w.select(ids).to_numpy()}, steps=w["step"].to_numpy(), job="pai-job1")
    v = _by_dev(eng)["pai-job1/worker6"]
    assert v.status is Status.SUSPECT and "large-shift rule" in v.reasons[0]
    assert 180 <= v.onset_step <= 183 and 181 <= v.detected_step <= 190
    assert v.slowdown >= 0.10


def test_short_large_burst_in_autocorrelated_noise_is_suspect():
    rng = np.random.default_rng(21)
    T, N = 800, 10
    x = _ar_fleet(rng, T, N, noise=0.05, phi=0.7)
    x[400:414, 4] *= 1.6  # 14 steps: the CUSUM's h is tens of sigmas here
    eng = VerdictEngine(latch=True)
    eng.run(_ids(N), {"compute_time": x}, steps=np.arange(T))
    vs = _by_dev(eng)
    assert vs["gpu4"].status is Status.SUSPECT and 400 <= vs["gpu4"].onset_step <= 403
    assert vs["gpu4"].detected_step <= 410
    assert all(u.status is Status.HEALTHY for d, u in vs.items() if d != "gpu4")
    plain = VerdictEngine(latch=True)  # the same fleet without the burst stays healthy
    x[400:414, 4] /= 1.6
    plain.run(_ids(N), {"compute_time": x}, steps=np.arange(T))
    assert {str(v.status) for v in plain.verdicts()} == {"healthy"}


@pytest.mark.parametrize("df", [None, 3])
def test_large_shift_rule_false_alarms_latched(df):
    # 32 x 4000 latched device-samples of AR(0.6) noise. Gaussian: the rule's
    # design (z for RING / arl0 per window) leaves an expected ~0.1 episode.
    # Student-t(3): heavy-tailed runs can cross it, which is why the rule alone
    # only makes a device suspect, never degraded.
    rng = np.random.default_rng(22)
    x = _ar_fleet(rng, 4000, 32, noise=0.03, phi=0.6, df=df)
    eng = VerdictEngine(latch=True)
    eng.run(_ids(32), {"compute_time": x}, steps=np.arange(4000))
    st = [v.status for v in eng.verdicts()]
    assert st.count(Status.DEGRADED) == 0
    assert st.count(Status.SUSPECT) <= (0 if df is None else 3)


def test_ring_median_matches_numpy_sort_reference():
    # The allocation-free median of the large-shift rule's ring must equal the
    # plain reference (sort, then mean of the two middle values; NaN sorts last).
    from degrade.verdict import _layout as K
    from degrade.verdict._kernels import _ring_median

    rng = np.random.default_rng(7)
    width = K.C_RING + K.RING
    S = np.zeros((1, width))
    for trial in range(3000):
        ring = rng.standard_t(3, size=K.RING)
        if trial % 5 == 0:
            ring[rng.integers(0, K.RING, size=rng.integers(1, 3))] = np.nan
        if trial % 7 == 0:  # ties, signed zeros
            ring[: K.RING // 2] = rng.choice([0.0, -0.0, 1.5], size=K.RING // 2)
        S[0, K.C_RING : K.C_RING + K.RING] = ring
        buf = np.sort(ring)
        want = 0.5 * (buf[K.RING // 2 - 1] + buf[K.RING // 2])
        got = _ring_median(S, 0)
        assert (np.isnan(want) and np.isnan(got)) or got == want, (ring, got, want)
