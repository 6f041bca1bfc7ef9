"""A background worker that repeats one call every ``interval`` seconds until closed."""

from __future__ import annotations

import threading


class PeriodicWorker:
    """Call ``self._once()`` on a daemon thread every ``interval`` seconds.

    A failing call is counted in ``errors``, reported through
    ``self._failed(exc)`` (one log line) and retried at the next interval:
    a cluster or socket outage must never stop the agent's monitoring.
    Subclasses set ``thread_name`` and implement ``_once`` and ``_failed``.
    """

    thread_name = "degrade-worker"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _once(self) -> object:
        raise NotImplementedError

    def _failed(self, exc: Exception) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._once()
            except Exception as exc:  # noqa: BLE001 - logged, counted, retried next interval
                self.errors += 1
                self._failed(exc)
            self._stop.wait(self.interval)

    def start(self):
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
