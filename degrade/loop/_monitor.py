"""`Monitor`: degrade inside a training loop."""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import socket
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from time import perf_counter, time
from typing import Any

import numpy as np

from ..errors import DeviceDegradedError, InputError
from ..verdict import Status, Verdict
from ._actions import DEFAULT_EXIT_CODE, act, check_action, check_exit_code
from ._gather import CallableGather, LocalGather, TorchGather, make_summary
from ._timers import CpuClock, CudaClock, StepRecord

__all__ = ["Monitor"]

log = logging.getLogger("degrade.loop")

_NAN = math.nan


class _Null:
    """The section returned while the monitor is off: costs one attribute lookup."""

    __slots__ = ()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NULL = _Null()

_ENV_ENABLED = "DEGRADE_LOOP"
_ENV_ACTION = "DEGRADE_LOOP_ACTION"
_ENV_EXIT_CODE = "DEGRADE_LOOP_EXIT_CODE"
_ENV_CONTROL = "DEGRADE_LOOP_CONTROL"


def _env_flag(name: str) -> bool | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    return raw.strip().lower() not in {"0", "false", "no", "off"}


class _JudgeWorker:
    """A daemon thread that owns the judge: engine import, compilation and runs happen here.

    Summaries are judged in the order they were gathered, so every rank's
    judge sees the same sequence and reaches the same verdicts.
    """

    def __init__(self, make_judge: Callable[[], Any]):
        self._make = make_judge
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self.out: deque = deque()
        self._pending = 0
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="degrade-judge", daemon=True)
        self._thread.start()

    def submit(self, summaries: list[dict]) -> None:
        with self._done:
            self._pending += 1
        self._q.put(("feed", summaries))

    def reconfigure(self) -> None:
        self._q.put(("config", None))

    def stop(self) -> None:
        self._q.put(("stop", None))

    def results(self, block: bool, timeout: float = 60.0) -> list:
        if block:
            with self._done:
                self._done.wait_for(lambda: self._pending == 0, timeout=timeout)
        out = []
        while self.out:
            out.append(self.out.popleft())
        return out

    def _loop(self) -> None:
        judge = None
        broken = False
        while True:
            kind, item = self._q.get()
            if kind == "stop":
                return
            if kind == "config":
                judge = None
                continue
            try:
                if not broken:
                    if judge is None:
                        judge = self._make()
                    judge.feed(item)
                    self.out.append((judge.verdicts(), judge.job_events()))
            except Exception as exc:  # noqa: BLE001 - handed to the main thread, which decides
                broken = True
                self.out.append(exc)
            finally:
                with self._done:
                    self._pending -= 1
                    self._done.notify_all()


