"""Scenario files: one small TOML per simulated fleet (datasets/scenarios/)."""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["Scenario", "JobSpec", "FaultSpec", "RandomFaults", "load_scenario", "scenario_dirs", "list_scenarios"]

JOB_KINDS = ("data_parallel", "pipeline", "inference")


@dataclass
class JobSpec:
    """One job (or ``count`` identical jobs) of the fleet."""

    name: str
    kind: str = "data_parallel"
    count: int = 1
    hosts: int = 1
    gpus_per_host: int = 8
    steps: int = 1000
    compute_time: float = 0.5
    comm_time: float = 0.05
    stage_times: list[float] | None = None
    # pipeline jobs: 0 keeps the plain model (the step waits for the slowest device); m >= 1 runs a
    # fill-drain schedule of m microbatches per pipeline, (sum + (m - 1) max of its stages) / m, the
    # step waiting for the slowest pipeline, and writes the `pipeline` and `microbatches` columns
    microbatches: int = 0
    model: str = "H100"
    noise: float = 0.02
    ar: float = 0.0
    device_offset: float = 0.02
    spike_prob: float = 0.002
    spike_scale: float = 0.5
    spike_alpha: float = 1.5
    checkpoint_every: int = 0
    checkpoint_time: float = 10.0
    eval_every: int = 0
    eval_factor: float = 2.0
    warmup_steps: int = 20
    schedule: list[list[float]] = field(default_factory=list)
    idle: list[list[float]] = field(default_factory=list)
    elastic: list[list[int]] = field(default_factory=list)
    restart_time: float = 90.0
    start_offset: float = 0.0
    stagger: float = 0.0
    missing_rate: float = 0.0
    # noise families (docs/simulator.md "Noise families"); the defaults draw exactly what they drew before
    noise_family: str = "gaussian"
    noise_nu: float = 3.0
    hetero: float = 0.0
    moe: float = 0.0
    moe_ar: float = 0.8
    moe_group: int = 8
    moe_rho: float = 0.5
    reshuffle: bool = False
    garbage_rate: float = 0.0
    garbage_values: list[float] = field(default_factory=lambda: [1e300, 1e-6, 0.0, float("nan")])
    garbage_columns: list[str] = field(default_factory=lambda: ["compute_time"])

    def noise_spec(self):
        """This job's own noise as a :class:`~degrade.simulate.NoiseSpec` (validated)."""
        from ._noise import NoiseSpec

        return NoiseSpec(family=self.noise_family, nu=self.noise_nu, sd=self.noise, phi=self.ar,
                         hetero=self.hetero, moe=self.moe, moe_phi=self.moe_ar, moe_group=self.moe_group,
                         moe_rho=self.moe_rho, garbage_rate=self.garbage_rate,
                         garbage=tuple(self.garbage_values) or (0.0,))


@dataclass
class FaultSpec:
    """One injected fault on one device of a job."""

    job: str
    device: int
    type: str
    onset_step: int = 0
    magnitude: float | None = None
    end_step: int | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class RandomFaults:
    """Faults drawn at random over a large fleet (benchmark sets)."""

    fraction: float = 0.05
    types: list[str] = field(default_factory=lambda: ["slowdown"])
    magnitude: list[float] = field(default_factory=lambda: [0.05, 0.3])
    onset: list[float] = field(default_factory=lambda: [0.0, 0.8])


@dataclass
class Scenario:
    """A simulated fleet: jobs, their structure and injected faults.

    Build one with :func:`load_scenario` from a TOML file, or directly.
    """

    name: str
    jobs: list[JobSpec]
    faults: list[FaultSpec] = field(default_factory=list)
    description: str = ""
    seed: int = 0
    start_time: float = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    counter_interval: float = 10.0
    random_faults: RandomFaults | None = None
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def scenario_dirs() -> list[Path]:
    """Where scenario names are looked up: ``$DEGRADE_SCENARIOS``, the scenarios
    shipped in the package (``degrade/data/scenarios``, which the repository's
    ``datasets/scenarios`` links to), then ``./datasets/scenarios``."""
    dirs = []
    env = os.environ.get("DEGRADE_SCENARIOS")
    if env:
        dirs.extend(Path(p) for p in env.split(os.pathsep) if p)
    dirs.append(Path(__file__).resolve().parents[1] / "data" / "scenarios")
    dirs.append(Path.cwd() / "datasets" / "scenarios")
    return dirs


def list_scenarios() -> list[str]:
    """Names of the scenarios found in :func:`scenario_dirs`."""
    names = set()
    for d in scenario_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.toml"))
    return sorted(names)


def _toml():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib


