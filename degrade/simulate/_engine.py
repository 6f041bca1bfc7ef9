"""Vectorised fleet simulation: jobs x devices x steps -> timings, counters, truth."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ._faults import FAULTS, IDLE, SW_POWER, counter_effect, expected_status, timing_effect
from ._noise import apply_garbage, log_noise, moe_imbalance
from ._scenario import FaultSpec, JobSpec, Scenario, _instance_names, load_scenario

__all__ = ["simulate", "SimResult", "MODELS"]

#: GPU models: name, max SM/memory clock (MHz), idle SM clock, power limit and idle power (W), PCIe
MODELS: dict[str, dict[str, Any]] = {
    "H100": dict(name="NVIDIA H100 80GB HBM3", sm_max=1980.0, mem_max=2619.0, sm_idle=345.0,
                 power_limit=700.0, power_idle=70.0, pcie_gen=5, pcie_width=16),
    "A100": dict(name="NVIDIA A100-SXM4-80GB", sm_max=1410.0, mem_max=1593.0, sm_idle=210.0,
                 power_limit=400.0, power_idle=55.0, pcie_gen=4, pcie_width=16),
    "L40S": dict(name="NVIDIA L40S", sm_max=2520.0, mem_max=9001.0, sm_idle=210.0,
                 power_limit=350.0, power_idle=35.0, pcie_gen=4, pcie_width=16),
}
_PCI = ["18", "2A", "3A", "5D", "9A", "AB", "BA", "DB"]

_INT_METRICS = (
    "clock_event_reasons", "pcie_link_gen", "pcie_link_gen_max", "pcie_link_width", "pcie_link_width_max",
    "pcie_replay_total", "ecc_corrected_total", "ecc_uncorrected_total", "remapped_rows_correctable",
    "remapped_rows_uncorrectable", "remap_pending", "remap_failure", "xid_last",
    "nvlink_crc_errors_total", "nvlink_replay_errors_total", "nvlink_recovery_errors_total", "device_lost",
)
_FLOAT_METRICS = (
    "sm_clock_mhz", "sm_clock_max_mhz", "mem_clock_mhz", "mem_clock_max_mhz", "power_watts",
    "power_limit_watts", "gpu_temp_celsius", "memory_temp_celsius", "gpu_util_ratio", "mem_util_ratio",
)


@dataclass
class SimResult:
    """Output of :func:`simulate`: canonical timings and counters plus the ground truth."""

    timings: Any
    counters: Any
    truth: Any
    scenario: Scenario
    seed: int
    jobs: list[dict] = field(default_factory=list)
    #: true lost wall time (docs/cost.md): per fault, actual wall minus the wall with that fault
    #: removed (same noise), and per job (``device`` null) with all its faults removed
    lost: Any = None

    def write(self, directory, *, partition_by: str | None = None) -> dict[str, str]:
        """Write timings.parquet, counters.parquet and truth.parquet into ``directory``.

        With ``partition_by="job"`` timings go to a hive dataset
        ``timings/job=<job>/part-0.parquet`` and counters to
        ``counters/host=<host>/part-0.parquet`` (datasets that are read one
        partition at a time); truth stays one file.
        """
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        if partition_by not in (None, "job"):
            raise InputError(f"partition_by={partition_by!r}; expected None or 'job'")
        out = {}
        for name in ("timings", "counters", "truth"):
            frame = getattr(self, name)
            key = {"timings": "job", "counters": "host"}.get(name) if partition_by else None
            if key is None:
                path = os.path.join(directory, f"{name}.parquet")
                frame.write_parquet(path, compression="zstd", statistics=True)
            else:
                path = os.path.join(directory, name)
                for (value,), part in frame.group_by(key, maintain_order=True):
                    d = os.path.join(path, f"{key}={value}")
                    os.makedirs(d, exist_ok=True)
                    part.drop(key).write_parquet(os.path.join(d, "part-0.parquet"), compression="zstd", statistics=True)
            out[name] = path
        return out

    def __repr__(self) -> str:
        return (
            f"SimResult(scenario={self.scenario.name!r}, seed={self.seed}, timings={self.timings.height} rows, "
            f"counters={self.counters.height} rows, faults={self.truth.height})"
        )


def _pl():
    from .._optional import import_optional

    return import_optional("polars", "batch")


def _uuid(rng: np.random.Generator) -> str:
    h = "".join(f"{b:02x}" for b in rng.integers(0, 256, 16))
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _ar1(rng, shape, sigma: float, phi: float) -> np.ndarray:
    T, N = shape
    if sigma == 0:
        return np.zeros(shape)
    if phi == 0:
        return rng.normal(0.0, sigma, shape)
    innov = rng.normal(0.0, sigma * np.sqrt(1.0 - phi * phi), shape)
    out = np.empty(shape)
    prev = rng.normal(0.0, sigma, N)  # stationary start
    for t in range(T):
        prev = phi * prev + innov[t]
        out[t] = prev
    return out


def _reshuffled_ranks(rng, active: np.ndarray, restarts: list[int]) -> np.ndarray:
    """Ranks per (step, device): at every elastic restart the active devices get a new permutation."""
    S, N = active.shape
    rank = np.broadcast_to(np.arange(N)[None, :], (S, N)).copy()
    bounds = sorted({0, *restarts, S})
    for a, b in zip(bounds, bounds[1:]):
        if a == 0:
            continue  # the job starts with ranks in device order
        live = np.flatnonzero(active[a])
        rank[a:b, live] = rng.permutation(live.size)
    return rank


def _random_faults(sc: Scenario, rng) -> list[FaultSpec]:
    rf = sc.random_faults
    if rf is None:
        return []
    taken = {(f.job, f.device) for f in sc.faults}
    out = []
    lo, hi = rf.magnitude
    for job in sc.jobs:
        n = job.hosts * job.gpus_per_host
        for inst in _instance_names(job):
            for d in range(n):
                if (inst, d) in taken or rng.random() >= rf.fraction:
                    continue
                kind = str(rng.choice(rf.types))
                dm = FAULTS[kind].default_magnitude
                mag = dm if kind in ("hw_slowdown", "power_brake", "row_remap", "xid79") else float(rng.uniform(lo, hi))
                onset = int(rng.uniform(*rf.onset) * (job.steps - 1))
                out.append(FaultSpec(job=inst, device=d, type=kind, onset_step=onset, magnitude=round(mag, 4)))
    return out


def simulate(scenario, seed: int | None = None) -> SimResult:
    """Simulate a fleet: timings, counters and ground truth, deterministic by seed.

    Parameters
    ----------
    scenario : Scenario, str or path
        A :class:`Scenario`, a scenario name (datasets/scenarios/NAME.toml) or a TOML path.
    seed : int, optional
        Overrides the scenario's seed.

    Returns
    -------
    SimResult
        ``.timings``, ``.counters``, ``.truth`` (polars DataFrames).

    Examples
    --------
    >>> res = simulate("tiny", seed=1)
    >>> sorted(res.truth["fault"].to_list())
    ['slowdown', 'thermal']
    >>> res.timings.columns[:4]
    ['job', 'host', 'device', 'rank']
    """
    from .._optional import import_optional

    pl = import_optional("polars", "batch")
    sc = load_scenario(scenario) if not isinstance(scenario, Scenario) else scenario
    seed = int(sc.seed if seed is None else seed)
    if seed < 0:
        raise InputError(f"seed must be >= 0, got {seed}")
    root = np.random.SeedSequence(seed)
    fault_rng = np.random.default_rng(root.spawn(1)[0])
    faults = list(sc.faults) + _random_faults(sc, fault_rng)
    instances = [(job, name) for job in sc.jobs for name in _instance_names(job)]
    streams = root.spawn(len(instances) + 1)[1:]
    tim, cnt, tru, jobs_meta, lost = [], [], [], [], []
    host_counter = 0
    for (job, name), ss in zip(instances, streams):
        rng = np.random.default_rng(ss)
        jf = [f for f in faults if f.job == name]
        t, c, tr, meta, used_hosts = _simulate_job(sc, job, name, jf, rng, host_counter)
        lost.extend(meta.pop("lost_rows"))
        host_counter += used_hosts
        tim.append(t)
        cnt.append(c)
        tru.extend(tr)
        jobs_meta.append(meta)
    timings = pl.concat([pl.DataFrame(t) for t in tim], how="vertical").with_columns(
        pl.col("step").cast(pl.Int64), pl.col("rank").cast(pl.Int64)
    )
    counters = pl.concat([pl.DataFrame(c) for c in cnt], how="vertical")
    counters = counters.with_columns(
        [pl.col(m).cast(pl.Int64) for m in _INT_METRICS] + [pl.col("gpu").cast(pl.Int64)]
    ).sort(["host", "gpu", "timestamp"])
    truth_schema = {
        "device": pl.String, "job": pl.String, "host": pl.String, "fault": pl.String,
        "onset_step": pl.Int64, "onset_time": pl.Float64, "magnitude": pl.Float64,
        "end_step": pl.Int64, "expected_status": pl.String,
    }
    truth = pl.DataFrame(tru, schema=truth_schema, orient="row") if tru else pl.DataFrame(schema=truth_schema)
    lost_schema = {"job": pl.String, "device": pl.String, "fault": pl.String, "topology": pl.String,
                   "devices": pl.Int64, "lost_seconds": pl.Float64, "lost_gpu_hours": pl.Float64,
                   "wall_seconds": pl.Float64}
    lost_frame = pl.DataFrame(lost, schema=lost_schema, orient="row") if lost else pl.DataFrame(schema=lost_schema)
    return SimResult(timings, counters, truth, sc, seed, jobs_meta, lost_frame)


def _simulate_job(sc: Scenario, job: JobSpec, name: str, faults: list[FaultSpec], rng, host0: int):
    S, gph = job.steps, job.gpus_per_host
    N0 = job.hosts * gph
    spec = MODELS.get(job.model) or {**MODELS["H100"], "name": job.model}
    faulty = {f.device for f in faults}

    # ---- membership over time (elastic restarts)
    n_join = sum(int(e[2]) for e in job.elastic)
    N = N0 + n_join
    active = np.zeros((S, N), dtype=bool)
    active[:, :N0] = True
    restarts = []
    current, nxt = list(range(N0)), N0
    for step, leave, join in sorted((int(a), int(b), int(c)) for a, b, c in job.elastic):
        if not 0 < step < S:
            raise InputError(f"job {name!r}: elastic step {step} outside 1..{S - 1}")
        cand = [d for d in current if d not in faulty]
        leaving = set(rng.choice(cand, size=min(leave, len(cand)), replace=False).tolist()) if cand else set()
        for d in leaving:
            active[step:, d] = False
        current = [d for d in current if d not in leaving] + list(range(nxt, nxt + join))
        active[step:, nxt:nxt + join] = True
        nxt += join
        restarts.append(step)

    idrng = np.random.default_rng(rng.integers(2**63))
    uuids = [_uuid(idrng) for _ in range(N)]
    host_idx = np.arange(N) // gph
    hosts = [f"node-{host0 + h:04d}" for h in range(int(host_idx.max()) + 1)]
    gpu_idx = np.arange(N) % gph

    # ---- per-device structure
    if job.kind == "pipeline":
        stage_times = np.asarray(job.stage_times or [1.0, 0.9, 0.95, 1.15], dtype=float)
        stage = np.arange(N) % len(stage_times)
        base = job.compute_time * stage_times[stage]
        groups = [f"stage{s}" for s in stage]
    else:
        base = np.full(N, job.compute_time)
        groups = ["replica" if job.kind == "inference" else "dp"] * N
    # bounded: healthy parts differ by 1-2 %, never by a fault-sized amount
    offset = 1.0 + rng.uniform(-job.device_offset, job.device_offset, N)

    # ---- job-wide factors
    sched = np.ones(S)
    for step, factor in job.schedule:
        sched[int(step):] *= float(factor)
    warm = np.ones(S)
    if job.warmup_steps > 0:
        for s0 in [0, *restarts]:
            k = np.arange(min(job.warmup_steps, S - s0))
            warm[s0 + k] *= 1.0 + 1.5 * np.exp(-k / max(job.warmup_steps / 4.0, 1.0))
            warm[s0] *= 6.0  # first step compiles / allocates
    evalf = np.ones(S)
    if job.eval_every > 0:
        evalf[job.eval_every::job.eval_every] = job.eval_factor

    # ---- faults on timings
    comp_f = np.ones((S, N))
    comm_f = np.ones(S)
    stop_at = S
    steps = np.arange(S)
    fault_rows = []
    factors = []  # each fault's own compute and communication factors, for the true lost time
    for f in faults:
        m = FAULTS[f.type].default_magnitude if f.magnitude is None else float(f.magnitude)
        if f.type == "stall":
            # the mean slowdown of intermittent stalls is prob x (factor - 1): keep truth honest
            factor = float(f.params.get("stall_factor", 4.0))
            m = float(f.params.get("prob", m / max(factor - 1.0, 1e-9))) * (factor - 1.0)
        rel = steps - f.onset_step
        if f.end_step is not None:
            rel[int(f.end_step):] = -1
        cf, mf = timing_effect(f.type, m, f.params, rel, rng)
        comp_f[:, f.device] *= cf
        comm_f *= mf
        factors.append((cf, mf))
        if f.type == "xid79":
            if job.kind == "inference":
                active[f.onset_step:, f.device] = False
            else:
                stop_at = min(stop_at, f.onset_step)
        fault_rows.append((f, m))
    if stop_at < S:
        active[stop_at:, :] = False
        if stop_at == 0:
            raise InputError(f"job {name!r}: xid79 at onset_step 0 leaves no data; use onset_step >= 1")

    # new noise families draw from their own stream, so a scenario without them is bit-identical to before
    extra = (job.noise_family != "gaussian" or job.hetero > 0 or job.moe > 0 or job.reshuffle
             or job.garbage_rate > 0)
    xrng = np.random.default_rng(rng.integers(2**63)) if extra else None
    rank = np.broadcast_to(np.arange(N)[None, :], (S, N))
    if job.noise_family != "gaussian" or job.hetero > 0:
        noise = log_noise(xrng, (S, N), job.noise_spec())
    else:
        noise = _ar1(rng, (S, N), job.noise, job.ar)
    if job.reshuffle:
        rank = _reshuffled_ranks(xrng, active, restarts)
    if job.moe > 0:
        noise = noise + np.take_along_axis(moe_imbalance(xrng, (S, N), job.noise_spec()), rank, axis=1)
    spikes = np.where(
        rng.random((S, N)) < job.spike_prob, (rng.pareto(job.spike_alpha, (S, N)) + 1.0) * job.spike_scale, 0.0
    )
    compute = (base * offset)[None, :] * (sched * warm * evalf)[:, None] * np.exp(noise) * (1.0 + spikes) * comp_f

    gaps = np.zeros(S)
    for step, secs in job.idle:
        if not 0 < int(step) < S:
            raise InputError(f"job {name!r}: idle step {int(step)} outside 1..{S - 1}")
        gaps[int(step)] += float(secs)
    for s0 in restarts:
        gaps[s0] += job.restart_time
    ckpt = np.zeros(S)
    if job.checkpoint_every > 0:
        idx = np.arange(job.checkpoint_every, S, job.checkpoint_every)
        ckpt[idx] = job.checkpoint_time * np.exp(rng.normal(0.0, 0.1, idx.size))
    comm = job.comm_time * np.exp(rng.normal(0.0, 0.05, S)) * comm_f
    t0 = sc.start_time + job.start_offset + (rng.uniform(0, job.stagger) if job.stagger > 0 else 0.0)

    if job.kind == "inference":
        step_time = compute + (job.comm_time * np.exp(rng.normal(0.0, 0.05, (S, N))))
        ends = t0 + np.cumsum(step_time + gaps[:, None], axis=0)
    else:
        wall = _sync_wall(job, compute, active) + comm + ckpt
        step_time = np.broadcast_to(wall[:, None], (S, N))
        ends = np.broadcast_to((t0 + np.cumsum(wall + gaps))[:, None], (S, N))
    lost_rows = _true_lost(job, name, uuids, faults, factors, compute, comm, ckpt, active, comp_f,
                           comm_f, wall if job.kind != "inference" else None)

    keep = active.copy()
    if job.missing_rate > 0:
        keep &= rng.random((S, N)) >= job.missing_rate
    dev_i, step_i = np.nonzero(keep.T)
    reported = {"compute_time": compute[step_i, dev_i], "step_time": step_time[step_i, dev_i]}
    if job.garbage_rate > 0:
        # telemetry errors in the reported values only: the wall clock and the counters are untouched
        for col in job.garbage_columns:
            reported[col] = reported[col].copy()
            apply_garbage(xrng, reported[col], job.garbage_rate, job.garbage_values)
    pl = _pl()
    # strings by gathering from a small table: building them per row costs more than the simulation
    timings = {
        "job": pl.repeat(name, dev_i.size, dtype=pl.String, eager=True),
        "host": pl.Series([hosts[h] for h in host_idx], dtype=pl.String).gather(dev_i),
        "device": pl.Series(uuids, dtype=pl.String).gather(dev_i),
        "rank": rank[step_i, dev_i].astype(np.int64),
        "group": pl.Series(groups, dtype=pl.String).gather(dev_i),
        "step": step_i.astype(np.int64),
        "timestamp": ends[step_i, dev_i],
        "step_time": reported["step_time"],
        "compute_time": reported["compute_time"],
    }
    if job.kind == "pipeline" and job.microbatches > 0:
        n_st = len(job.stage_times or [1.0, 0.9, 0.95, 1.15])
        timings["pipeline"] = (np.arange(N) // n_st)[dev_i].astype(np.int64)
        timings["microbatches"] = np.full(dev_i.size, int(job.microbatches), dtype=np.int64)

    # ---- counters
    counters = _counters(sc, job, spec, active, ends, step_time, fault_rows, uuids, hosts, host_idx, gpu_idx, rng)

    truth = []
    for f, m in fault_rows:
        start = ends[f.onset_step, f.device] - step_time[f.onset_step, f.device]
        if f.type == "xid79":
            start = ends[f.onset_step - 1, f.device] if f.onset_step > 0 else start
        truth.append((
            uuids[f.device], name, hosts[host_idx[f.device]], f.type, int(f.onset_step), float(start), float(m),
            None if f.end_step is None else int(f.end_step), expected_status(f.type, m, f.params),
        ))
    meta = {"job": name, "kind": job.kind, "devices": N, "steps": S, "restarts": restarts, "lost_rows": lost_rows}
    return timings, counters, truth, meta, len(hosts)


def _sync_wall(job: JobSpec, compute: np.ndarray, active: np.ndarray) -> np.ndarray:
    """The compute part of a synchronous step: the slowest device, or the slowest microbatch pipeline."""
    if job.kind == "pipeline" and job.microbatches > 0:
        S, N = compute.shape
        n_st = len(job.stage_times or [1.0, 0.9, 0.95, 1.15])
        c = np.where(active, compute, 0.0).reshape(S, N // n_st, n_st)
        m = float(job.microbatches)
        return ((c.sum(axis=2) + (m - 1.0) * c.max(axis=2)) / m).max(axis=1)
    slowest = np.where(active, compute, -np.inf).max(axis=1)
    return np.where(np.isfinite(slowest), slowest, 0.0)


def _true_lost(job, name, uuids, faults, factors, compute, comm, ckpt, active, comp_f, comm_f, wall):
    """Ground truth of the lost time: the wall time with a fault removed, all else (noise) the same."""
    N = compute.shape[1]
    run = active.any(axis=1)
    members = active.sum(axis=1)
    if job.kind == "inference":
        topo = "replicas"
        rows, total = [], 0.0
        for f, (cf, _mf) in zip(faults, factors):
            d = f.device
            lost = float(np.where(active[:, d], compute[:, d] - compute[:, d] / cf, 0.0).sum())
            total += lost
            rows.append((name, uuids[d], f.type, topo, N, lost, lost / 3600.0, None))
        busy = float(np.where(active, compute, 0.0).sum())
        return rows + [(name, None, None, topo, N, total, total / 3600.0, busy)]
    topo = "pipeline" if job.kind == "pipeline" and job.microbatches > 0 else "synchronous"
    rows = []
    for f, (cf, mf) in zip(faults, factors):
        clean = compute.copy()
        clean[:, f.device] = clean[:, f.device] / cf
        w = _sync_wall(job, clean, active) + comm / mf + ckpt
        diff = np.where(run, wall - w, 0.0)
        rows.append((name, uuids[f.device], f.type, topo, N, float(diff.sum()), float((diff * members).sum()) / 3600.0,
                     None))
    w = _sync_wall(job, compute / comp_f, active) + comm / comm_f + ckpt
    diff = np.where(run, wall - w, 0.0)
    rows.append((name, None, None, topo, N, float(diff.sum()), float((diff * members).sum()) / 3600.0,
                 float(np.where(run, wall, 0.0).sum())))
    return rows


def _counters(sc, job, spec, active, ends, step_time, fault_rows, uuids, hosts, host_idx, gpu_idx, rng):
    S, N = active.shape
    iv = sc.counter_interval
    cols: dict[str, list] = {k: [] for k in ("device", "timestamp", "host", "model", "uuid", "gpu", "pci_bus_id")}
    for k in _FLOAT_METRICS + _INT_METRICS:
        cols[k] = []
    by_dev: dict[int, list] = {}
    for f, m in fault_rows:
        by_dev.setdefault(f.device, []).append((f, m))
    ecc_rate = np.where(rng.random(N) < 0.05, rng.uniform(1e-4, 1e-3, N), 0.0)  # a few noisy-but-fine devices
    temp_off = rng.normal(0.0, 2.5, N)
    for i in range(N):
        on_steps = np.nonzero(active[:, i])[0]
        if on_steps.size == 0:
            continue
        first, last = on_steps[0], on_steps[-1]
        start = ends[first, i] - step_time[first, i]
        stop = ends[last, i]
        xid = [fm for fm in by_dev.get(i, []) if fm[0].type == "xid79"]
        if xid:
            stop = stop + iv  # one last sample carries XID 79, then the device is gone
        g = np.arange(np.ceil((start - sc.start_time) / iv), np.floor((stop - sc.start_time) / iv) + 1) * iv + sc.start_time
        if g.size == 0:
            continue
        K = g.size
        e = ends[:, i]
        idx = np.minimum(np.searchsorted(e, g), S - 1)
        idle = (g < e[idx] - step_time[idx, i]) | ~active[idx, i] | (g > e[last])
        busy = ~idle
        C = {
            "sm_clock_mhz": np.where(idle, spec["sm_idle"],
                                     np.round(spec["sm_max"] * (1 - np.abs(rng.normal(0, 0.004, K))) / 15) * 15),
            "sm_clock_max_mhz": np.full(K, spec["sm_max"]),
            "mem_clock_mhz": np.full(K, spec["mem_max"]),
            "mem_clock_max_mhz": np.full(K, spec["mem_max"]),
            "power_watts": np.where(idle, spec["power_idle"] * np.exp(rng.normal(0, 0.03, K)),
                                    np.minimum(spec["power_limit"], spec["power_limit"] * 0.78 * np.exp(rng.normal(0, 0.05, K)))),
            "power_limit_watts": np.full(K, spec["power_limit"]),
            "gpu_temp_celsius": np.where(idle, 34.0, 62.0) + temp_off[i] + rng.normal(0, 0.7, K),
            "gpu_util_ratio": np.where(idle, 0.0, np.clip(0.96 + rng.normal(0, 0.02, K), 0, 1)),
            "mem_util_ratio": np.where(idle, 0.0, np.clip(0.45 + rng.normal(0, 0.05, K), 0, 1)),
            "clock_event_reasons": np.where(idle, IDLE, 0).astype(np.int64),
            "pcie_link_gen": np.full(K, spec["pcie_gen"], dtype=np.int64),
            "pcie_link_gen_max": np.full(K, spec["pcie_gen"], dtype=np.int64),
            "pcie_link_width": np.full(K, spec["pcie_width"], dtype=np.int64),
            "pcie_link_width_max": np.full(K, spec["pcie_width"], dtype=np.int64),
            "pcie_replay_total": np.zeros(K, dtype=np.int64),
            "ecc_corrected_total": np.cumsum(rng.poisson(ecc_rate[i] * iv, K)).astype(np.int64),
            "ecc_uncorrected_total": np.zeros(K, dtype=np.int64),
            "remapped_rows_correctable": np.zeros(K, dtype=np.int64),
            "remapped_rows_uncorrectable": np.zeros(K, dtype=np.int64),
            "remap_pending": np.zeros(K, dtype=np.int64),
            "remap_failure": np.zeros(K, dtype=np.int64),
            "xid_last": np.zeros(K, dtype=np.int64),
            "nvlink_crc_errors_total": np.zeros(K, dtype=np.int64),
            "nvlink_replay_errors_total": np.zeros(K, dtype=np.int64),
            "nvlink_recovery_errors_total": np.zeros(K, dtype=np.int64),
            "device_lost": np.zeros(K, dtype=np.int64),
        }
        # healthy devices brush against the power cap now and then (a nuisance, not a fault)
        cap = busy & (rng.random(K) < 0.02)
        C["sm_clock_mhz"][cap] = np.round(spec["sm_max"] * 0.93 / 15) * 15
        C["clock_event_reasons"][cap] |= SW_POWER
        C["memory_temp_celsius"] = C["gpu_temp_celsius"] + 7.0
        for f, m in by_dev.get(i, []):
            on = idx >= f.onset_step
            if f.type == "xid79":
                on = g > e[f.onset_step - 1] if f.onset_step > 0 else np.ones(K, bool)
            if f.end_step is not None:
                on &= idx < f.end_step
            t_on = e[f.onset_step] - step_time[f.onset_step, i]
            counter_effect(f.type, m, f.params, C, on, g - t_on, spec, rng)
        cols["device"].append(np.full(K, i, dtype=np.int64))
        cols["timestamp"].append(g)
        for k, v in C.items():
            cols[k].append(v)
    pl = _pl()
    out = {k: np.concatenate(v) if v else np.array([]) for k, v in cols.items() if k not in ("host", "model", "uuid", "gpu", "pci_bus_id")}
    codes = out.pop("device").astype(np.int64)
    ids = pl.Series(uuids, dtype=pl.String).gather(codes)
    return {
        "device": ids,
        "timestamp": out.pop("timestamp"),
        "host": pl.Series([hosts[h] for h in host_idx], dtype=pl.String).gather(codes),
        "model": pl.repeat(spec["name"], codes.size, dtype=pl.String, eager=True),
        "uuid": ids,
        "gpu": gpu_idx[codes].astype(np.int64),
        "pci_bus_id": pl.Series([f"00000000:{_PCI[g % len(_PCI)]}:00.0" for g in gpu_idx], dtype=pl.String).gather(codes),
        **out,
    }
