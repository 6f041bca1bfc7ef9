"""Numba options for every kernel in degrade, kept in one place.

Environment switches (read once, at import of this module):

``DEGRADE_NUMBA_CACHE``
    ``1`` (default) caches compiled kernels on disk next to the package so a
    second process starts warm; ``0`` turns caching off (read-only installs,
    debugging).
``DEGRADE_NUMBA_FASTMATH``
    ``0`` (default). Kernels handle NaN explicitly, which ``fastmath`` would
    break, so it stays off unless a kernel opts in for a NaN-free inner loop.
``DEGRADE_NUMBA_PARALLEL``
    ``0`` (default). ``1`` lets kernels written with ``prange`` run threaded.

Kernels are declared with :func:`njit` from this module, never with
``numba.njit`` directly, and compile lazily: no signatures, nothing is
compiled at import.
"""

from __future__ import annotations

import os

__all__ = ["CACHE", "FASTMATH", "PARALLEL", "njit", "jit_options"]


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() not in {"0", "false", "no", "off"}


CACHE: bool = _flag("DEGRADE_NUMBA_CACHE", True)
FASTMATH: bool = _flag("DEGRADE_NUMBA_FASTMATH", False)
PARALLEL: bool = _flag("DEGRADE_NUMBA_PARALLEL", False)


def jit_options(**overrides) -> dict:
    """Return the keyword arguments every degrade kernel is compiled with."""
    opts = {"cache": CACHE, "fastmath": FASTMATH, "nogil": True}
    opts.update(overrides)
    return opts


def njit(func=None, **overrides):
    """Lazily-compiled ``numba.njit`` with degrade's options.

    Importing numba is deferred until the first decorated function is
    defined, and compiling until its first call. Use as ``@njit`` or
    ``@njit(parallel=True)``.
    """

    def wrap(f):
        import numba

        opts = jit_options(**overrides)
        if opts.get("parallel") and not PARALLEL:
            opts["parallel"] = False
        return numba.njit(**opts)(f)

    if func is not None:
        return wrap(func)
    return wrap
