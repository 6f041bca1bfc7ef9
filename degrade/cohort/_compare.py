"""``compare``: is one cohort of devices (a driver, a VBIOS, a node image) slower than another?"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import __version__
from ..errors import InputError
from ..io._schema import COUNTER_COLUMNS, TIMING_COLUMNS
from ._levels import (
    device_levels,
    find_column,
    label_from_counters,
    label_from_file,
    label_from_timings,
    natural_key,
    pick_metric,
    read_label_file,
)
from ._stats import Stratum, clustering, contrast

__all__ = ["compare", "CohortComparison", "CohortResult", "VERDICTS", "SCHEMA_VERSION"]

#: version of the ``compare`` JSON document (degrade/schemas/compare.schema.json); 1.x only adds fields
SCHEMA_VERSION = "1.0"

VERDICTS = ("reference", "regression", "improvement", "no difference", "not enough overlap")


def _pl():
    from .._optional import import_optional

    return import_optional("polars", "batch")


@dataclass
class CohortResult:
    """One cohort against the reference.

    ``slowdown`` is a fraction (0.03 = 3 % slower than the reference cohort
    on the same work), with its confidence interval ``ci_low``..``ci_high``.
    """

    cohort: str
    verdict: str
    devices: int = 0
    jobs: int = 0
    slowdown: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    df: float | None = None
    reason: str = ""
    strata: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def clean(x):
            return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x

        return {
            "cohort": self.cohort,
            "verdict": self.verdict,
            "devices": self.devices,
            "jobs": self.jobs,
            "slowdown": clean(self.slowdown),
            "ci_low": clean(self.ci_low),
            "ci_high": clean(self.ci_high),
            "p_value": clean(self.p_value),
            "df": clean(self.df),
            "reason": self.reason,
            "strata": [{k: clean(v) for k, v in s.items()} for s in self.strata],
        }


@dataclass
class CohortComparison:
    """The result of :func:`compare`: one :class:`CohortResult` per cohort, reference first."""

    label: str
    label_source: str
    reference: str
    metric: str
    unit: str
    confidence: float
    min_slowdown: float
    cohorts: list[CohortResult]
    devices: Any  # polars DataFrame: job, group, device, host, cohort, level, steps, excluded
    warnings: list[str] = field(default_factory=list)
    #: pooled one-way ANOVA of device levels by host within each cohort and peer group
    #: (``f``, ``df1``, ``df2``, ``p_value``), or None (unit="host", or too few hosts)
    host_clustering: dict | None = None

    def result(self, cohort: str) -> CohortResult:
        """The :class:`CohortResult` of ``cohort``."""
        for c in self.cohorts:
            if c.cohort == cohort:
                return c
        raise InputError(f"no cohort {cohort!r}; cohorts: {[c.cohort for c in self.cohorts]}")

    @property
    def regressions(self) -> list[CohortResult]:
        return [c for c in self.cohorts if c.verdict == "regression"]

    def exit_code(self, fail_on: str | None) -> int:
        """4 when ``fail_on`` (``"regression"`` or ``"any"``: a regression or too little overlap) holds, else 0."""
        if fail_on is None:
            return 0
        bad = {"regression"} if fail_on == "regression" else {"regression", "not enough overlap"}
        return 4 if any(c.verdict in bad for c in self.cohorts) else 0

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``degrade compare --format json`` (degrade/schemas/compare.schema.json)."""
        d = self.devices
        excluded = d.filter(d["excluded"] != "") if d.height else d
        return {
            "schema_version": SCHEMA_VERSION,
            "degrade_version": __version__,
            "kind": "compare",
            "label": self.label,
            "label_source": self.label_source,
            "reference": self.reference,
            "metric": self.metric,
            "unit": self.unit,
            "confidence": self.confidence,
            "min_slowdown": self.min_slowdown,
            "cohorts": [c.to_dict() for c in self.cohorts],
            "excluded": [
                {
                    "job": r["job"],
                    "group": r["group"],
                    "device": r["device"],
                    "cohort": r["cohort"],
                    "level": r["level"],
                    "reason": r["excluded"],
                }
                for r in excluded.iter_rows(named=True)
            ],
            "warnings": list(self.warnings),
            "host_clustering": self.host_clustering,
        }


# --------------------------------------------------------------------------- inputs