def _build(cls, data: dict, where: str):
    known = {f.name for f in dataclasses.fields(cls)}
    if cls is FaultSpec:
        params = {k: v for k, v in data.items() if k not in known}
        data = {k: v for k, v in data.items() if k in known}
        data["params"] = {**data.get("params", {}), **params}
    unknown = set(data) - known
    if unknown:
        raise InputError(f"{where}: unknown key(s) {sorted(unknown)}; expected some of {sorted(known)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise InputError(f"{where}: {exc}") from None


def scenario_from_dict(d: dict, source: str = "<dict>") -> Scenario:
    """Build and validate a :class:`Scenario` from parsed TOML."""
    from ._faults import FAULTS

    d = dict(d)
    jobs_raw = d.pop("job", d.pop("jobs", None))
    if not jobs_raw:
        raise InputError(f"{source}: no [[job]] table; a scenario needs at least one job")
    jobs = [_build(JobSpec, dict(j), f"{source} [[job]] #{i}") for i, j in enumerate(jobs_raw)]
    faults = [_build(FaultSpec, dict(f), f"{source} [[fault]] #{i}") for i, f in enumerate(d.pop("fault", d.pop("faults", [])))]
    rf = d.pop("random_faults", None)
    rand = _build(RandomFaults, dict(rf), f"{source} [random_faults]") if rf else None
    known = {f.name for f in dataclasses.fields(Scenario)} - {"jobs", "faults", "random_faults"}
    unknown = set(d) - known
    if unknown:
        raise InputError(f"{source}: unknown top-level key(s) {sorted(unknown)}; expected some of {sorted(known)}")
    sc = Scenario(jobs=jobs, faults=faults, random_faults=rand, **{"name": d.pop("name", Path(source).stem), **d})
    sc.source = source
    names = set()
    for j in jobs:
        if j.kind not in JOB_KINDS:
            raise InputError(f"{source}: job {j.name!r} has kind {j.kind!r}; expected one of {JOB_KINDS}")
        if j.hosts < 1 or j.gpus_per_host < 1 or j.steps < 2 or j.count < 1:
            raise InputError(f"{source}: job {j.name!r} needs hosts, gpus_per_host, count >= 1 and steps >= 2")
        if j.compute_time <= 0 or j.comm_time < 0 or j.noise < 0 or not (0 <= j.ar < 1):
            raise InputError(f"{source}: job {j.name!r}: compute_time > 0, comm_time >= 0, noise >= 0, 0 <= ar < 1")
        _check_noise(j, source)
        n = j.hosts * j.gpus_per_host
        if j.kind == "pipeline":
            st = j.stage_times or [1.0, 0.9, 0.95, 1.15]
            if n % len(st):
                raise InputError(f"{source}: job {j.name!r}: {n} devices do not split into {len(st)} stages")
        if j.microbatches < 0 or (j.microbatches and j.kind != "pipeline"):
            raise InputError(f"{source}: job {j.name!r}: microbatches must be >= 0, and only for kind 'pipeline'")
        if j.microbatches and j.elastic:
            raise InputError(f"{source}: job {j.name!r}: a microbatch pipeline cannot be elastic (stages are fixed)")
        names.update(_instance_names(j))
    for f in faults:
        if f.type not in FAULTS:
            raise InputError(f"{source}: fault type {f.type!r}; expected one of {sorted(FAULTS)}")
        if f.job not in names:
            raise InputError(f"{source}: fault on job {f.job!r}, which is not defined (jobs: {sorted(names)[:8]})")
        job = next(j for j in jobs if f.job in _instance_names(j))
        if not 0 <= f.device < job.hosts * job.gpus_per_host:
            raise InputError(f"{source}: fault device {f.device} outside 0..{job.hosts * job.gpus_per_host - 1} of {f.job!r}")
        if not 0 <= f.onset_step < job.steps:
            raise InputError(f"{source}: fault onset_step {f.onset_step} outside 0..{job.steps - 1} of {f.job!r}")
    if rand:
        for t in rand.types:
            if t not in FAULTS:
                raise InputError(f"{source}: random fault type {t!r}; expected one of {sorted(FAULTS)}")
    if sc.counter_interval <= 0:
        raise InputError(f"{source}: counter_interval must be > 0 seconds")
    return sc


def _check_noise(j: JobSpec, source: str) -> None:

    where = f"{source}: job {j.name!r}"
    try:
        j.noise_spec()
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    bad = [c for c in j.garbage_columns if c not in ("compute_time", "step_time")]
    if bad:
        raise InputError(f"{where}: garbage_columns {bad}; expected 'compute_time' and/or 'step_time'")
    if j.garbage_rate > 0 and not j.garbage_values:
        raise InputError(f"{where}: garbage_values is empty; give at least one value when garbage_rate > 0")


def _instance_names(j: JobSpec) -> list[str]:
    return [j.name] if j.count == 1 else [f"{j.name}-{k:03d}" for k in range(j.count)]


def load_scenario(name_or_path) -> Scenario:
    """Load a scenario by name (datasets/scenarios/NAME.toml) or from a TOML path.

    Parameters
    ----------
    name_or_path : str or path
        A scenario name such as ``"demo"`` or the path of a TOML file.

    Returns
    -------
    Scenario

    Raises
    ------
    InputError
        For an unknown name, unreadable TOML or an invalid scenario.

    Examples
    --------
    >>> sc = load_scenario("demo")
    >>> sc.name
    'demo'
    """
    if isinstance(name_or_path, Scenario):
        return name_or_path
    raw = os.fspath(name_or_path)
    path = Path(raw)
    if not path.is_file():
        for d in scenario_dirs():
            cand = d / f"{raw}.toml"
            if cand.is_file():
                path = cand
                break
        else:
            raise InputError(
                f"no scenario {raw!r}: not a file, and not among {list_scenarios()} "
                f"(searched {', '.join(str(d) for d in scenario_dirs())})"
            )
    try:
        data = _toml().loads(path.read_text())
    except Exception as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from None
    return scenario_from_dict(data, str(path))
