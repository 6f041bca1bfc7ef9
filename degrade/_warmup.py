"""Compile kernels ahead of use: ``degrade.warmup()`` / ``degrade warmup``, and the first-run status.

numba compiles a kernel the first time it is called and caches the machine
code on disk, so only the first run on a machine (or after an upgrade) pays
for compilation. :class:`FirstRunStatus` makes that pause visible: it says
once, on stderr, that kernels are being compiled, only when numba really
compiles one of degrade's functions (numba's ``numba:compile`` event), never
on a cache hit. (Compiling on a background thread while the main thread
reads the input was measured and did not help: compilation dominates and
numba's compiler lock serialises it; see bench/README.md.)
"""

from __future__ import annotations

import importlib
import sys
import threading
import time

# Each of these packages exposes ``_warmup()``, which calls each of its kernels
# once on tiny inputs of every dtype the public API passes.
_KERNEL_PACKAGES = ("degrade.core", "degrade.changepoint", "degrade.verdict", "degrade.analyze")

STATUS_LINE = "degrade: compiling kernels (first run only; cached for later runs)..."


def warmup(verbose: bool = False) -> dict[str, float]:
    spent: dict[str, float] = {}
    for name in _KERNEL_PACKAGES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        fn = getattr(module, "_warmup", None)
        if fn is None:
            continue
        t0 = time.perf_counter()
        fn()
        spent[name] = time.perf_counter() - t0
        if verbose:
            print(f"{name}: {spent[name]:.2f} s")
    return spent


class FirstRunStatus:
    """Context manager: one status line when numba first compiles a degrade kernel.

    Parameters
    ----------
    enabled : bool
        Print the status line at all (callers pass "stderr is a terminal and
        progress is on", so piped and scripted runs stay quiet). Compiles
        are counted either way (``compiled``).
    stream : file, optional
        Where the line goes (default: ``sys.stderr`` at the time of the
        compile, so a live rich progress bar prints it above itself).

    Examples
    --------
    >>> import io
    >>> buf = io.StringIO()
    >>> with FirstRunStatus(stream=buf) as status:
    ...     pass
    >>> status.compiled, buf.getvalue()
    (0, '')
    """

    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream
        self.compiled = 0  # degrade functions numba compiled while active
        self.said = False
        self._lock = threading.Lock()
        self._listener = None

    def _on_compile(self, event) -> None:
        disp = (event.data or {}).get("dispatcher") if isinstance(event.data, dict) else None
        module = getattr(getattr(disp, "py_func", None), "__module__", "") or ""
        if not module.startswith("degrade"):
            return
        with self._lock:
            self.compiled += 1
            first = not self.said
            self.said = True
        if first and self.enabled:
            out = self.stream or sys.stderr
            try:
                print(STATUS_LINE, file=out, flush=True)
            except (OSError, ValueError):  # a closed stream must never break the analysis
                pass

    def start(self) -> FirstRunStatus:
        """Listen for compiles until :meth:`stop` (``with`` does both)."""
        return self.__enter__()

    def stop(self) -> None:
        self.__exit__(None, None, None)

    def __enter__(self) -> FirstRunStatus:
        if self._listener is not None:
            return self
        try:
            from numba.core import event
        except ImportError:  # pragma: no cover - numba is a core dependency
            return self
        owner = self

        class _Listener(event.Listener):
            def on_start(self, ev):
                owner._on_compile(ev)

            def on_end(self, ev):
                pass

        self._listener = _Listener()
        event.register("numba:compile", self._listener)
        return self

    def __exit__(self, *exc) -> bool:
        if self._listener is not None:
            from numba.core import event

            event.unregister("numba:compile", self._listener)
            self._listener = None
        return False