def _sources(paths):
    from ..analyze._inputs import resolve_inputs
    from ..analyze._warnings import WarningLog

    log = WarningLog()
    try:
        sources = resolve_inputs(paths, log)
    except InputError as exc:  # the shared resolver speaks for analyze
        msg = str(exc)
        if "cannot tell timings from counters" in msg:
            raise type(exc)(
                msg + "; a table of labels (device or host -> LABEL) goes to --labels FILE"
            ) from None
        if not msg.startswith("analyze: "):
            raise
        raise type(exc)("compare: " + msg[len("analyze: ") :]) from None
    timings = [s for s in sources if s.kind == "timings"]
    counters = [s for s in sources if s.kind == "counters"]
    if not timings:
        raise InputError(
            "compare: no step timings among the inputs; cohorts are compared on compute_time/step_time "
            "of the devices in each job (counters only carry labels)"
        )
    return timings, counters, [w.message for w in log.items()]


def _concat(lfs):
    pl = _pl()
    return lfs[0] if len(lfs) == 1 else pl.concat(lfs, how="diagonal_relaxed")


def _schema(lfs) -> dict:
    out: dict = {}
    for lf in lfs:
        out.update(dict(lf.collect_schema()))
    return out


def _unsorted(src):
    """A source through its reader without the sort: projections reach the scan (cheap columns)."""
    from ..io._readers import _read_counters, _read_timings

    read = _read_timings if src.kind == "timings" else _read_counters
    return read(src.target, on_bad_file=src.on_bad_file, sort=False)


def _timing_batches(srcs, chunk_rows: int):
    """The timings as LazyFrames of whole jobs, about ``chunk_rows`` rows each (bounded memory).

    A job's devices may be spread over several sources, so every batch reads
    its jobs from every source (the readers push the job filter to the scan).
    """
    from .. import io as dio

    pl = _pl()
    if not all("job" in s.scan().collect_schema() for s in srcs):
        yield _concat([s.scan() for s in srcs])
        return
    counts = (
        pl.concat([_unsorted(s).group_by("job").agg(pl.len().alias("n")) for s in srcs])
        .group_by("job")
        .agg(pl.col("n").sum())
        .sort("job", nulls_last=True)
        .collect()
    )
    batch, rows = [], 0
    for job, n in counts.iter_rows():
        if job is None:
            continue
        if batch and rows + n > chunk_rows:
            yield _concat(
                [dio.read_timings(s.target, jobs=batch, on_bad_file=s.on_bad_file) for s in srcs]
            )
            batch, rows = [], 0
        batch.append(job)
        rows += n
    if batch:
        yield _concat(
            [dio.read_timings(s.target, jobs=batch, on_bad_file=s.on_bad_file) for s in srcs]
        )


def _attach(levels, label, tcol, tlab, tschema, counter_srcs, labels):
    """Levels with a ``cohort`` column, the label's source, and warnings."""
    pl = _pl()
    warnings = []
    counters = [_unsorted(s) for s in counter_srcs]
    if tcol is not None:
        src = f"timings column {tcol!r}"
        n = tlab.group_by(["job", "device"]).agg(pl.len().alias("k"))
        changed = n.filter(pl.col("k") > 1)
        if changed.height:
            warnings.append(f"{changed.height} devices changed {label} during their job: left out")
        tlab = tlab.join(changed.select("job", "device"), on=["job", "device"], how="anti")
        out = levels.join(tlab, on=["job", "device"], how="left")
    else:
        ccol = None
        cnt = None
        if counters:
            cnt = _concat(counters)
            ccol = find_column(cnt.collect_schema(), label)
        if ccol is not None:
            lab, changed = label_from_counters(cnt, ccol, levels, label)
            src = f"counters label {ccol!r}"
            out = levels.join(lab, on=["job", "device"], how="left")
            if changed.height:
                warnings.append(
                    f"{changed.height} devices changed {label} during their job: left out"
                )
        elif labels is not None:
            where = labels if isinstance(labels, str) else "labels"
            kind, lab = label_from_file(read_label_file(labels), label, str(where))
            src = f"labels file {where} (by {kind})"
            out = levels.join(lab, on=kind, how="left")
        else:
            have = [c for c in tschema if c not in _CANONICAL]
            if counters:
                have += [c for c in _concat(counters).collect_schema() if c not in _CANONICAL]
            raise InputError(
                f"compare: no label {label!r} in the timings or counters (their non-canonical columns: "
                f"{sorted(set(have))[:12] or 'none'}); give --labels FILE with a device or host column "
                f"and a {label!r} column"
            )
    missing = out.filter(pl.col("cohort").is_null())
    if missing.height:
        warnings.append(f"{missing['device'].n_unique()} devices have no {label} value: left out")
    return out.filter(pl.col("cohort").is_not_null()), src, warnings


