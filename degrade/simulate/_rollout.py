"""Simulated roll-outs: part of the nodes run a new driver (or image) that is X % slower.

The cohort is a property of a host (a driver or node image is installed per
node), as in a real roll-out. The slowdown is the simulator's ``slowdown``
fault from step 0 on every GPU of a new host, so step times, the critical
path of synchronous jobs and the counters all follow from the same
simulation as any other fleet (docs/simulator.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ._engine import simulate
from ._scenario import JOB_KINDS, FaultSpec, JobSpec, Scenario

__all__ = ["simulate_rollout", "RolloutResult"]


@dataclass
class RolloutResult:
    """Output of :func:`simulate_rollout`.

    ``timings`` and ``counters`` are canonical frames; the counters carry the
    label as a column named ``label`` (dcgm-exporter attaches
    ``DCGM_FI_DRIVER_VERSION`` to every series the same way). ``labels`` is
    the host -> label table, ``truth`` the cohorts and their true slowdown.
    """

    timings: Any
    counters: Any
    labels: Any
    truth: Any
    label: str
    old: str
    new: str
    slowdown: float
    confounded: bool
    seed: int
    jobs: list[dict] = field(default_factory=list)

    def write(self, directory) -> dict[str, str]:
        """Write ``timings.parquet``, ``counters.parquet`` (with the label) and ``rollout.json`` (the truth)."""
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        out = {}
        for name in ("timings", "counters"):
            path = os.path.join(directory, f"{name}.parquet")
            getattr(self, name).write_parquet(path, compression="zstd", statistics=True)
            out[name] = path
        path = os.path.join(directory, "rollout.json")
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "label": self.label,
                    "old": self.old,
                    "new": self.new,
                    "slowdown": self.slowdown,
                    "confounded": self.confounded,
                    "seed": self.seed,
                    "jobs": self.jobs,
                    "hosts": dict(self.labels.iter_rows()),
                },
                fh,
                indent=1,
            )
        out["truth"] = path
        return out


def simulate_rollout(
    *,
    jobs: int = 8,
    hosts: int = 4,
    gpus_per_host: int = 8,
    steps: int = 300,
    new_fraction: float = 0.5,
    slowdown: float = 0.03,
    confounded: bool = False,
    kinds=("data_parallel",),
    noise: float = 0.02,
    host_sd: float = 0.0,
    label: str = "DCGM_FI_DRIVER_VERSION",
    old: str = "550.54.15",
    new: str = "570.86.10",
    seed: int = 0,
) -> RolloutResult:
    """Simulate jobs on a fleet where some nodes run a new driver ``slowdown`` slower.

    Parameters
    ----------
    jobs, hosts, gpus_per_host, steps : int
        Jobs in the fleet, hosts per job, GPUs per host, steps per job.
    new_fraction : float
        Share of each job's hosts on the new driver (at least one host of each
        cohort per job when 0 < new_fraction < 1).
    slowdown : float
        The new driver's true slowdown (0.03 = 3 % slower compute; 0 = a null
        roll-out; negative = faster).
    confounded : bool
        The new driver only on the second half of the jobs, which are also of
        another kind (``inference`` when the first are training): no job holds
        both cohorts, so the comparison must be refused.
    kinds : sequence of str
        Job kinds, cycled over the jobs (``data_parallel``, ``pipeline``,
        ``inference``).
    noise : float
        Per-step noise (log sd).
    host_sd : float
        Log sd of a host-wide factor shared by a host's GPUs besides the driver
        (default 0: GPUs differ only by their own offset). With it, devices of
        one host are not independent, and ``compare(unit="host")`` is the
        honest choice.
    label, old, new, seed
        The label's name and its two values, the seed.

    Returns
    -------
    RolloutResult

    Examples
    --------
    >>> ro = simulate_rollout(jobs=2, hosts=2, steps=50, seed=3)
    >>> sorted(ro.labels[ro.label].unique().to_list())
    ['550.54.15', '570.86.10']
    >>> ro.truth.to_dicts()[1]
    {'cohort': '570.86.10', 'slowdown': 0.03}
    """
    if jobs < 1 or hosts < 1 or gpus_per_host < 1 or steps < 2:
        raise InputError("simulate_rollout: jobs, hosts, gpus_per_host >= 1 and steps >= 2")
    if not 0.0 <= new_fraction <= 1.0:
        raise InputError(f"simulate_rollout: new_fraction={new_fraction}; expected 0..1")
    if not -0.5 < slowdown < 5.0:
        raise InputError(f"simulate_rollout: slowdown={slowdown}; expected a fraction (0.03 = 3 %)")
    kinds = list(kinds)
    bad = [k for k in kinds if k not in JOB_KINDS]
    if not kinds or bad:
        raise InputError(f"simulate_rollout: kinds {bad or kinds}; expected some of {JOB_KINDS}")
    if confounded and jobs < 2:
        raise InputError("simulate_rollout: confounded=True needs jobs >= 2 (one kind per cohort)")
    if not 0.0 <= host_sd < 0.5:
        raise InputError(f"simulate_rollout: host_sd={host_sd}; expected 0 <= host_sd < 0.5")
    if old == new:
        raise InputError("simulate_rollout: old and new must differ")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC0407]))
    specs, faults, new_hosts, meta = [], [], {}, []
    for j in range(jobs):
        name = f"job{j:03d}"
        if confounded:
            second = j >= (jobs + 1) // 2
            kind = (
                ("inference" if kinds[0] != "inference" else "data_parallel")
                if second
                else kinds[0]
            )
            chosen = set(range(hosts)) if second else set()
        else:
            kind = kinds[j % len(kinds)]
            k = int(round(new_fraction * hosts))
            if 0.0 < new_fraction < 1.0 and hosts >= 2:
                k = min(max(k, 1), hosts - 1)
            chosen = set(rng.choice(hosts, size=k, replace=False).tolist()) if k else set()
        n = hosts * gpus_per_host
        if kind == "pipeline" and n % 4:
            raise InputError(
                f"simulate_rollout: a pipeline job needs hosts x gpus_per_host divisible by 4, not {n}"
            )
        specs.append(
            JobSpec(
                name=name,
                kind=kind,
                hosts=hosts,
                gpus_per_host=gpus_per_host,
                steps=steps,
                noise=noise,
                checkpoint_every=0,
                eval_every=0,
                warmup_steps=min(20, steps // 4),
            )
        )
        # a host-wide factor besides the driver (cooling, NIC, BIOS): shared by a host's GPUs
        host_f = np.exp(rng.normal(0.0, host_sd, hosts)) if host_sd > 0 else np.ones(hosts)
        for d in range(n):
            h = d // gpus_per_host
            m = float(host_f[h] * (1.0 + (slowdown if h in chosen else 0.0)) - 1.0)
            if m != 0.0:
                faults.append(
                    FaultSpec(job=name, device=d, type="slowdown", onset_step=0, magnitude=m)
                )
        new_hosts[name] = chosen
        meta.append({"job": name, "kind": kind, "hosts": hosts, "new_hosts": len(chosen)})
    sc = Scenario(
        name="rollout",
        jobs=specs,
        faults=faults,
        description="simulated driver roll-out",
        seed=int(seed),
    )
    res = simulate(sc, seed=int(seed))
    import polars as pl

    rows = []
    for name, chosen in new_hosts.items():
        hs = sorted(set(res.timings.filter(pl.col("job") == name)["host"].to_list()))
        rows += [(h, new if i in chosen else old) for i, h in enumerate(hs)]
    labels = pl.DataFrame(rows, schema={"host": pl.String, label: pl.String}, orient="row")
    counters = res.counters.join(labels, on="host", how="left")
    truth = pl.DataFrame({"cohort": [old, new], "slowdown": [0.0, float(slowdown)]})
    return RolloutResult(
        res.timings,
        counters,
        labels,
        truth,
        label,
        old,
        new,
        float(slowdown),
        bool(confounded),
        int(seed),
        meta,
    )
