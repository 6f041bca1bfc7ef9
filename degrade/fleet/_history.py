"""Per-device history keyed by GPU UUID across jobs and time (fleet memory).

A :class:`FleetHistory` holds, for every device (GPU UUID, or a MIG
instance ``<UUID>/mig<N>``), one *episode* per job it ran in: the job, its
dates, the verdict's status, slowdown and onset, the job's size, and the
job's evidence for the accumulated test (the device's peer excess and its
standard error, :mod:`degrade.fleet._evidence`). Nothing is re-detected:
everything comes from the verdict engine's verdicts.

Slots: a device seen at ``host:gpu`` (the GPU index of the counters, NVML
or dcgm-exporter's ``gpu`` label) occupies that slot; a new UUID in the
same slot later is a replacement. The new device starts fresh (its own
record, no inherited evidence) and both records say so.

The history is data only (JSON-able dicts, lists, numbers, strings):
:meth:`FleetHistory.save` writes it with :mod:`degrade._statefile`, and the
``fleet`` section of ``degrade analyze --format json`` is
:meth:`FleetHistory.to_dict`.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ._evidence import Accumulated, accumulate

__all__ = ["FleetConfig", "FleetHistory", "STATE_KIND", "STATE_VERSION", "BAD_STATUSES"]

STATE_KIND = "fleet-history"
STATE_VERSION = 1
#: statuses that make an episode count towards a repeat offender
BAD_STATUSES = ("degraded", "failed")
_STATUSES = ("healthy", "suspect", "degraded", "failed", "unknown")
_EPISODE_KEYS = (
    "job",
    "start",
    "end",
    "status",
    "slowdown",
    "onset_step",
    "onset_time",
    "detected_time",
    "job_devices",
    "excess",
    "excess_se",
    "samples",
    "host",
    "gpu",
    "reason",
)


@dataclass(frozen=True)
class FleetConfig:
    """How the history judges accumulated evidence.

    Parameters
    ----------
    alpha
        False-alarm budget per device over its whole history: a healthy
        device (at most ``healthy_offset`` slower than its peers) is ever
        flagged slow-across-jobs with probability at most ``alpha`` (alpha
        spending over its jobs). A fleet of N devices expects at most
        ``N * alpha`` false flags in total; the default 1e-4 is one per
        10,000 GPUs.
    healthy_offset
        Largest static offset to peers that is healthy (the verdict
        engine's ``healthy_offset``).
    min_slowdown
        A device found slow across jobs is ``degraded`` when its combined
        slowdown reaches this, ``suspect`` below.
    """

    alpha: float = 1e-4
    healthy_offset: float = 0.03
    min_slowdown: float = 0.05

    def __post_init__(self) -> None:
        if not (0.0 < self.alpha < 1.0):
            raise InputError(f"FleetConfig.alpha={self.alpha!r}: expected a probability in (0, 1)")
        if not (0.0 <= self.healthy_offset < 1.0):
            raise InputError(
                f"FleetConfig.healthy_offset={self.healthy_offset!r}: expected a fraction in [0, 1)"
            )
        if not (0.0 < self.min_slowdown < 1.0):
            raise InputError(
                f"FleetConfig.min_slowdown={self.min_slowdown!r}: expected a fraction in (0, 1)"
            )

    def to_dict(self) -> dict[str, float]:
        return {
            "alpha": self.alpha,
            "healthy_offset": self.healthy_offset,
            "min_slowdown": self.min_slowdown,
        }


def iso(t: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC (``None`` stays ``None``)."""
    if t is None or not math.isfinite(t):
        return None
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _num(x: Any) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _slot_key(host: Any, gpu: Any) -> str | None:
    if host is None or gpu is None:
        return None
    return f"{host}:{int(gpu)}"


class FleetHistory:
    """Every device's episodes across jobs, repeat offenders, replacements and accumulated evidence.

    Examples
    --------
    >>> from degrade.fleet import FleetHistory
    >>> h = FleetHistory()
    >>> for job, t in (("a", 0.0), ("b", 1e5)):
    ...     h.add_verdicts([{"device": "GPU-1", "job": job, "status": "degraded", "slowdown": 0.1,
    ...                      "host": "n0", "signals": {"first_time": t, "last_time": t + 3600}},
    ...                     {"device": "GPU-2", "job": job, "status": "healthy", "host": "n0",
    ...                      "signals": {"first_time": t, "last_time": t + 3600}}],
    ...                    slots={"GPU-1": ("n0", 0), "GPU-2": ("n0", 1)})
    >>> [r["device"] for r in h.repeat_offenders()]
    ['GPU-1']
    >>> h.add_verdicts([{"device": "GPU-3", "job": "c", "status": "healthy", "host": "n0",
    ...                  "signals": {"first_time": 2e5, "last_time": 2e5}}], slots={"GPU-3": ("n0", 0)})
    >>> h.record("n0:0")["device"], h.record("GPU-1")["replaced_by"]
    ('GPU-3', 'GPU-3')
    """

    def __init__(self, config: FleetConfig | None = None) -> None:
        self.config = config or FleetConfig()
        self._devices: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------ building
    def add_verdicts(
        self, verdicts: Iterable[Any], *, slots: Mapping[str, tuple[Any, Any]] | None = None
    ) -> None:
        """Add one analysis' verdicts (``Verdict`` objects or their ``to_dict()``), one episode per (device, job).

        A (device, job) already in the history is replaced (the same job
        analysed again). ``slots`` maps a device to its ``(host, gpu index)``.
        """
        rows = [v.to_dict() if hasattr(v, "to_dict") else dict(v) for v in verdicts]
        size: dict[Any, int] = {}
        span: dict[Any, list[float]] = {}
        for r in rows:
            if not isinstance(r.get("device"), str) or not r["device"]:
                raise InputError(f"fleet history: a verdict without a device id: {r!r:.120}")
            job = r.get("job")
            size[job] = size.get(job, 0) + 1
            sig = r.get("signals") or {}
            for t in (
                _num(sig.get("first_time")),
                _num(sig.get("last_time")),
                _num(r.get("onset_time")),
            ):
                if t is not None:
                    sp = span.setdefault(job, [math.inf, -math.inf])
                    sp[0], sp[1] = min(sp[0], t), max(sp[1], t)
        slots = slots or {}
        for r in rows:
            job = r.get("job")
            sig = r.get("signals") or {}
            status = str(r.get("status", "unknown"))
            if status not in _STATUSES:
                raise InputError(
                    f"fleet history: device {r['device']!r} has status {status!r}; "
                    f"expected one of {', '.join(_STATUSES)}"
                )
            sp = span.get(job)
            host, gpu = slots.get(r["device"], (r.get("host"), None))
            ep = {
                "job": None if job is None else str(job),
                "start": _num(sig.get("first_time"))
                if _num(sig.get("first_time")) is not None
                else (sp[0] if sp else None),
                "end": _num(sig.get("last_time"))
                if _num(sig.get("last_time")) is not None
                else (sp[1] if sp else None),
                "status": status,
                "slowdown": _num(r.get("slowdown")),
                "onset_step": r.get("onset_step"),
                "onset_time": _num(r.get("onset_time")),
                "detected_time": _num(r.get("detected_time")),
                "job_devices": size[job] if job is not None else None,
                "excess": _num(sig.get("peer_excess")),
                "excess_se": _num(sig.get("peer_excess_se")),
                "samples": int(sig.get("peer_excess_samples") or 0),
                "host": None if host is None else str(host),
                "gpu": None if gpu is None else int(gpu),
                "reason": (r.get("reasons") or [None])[0],
            }
            self._add_episode(r["device"], ep)
        self._link_slots()

    def add_episode(self, device: str, episode: Mapping[str, Any]) -> None:
        """Add or replace one episode (keys of :data:`_EPISODE_KEYS`; missing ones are ``None``)."""
        ep = {k: episode.get(k) for k in _EPISODE_KEYS}
        if ep["status"] not in _STATUSES:
            raise InputError(
                f"fleet history: episode status {ep['status']!r}; expected one of {', '.join(_STATUSES)}"
            )
        self._add_episode(str(device), ep)
        self._link_slots()

    def _add_episode(self, device: str, ep: dict[str, Any]) -> None:
        rec = self._devices.setdefault(
            device,
            {
                "device": device,
                "host": None,
                "gpu": None,
                "episodes": [],
                "replaces": None,
                "replaced_by": None,
                "replaced_at": None,
            },
        )
        eps = rec["episodes"]
        for i, old in enumerate(eps):
            if old["job"] == ep["job"]:
                eps[i] = ep
                break
        else:
            eps.append(ep)
        eps.sort(key=lambda e: (e["start"] is None, e["start"] or 0.0, str(e["job"])))
        if ep["host"] is not None:
            rec["host"] = ep["host"]
        if ep["gpu"] is not None:
            rec["gpu"] = ep["gpu"]

    def merge(self, other: FleetHistory) -> None:
        """Add every episode of ``other`` (its episodes win for the same device and job)."""
        for dev, rec in other._devices.items():
            for ep in rec["episodes"]:
                self._add_episode(dev, dict(ep))
        self._link_slots()

    def _link_slots(self) -> None:
        """Replacement: consecutive distinct devices of one ``host:gpu`` slot, by first appearance."""
        by_slot: dict[str, list[dict]] = {}
        for rec in self._devices.values():
            rec["replaces"] = rec["replaced_by"] = rec["replaced_at"] = None
            key = _rec_slot(rec)
            if key is not None:
                by_slot.setdefault(key, []).append(rec)
        for recs in by_slot.values():
            recs.sort(key=lambda r: (_first(r) is None, _first(r) or 0.0, r["device"]))
            for old, new in zip(recs, recs[1:]):
                t_old, t_new = _last(old), _first(new)
                if t_old is not None and t_new is not None and t_new < t_old:
                    # both reported from the slot at the same time: not a replacement
                    continue
                old["replaced_by"] = new["device"]
                old["replaced_at"] = _first(new)
                new["replaces"] = old["device"]

    # ------------------------------------------------------------ queries
    @property
    def devices(self) -> list[str]:
        """Device ids, sorted."""
        return sorted(self._devices)

    def __len__(self) -> int:
        return len(self._devices)

    def resolve(self, key: str) -> str:
        """The device id for ``key``: a device id, a unique prefix of one, or ``host:gpu`` (its current device)."""
        key = str(key).strip()
        if key in self._devices:
            return key
        if ":" in key:
            held = [r for r in self._devices.values() if _rec_slot(r) == key]
            if held:
                held.sort(key=lambda r: (_first(r) is None, _first(r) or 0.0))
                return held[-1]["device"]
            slots = sorted({_rec_slot(r) for r in self._devices.values()} - {None})
            if slots or key.rpartition(":")[2].split("/")[0].isdigit():
                raise InputError(f"no device at {key!r} in the history; slots known: {_few(slots)}")
        hits = [d for d in self._devices if d.startswith(key)] if key else []
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise InputError(
                f"device {key!r} is ambiguous: it starts {len(hits)} device ids ({_few(sorted(hits))})"
            )
        raise InputError(
            f"device {key!r} is not in the history ({len(self._devices)} devices; expected a GPU UUID "
            f"or HOST:GPU such as {_few(self.devices)})"
        )

    def evidence(self, device: str) -> Accumulated:
        """The device's accumulated evidence over its jobs (:func:`degrade.fleet._evidence.accumulate`)."""
        rec = self._devices[self.resolve(device)]
        return accumulate(
            (
                (e["job"], e["excess"], e["excess_se"])
                for e in rec["episodes"]
                if e["job"] is not None
            ),
            mu0=math.log1p(self.config.healthy_offset),
            alpha=self.config.alpha,
        )

    def record(self, device: str) -> dict[str, Any]:
        """One device's full history: episodes, jobs, slot, replacement and accumulated evidence."""
        rec = self._devices[self.resolve(device)]
        eps = rec["episodes"]
        bad = [e for e in eps if e["status"] in BAD_STATUSES and e["job"] is not None]
        starts = [e["start"] for e in eps if e["start"] is not None]
        ends = [e["end"] for e in eps if e["end"] is not None]
        return {
            "device": rec["device"],
            "host": rec["host"],
            "gpu": rec["gpu"],
            "slot": _rec_slot(rec),
            "first_seen": min(starts) if starts else None,
            "last_seen": max(ends) if ends else None,
            "jobs": len({e["job"] for e in eps if e["job"] is not None}),
            "degraded_jobs": len({e["job"] for e in bad}),
            "repeat_offender": len({e["job"] for e in bad}) >= 2,
            "replaces": rec["replaces"],
            "replaced_by": rec["replaced_by"],
            "replaced_at": rec["replaced_at"],
            "evidence": self.evidence(rec["device"]).to_dict(self.config.min_slowdown),
            "episodes": [dict(e) for e in eps],
        }

    def repeat_offenders(self) -> list[dict[str, Any]]:
        """Devices degraded (or failed) in two or more jobs, with those jobs, dates and sizes; most jobs first."""
        out = []
        for dev in self.devices:
            rec = self._devices[dev]
            bad = [
                e for e in rec["episodes"] if e["status"] in BAD_STATUSES and e["job"] is not None
            ]
            if len({e["job"] for e in bad}) < 2:
                continue
            out.append(
                {
                    "device": dev,
                    "host": rec["host"],
                    "gpu": rec["gpu"],
                    "replaced_by": rec["replaced_by"],
                    "jobs": [
                        {
                            k: e[k]
                            for k in (
                                "job",
                                "start",
                                "end",
                                "status",
                                "slowdown",
                                "onset_step",
                                "onset_time",
                                "job_devices",
                            )
                        }
                        for e in bad
                    ],
                }
            )
        out.sort(key=lambda r: (-len(r["jobs"]), r["device"]))
        return out

    def slow_across_jobs(self) -> list[dict[str, Any]]:
        """Devices whose accumulated evidence passed its threshold (found slow from several jobs)."""
        out = []
        for dev in self.devices:
            acc = self.evidence(dev)
            if acc.found:
                rec = self._devices[dev]
                out.append(
                    {
                        "device": dev,
                        "host": rec["host"],
                        "gpu": rec["gpu"],
                        "single_job_flags": sum(
                            e["status"] in BAD_STATUSES for e in rec["episodes"]
                        ),
                        **acc.to_dict(self.config.min_slowdown),
                    }
                )
        out.sort(key=lambda r: (-(r["slowdown"] or 0.0), r["device"]))
        return out

    def replacements(self) -> list[dict[str, Any]]:
        """Every slot change: ``{slot, old, new, at}`` in time order."""
        out = [
            {
                "slot": _rec_slot(r),
                "old": r["device"],
                "new": r["replaced_by"],
                "at": r["replaced_at"],
            }
            for r in self._devices.values()
            if r["replaced_by"]
        ]
        out.sort(key=lambda r: (r["at"] is None, r["at"] or 0.0, r["slot"]))
        return out

    # ------------------------------------------------------------ data
    def to_dict(self) -> dict[str, Any]:
        """The ``fleet`` section of the JSON contract (docs/json-contract.md), data only."""
        return {
            "config": self.config.to_dict(),
            "devices": [self.record(d) for d in self.devices],
            "repeat_offenders": self.repeat_offenders(),
            "slow_across_jobs": self.slow_across_jobs(),
            "replacements": self.replacements(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "fleet history") -> FleetHistory:
        """Rebuild from :meth:`to_dict` (an analyze document's ``fleet`` section), validated."""
        if not isinstance(d, Mapping) or not isinstance(d.get("devices"), list):
            raise InputError(
                f"{where}: expected an object with a 'devices' list (the 'fleet' section of "
                "degrade analyze --format json, or a saved history)"
            )
        try:
            cfg = FleetConfig(**dict(d.get("config") or {}))
        except TypeError as exc:
            raise InputError(f"{where}: bad config ({exc})") from None
        h = cls(cfg)
        for i, rec in enumerate(d["devices"]):
            if (
                not isinstance(rec, Mapping)
                or not isinstance(rec.get("device"), str)
                or not isinstance(rec.get("episodes"), list)
            ):
                raise InputError(
                    f"{where}: devices[{i}] needs a 'device' string and an 'episodes' list"
                )
            for j, ep in enumerate(rec["episodes"]):
                if not isinstance(ep, Mapping) or ep.get("status") not in _STATUSES:
                    raise InputError(
                        f"{where}: devices[{i}].episodes[{j}] needs a 'status' in "
                        f"{', '.join(_STATUSES)}"
                    )
                h._add_episode(rec["device"], {k: ep.get(k) for k in _EPISODE_KEYS})
        h._link_slots()
        return h

    def save(self, path: str | os.PathLike) -> None:
        """Write the history atomically as a data-only state file (:mod:`degrade._statefile`)."""
        from .. import _statefile

        _statefile.dump(
            path,
            {
                "config": self.config.to_dict(),
                "devices": [
                    {"device": d, "episodes": self._devices[d]["episodes"]} for d in self.devices
                ],
            },
            kind=STATE_KIND,
            version=STATE_VERSION,
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> FleetHistory:
        """Read :meth:`save` output (never unpickled; a damaged file raises ``StateFileError``)."""
        from .. import _statefile

        tree = _statefile.load(path, kind=STATE_KIND, version=STATE_VERSION)
        return cls.from_dict(tree, where=os.fspath(path))


def _rec_slot(rec: Mapping[str, Any]) -> str | None:
    """``host:gpu``, and ``host:gpu/migN`` for a MIG instance (``<UUID>/migN``: instances share a GPU)."""
    key = _slot_key(rec["host"], rec["gpu"])
    if key is None:
        return None
    _, sep, inst = rec["device"].partition("/")
    return f"{key}/{inst}" if sep else key


def _last(rec: Mapping[str, Any]) -> float | None:
    ends = [e["end"] for e in rec["episodes"] if e["end"] is not None]
    return max(ends) if ends else None


def _first(rec: Mapping[str, Any]) -> float | None:
    starts = [e["start"] for e in rec["episodes"] if e["start"] is not None]
    return min(starts) if starts else None


def _few(items: list, n: int = 3) -> str:
    items = [str(x) for x in items]
    return (
        ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")
        if items
        else "none"
    )