_CANONICAL = {*TIMING_COLUMNS, *COUNTER_COLUMNS, "dcgm_device", "scrape_job"}


# --------------------------------------------------------------------------- the comparison


def _units(levels, unit: str):
    """Rows of the analysis: devices, or hosts (the mean level of a host's devices per stratum)."""
    pl = _pl()
    if unit == "device":
        return levels.with_columns(pl.col("device").alias("unit"))
    if levels["host"].null_count() == levels.height:
        raise InputError("compare: unit='host' needs a host column in the timings")
    return (
        levels.filter(pl.col("host").is_not_null())
        .group_by(["job", "group", "host", "cohort"])
        .agg(pl.col("level").mean(), pl.col("steps").sum(), pl.len().alias("devices"))
        .with_columns(pl.col("host").alias("unit"), pl.col("host").alias("device"))
    )


def _outliers(units, outlier: float | None):
    """Mark units far from their own cohort in their stratum: a device fault, not a cohort property."""
    pl = _pl()
    excl = np.full(units.height, "", dtype=object)
    if outlier is None or units.height == 0:
        return units.with_columns(pl.Series("excluded", excl.tolist(), dtype=pl.String))
    idx = (
        units.with_row_index("_i")
        .group_by(["job", "group", "cohort"])
        .agg(pl.col("_i"), pl.col("level"))
    )
    floor = math.log1p(outlier)
    for ii, lv in zip(idx["_i"].to_list(), idx["level"].to_list()):
        if len(lv) < 4:
            continue
        x = np.asarray(lv)
        med = float(np.median(x))
        mad = 1.4826 * float(np.median(np.abs(x - med)))
        cut = max(floor, 5.0 * mad)
        for i, v in zip(ii, x):
            if abs(v - med) > cut:
                excl[i] = f"{math.expm1(v - med):+.1%} from its cohort's median in this peer group"
    return units.with_columns(pl.Series("excluded", excl.tolist(), dtype=pl.String))


def _drop_flagged(levels, paths, flagged_by):
    """Levels without the devices the verdict engine flagged (unless a third of their cohort is)."""
    pl = _pl()
    if flagged_by is True:
        from ..analyze import analyze

        flagged_by = analyze(paths)
    if not hasattr(flagged_by, "verdicts"):
        raise InputError(
            f"exclude_flagged={type(flagged_by).__name__}; expected True or a degrade.analyze result"
        )
    rows = [
        (v.job or "", v.device, str(v.status), (list(v.reasons) or [""])[0])
        for v in flagged_by.verdicts
        if str(v.status) in ("degraded", "failed")
    ]
    schema = {"job": pl.String, "device": pl.String, "status": pl.String, "why": pl.String}
    bad = pl.DataFrame(rows, schema=schema, orient="row").unique(["job", "device"])
    keys = ["job", "group", "cohort"]
    m = levels.join(bad, on=["job", "device"], how="left").with_columns(
        pl.col("status").is_not_null().alias("_f")
    )
    m = m.with_columns(pl.col("_f").sum().over(keys).alias("_k"), pl.len().over(keys).alias("_n"))
    # one flagged device is a device fault; several, and more than a third of the cohort, may be the cohort
    drop = pl.col("_f") & ((pl.col("_k") == 1) | (3 * pl.col("_k") <= pl.col("_n")))
    warnings = []
    kept = m.filter(pl.col("_f") & ~drop)
    for r in kept.select(*keys, "_k", "_n").unique().sort(keys).iter_rows(named=True):
        warnings.append(
            f"{r['_k']} of {r['_n']} {r['cohort']} devices of job {r['job']} ({r['group']}) were flagged "
            "by the verdict engine: kept (the cohort itself may be the cause)"
        )
    out = m.filter(drop).with_columns(
        pl.concat_str(
            [
                pl.lit("flagged "),
                pl.col("status"),
                pl.lit(" by the verdict engine: "),
                pl.col("why"),
            ]
        ).alias("excluded")
    )
    return m.filter(~drop).select(levels.columns), out, warnings