class Monitor:
    """Per-rank step timing, cross-rank verdicts and actions for a training loop.

    Report timings directly with :meth:`step`, or time sections with
    :meth:`section` and close the step with :meth:`step_end`. Every
    ``every`` steps the ranks exchange their compute timings (on a gloo group
    of their own, or through ``gather``) and the verdict engine of
    :mod:`degrade.verdict` judges each rank against its peer group and its own
    past; every rank learns every verdict. When this rank's device reaches
    ``act_at``, ``on_degraded`` is called and ``action`` is carried out.

    Wall ``step_time`` is equalised by collectives in synchronous training,
    so ranks are judged on ``compute_time``: the explicit value, or else the
    sum of the timed sections named in ``compute_sections``.

    Parameters
    ----------
    every : int
        Steps between exchanges (payload: 4 float64 per step per rank, sent
        as a fixed buffer of 2·every steps).
    group : hashable, optional
        Peer-group label of this rank: ranks doing the same work, e.g. the
        data-parallel replicas of one pipeline stage. Default: one group.
    device : str, optional
        Device id in verdicts. Default: the GPU UUID when CUDA is in use,
        else ``"<host>/rank<r>"``.
    job : str, optional
        Job label passed to the engine.
    gather : "auto", callable or None
        ``"auto"``: a gloo group over ``torch.distributed`` when it is
        initialised with more than one rank, else this process alone. A
        callable takes this rank's summary dict and returns every rank's
        summaries, in rank order. ``None``: no exchange (own history only).
    min_slowdown : float
        Smallest slowdown worth flagging (0.05 = 5 %), passed to the engine.
    config : EngineConfig or dict, optional
        Full engine configuration; ``min_slowdown`` overrides its field.
        Default: the engine's defaults with ``persistence`` raised to
        ``every``, so a rank is flagged only when slow for a whole window.
    action : {"log", "raise", "exit", "none"}
        What to do when this rank's device reaches ``act_at``: log a warning,
        raise :class:`degrade.errors.DeviceDegradedError`, or end the process
        with ``exit_code``. Environment ``DEGRADE_LOOP_ACTION`` overrides it.
    act_at : {"degraded", "suspect", "failed"}
        Lowest status that triggers ``on_degraded`` and ``action``.
    act_on : {"self", "any"}
        Act on this rank's device only, or on any rank's (every rank then
        stops together).
    exit_code : int
        Exit status of ``action="exit"`` (default 86; ``DEGRADE_LOOP_EXIT_CODE``).
    on_verdict : callable, optional
        ``on_verdict(verdict)`` for every change of any device's status.
    on_degraded : callable, optional
        ``on_degraded(verdict)`` when the acted-on device reaches ``act_at``,
        before ``action`` (save a checkpoint here).
    timer : {"auto", "cuda", "cpu"}
        How sections are timed: CUDA events read late (never a device
        synchronisation), or ``time.perf_counter``.
    compute_sections : sequence of str
        Sections summed into ``compute_time`` when it is not given.
    max_lag : int
        Steps a CUDA timing may stay unread before it is dropped (counted).
    strict : bool
        Raise errors inside degrade instead of logging them once and
        switching the monitor off.
    enabled : bool, optional
        Initial state; default from ``DEGRADE_LOOP`` (on unless ``0``).
    control_file : str, optional
        JSON file polled at every exchange (``DEGRADE_LOOP_CONTROL``); keys
        ``enabled``, ``min_slowdown``, ``action``, ``act_at``, ``exit_code``.
    background : bool
        Judge in a daemon thread (default), so that loading the engine and
        running it never lengthens a training step; verdicts, callbacks and
        actions then arrive on the first step after the judgement is done.
        ``False`` judges inline at the exchange (deterministic step of arrival).

    Examples
    --------
    >>> from degrade.loop import Monitor
    >>> mon = Monitor(every=100, gather=None, timer="cpu")
    >>> for _ in range(30):
    ...     with mon.section("compute"):
    ...         pass
    ...     mon.step_end()
    >>> mon.status()["steps"]
    30
    >>> mon.step(compute_time=0.1, data_time=0.002)
    >>> mon.status()["last"]["compute_time"]
    0.1
    """

    def __init__(
        self,
        *,
        every: int = 20,
        group: Any = None,
        device: str | None = None,
        job: str | None = None,
        gather: str | Callable[[dict], list[dict]] | None = "auto",
        min_slowdown: float = 0.05,
        config: Any = None,
        action: str | None = "log",
        act_at: str = "degraded",
        act_on: str = "self",
        exit_code: int = DEFAULT_EXIT_CODE,
        on_verdict: Callable[[Verdict], Any] | None = None,
        on_degraded: Callable[[Verdict], Any] | None = None,
        timer: str = "auto",
        compute_sections: Sequence[str] = ("compute", "forward", "backward"),
        max_lag: int = 64,
        strict: bool = False,
        enabled: bool | None = None,
        control_file: str | None = None,
        background: bool = True,
    ):
        self.every = every
        self.group = group
        self.device = device
        self.job = job
        self.gather = gather
        self.min_slowdown = min_slowdown
        self.config = config
        self.action = action
        self.act_at = act_at
        self.act_on = act_on
        self.exit_code = exit_code
        self.on_verdict = on_verdict
        self.on_degraded = on_degraded
        self.timer = timer
        self.compute_sections = compute_sections
        self.max_lag = max_lag
        self.strict = strict
        self.enabled = enabled
        self.control_file = control_file
        self.background = background
        self._setup_done = False
        self._setup()

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        """Validate arguments and create the local state (cheap; no collective here)."""
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise InputError(f"every={self.every!r}: expected a positive integer number of steps")
        if not (isinstance(self.min_slowdown, (int, float)) and 0 < self.min_slowdown < 10):
            raise InputError(
                f"min_slowdown={self.min_slowdown!r}: expected a fraction such as 0.05"
            )
        if self.timer not in ("auto", "cuda", "cpu"):
            raise InputError(f"timer={self.timer!r}: expected 'auto', 'cuda' or 'cpu'")
        if self.act_on not in ("self", "any"):
            raise InputError(f"act_on={self.act_on!r}: expected 'self' or 'any'")
        if isinstance(self.compute_sections, str):
            raise InputError("compute_sections must be a sequence of section names, not one string")
        if not (self.gather in ("auto", None) or callable(self.gather)):
            raise InputError(f"gather={self.gather!r}: expected 'auto', None or a callable")
        if not isinstance(self.max_lag, int) or self.max_lag < 1:
            raise InputError(f"max_lag={self.max_lag!r}: expected a positive integer")
        env_action = os.environ.get(_ENV_ACTION)
        self._action = check_action(env_action if env_action else self.action)
        env_code = os.environ.get(_ENV_EXIT_CODE)
        try:
            code = int(env_code) if env_code else self.exit_code
        except ValueError:
            raise InputError(f"{_ENV_EXIT_CODE}={env_code!r}: expected an integer 1-255") from None
        self._exit_code = check_exit_code(code)
        self._act_at = self._check_status(self.act_at)
        self._min_slowdown = float(self.min_slowdown)
        want = self.enabled if self.enabled is not None else _env_flag(_ENV_ENABLED)
        self._want_enabled = True if want is None else bool(want)
        self._on = self._want_enabled  # effective state, agreed across ranks at exchanges
        self._control_path = self.control_file or os.environ.get(_ENV_CONTROL) or None
        self._control_mtime = None
        self._compute_names = tuple(self.compute_sections)

        self._clock = self._make_clock()
        self.timer_ = self._clock.kind
        self._pending: deque = deque()
        self._ready: list[StepRecord] = []
        self._n = 0  # step() calls
        self._t_last = _NAN
        self._last_rec: StepRecord | None = None
        self.n_dropped_ = 0
        self.n_exchanges_ = 0
        self.error_: str | None = None
        self._broken = False
        self._dead = False  # exchanges stopped for good (a rank broke)
        self._gatherer = None
        self._handle = None
        self._judge = None
        self._worker: _JudgeWorker | None = None
        self._verdicts: dict[str, Verdict] = {}
        self._events: list = []
        self._acted: set[str] = set()
        self._meta: dict | None = None
        self._window_median = _NAN

    @staticmethod
    def _check_status(name: Any) -> int:
        try:
            st = Status(str(name).lower())
        except ValueError:
            raise InputError(
                f"act_at={name!r}: expected one of suspect, degraded, failed"
            ) from None
        if st in (Status.HEALTHY, Status.UNKNOWN):
            raise InputError(
                f"act_at={name!r}: acting on {st.value} makes no sense; use suspect, degraded or failed"
            )
        return st.severity

    def _make_clock(self):
        torch = sys.modules.get("torch")  # never import torch for a user who does not use it
        want_cuda = self.timer == "cuda" or (
            self.timer == "auto" and torch is not None and torch.cuda.is_available()
        )
        if not want_cuda:
            return CpuClock()
        if torch is None:
            from .._optional import import_optional

            torch = import_optional("torch", "torch")
        if not torch.cuda.is_available():
            raise InputError(
                "timer='cuda' but torch.cuda.is_available() is False; use timer='cpu' or 'auto'"
            )
        return CudaClock(lambda: torch.cuda.Event(enable_timing=True))

    def _identity(self) -> dict:
        torch = sys.modules.get("torch")
        rank, world = 0, 1
        if (
            torch is not None
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
        ):
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        host = socket.gethostname()
        device = self.device
        if device is None and self.timer_ == "cuda":
            try:
                props = torch.cuda.get_device_properties(torch.cuda.current_device())
                uuid = str(props.uuid)
                device = uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
            except Exception:  # noqa: BLE001 - older torch has no uuid; fall back to the rank name
                device = None
        if device is None:
            device = f"{host}/rank{rank}"
        group = "0" if self.group is None else self.group
        return {
            "device": str(device),
            "group": group,
            "host": host,
            "rank": rank,
            "world_size": world,
        }

    def _start_exchange(self) -> None:
        """Create the gatherer on the first exchange (collective for torch: every rank is here now)."""
        meta = self._identity()
        self._meta = {k: meta[k] for k in ("device", "group", "host", "rank")}
        if callable(self.gather):
            self._gatherer = CallableGather(self.gather)
        elif self.gather == "auto" and meta["world_size"] > 1:
            self._gatherer = TorchGather(capacity=self._capacity())
        else:
            self._gatherer = LocalGather()
        self._gatherer.setup(self._meta)
        if self.background:
            self._worker = _JudgeWorker(self._make_judge)
        else:
            self._judge = self._make_judge()
        self._setup_done = True

    def _capacity(self) -> int:
        # steps sent per exchange: `every` arrive per window on average, so twice
        # that drains any CUDA backlog while keeping the fixed-size tensor small
        return 2 * self.every

    def _make_judge(self):
        from ._judge import Judge

        return Judge(self._engine_config(), self.job, patience=4 * self.every + self.max_lag)

    def _engine_config(self):
        from ..verdict.engine import EngineConfig

        cfg = self.config
        if cfg is None:
            # a rank is acted on (possibly evicted) only when slow for a whole exchange
            # window: shorter bursts are intermittent stalls, not a device to replace
            persistence = max(EngineConfig.persistence, self.every)
            return EngineConfig(min_slowdown=self._min_slowdown, persistence=persistence)
        if isinstance(cfg, dict):
            return EngineConfig(**{**cfg, "min_slowdown": self._min_slowdown})
        import dataclasses

        if dataclasses.is_dataclass(cfg):
            return dataclasses.replace(cfg, min_slowdown=self._min_slowdown)
        raise InputError(f"config={cfg!r}: expected an EngineConfig or a dict of its fields")

    # --------------------------------------------------------------- hot path
    def section(self, name: str):
        """Context manager timing one section of the current step.

        Entering the same name several times in a step (micro-batches) adds up.
        On CUDA it records two events on the current stream and reads them
        steps later; it never synchronises.
        """
        if not self._on or self._broken:
            return _NULL
        return self._clock.section(name)

    def step(
        self,
        step_time: float | None = None,
        compute_time: float | None = None,
        *,
        step: int | None = None,
        **sections: float,
    ) -> None:
        """Close the current step, with optional explicit timings in seconds.

        ``step_time`` defaults to the wall time since the previous call;
        ``compute_time`` to the sum of the ``compute_sections`` timed or
        given; further keyword arguments are named section times
        (``data_time=0.01`` is stored as section ``data``).
        """
        fire = None
        try:
            self._n += 1
            if self._on and not self._broken:
                now = perf_counter()
                cur = self._clock.take()
                if sections:
                    for k, v in sections.items():
                        cur[k[:-5] if k.endswith("_time") else k] = float(v)
                wall = (now - self._t_last) if step_time is None else float(step_time)
                self._t_last = now
                ct = _NAN if compute_time is None else float(compute_time)
                self._pending.append(
                    StepRecord(self._n if step is None else int(step), wall, ct, cur, time())
                )
                self.n_dropped_ += self._clock.resolve(self._pending, self._ready, self.max_lag)
                if self._ready:
                    self._last_rec = self._ready[-1]
                if len(self._ready) > 4 * self.every + self.max_lag:
                    # exchanges stopped (single rank off): keep memory bounded
                    del self._ready[: len(self._ready) - (2 * self.every + self.max_lag)]
            if self._dead:
                return
            if self._handle is not None:
                fire = self._collect(block=False)
            if self._worker is not None and self._worker.out:
                more = self._judged(block=False)
                fire = more if fire is None else fire + more
            if self._n % self.every == 0:
                more = self._exchange()
                fire = more if fire is None else fire + more
        except DeviceDegradedError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's loop must go on
            self._fail(exc)
            return
        if fire:
            self._fire(fire)

    def step_end(self, *, step: int | None = None) -> None:
        """Close a step whose sections were timed with :meth:`section`."""
        self.step(step=step)

    def watch(self, module: Any, name: str = "forward"):
        """Time ``module``'s forward pass as section ``name`` with torch hooks.

        The forward pass of a data-parallel replica holds no gradient
        collective, so it is pure compute even where backward is not.
        Returns the two hook handles (call ``.remove()`` to stop).
        """
        state = {"cm": None}

        def pre(_mod, _inp):
            cm = self.section(name)
            cm.__enter__()
            state["cm"] = cm

        def post(_mod, _inp, _out):
            cm = state["cm"]
            if cm is not None:
                state["cm"] = None
                cm.__exit__(None, None, None)

        return module.register_forward_pre_hook(pre), module.register_forward_hook(post)

    # --------------------------------------------------------------- exchange
    def _compute_of(self, rec: StepRecord) -> float:
        ct = rec.compute_time
        if ct == ct:
            return ct
        total, seen = 0.0, False
        secs = rec.sections
        for name in self._compute_names:
            v = secs.get(name)
            if v is not None:
                total += v
                seen = True
        return total if seen else _NAN

    def _exchange(self) -> list:
        fire: list = []
        if self._handle is not None:
            fire = self._collect(block=True) or []
            if self._dead:
                return fire
        self._poll_control()
        if not self._setup_done:
            self._start_exchange()
        cap = self._capacity()
        recs, self._ready = self._ready[:cap], self._ready[cap:]
        if not self._on or self._broken:
            recs = []
        k = len(recs)
        steps = np.empty(k, dtype=np.int64)
        comp = np.empty(k)
        wall = np.empty(k)
        stamp = np.empty(k)
        for i, r in enumerate(recs):
            steps[i] = r.step
            comp[i] = self._compute_of(r)
            wall[i] = r.step_time
            stamp[i] = r.timestamp
        summary = make_summary(
            self._meta, steps, comp, wall, stamp, enabled=self._want_enabled, broken=self._broken
        )
        self._window_median = summary["median_log_compute"]
        self._handle = self._gatherer.start(summary)
        self.n_exchanges_ += 1
        more = self._collect(block=False)
        return fire + (more or [])

    def _collect(self, block: bool) -> list | None:
        out = self._gatherer.poll(self._handle, block)
        if out is None:
            return None
        self._handle = None
        return self._judge_round(out)

    def _judge_round(self, summaries: list[dict]) -> list:
        broken = [s["device"] for s in summaries if s.get("broken")]
        if broken:
            self._dead = True
            log.warning(
                "degrade: rank(s) %s stopped on an internal error; exchanges stop on every rank",
                broken,
            )
            return []
        self._on = all(s.get("enabled", True) for s in summaries)
        if not any(s["steps"] for s in summaries):
            return []
        if self._worker is not None:
            self._worker.submit(summaries)
            return self._judged(block=False)
        self._judge.feed(summaries)
        return self._on_verdicts(self._judge.verdicts(), self._judge.job_events())

    def _judged(self, block: bool) -> list:
        """Verdicts the background judge has finished since the last call."""
        fire: list = []
        for item in self._worker.results(block):
            if isinstance(item, BaseException):
                raise item
            fire += self._on_verdicts(*item)
        return fire

    def _on_verdicts(self, verdicts: list[Verdict], events: list) -> list:
        fire = []
        own = self._meta["device"]
        for v in verdicts:
            old = self._verdicts.get(v.device)
            self._verdicts[v.device] = v
            if old is None or old.status != v.status:
                fire.append(("verdict", v))
            sev = Status(v.status).severity
            if self.act_on == "any" or v.device == own:
                if sev >= self._act_at and Status(v.status) != Status.UNKNOWN:
                    if v.device not in self._acted:
                        self._acted.add(v.device)
                        fire.append(("degraded", v))
                elif sev <= Status.UNKNOWN.severity:
                    self._acted.discard(v.device)  # recovered: act again if it degrades again
        self._events = events
        return fire

    def _fire(self, fire: list) -> None:
        # user callbacks and the action run outside the never-crash guard on purpose:
        # an exception there is the user's (or the requested DeviceDegradedError)
        for kind, v in fire:
            if kind == "verdict" and self.on_verdict is not None:
                self.on_verdict(v)
        for kind, v in fire:
            if kind == "degraded":
                if self.on_degraded is not None:
                    self.on_degraded(v)
                act(self._action, v, self._exit_code)

    def _fail(self, exc: BaseException) -> None:
        if self.strict:
            raise exc
        if self.error_ is None:
            log.exception("degrade: internal error, monitor switched off (strict=False): %s", exc)
        self.error_ = f"{type(exc).__name__}: {exc}"
        self._broken = True
        self._pending.clear()
        self._ready.clear()
        if self._gatherer is None or isinstance(self._gatherer, (LocalGather, CallableGather)):
            self._dead = True  # nobody to tell
        # torch: keep exchanging empty windows flagged broken, so every rank stops together

    # ---------------------------------------------------------------- control
    def _poll_control(self) -> None:
        path = self._control_path
        if not path:
            return
        try:
            mtime = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == self._control_mtime:
            return
        self._control_mtime = mtime
        try:
            with open(path) as fh:
                ctl = json.load(fh)
            if not isinstance(ctl, dict):
                raise InputError("expected a JSON object")
            self.configure(**ctl)
        except (OSError, ValueError, TypeError) as exc:
            log.warning("degrade: ignoring control file %s: %s", path, exc)

    def enable(self) -> None:
        """Switch on; with several ranks it takes effect at the next exchange once all ranks agree."""
        self._want_enabled = True
        if self._gatherer is None or isinstance(self._gatherer, LocalGather):
            self._on = True

    def disable(self) -> None:
        """Switch off (steps then cost a counter increment); agreed across ranks at the next exchange."""
        self._want_enabled = False
        if self._gatherer is None or isinstance(self._gatherer, LocalGather):
            self._on = False

    def configure(
        self,
        *,
        enabled: bool | None = None,
        min_slowdown: float | None = None,
        action: str | None = None,
        act_at: str | None = None,
        exit_code: int | None = None,
    ) -> None:
        """Change settings at run time (also what the control file does).

        A new ``min_slowdown`` restarts the judgement with the new engine
        configuration from the next exchange on.
        """
        if action is not None:
            self._action = check_action(action)
        if exit_code is not None:
            self._exit_code = check_exit_code(exit_code)
        if act_at is not None:
            self._act_at = self._check_status(act_at)
        if min_slowdown is not None:
            if not (isinstance(min_slowdown, (int, float)) and 0 < min_slowdown < 10):
                raise InputError(f"min_slowdown={min_slowdown!r}: expected a fraction such as 0.05")
            if float(min_slowdown) != self._min_slowdown:
                self._min_slowdown = float(min_slowdown)
                if self._worker is not None:
                    self._worker.reconfigure()
                elif self._judge is not None:
                    self._judge = self._make_judge()
        if enabled is not None:
            self.enable() if enabled else self.disable()

    # ------------------------------------------------------------------ query
    def verdicts(self) -> list[Verdict]:
        """The latest verdict of every device seen (the same list on every rank)."""
        return list(self._verdicts.values())

    def verdict(self, device: str | None = None) -> Verdict | None:
        """This rank's verdict (or ``device``'s), None before the first judgement."""
        if device is None:
            device = self._meta["device"] if self._meta else None
        return self._verdicts.get(device)

    def job_events(self) -> list:
        """Slowdowns that hit every peer at once (never blamed on a device)."""
        return list(self._events)

    def status(self) -> dict:
        """A JSON-ready snapshot of the monitor's state."""
        own = self.verdict()
        return {
            "enabled": self._on and not self._broken,
            "wanted": self._want_enabled,
            "steps": self._n,
            "timer": self.timer_,
            "gather": getattr(self._gatherer, "kind", None),
            "device": self._meta["device"] if self._meta else None,
            "rank": self._meta["rank"] if self._meta else None,
            "exchanges": self.n_exchanges_,
            "pending": len(self._pending),
            "dropped": self.n_dropped_,
            "action": self._action,
            "exit_code": self._exit_code,
            "min_slowdown": self._min_slowdown,
            "median_compute_time": math.exp(self._window_median)
            if self._window_median == self._window_median
            else None,
            "last": self._last_dict(),
            "verdict": own.to_dict() if own is not None else None,
            "error": self.error_,
        }

    def _last_dict(self) -> dict:
        r = self._last_rec
        if r is None:
            return {}
        out = {"step": r.step, "step_time": r.step_time, "compute_time": self._compute_of(r)}
        out.update({n: v for n, v in r.sections.items() if isinstance(v, float)})
        return out

    def close(self) -> None:
        """Collect an exchange still in flight and release the gloo group."""
        fire: list = []
        try:
            if self._handle is not None and not self._dead:
                fire += self._collect(block=True) or []
            if self._worker is not None:
                fire += self._judged(block=True)
                self._worker.stop()
        except Exception as exc:  # noqa: BLE001 - closing must not crash the user's program
            self._fail(exc)
        finally:
            g = self._gatherer
            if isinstance(g, TorchGather):
                g.close()

        if fire:
            self._fire(fire)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Monitor(every={self.every}, group={self.group!r}, action={self._action!r}, timer={self.timer_!r})"
