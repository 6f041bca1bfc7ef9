"""The monitor's memory across restarts: one data-only state file per physical device.

A restart (``podFailurePolicy``, ``restartPolicyRules``, torchrun's elastic
restarts) starts a new process with a new monitor. Without memory, the GPU
that was just judged degraded would be trusted again until it is re-detected.
With ``state_dir=``, each rank keeps its own device's verdict and recent
status changes in ``<state_dir>/<device>.degrade-loop`` (the format of
:mod:`degrade._statefile`: a versioned zip of JSON, never a pickle), written
atomically whenever the device's status changes. A rank that starts on the
same device (same GPU UUID) reloads it and knows the verdict at step 0; a
replaced device has a new UUID, hence no file, and starts fresh.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path
from time import time
from typing import Any

from .._statefile import dump, load
from ..errors import StateFileError
from ..verdict import Status, Verdict

__all__ = ["KIND", "VERSION", "state_path", "save_device", "load_device", "read_outcomes"]

KIND = "degrade-loop-device"
VERSION = 1
_HISTORY = 20  # status changes kept per device
_FIELDS_NUM = ("slowdown", "onset_time", "detected_time", "score")
_FIELDS_INT = ("onset_step", "detected_step")


def state_path(state_dir: str | os.PathLike, device: str) -> Path:
    """The file of ``device`` in ``state_dir``: a readable name plus a hash (no collisions)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", device)[:80]
    digest = hashlib.sha256(device.encode()).hexdigest()[:10]
    return Path(state_dir) / f"{safe}-{digest}.degrade-loop"


def _verdict_tree(v: Verdict) -> dict:
    d = v.to_dict()
    out: dict[str, Any] = {
        "device": str(v.device),
        "status": d["status"],
        "host": v.host,
        "job": v.job,
        "reasons": [str(r) for r in v.reasons],
    }
    for k in _FIELDS_NUM + _FIELDS_INT:
        val = d.get(k)
        out[k] = None if val is None else (int(val) if k in _FIELDS_INT else float(val))
    return out


def save_device(
    state_dir: str | os.PathLike,
    verdict: Verdict,
    *,
    rank: int,
    step: int,
    history: list,
    outcome: dict | None = None,
) -> Path:
    """Write this rank's device record; ``history`` is updated in place (bounded).

    ``outcome`` is the coordinated decision this rank carried out (exit or
    raise), read back by ``python -m degrade.loop exit-code``.
    """
    st = Status(verdict.status).value
    if outcome is None or not history or history[-1]["status"] != st:
        history.append({"step": int(step), "status": st, "time": time()})
    del history[:-_HISTORY]
    path = state_path(state_dir, str(verdict.device))
    tree = {
        "device": str(verdict.device),
        "rank": int(rank),
        "step": int(step),
        "updated": time(),
        "verdict": _verdict_tree(verdict),
        "history": list(history),
    }
    if outcome is not None:
        tree["outcome"] = dict(outcome)
    dump(path, tree, kind=KIND, version=VERSION)
    return path


def read_outcomes(state_dir: str | os.PathLike, since: float = 0.0) -> list[dict]:
    """The decisions recorded in ``state_dir`` at or after ``since`` (Unix time), newest first.

    Files that are not device records, or are damaged, are skipped: this
    runs after training, where a bad file must not hide the others.
    """
    out = []
    for path in sorted(Path(state_dir).glob("*.degrade-loop")):
        try:
            tree = load(path, kind=KIND, version=VERSION)
        except StateFileError:
            continue
        o = tree.get("outcome")
        if not isinstance(o, dict) or o.get("role") not in ("degraded", "peer"):
            continue
        t = o.get("time")
        if isinstance(t, (int, float)) and not isinstance(t, bool) and t >= since:
            out.append({**o, "file": path.name, "rank": tree.get("rank")})
    return sorted(out, key=lambda o: -o["time"])


def _num(x: Any, name: str, path: Path, integer: bool = False):
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise StateFileError(f"{path}: verdict field {name!r} is {x!r}, expected a number or null")
    if integer:
        if not isinstance(x, int):
            raise StateFileError(f"{path}: verdict field {name!r} is {x!r}, expected an integer")
        return int(x)
    return None if math.isnan(float(x)) else float(x)


def load_device(state_dir: str | os.PathLike, device: str) -> tuple[Verdict | None, list]:
    """The saved verdict of ``device`` and its history, or ``(None, [])`` when it has no file.

    A file that exists but is damaged, of another kind or version, or about
    another device raises :class:`~degrade.errors.StateFileError`.
    """
    path = state_path(state_dir, device)
    try:
        tree = load(path, kind=KIND, version=VERSION)
    except StateFileError as exc:
        if getattr(exc, "missing", False):
            return None, []
        raise
    v = tree.get("verdict")
    if not isinstance(v, dict):
        raise StateFileError(f"{path}: no 'verdict' object in the device record")
    if v.get("device") != device or tree.get("device") != device:
        raise StateFileError(
            f"{path}: the record is about device {v.get('device')!r}, not {device!r}"
        )
    try:
        status = Status(v.get("status"))
    except ValueError:
        raise StateFileError(
            f"{path}: verdict status {v.get('status')!r} is not a status"
        ) from None
    reasons = v.get("reasons") or []
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise StateFileError(f"{path}: verdict 'reasons' must be a list of strings")
    host = v.get("host")
    job = v.get("job")
    verdict = Verdict(
        device=device,
        status=status,
        job=job if isinstance(job, str) else None,
        host=host if isinstance(host, str) else None,
        reasons=[*reasons, f"restored from {path.name} (saved at step {tree.get('step')})"],
        **{k: _num(v.get(k), k, path) for k in _FIELDS_NUM},
        **{k: _num(v.get(k), k, path, integer=True) for k in _FIELDS_INT},
    )
    hist = tree.get("history")
    hist = [h for h in hist if isinstance(h, dict)] if isinstance(hist, list) else []
    return verdict, hist
