"""Agent state on disk: a data-only state file, validated field by field when read.

The file is a :mod:`degrade._statefile` archive of kind ``"agent"``: one
JSON tree plus ``.npy`` arrays (the verdict engine's ``state_dict``), never
a pickle, so a crafted ``--state`` cannot run code in ``degrade agent`` or in
``degrade check`` (which node-problem-detector runs on the host). It is
written atomically (temp file, fsync, rename; mode 0600).

:func:`load_state` checks the structure the agent and ``degrade check``
rely on (top-level keys, verdicts, GPU identities, counters, ``saved_at``)
without importing the verdict engine, so ``degrade check`` stays fast; the
engine part is checked by :func:`validate_engine_state` before the agent
hands it to ``VerdictEngine.load_state_dict``.
"""

from __future__ import annotations

import math
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from degrade import _statefile
from degrade.errors import StateFileError

__all__ = ["save_state", "load_state", "validate_engine_state", "cleanup_temp", "STATE_VERSION", "KIND"]

#: version 1 was a pickle and is no longer read; 2 is the data-only format
STATE_VERSION = 2
KIND = "agent"

_TOP = {"verdicts", "engine", "gpus", "lost_marked", "counters", "saved_at", "fleet"}
_STATUSES = {"healthy", "unknown", "suspect", "degraded", "failed"}
_GPU_KEYS = {
    "first_seen": (int, float), "uuid": (str,), "gpu": (int,), "pci_bus_id": (str,), "model": (str,),
    "host": (str,), "present": (bool,), "stalled": (bool,), "last_sample": (int, float),
}  # fmt: skip


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically; :class:`StateFileError` if it cannot be written."""
    _statefile.dump(path, state, kind=KIND, version=STATE_VERSION)


def cleanup_temp(path: str | os.PathLike) -> list[str]:
    """Remove temporary files left next to ``path`` by interrupted saves; return what was removed.

    Besides :func:`degrade._statefile.cleanup_temp`'s files this removes the
    ``.<name>.XXXXXXXX.tmp`` files the pickle-era agent (state version 1)
    left when it was killed mid-save.
    """
    import re
    import stat

    path = Path(path)
    removed = _statefile.cleanup_temp(path)
    legacy = re.compile(re.escape(f".{path.name}.") + r"[A-Za-z0-9_]{8}\.tmp")
    try:
        entries = list(os.scandir(path.parent if str(path.parent) else "."))
    except OSError:
        return removed
    for e in entries:
        try:
            if legacy.fullmatch(e.name) and stat.S_ISREG(e.stat(follow_symlinks=False).st_mode):
                os.unlink(e.path)
                removed.append(e.path)
        except OSError:
            pass
    return removed


def _bad(path: Path, what: str) -> StateFileError:
    return StateFileError(f"{path}: {what}")


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def load_state(path: str | os.PathLike) -> dict[str, Any] | None:
    """Read and validate an agent state file; ``None`` if there is none.

    Anything else that is wrong — not a state file, a pickle, another
    version, a FIFO or a directory, a field of the wrong type — raises
    :class:`StateFileError` with one line naming the file and the field.
    """
    path = Path(path)
    try:
        tree = _statefile.load(path, kind=KIND, version=STATE_VERSION)
    except StateFileError as exc:
        if exc.missing:
            return None
        raise
    unknown = sorted(set(tree) - _TOP)
    if unknown:
        raise _bad(path, f"unknown key(s) {unknown} in the agent state; expected {sorted(_TOP)}")
    for need in ("verdicts", "engine", "saved_at"):
        if need not in tree:
            raise _bad(path, f"the agent state lacks {need!r}")
    saved_at = tree["saved_at"]
    if not (_is_num(saved_at) and math.isfinite(saved_at)):
        raise _bad(path, f"saved_at={saved_at!r}; expected a Unix time in seconds")
    verdicts = tree["verdicts"]
    if not isinstance(verdicts, list):
        raise _bad(path, f"verdicts is a {type(verdicts).__name__}; expected a list")
    for i, v in enumerate(verdicts):
        if not isinstance(v, dict):
            raise _bad(path, f"verdicts[{i}] is a {type(v).__name__}; expected an object")
        if not isinstance(v.get("device"), str) or not v["device"]:
            raise _bad(path, f"verdicts[{i}].device={v.get('device')!r}; expected a device id")
        if v.get("status") not in _STATUSES:
            raise _bad(path, f"verdicts[{i}].status={v.get('status')!r}; expected one of {sorted(_STATUSES)}")
        reasons = v.get("reasons", [])
        if not (isinstance(reasons, list) and all(isinstance(r, str) for r in reasons)):
            raise _bad(path, f"verdicts[{i}].reasons: expected a list of strings")
        if v.get("gpu") is not None and not (isinstance(v["gpu"], int) and not isinstance(v["gpu"], bool)):
            raise _bad(path, f"verdicts[{i}].gpu={v['gpu']!r}; expected an index or null")
    if not isinstance(tree["engine"], dict):
        raise _bad(path, f"engine is a {type(tree['engine']).__name__}; expected an object")
    gpus = tree.get("gpus", {})
    if not isinstance(gpus, dict):
        raise _bad(path, f"gpus is a {type(gpus).__name__}; expected an object")
    for dev, info in gpus.items():
        if not isinstance(info, dict):
            raise _bad(path, f"gpus[{dev!r}] is a {type(info).__name__}; expected an object")
        for k, v in info.items():
            types = _GPU_KEYS.get(k)
            if types is None:
                raise _bad(path, f"gpus[{dev!r}] has the unknown key {k!r}")
            if v is not None and not (isinstance(v, types) and (bool in types or not isinstance(v, bool))):
                raise _bad(path, f"gpus[{dev!r}].{k}={v!r}; expected {' or '.join(t.__name__ for t in types)}")
    lost = tree.get("lost_marked", [])
    if not (isinstance(lost, list) and all(isinstance(d, str) for d in lost)):
        raise _bad(path, "lost_marked: expected a list of device ids")
    counters = tree.get("counters", {})
    if not (isinstance(counters, dict) and all(isinstance(v, int) and v >= 0 for v in counters.values())
            and set(counters) <= {"polls_total", "samples_total"}):
        raise _bad(path, "counters: expected {'polls_total': int, 'samples_total': int}")
    fleet = tree.get("fleet", {"devices": []})
    if not (isinstance(fleet, dict) and isinstance(fleet.get("devices"), list)):
        raise _bad(path, "fleet: expected an object with a 'devices' list (the agent's fleet history)")
    return tree


def validate_engine_state(d: Any, path: str | os.PathLike, config_cls: type, event_cls: type | None = None) -> None:
    """Check an engine ``state_dict`` read from ``path`` before the engine sees it.

    The engine's own ``load_state_dict`` checks array shapes; this checks
    what it would otherwise trip over with a traceback: the config keys
    (against ``config_cls``'s fields), the per-device lists, the events and
    the dtype of every array.
    """
    path = Path(path)
    if not isinstance(d, dict):
        raise _bad(path, "engine: expected an object")
    cfg = d.get("config")
    if not isinstance(cfg, dict):
        raise _bad(path, "engine.config: expected an object")
    names = {f.name for f in fields(config_cls)}
    unknown = sorted(set(cfg) - names)
    if unknown:
        raise _bad(path, f"engine.config has unknown key(s) {unknown}")
    for k, v in cfg.items():
        vals = v if isinstance(v, list) else [v]
        if not all(x is None or isinstance(x, (bool, int, float, str)) for x in vals):
            raise _bad(path, f"engine.config.{k}={str(v)[:40]}; expected a number, string, bool or null")
    devices = d.get("devices")
    if not (isinstance(devices, list) and all(isinstance(x, str) for x in devices)):
        raise _bad(path, "engine.devices: expected a list of device ids")
    if len(set(devices)) != len(devices):
        raise _bad(path, "engine.devices: a device id appears twice")
    for k in ("jobs", "hosts", "groups", "metrics"):
        if k in d:
            v = d[k]
            if not (isinstance(v, list) and len(v) == len(devices)
                    and all(x is None or isinstance(x, (str, int, float)) for x in v)):
                raise _bad(path, f"engine.{k}: expected one id (or null) per device ({len(devices)})")
    if "job_groups" in d:
        jg = d["job_groups"]
        if not (isinstance(jg, list) and all(isinstance(g, list) and all(
                x is None or isinstance(x, (str, int, float)) for x in g) for g in jg)):
            raise _bad(path, "engine.job_groups: expected a list of [job, group] pairs")
    if "events" in d:
        ev = d["events"]
        if not isinstance(ev, list):
            raise _bad(path, "engine.events: expected a list")
        for i, e in enumerate(ev):
            if not isinstance(e, dict):
                raise _bad(path, f"engine.events[{i}]: expected an object")
            if event_cls is not None:
                extra = sorted(set(e) - {f.name for f in fields(event_cls)})
                if extra:
                    raise _bad(path, f"engine.events[{i}] has unknown key(s) {extra}")
            for k, v in e.items():
                if not (v is None or isinstance(v, (bool, int, float, str, list))):
                    raise _bad(path, f"engine.events[{i}].{k}={v!r}: expected a scalar")
    if "lost_reasons" in d:
        lr = d["lost_reasons"]
        if not (isinstance(lr, dict) and all(isinstance(v, str) for v in lr.values())):
            raise _bad(path, "engine.lost_reasons: expected an object of strings")
    if "t" in d and not (isinstance(d["t"], int) and not isinstance(d["t"], bool) and d["t"] >= 0):
        raise _bad(path, f"engine.t={d['t']!r}: expected a count >= 0")

    def arrays(x: Any, where: str) -> None:
        if isinstance(x, np.ndarray):
            if x.dtype.kind not in "biuf":
                raise _bad(path, f"{where} has dtype {x.dtype}; expected numbers")
        elif isinstance(x, dict):
            for k, v in x.items():
                arrays(v, f"{where}.{k}")
        elif isinstance(x, list):
            for i, v in enumerate(x):
                arrays(v, f"{where}[{i}]")

    arrays(d, "engine")
