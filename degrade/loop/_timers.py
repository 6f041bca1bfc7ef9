"""Section timers for the training loop: CUDA events read late, or perf_counter.

The CUDA path never synchronises the device: a section records an event at
entry and one at exit on the current stream, and the pair is read with
``Event.query()`` some steps later, once the device has passed it. The host
therefore keeps running ahead exactly as it would without degrade.
"""

from __future__ import annotations

from collections import deque
from time import perf_counter
from typing import Any

__all__ = ["StepRecord", "CpuClock", "CudaClock"]


class StepRecord:
    """Timings of one step; a section value is a float (CPU) or a list of event pairs (CUDA)."""

    __slots__ = ("step", "step_time", "compute_time", "sections", "timestamp")

    def __init__(
        self, step: int, step_time: float, compute_time: float, sections: dict, timestamp: float
    ):
        self.step = step
        self.timestamp = timestamp
        self.step_time = step_time
        self.compute_time = compute_time
        self.sections = sections


class _CpuSection:
    """Reusable context manager: one per section name, so entering allocates nothing."""

    __slots__ = ("_sections", "_name", "_t0")

    def __init__(self, sections_ref: list, name: str):
        self._sections = sections_ref  # one-element list holding the current step's dict
        self._name = name
        self._t0 = 0.0

    def __enter__(self):
        self._t0 = perf_counter()
        return self

    def __exit__(self, *exc):
        dt = perf_counter() - self._t0
        cur = self._sections[0]
        cur[self._name] = cur.get(self._name, 0.0) + dt
        return False


class CpuClock:
    """Host wall clock; right for CPU work and for code that already synchronises."""

    kind = "cpu"

    def __init__(self):
        self.current = [{}]
        self._cache: dict[str, _CpuSection] = {}

    def section(self, name: str) -> _CpuSection:
        s = self._cache.get(name)
        if s is None:
            s = self._cache[name] = _CpuSection(self.current, name)
        return s

    def take(self) -> dict:
        """The sections timed since the last call (this step's), as floats."""
        cur = self.current[0]
        self.current[0] = {}
        return cur

    def resolve(self, pending: deque, out: list, max_lag: int) -> int:
        """Every pending record is already final on the CPU path."""
        while pending:
            out.append(pending.popleft())
        return 0


class _CudaSection:
    __slots__ = ("_clock", "_name", "_start")

    def __init__(self, clock: CudaClock, name: str):
        self._clock = clock
        self._name = name
        self._start = None

    def __enter__(self):
        ev = self._clock.event()
        ev.record()
        self._start = ev
        return self

    def __exit__(self, *exc):
        end = self._clock.event()
        end.record()
        cur = self._clock.current[0]
        pairs = cur.get(self._name)
        if pairs is None:
            cur[self._name] = [(self._start, end)]
        else:
            pairs.append((self._start, end))
        self._start = None
        return False


class CudaClock:
    """Device time from pairs of ``torch.cuda.Event(enable_timing=True)``.

    ``event_factory`` is injectable so the lag logic is testable without a GPU.
    """

    kind = "cuda"

    def __init__(self, event_factory: Any):
        self._factory = event_factory
        self._pool: list = []
        self.current = [{}]
        self._cache: dict[str, _CudaSection] = {}

    def event(self):
        pool = self._pool
        return pool.pop() if pool else self._factory()

    def section(self, name: str) -> _CudaSection:
        s = self._cache.get(name)
        if s is None:
            s = self._cache[name] = _CudaSection(self, name)
        return s

    def take(self) -> dict:
        cur = self.current[0]
        self.current[0] = {}
        return cur

    def _ready(self, rec: StepRecord) -> bool:
        for v in rec.sections.values():
            if isinstance(v, list):
                # events on one stream complete in order: the last end event decides,
                # but sections may sit on different streams, so check each section's last
                if not v[-1][1].query():
                    return False
        return True

    def _finish(self, rec: StepRecord) -> None:
        pool = self._pool
        for name, v in rec.sections.items():
            if isinstance(v, list):
                total = 0.0
                for start, end in v:
                    total += start.elapsed_time(end)  # milliseconds
                    pool.append(start)
                    pool.append(end)
                rec.sections[name] = total / 1000.0

    def resolve(self, pending: deque, out: list, max_lag: int) -> int:
        """Move finished records from ``pending`` to ``out`` in step order.

        Returns how many records were dropped because the device fell more
        than ``max_lag`` steps behind the host (never a synchronisation).
        """
        while pending and self._ready(pending[0]):
            rec = pending.popleft()
            self._finish(rec)
            out.append(rec)
        dropped = 0
        while len(pending) > max_lag:
            rec = pending.popleft()
            # its events are still queued on the device: drop them rather than reuse
            for name in rec.sections:
                rec.sections[name] = float("nan")
            dropped += 1
        return dropped
