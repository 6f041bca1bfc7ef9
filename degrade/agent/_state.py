"""Agent state on disk: written atomically, read back at start-up.

The file is a pickle of plain dicts, lists, numbers and NumPy arrays (the
verdict engine's ``state_dict``), written by the agent itself to a path
only it should write (mode 0600). Writes go to a temporary file in the same
directory, are fsynced, then renamed over the old file, so a crash or a
full disk never leaves a half-written state behind.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

from degrade.errors import InputError

__all__ = ["save_state", "load_state", "STATE_VERSION"]

STATE_VERSION = 1
_MAGIC = "degrade-agent-state"


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"magic": _MAGIC, "version": STATE_VERSION, **state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load_state(path: str | os.PathLike) -> dict[str, Any] | None:
    """Read a state file written by :func:`save_state`; ``None`` if there is none.

    A file that is not an agent state (or from an incompatible version)
    raises :class:`InputError` naming it, rather than being silently ignored
    or overwritten.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            payload = pickle.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError) as exc:
        raise InputError(
            f"{path}: not a readable degrade agent state file ({exc}); move it away or pass another --state"
        ) from exc
    if not isinstance(payload, dict) or payload.get("magic") != _MAGIC:
        raise InputError(f"{path}: not a degrade agent state file; move it away or pass another --state")
    if payload.get("version") != STATE_VERSION:
        raise InputError(
            f"{path}: agent state version {payload.get('version')!r}; this degrade reads version "
            f"{STATE_VERSION}. Move the file away to start with fresh baselines"
        )
    return payload
