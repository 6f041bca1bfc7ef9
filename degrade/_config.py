"""Numba options for every kernel in degrade, kept in one place.

Environment switches (read once, at import of this module):

``DEGRADE_NUMBA_CACHE``
    ``1`` (default) caches compiled kernels on disk next to the package so a
    second process starts warm; ``0`` turns caching off (debugging). Where
    numba finds no writable cache directory (a read-only root file system:
    neither the package's ``__pycache__``, ``NUMBA_CACHE_DIR`` nor
    ``~/.cache`` writable), kernels are cached in a fresh temporary
    directory instead, or not at all if none can be made, with one warning
    (logger ``degrade``); never an error. A cache write that fails while a
    kernel compiles (a full disk) is one warning too.
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

import logging
import os
import threading

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


_fallback_lock = threading.Lock()
_fallback: dict[str, str | None] = {}  # "dir" -> the temporary cache directory in use (None: caching off)


def _cache_fallback() -> str | None:
    """Once per process: a writable temporary cache directory for numba, or ``None``; warns once."""
    with _fallback_lock:
        if "dir" in _fallback:
            return _fallback["dir"]
        import tempfile

        from numba.core import config as nconfig

        try:
            d = tempfile.mkdtemp(prefix="degrade-numba-cache-")
        except OSError:
            d = None
        where = f"caching compiled kernels in {d} for this process" if d else "compiling without a cache"
        logging.getLogger("degrade").warning(
            "numba cannot write its cache (read-only file system? set NUMBA_CACHE_DIR to a writable "
            "directory); %s", where)
        if d is not None:
            nconfig.CACHE_DIR = d  # numba's user-provided locator reads this at each decoration
        _fallback["dir"] = d
        return d


def _guard_cache_saves(disp):
    """A cache write that fails while a kernel compiles (disk full) warns once instead of raising.

    numba adds the compiled kernel before saving it to the cache, so the
    kernel works either way; without this guard the first call would raise
    ``OSError`` out of the kernel call.
    """
    cache = getattr(disp, "_cache", None)
    save = getattr(cache, "save_overload", None)
    if save is None:
        return disp

    def save_overload(sig, data):
        try:
            save(sig, data)
        except OSError as exc:
            with _fallback_lock:
                first = not _fallback.get("save_warned")
                _fallback["save_warned"] = "1"
            if first:
                logging.getLogger("degrade").warning(
                    "numba could not save a compiled kernel to its cache (%s); kernels that cannot be "
                    "cached are compiled again by the next process", exc.strerror or exc)

    try:
        cache.save_overload = save_overload
    except AttributeError:
        pass
    return disp


def _is_cache_error(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and "cannot cache function" in str(exc)


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
        if opts.get("cache") and _fallback.get("dir", "") is None:
            opts["cache"] = False  # an earlier kernel found no writable cache at all
        try:
            return _guard_cache_saves(numba.njit(**opts)(f))
        except RuntimeError as exc:
            if not (opts.get("cache") and _is_cache_error(exc)):
                raise
        if _cache_fallback() is None:
            opts["cache"] = False
        try:
            return _guard_cache_saves(numba.njit(**opts)(f))
        except RuntimeError as exc:
            if not _is_cache_error(exc):
                raise
            opts["cache"] = False
            return numba.njit(**opts)(f)

    if func is not None:
        return wrap(func)
    return wrap