def _default_reference(units) -> str:
    """The largest cohort; among equals the lowest version (natural order): the oldest."""
    counts = units.group_by("cohort").agg(_pl().len().alias("n")).rows()
    counts.sort(key=lambda r: (-r[1], natural_key(r[0])))
    return counts[0][0]


def compare(
    paths,
    by: str,
    *,
    labels=None,
    reference: str | None = None,
    metric: str | None = None,
    unit: str = "device",
    confidence: float = 0.95,
    min_devices: int = 2,
    min_slowdown: float = 0.0,
    outlier: float | None = 0.05,
    exclude_flagged=False,
    chunk_rows: int = 4_000_000,
) -> CohortComparison:
    """Compare cohorts of devices (by a label such as the driver version) on the same work.

    Only devices of the same job and peer group are compared: per job, per
    device, the level of its compute time against its group's per-step
    median; per (job, group), the difference of cohort means; over jobs, a
    stratified estimate with a Student-t CI (see docs/compare.md).

    Parameters
    ----------
    paths : path, list of paths, or polars frames
        Step timings (and, for a label carried by the counters, the counters),
        as for :func:`degrade.analyze`.
    by : str
        The label: a column of the timings, a label of the counters (e.g.
        dcgm-exporter's ``DCGM_FI_DRIVER_VERSION``), or a column of ``labels``.
    labels : path or polars DataFrame, optional
        A table with ``device`` (GPU UUID) or ``host`` and the ``by`` column.
    reference : str, optional
        The cohort the others are compared with. Default: the largest (ties:
        the lowest version, i.e. the oldest).
    metric : {"compute_time", "step_time"}, optional
        Default: ``compute_time`` when present. A synchronous job's
        ``step_time`` is the same on every rank and tells cohorts nothing.
    unit : {"device", "host"}
        The independent units. ``"host"`` averages a host's devices first
        (when a host-wide effect, besides the label, may differ between hosts).
    confidence : float
        Level of the CI (default 0.95).
    min_devices : int
        Units of each cohort a peer group needs to count (default 2).
    min_slowdown : float
        ``regression`` only when the CI's lower bound is above this (default 0:
        any slowdown the data can tell from zero).
    outlier : float or None
        Units more than this (default 0.05 = 5 %, or 5 robust SDs if more) from
        the median of their own cohort in their peer group are left out and
        listed as excluded: a single faulty GPU is not a cohort's property.
        ``None`` keeps every unit.
    exclude_flagged : bool or AnalysisResult
        Leave out the devices the verdict engine judged ``degraded`` or
        ``failed`` in that job (``True`` runs :func:`degrade.analyze` on the
        same inputs; or pass its result). Where two or more and over a third
        of a cohort's devices in a peer group are flagged, the cohort itself
        may be the cause: they are kept there, with a warning.
    chunk_rows : int
        Timing rows read at once, whole jobs at a time (default 4,000,000):
        the bound on memory.

    Returns
    -------
    CohortComparison

    Raises
    ------
    InputError
        Unknown label, one cohort only, unknown ``reference``, or cohorts
        that never share a job and peer group (confounded with the work).

    Examples
    --------
    >>> from degrade.simulate import simulate_rollout
    >>> ro = simulate_rollout(jobs=4, hosts=4, steps=200, slowdown=0.03, seed=1)
    >>> res = compare(ro.timings, "DCGM_FI_DRIVER_VERSION", labels=ro.labels)
    >>> r = res.result("570.86.10")
    >>> r.verdict, 0.02 < r.slowdown < 0.04
    ('regression', True)
    """
    pl = _pl()
    if not isinstance(by, str) or not by:
        raise InputError(f"by={by!r}; expected the name of a label (e.g. DCGM_FI_DRIVER_VERSION)")
    if unit not in ("device", "host"):
        raise InputError(f"unit={unit!r}; expected 'device' or 'host'")
    if not 0.5 <= confidence < 1.0:
        raise InputError(f"confidence={confidence}; expected 0.5 <= confidence < 1")
    if int(min_devices) != min_devices or min_devices < 2:
        raise InputError(
            f"min_devices={min_devices}; expected an integer >= 2 (a cohort needs a spread)"
        )
    if min_slowdown < 0:
        raise InputError(f"min_slowdown={min_slowdown}; expected >= 0")
    if int(chunk_rows) < 1:
        raise InputError(f"chunk_rows={chunk_rows}; expected a positive number of rows")
    if metric not in (None, "compute_time", "step_time"):
        raise InputError(f"metric={metric!r}; expected 'compute_time' or 'step_time'")
    timing_srcs, counter_srcs, warnings = _sources(paths)
    tschema = _schema([s.scan() for s in timing_srcs])
    metric = pick_metric(tschema, metric)
    tcol = find_column(tschema, by)
    parts, labs = [], []
    for lf in _timing_batches(timing_srcs, int(chunk_rows)):
        parts.append(device_levels(lf, metric))
        if tcol is not None:
            labs.append(label_from_timings(lf, tcol, by))
    levels = pl.concat(parts) if len(parts) > 1 else parts[0]
    tlab = None
    if tcol is not None:
        tlab = pl.concat(labs).unique() if len(labs) > 1 else labs[0]
    if levels.height == 0:
        raise InputError(
            f"compare: no step with two or more devices reporting {metric} in one peer group"
        )
    levels, source, more = _attach(levels, by, tcol, tlab, tschema, counter_srcs, labels)
    warnings += more
    flat = levels.filter(pl.col("spread") < 1e-9)
    if flat.height:
        jobs = sorted(set(flat["job"].to_list()))
        warnings.append(
            f"{len(jobs)} job(s) ({', '.join(jobs[:4])}) report the same {metric} on every device "
            "(a synchronous step): left out; give compute_time"
        )
        levels = levels.filter(pl.col("spread") >= 1e-9)
        if levels.height == 0:
            raise InputError(
                f"compare: every job reports the same {metric} on every device (synchronous steps: the "
                "slowest rank sets the step), which cannot tell cohorts apart; give compute_time"
            )
    cohorts = sorted(set(levels["cohort"].to_list()), key=natural_key)
    if len(cohorts) < 2:
        raise InputError(
            f"compare: only one value of {by} ({cohorts[0] if cohorts else 'none'}) among the devices "
            "with usable timings: nothing to compare"
        )
    flagged = None
    if exclude_flagged is not False and exclude_flagged is not None:
        levels, flagged, more = _drop_flagged(levels, paths, exclude_flagged)
        warnings += more
    units = _outliers(_units(levels, unit), outlier)
    if reference is None:
        reference = _default_reference(units.filter(pl.col("excluded") == ""))
    elif str(reference) not in cohorts:
        raise InputError(
            f"compare: reference {reference!r} is not a value of {by}; values: {cohorts}"
        )
    reference = str(reference)
    used = units.filter(pl.col("excluded") == "")
    by_stratum = {}
    for (job, group), part in used.group_by(["job", "group"], maintain_order=True):
        by_stratum[(job, group)] = {
            c: np.asarray(p["level"].to_numpy(), dtype=float) for (c,), p in part.group_by("cohort")
        }
    ref_jobs = sorted({j for (j, _), cs in by_stratum.items() if reference in cs})
    results = [
        CohortResult(
            reference,
            "reference",
            devices=int((used["cohort"] == reference).sum()),
            jobs=len(ref_jobs),
            reason="the cohort the others are compared with",
        )
    ]
    for c in cohorts:
        if c == reference:
            continue
        strata = [
            Stratum(j, g, cs[reference], cs[c])
            for (j, g), cs in sorted(by_stratum.items())
            if c in cs
            and reference in cs
            and cs[c].size >= min_devices
            and cs[reference].size >= min_devices
        ]
        n_c = int((used["cohort"] == c).sum())
        if not strata:
            c_jobs = sorted({j for (j, _), cs in by_stratum.items() if c in cs})
            both = sorted(set(c_jobs) & set(ref_jobs))
            why = (
                f"no job and peer group holds {min_devices}+ {unit}s of both {c!r} and {reference!r}"
                + (
                    f" (jobs with both, too few {unit}s: {both[:4]})"
                    if both
                    else f": {c!r} ran only in {c_jobs[:4]}, {reference!r} only in {ref_jobs[:4]} "
                    "(confounded with the work)"
                )
            )
            results.append(CohortResult(c, "not enough overlap", devices=n_c, jobs=0, reason=why))
            continue
        k = contrast(strata, confidence)
        slow, lo, hi = math.expm1(k.estimate), math.expm1(k.ci_low), math.expm1(k.ci_high)
        if lo > min_slowdown:
            verdict, why = (
                "regression",
                f"slower than {reference!r}: the {confidence:.0%} CI is above {min_slowdown:.1%}",
            )
        elif hi < 0:
            verdict, why = (
                "improvement",
                f"faster than {reference!r}: the {confidence:.0%} CI is below 0",
            )
        else:
            verdict, why = (
                "no difference",
                f"the {confidence:.0%} CI includes "
                + ("0" if lo <= 0 else f"{min_slowdown:.1%} (--min-slowdown)"),
            )
        results.append(
            CohortResult(
                c,
                verdict,
                devices=sum(s.n_new for s in strata),
                jobs=len({s.job for s in strata}),
                slowdown=slow,
                ci_low=lo,
                ci_high=hi,
                p_value=k.p_value,
                df=k.df,
                reason=why,
                strata=k.strata,
            )
        )
    if len(results) > 1 and all(r.verdict == "not enough overlap" for r in results[1:]):
        raise InputError(
            f"compare: refusing to compare {by} cohorts that never ran the same work: "
            + "; ".join(r.reason for r in results[1:])
            + ". Cohorts are compared only within a job and peer group; roll the change out to part "
            "of the nodes of some jobs (see docs/compare.md)"
        )
    cols = ["job", "group", "device", "host", "cohort", "level", "steps", "excluded"]
    devices = units.select(cols)
    if flagged is not None and flagged.height:
        devices = pl.concat([devices, flagged.select(cols)], how="vertical_relaxed")
    devices = devices.sort(["job", "group", "cohort", "device"])
    n_ex = int((units["excluded"] != "").sum())
    if flagged is not None and flagged.height:
        warnings.append(f"{flagged.height} devices flagged by the verdict engine were left out")
    if n_ex:
        warnings.append(
            f"{n_ex} {unit}s far from their own cohort's median were left out (see excluded)"
        )
    hc = None
    if unit == "device":
        hc = _host_clustering(used)
        if hc is not None and hc["p_value"] < 0.01:
            warnings.append(
                f"devices of one host are more alike than devices of different hosts of the same "
                f"cohort (F = {hc['f']:.2f} on {hc['df1']:.0f} and {hc['df2']:.0f} df, "
                f"p = {hc['p_value']:.1g}): the device-level interval is too narrow; use unit='host' "
                "(--unit host)"
            )
    return CohortComparison(
        by,
        source,
        reference,
        metric,
        unit,
        confidence,
        min_slowdown,
        results,
        devices,
        warnings,
        hc,
    )


