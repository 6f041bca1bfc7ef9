"""Many jobs over one fleet: persistent GPU UUIDs, device replacement, repeat offenders (fleet memory).

:func:`simulate` draws each job with fresh devices; a fleet's history needs
the same physical GPU (same UUID, same persistent speed offset) to come back
job after job, some GPUs to be slow in several jobs, and a GPU to be
swapped for a new one at the same ``host:gpu`` slot. :func:`simulate_fleet`
does that: jobs are scheduled one after another on random sets of hosts of
one fleet; each job's compute times come from
:func:`degrade.simulate.simulate_times` (the noise families of
docs/simulator.md), multiplied by each device's persistent offset and
faults; the synchronous step is the slowest rank plus communication.
Counters (SM clock, utilisation, clock-event reasons every
``counter_interval`` seconds, with ``host``, ``gpu`` index and ``uuid``)
place every device in its slot.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ._faults import expected_status
from ._noise import NoiseSpec, simulate_times

__all__ = ["FleetScenario", "FleetSimResult", "simulate_fleet"]


@dataclass
class FleetScenario:
    """A fleet and the jobs it runs, one after another.

    Parameters
    ----------
    hosts, gpus_per_host
        The fleet: ``hosts x gpus_per_host`` slots.
    jobs
        Number of jobs; job ``j`` starts ``gap_s`` after job ``j - 1``.
    job_hosts
        ``(least, most)`` hosts a job takes (drawn uniformly, then the hosts at random).
    steps
        Steps per job (short jobs: 200).
    noise
        Per-step compute noise (:class:`~degrade.simulate.NoiseSpec`; its
        ``offset`` is unused: offsets are persistent, ``device_offset``).
    device_offset
        Persistent speed offset of each physical GPU, uniform in ``±device_offset``.
    offenders
        Persistent slowdowns: ``{"host": h, "gpu": g, "magnitude": m}``: the
        GPU in that slot is ``m`` slower in every job it runs (until replaced);
        an optional ``"offset"`` sets its speed offset (else drawn like the others').
    episodes
        Slowdowns in chosen jobs: ``{"host", "gpu", "jobs": [j, ...], "magnitude",
        "onset_step"}`` (the slot's GPU in those jobs, if it runs in them).
    replacements
        ``{"host", "gpu", "job": j}``: the GPU in that slot is replaced by a new
        one (new UUID, new offset, no fault) before job ``j``.
    must_run
        ``{"host": h, "jobs": [j, ...]}``: host ``h`` takes part in those jobs.
    """

    name: str = "fleet"
    hosts: int = 8
    gpus_per_host: int = 8
    jobs: int = 10
    job_hosts: tuple[int, int] = (1, 4)
    steps: int = 200
    compute_time: float = 0.5
    comm_time: float = 0.05
    noise: NoiseSpec = field(default_factory=lambda: NoiseSpec(sd=0.03, phi=0.5))
    device_offset: float = 0.02
    offenders: list[dict[str, Any]] = field(default_factory=list)
    episodes: list[dict[str, Any]] = field(default_factory=list)
    replacements: list[dict[str, Any]] = field(default_factory=list)
    must_run: list[dict[str, Any]] = field(default_factory=list)
    start_time: float = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    gap_s: float = 1200.0
    counter_interval: float = 10.0
    model: str = "NVIDIA H100 80GB HBM3"

    def __post_init__(self) -> None:
        lo, hi = (int(x) for x in self.job_hosts)
        checks = (
            ("hosts", self.hosts >= 1, ">= 1"),
            ("gpus_per_host", self.gpus_per_host >= 2, ">= 2 (peers)"),
            ("jobs", self.jobs >= 1, ">= 1"),
            (
                "job_hosts",
                1 <= lo <= hi <= self.hosts,
                f"1 <= least <= most <= hosts ({self.hosts})",
            ),
            ("steps", self.steps >= 2, ">= 2"),
            ("compute_time", self.compute_time > 0, "> 0"),
            ("device_offset", 0 <= self.device_offset < 0.5, "in [0, 0.5)"),
            ("gap_s", self.gap_s > 0, "> 0"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise InputError(
                    f"FleetScenario.{name}={getattr(self, name)!r}: expected {expected}"
                )
        if isinstance(self.noise, dict):
            self.noise = NoiseSpec.from_dict(self.noise, "FleetScenario.noise")
        for what in ("offenders", "episodes", "replacements"):
            for i, d in enumerate(getattr(self, what)):
                h, g = d.get("host"), d.get("gpu")
                if not (
                    isinstance(h, int)
                    and 0 <= h < self.hosts
                    and isinstance(g, int)
                    and 0 <= g < self.gpus_per_host
                ):
                    raise InputError(
                        f"FleetScenario.{what}[{i}]: host {h!r} / gpu {g!r} outside the fleet "
                        f"({self.hosts} hosts x {self.gpus_per_host} GPUs)"
                    )
                if what != "replacements" and not float(d.get("magnitude", -1)) >= 0:
                    raise InputError(f"FleetScenario.{what}[{i}]: needs a magnitude >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def example(cls) -> FleetScenario:
        """The fleet of docs/fleet.md: 48 GPUs, eight 200-step jobs, a GPU 6 % slow in every job,
        one 30 % slow in three jobs and then replaced.

        >>> sc = FleetScenario.example()
        >>> sc.hosts * sc.gpus_per_host, sc.jobs, sc.steps
        (48, 8, 200)
        """
        return cls(
            name="fleet-example",
            hosts=6,
            jobs=8,
            job_hosts=(2, 3),
            steps=200,
            noise=NoiseSpec(family="t", nu=3.0, sd=0.04, phi=0.5),
            offenders=[{"host": 1, "gpu": 3, "magnitude": 0.06, "offset": 0.0}],
            episodes=[{"host": 4, "gpu": 0, "jobs": [1, 2, 5], "magnitude": 0.3, "onset_step": 50}],
            replacements=[{"host": 4, "gpu": 0, "job": 6}],
            must_run=[{"host": 1, "jobs": [0, 2, 4, 6, 7]}, {"host": 4, "jobs": [1, 2, 5, 6]}],
        )


@dataclass
class FleetSimResult:
    """Output of :func:`simulate_fleet`.

    ``timings`` and ``counters`` are canonical frames (docs/schema.md);
    ``truth`` has one row per (device, job): ``device, job, host, gpu,
    fault, magnitude`` (the device's slowdown in that job, 0 and ``"none"`` when healthy),
    ``offset`` (its persistent speed offset), ``start_time``, ``job_devices``;
    ``devices`` one row per physical GPU (``device, host, gpu, offset,
    offender, installed_before_job, replaced_before_job, fault``).
    """

    timings: Any
    counters: Any
    truth: Any
    devices: Any
    scenario: FleetScenario
    seed: int

    def write(self, directory) -> dict[str, str]:
        """``timings.parquet``, ``counters.parquet``, ``fleet_truth.parquet`` and ``fleet_devices.parquet``."""
        import os

        os.makedirs(directory, exist_ok=True)
        out = {}
        for name, frame in (
            ("timings", self.timings),
            ("counters", self.counters),
            ("fleet_truth", self.truth),
            ("fleet_devices", self.devices),
        ):
            path = os.path.join(os.fspath(directory), f"{name}.parquet")
            frame.write_parquet(path, compression="zstd", statistics=True)
            out[name] = path
        return out


def _uuid(rng: np.random.Generator) -> str:
    h = "".join(f"{b:02x}" for b in rng.integers(0, 256, 16))
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def simulate_fleet(scenario: FleetScenario | None = None, seed: int = 0) -> FleetSimResult:
    """Simulate ``scenario.jobs`` jobs over one fleet with persistent UUIDs; deterministic by ``seed``.

    Examples
    --------
    >>> from degrade.simulate import FleetScenario, simulate_fleet
    >>> sc = FleetScenario(hosts=2, jobs=3, job_hosts=(1, 2), replacements=[{"host": 0, "gpu": 1, "job": 2}])
    >>> res = simulate_fleet(sc, seed=1)
    >>> res.devices.height, res.timings["job"].n_unique()
    (17, 3)
    """
    from .._optional import import_optional

    pl = import_optional("polars", "batch")
    sc = scenario or FleetScenario()
    seed = int(seed)
    if seed < 0:
        raise InputError(f"seed must be >= 0, got {seed}")
    root = np.random.SeedSequence(seed)
    plan_rng, id_rng, *job_seeds = (np.random.default_rng(s) for s in root.spawn(2 + sc.jobs))
    H, G = sc.hosts, sc.gpus_per_host

    # physical GPUs: one per slot, plus one per replacement
    devices: list[dict[str, Any]] = []
    slot_dev: dict[tuple[int, int], int] = {}

    def install(h: int, g: int, job: int) -> None:
        devices.append(
            {
                "device": _uuid(id_rng),
                "host": f"node-{h:04d}",
                "gpu": g,
                "offset": float(plan_rng.uniform(-sc.device_offset, sc.device_offset)),
                "offender": 0.0,
                "installed_before_job": job,
                "replaced_before_job": None,
            }
        )
        if (h, g) in slot_dev:
            devices[slot_dev[(h, g)]]["replaced_before_job"] = job
        slot_dev[(h, g)] = len(devices) - 1

    for h in range(H):
        for g in range(G):
            install(h, g, 0)
    for o in sc.offenders:
        dev = devices[slot_dev[(o["host"], o["gpu"])]]
        dev["offender"] = float(o["magnitude"])
        if "offset" in o:  # its own speed offset, instead of a random one
            dev["offset"] = float(o["offset"])
    repl = sorted(sc.replacements, key=lambda r: int(r["job"]))

    tim, tru = [], []
    spans: list[tuple[float, float, set]] = []  # (start, end, devices) of each job
    for j in range(sc.jobs):
        for r in repl:
            if int(r["job"]) == j:
                install(r["host"], r["gpu"], j)
        lo, hi = sc.job_hosts
        k = int(plan_rng.integers(lo, hi + 1))
        must = {m["host"] for m in sc.must_run if j in m.get("jobs", [])}
        rest = [h for h in range(H) if h not in must]
        pick = sorted(
            must
            | set(
                plan_rng.choice(
                    rest, size=max(0, min(k - len(must), len(rest))), replace=False
                ).tolist()
            )
        )
        idx = [slot_dev[(h, g)] for h in pick for g in range(G)]
        N, T = len(idx), sc.steps
        tm = simulate_times(
            T,
            N,
            dataclasses.replace(sc.noise, offset=0.0),
            seed=int(job_seeds[j].integers(2**62)),
            base=sc.compute_time,
            comm_time=sc.comm_time,
        )
        comm = tm.step[:, 0] - tm.compute.max(axis=1)
        fac = np.ones((T, N))
        mags = np.zeros(N)
        for c, d in enumerate(idx):
            dev = devices[d]
            fac[:, c] *= 1.0 + dev["offset"]
            if dev["offender"] > 0:
                fac[:, c] *= 1.0 + dev["offender"]
                mags[c] += dev["offender"]
        for e in sc.episodes:
            if j in e.get("jobs", []) and (e["host"], e["gpu"]) in slot_dev:
                d = slot_dev[(e["host"], e["gpu"])]
                if d in idx:
                    c = idx.index(d)
                    on = int(e.get("onset_step", 0))
                    fac[on:, c] *= 1.0 + float(e["magnitude"])
                    mags[c] += float(e["magnitude"])
        compute = tm.compute * fac
        step = compute.max(axis=1) + comm
        t0 = sc.start_time + j * sc.gap_s
        ends = t0 + np.cumsum(step)
        name = f"job-{j:03d}"
        ids = [devices[d]["device"] for d in idx]
        hosts = [devices[d]["host"] for d in idx]
        tim.append(
            pl.DataFrame(
                {
                    "job": [name] * (T * N),
                    "host": np.tile(hosts, T).tolist(),
                    "device": np.tile(ids, T).tolist(),
                    "rank": np.tile(np.arange(N), T).astype(np.int64),
                    "group": ["dp"] * (T * N),
                    "step": np.repeat(np.arange(T), N).astype(np.int64),
                    "timestamp": np.repeat(ends, N),
                    "step_time": np.repeat(step, N),
                    "compute_time": compute.reshape(-1),
                }
            )
        )
        spans.append((float(t0), float(ends[-1]), set(idx)))
        for c, d in enumerate(idx):
            dev = devices[d]
            tru.append(
                {
                    "device": dev["device"],
                    "job": name,
                    "host": dev["host"],
                    "gpu": dev["gpu"],
                    "fault": "slowdown" if mags[c] > 0 else "none",
                    "expected_status": expected_status("slowdown", float(mags[c]), {})
                    if mags[c] > 0
                    else "healthy",
                    "magnitude": float(mags[c]),
                    "offset": dev["offset"],
                    "start_time": float(t0),
                    "job_devices": N,
                }
            )
    return FleetSimResult(
        timings=pl.concat(tim),
        counters=_counters(sc, devices, spans, pl),
        truth=pl.DataFrame(tru),
        devices=pl.DataFrame(
            devices, schema_overrides={"replaced_before_job": pl.Int64}
        ).with_columns(
            # a "fault" column marks the file as ground truth: degrade analyze skips it with a note
            fault=pl.when(pl.col("offender") > 0)
            .then(pl.lit("slowdown"))
            .otherwise(pl.lit("none")),
            expected_status=pl.Series(
                [
                    expected_status("slowdown", d["offender"], {})
                    if d["offender"] > 0
                    else "healthy"
                    for d in devices
                ],
                dtype=pl.String,
            ),
        ),
        scenario=sc,
        seed=seed,
    )


def _counters(sc: FleetScenario, devices: list[dict], spans: list, pl):
    """Every installed GPU every ``counter_interval`` s from the first job to the last: busy in a job, else idle.

    Continuous, as an agent or dcgm-exporter polls; a replaced GPU reports
    until the job before its replacement ends, its successor from then on.
    """
    t_end = spans[-1][1] + sc.counter_interval
    grid = np.arange(sc.start_time, t_end, sc.counter_interval)
    starts = [
        sc.start_time if d["installed_before_job"] == 0 else spans[d["installed_before_job"] - 1][1]
        for d in devices
    ]
    frames = []
    for d, dev in enumerate(devices):
        stop = (
            t_end
            if dev["replaced_before_job"] is None
            else spans[dev["replaced_before_job"] - 1][1]
        )
        ts = grid[(grid >= starts[d]) & (grid < stop)]
        busy = np.zeros(ts.size, dtype=bool)
        for a, b, members in spans:
            if d in members:
                busy |= (ts >= a) & (ts <= b)
        m = ts.size
        frames.append(
            pl.DataFrame(
                {
                    "device": [dev["device"]] * m,
                    "timestamp": ts,
                    "host": [dev["host"]] * m,
                    "model": [sc.model] * m,
                    "uuid": [dev["device"]] * m,
                    "gpu": np.full(m, dev["gpu"], dtype=np.int64),
                    "sm_clock_mhz": np.where(busy, 1980.0, 345.0),
                    "sm_clock_max_mhz": np.full(m, 1980.0),
                    "gpu_util_ratio": np.where(busy, 0.97, 0.0),
                    "clock_event_reasons": np.where(busy, 0, 1).astype(np.int64),
                }
            )
        )
    return pl.concat(frames).sort(["host", "gpu", "timestamp"])