def _host_clustering(used):
    """The ANOVA of :func:`~._stats.clustering` over every (job, group, cohort) of the units used."""
    pl = _pl()
    if used.height == 0 or used["host"].null_count() == used.height:
        return None
    parts = (
        used.filter(pl.col("host").is_not_null())
        .group_by(["job", "group", "cohort", "host"])
        .agg(pl.col("level"))
        .group_by(["job", "group", "cohort"])
        .agg(pl.col("level"))
    )
    return clustering([[np.asarray(h) for h in hosts] for hosts in parts["level"].to_list()])


# --------------------------------------------------------------------------- text


def _pct(x) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:+.2%}"


def render_table(res: CohortComparison) -> str:
    """The plain-text table of ``degrade compare`` (one line per cohort, then notes)."""
    head = f"{res.label} cohorts on {res.metric} (units: {res.unit}s; reference {res.reference})"
    rows = [("cohort", "verdict", "slowdown", f"{res.confidence:.0%} CI", "units", "jobs", "p")]
    for c in res.cohorts:
        ci = "-" if c.ci_low is None else f"{_pct(c.ci_low)} .. {_pct(c.ci_high)}"
        p = "-" if c.p_value is None else f"{c.p_value:.2g}"
        rows.append((c.cohort, c.verdict, _pct(c.slowdown), ci, str(c.devices), str(c.jobs), p))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [head, ""]
    for r in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    notes = [f"{c.cohort}: {c.reason}" for c in res.cohorts if c.verdict != "reference"]
    lines += [""] + notes
    ex = res.devices.filter(res.devices["excluded"] != "") if res.devices.height else res.devices
    for r in ex.head(10).iter_rows(named=True):
        lines.append(f"excluded {r['device']} ({r['cohort']}, job {r['job']}): {r['excluded']}")
    if ex.height > 10:
        lines.append(f"... and {ex.height - 10} more excluded (see --format json)")
    lines += [f"warning: {w}" for w in res.warnings]
    return "\n".join(lines) + "\n"
