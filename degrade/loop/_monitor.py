"""`Monitor`: degrade inside a training loop."""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import socket
import stat
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from time import perf_counter, time
from typing import Any

import numpy as np

from ..errors import DeviceDegradedError, InputError, PeerDegradedError
from ..verdict import Status, Verdict
from ._actions import (
    DEFAULT_EXIT_CODE,
    DEFAULT_PEER_EXIT_CODE,
    act,
    check_action,
    check_exit_code,
    check_peer_action,
    resolve_peer_action,
)
from ._gather import CallableGather, Gathered, LocalGather, TorchGather, make_summary
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
_ENV_PEER_ACTION = "DEGRADE_LOOP_PEER_ACTION"
_ENV_PEER_EXIT_CODE = "DEGRADE_LOOP_PEER_EXIT_CODE"
_ENV_STATE_DIR = "DEGRADE_LOOP_STATE_DIR"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_CONTROL_MAX_BYTES = 1 << 16


def _parse_bool(value: Any, name: str) -> bool:
    """``True``/``False``, 0/1, or the strings true/false, yes/no, on/off, 1/0 (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise InputError(f"{name}={value!r}: expected true or false (or 1/0, yes/no, on/off)")


def _env(name: str, parse: Callable[[str], Any], default: Any) -> Any:
    """An environment override, or ``default`` with a logged warning when it does not parse."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return parse(raw.strip())
    except (InputError, ValueError) as exc:
        log.warning("degrade: ignoring %s=%r (%s); using %r", name, raw, exc, default)
        return default


def _check_min_slowdown(value: Any) -> float:
    # the engine models a slow device as one whose steps are slower by this fraction
    # at a rate of this fraction too (a probability): 1.0 and beyond cannot be judged
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise InputError(
            f"min_slowdown={value!r}: expected a fraction strictly between 0 and 1, "
            "e.g. 0.05 for 5 % slower than the peers"
        )
    return float(value)


def _host() -> str:
    """The node's name as Kubernetes knows it (``NODE_NAME`` from the downward API), else the hostname."""
    return os.environ.get("NODE_NAME", "").strip() or socket.gethostname()


def _gpu_uuid(torch: Any) -> str | None:
    """The current CUDA device's UUID (``GPU-...``) from torch, else from NVML by PCI bus id."""
    try:
        idx = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
    except Exception:  # noqa: BLE001 - no usable CUDA device: the caller falls back
        return None
    uuid = getattr(props, "uuid", None)
    if uuid is not None and str(uuid):
        u = str(uuid)
        return u if u.startswith(("GPU-", "MIG-")) else f"GPU-{u}"
    try:  # older torch: ask NVML about the device at the same PCI address
        import pynvml

        pynvml.nvmlInit()
        addr = f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
        h = pynvml.nvmlDeviceGetHandleByPciBusId(addr)
        u = pynvml.nvmlDeviceGetUUID(h)
        return u.decode() if isinstance(u, bytes) else str(u)
    except Exception:  # noqa: BLE001 - NVML absent or no bus id: the rank name is used
        return None


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
                    if isinstance(item, Gathered):
                        item = item.summaries()
                    judge.feed(item)
                    self.out.append(
                        (judge.verdicts(), judge.job_events(), getattr(judge, "costs", None))
                    )
            except Exception as exc:  # noqa: BLE001 - handed to the main thread, which decides
                broken = True
                self.out.append(exc)
            finally:
                with self._done:
                    self._pending -= 1
                    self._done.notify_all()


class Monitor:
    """Per-rank step timing, cross-rank verdicts and coordinated actions for a training loop.

    Report timings directly with :meth:`step`, or time sections with
    :meth:`section` and close the step with :meth:`step_end`. Every
    ``every`` steps the ranks exchange their compute timings (on a gloo group
    of their own, or through ``gather``) and the verdict engine of
    :mod:`degrade.verdict` judges each rank against its peer group and its own
    past; every rank learns every verdict.

    Actions are coordinated: each exchange also carries how many judgement
    rounds each rank has finished, and every rank acts on the verdicts of the
    round all ranks have finished, at the same exchange step. When a device
    reaches ``act_at``, its rank calls ``on_degraded`` and carries out
    ``action`` (``exit`` with ``exit_code``, 86); every other rank carries out
    ``peer_action`` at the same step (``exit`` with ``peer_exit_code``, 87,
    or :class:`~degrade.errors.PeerDegradedError`), so no rank is left
    waiting in a collective of a rank that has gone.

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
        else ``"<host>/rank<r>"`` (host: ``NODE_NAME`` or the hostname).
    job : str, optional
        Job label passed to the engine.
    gather : "auto", callable or None
        ``"auto"``: a gloo group over ``torch.distributed`` when it is
        initialised with more than one rank, else this process alone. A
        callable takes this rank's summary dict and returns every rank's
        summaries, in rank order. ``None``: no exchange (own history only).
    gather_timeout : float
        Seconds an exchange may take (the gloo group's timeout; a gather
        callable runs in a thread and is abandoned after it): past it the
        monitor switches off instead of blocking the loop.
    min_slowdown : float
        Smallest slowdown worth flagging (0.05 = 5 %), in (0, 1), passed to
        the engine.
    config : EngineConfig or dict, optional
        Full engine configuration; ``min_slowdown`` overrides its field.
        Default: the engine's defaults with ``persistence`` raised to
        ``every``, so a rank is flagged only when slow for a whole window.
    action : {"log", "raise", "exit", "none"}
        What the rank whose device reaches ``act_at`` does: log a warning,
        raise :class:`degrade.errors.DeviceDegradedError`, or end the process
        with ``exit_code``. Environment ``DEGRADE_LOOP_ACTION`` overrides it.
    peer_action : {"auto", "log", "raise", "exit", "none"}
        What every other rank does at the same step: ``"auto"`` (default)
        mirrors ``action`` (``raise`` becomes
        :class:`degrade.errors.PeerDegradedError`, ``exit`` exits with
        ``peer_exit_code``). ``DEGRADE_LOOP_PEER_ACTION`` overrides it.
    act_at : {"degraded", "suspect", "failed"}
        Lowest status that triggers ``on_degraded`` and the actions.
    act_on : {"self", "any"}
        Call ``on_degraded`` on this rank's device only, or on any rank's.
    exit_code : int
        Exit status of ``action="exit"`` (default 86; ``DEGRADE_LOOP_EXIT_CODE``).
    peer_exit_code : int
        Exit status of ``peer_action="exit"`` (default 87;
        ``DEGRADE_LOOP_PEER_EXIT_CODE``).
    on_verdict : callable, optional
        ``on_verdict(verdict)`` for every change of any device's status.
    on_degraded : callable, optional
        ``on_degraded(verdict)`` when the acted-on device reaches ``act_at``,
        before ``action`` (save a checkpoint here).
    defer_action : bool
        Decide at the coordinated step (:meth:`outcome`, :attr:`stop_requested`)
        but carry the action out only when :meth:`carry_out` is called: the
        framework callbacks use this to stop the trainer cleanly first.
    state_dir : str, optional
        Directory for the device's memory across restarts
        (``DEGRADE_LOOP_STATE_DIR``): this rank's device verdict is saved
        there (data-only, see :mod:`degrade.loop._state`) on every change
        of status and reloaded on start, so a device degraded before a
        restart is known, and acted on, at the first step.
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
        ``enabled``, ``min_slowdown``, ``action``, ``peer_action``,
        ``act_at``, ``exit_code``, ``peer_exit_code``. Only a regular file
        is read (a FIFO or a device is ignored with a warning).
    background : bool
        Judge in a daemon thread (default), so that loading the engine and
        running it never lengthens a training step.
        ``False`` judges inline at the exchange.

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
        gather_timeout: float = 300.0,
        min_slowdown: float = 0.05,
        config: Any = None,
        action: str | None = "log",
        peer_action: str | None = "auto",
        act_at: str = "degraded",
        act_on: str = "self",
        exit_code: int = DEFAULT_EXIT_CODE,
        peer_exit_code: int = DEFAULT_PEER_EXIT_CODE,
        on_verdict: Callable[[Verdict], Any] | None = None,
        on_degraded: Callable[[Verdict], Any] | None = None,
        defer_action: bool = False,
        state_dir: str | os.PathLike | None = None,
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
        self.gather_timeout = gather_timeout
        self.min_slowdown = min_slowdown
        self.config = config
        self.action = action
        self.peer_action = peer_action
        self.act_at = act_at
        self.act_on = act_on
        self.exit_code = exit_code
        self.peer_exit_code = peer_exit_code
        self.on_verdict = on_verdict
        self.on_degraded = on_degraded
        self.defer_action = defer_action
        self.state_dir = state_dir
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
        self._min_slowdown = _check_min_slowdown(self.min_slowdown)
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
        t = self.gather_timeout
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < math.inf:
            raise InputError(f"gather_timeout={t!r}: expected a positive number of seconds")
        # arguments are checked strictly; environment overrides only warn (a typo in a
        # pod spec must not kill the job at start-up: the argument's value is used)
        self._action = _env(_ENV_ACTION, check_action, check_action(self.action))
        self._peer_action = _env(
            _ENV_PEER_ACTION, check_peer_action, check_peer_action(self.peer_action)
        )
        self._exit_code = _env(
            _ENV_EXIT_CODE, lambda r: check_exit_code(int(r)), check_exit_code(self.exit_code)
        )
        self._peer_exit_code = _env(
            _ENV_PEER_EXIT_CODE,
            lambda r: check_exit_code(int(r), "peer_exit_code"),
            check_exit_code(self.peer_exit_code, "peer_exit_code"),
        )
        self._act_at = self._check_status(self.act_at)
        want = (
            _parse_bool(self.enabled, "enabled")
            if self.enabled is not None
            else _env(_ENV_ENABLED, lambda r: _parse_bool(r, _ENV_ENABLED), True)
        )
        self._want_enabled = bool(want)
        self._on = self._want_enabled  # effective state, agreed across ranks at exchanges
        self._control_path = self.control_file or os.environ.get(_ENV_CONTROL) or None
        self._control_mtime = None
        self._state_dir = self.state_dir or os.environ.get(_ENV_STATE_DIR) or None
        self._compute_names = tuple(self.compute_sections)
        if self.config is not None:
            try:  # a bad config fails here, not later in the judge's thread
                self._engine_config()
            except ImportError:
                pass  # the engine's absence is reported (once) when the judge first runs

        self._clock = self._make_clock()
        self.timer_ = self._clock.kind
        self._cpu_clock = isinstance(self._clock, CpuClock)
        self._ready_cap = 4 * self.every + self.max_lag
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
        self._restored: dict[str, Verdict] = {}
        self._events: list = []
        self._costs: list = []  # JobCost of the job (docs/cost.md), from the last judgement round
        self._acted: set[str] = set()
        self._meta: dict | None = None
        self._window_median = _NAN
        # coordination: judgement rounds finished here, their flagged verdicts, the
        # round every rank had finished at the last exchange collected
        self._judged_n = 0
        self._rounds: dict[int, dict[str, Verdict]] = {0: {}}
        self._due = 0
        self._applied = -1
        self._outcome: dict | None = None
        self._carried = False
        self._history: list = []
        self._state_warned = False
        self._seen_restored: set = set()
        self._restored_meta: dict | None = None

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
        host = _host()
        device = self.device
        if device is None and torch is not None and self.timer_ == "cuda":
            device = _gpu_uuid(torch)
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

    def _start_exchange(self) -> list:
        """Identities, restored verdicts and the gatherer, on the first step (collective for torch)."""
        meta = self._identity()
        self._meta = {k: meta[k] for k in ("device", "group", "host", "rank")}
        restored = self._load_state()
        self._restored_meta = None if restored is None else _verdict_dict(restored)
        if callable(self.gather):
            # no setup call of the user's callable: the restored verdict rides in every summary
            self._meta["restored"] = self._restored_meta
            self._gatherer = CallableGather(self.gather, timeout_s=float(self.gather_timeout))
        elif self.gather == "auto" and meta["world_size"] > 1:
            self._gatherer = TorchGather(
                capacity=self._capacity(), timeout_s=float(self.gather_timeout)
            )
        else:
            self._gatherer = LocalGather()
        self._setup_done = True
        metas = self._gatherer.setup({**self._meta, "restored": self._restored_meta})
        if self.background:
            self._worker = _JudgeWorker(self._make_judge)
        else:
            self._judge = self._make_judge()
        # every rank now holds every rank's restored verdict: round 0, acted on at this step
        self._merge_restored(metas, 0)
        self._due = 0
        return self._apply_due()

    def _merge_restored(self, metas: list, upto: int) -> None:
        """Take in restored verdicts of ranks not seen yet, into every round from ``upto`` on."""
        new = False
        for m in metas:
            r = m.get("restored") if isinstance(m, dict) else None
            dev = m.get("device") if isinstance(m, dict) else None
            if dev in self._seen_restored or not isinstance(r, dict):
                continue
            self._seen_restored.add(dev)
            if r.get("device") != dev:
                continue
            v = _verdict_from(r)
            if v is not None and v.device not in self._verdicts:
                self._restored[v.device] = v
                self._verdicts[v.device] = v
                new = True
        if new or upto not in self._rounds:
            flagged = self._flagged()
            for r in [r for r in self._rounds if r >= upto] or [upto]:
                self._rounds[r] = {**flagged, **self._rounds.get(r, {})}

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
            try:
                return EngineConfig(**{**cfg, "min_slowdown": self._min_slowdown})
            except TypeError as exc:
                raise InputError(f"config={cfg!r}: {exc}; expected EngineConfig fields") from None
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
                rec = StepRecord(self._n if step is None else int(step), wall, ct, cur, time())
                ready = self._ready
                if self._cpu_clock:  # final at once: no pending queue to resolve
                    ready.append(rec)
                    self._last_rec = rec
                else:
                    self._pending.append(rec)
                    self.n_dropped_ += self._clock.resolve(self._pending, ready, self.max_lag)
                    if ready:
                        self._last_rec = ready[-1]
                if len(ready) > self._ready_cap:
                    # exchanges stopped (single rank off): keep memory bounded
                    del ready[: len(ready) - (2 * self.every + self.max_lag)]
            if self._dead:
                return
            if not self._setup_done:
                fire = self._start_exchange()
            if self._handle is not None:
                more = self._collect(block=False)
                fire = more if fire is None else fire + (more or [])
            if self._worker is not None and self._worker.out:
                more = self._judged(block=False)
                fire = more if fire is None else fire + more
            if self._n % self.every == 0:
                more = self._exchange()
                fire = more if fire is None else fire + more
        except (DeviceDegradedError, PeerDegradedError):
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
        # the previous exchange is collected on every rank by now: act on its agreed round
        fire += self._apply_due()
        self._poll_control()
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
            self._meta,
            steps,
            comp,
            wall,
            stamp,
            enabled=self._want_enabled,
            broken=self._broken,
            judged=self._judged_n,
        )
        self._window_median = summary["median_log_compute"]
        self._handle = self._gatherer.start(summary)
        self.n_exchanges_ += 1
        more = self._collect(block=False) or []
        if self._gatherer.sync and not self._dead:
            more += self._apply_due()  # every rank got the same result at this very call
        return fire + more

    def _collect(self, block: bool) -> list | None:
        out = self._gatherer.poll(self._handle, block)
        if out is None:
            return None
        self._handle = None
        return self._judge_round(out)

    def _judge_round(self, summaries: list[dict] | Gathered) -> list:
        if isinstance(summaries, Gathered):  # torch: flags now, dicts in the judge's thread
            g = summaries
            broken = [d for d, b in zip(g.devices, g.broken) if b]
            enabled, judged, any_steps = all(g.enabled), g.judged, any(g.n_steps)
        else:
            broken = [s["device"] for s in summaries if s.get("broken")]
            enabled = all(s.get("enabled", True) for s in summaries)
            judged = [int(s.get("judged", 0)) for s in summaries]
            any_steps = any(s["steps"] for s in summaries)
        if broken:
            self._dead = True
            log.warning(
                "degrade: rank(s) %s stopped on an internal error; exchanges stop on every rank",
                broken,
            )
            return []
        self._on = enabled
        if not isinstance(self._gatherer, LocalGather):  # alone: act on each round when judged
            self._due = max(self._due, min(judged))
            if isinstance(self._gatherer, CallableGather):
                self._merge_restored(summaries, self._due)
        if not any_steps:
            return []
        if self._worker is not None:
            self._worker.submit(summaries)
            return self._judged(block=False)
        if isinstance(summaries, Gathered):
            summaries = summaries.summaries()
        self._judge.feed(summaries)
        return self._on_verdicts(
            self._judge.verdicts(), self._judge.job_events(), getattr(self._judge, "costs", None)
        )

    def _judged(self, block: bool) -> list:
        """Verdicts the background judge has finished since the last call."""
        fire: list = []
        for item in self._worker.results(block):
            if isinstance(item, BaseException):
                raise item
            fire += self._on_verdicts(*item)
        return fire

    def _flagged(self) -> dict[str, Verdict]:
        """Devices at or above the lowest status an action can be set at (suspect)."""
        low = Status.SUSPECT.severity
        return {
            d: v
            for d, v in self._verdicts.items()
            if Status(v.status) != Status.UNKNOWN and Status(v.status).severity >= low
        }

    def _on_verdicts(
        self, verdicts: list[Verdict], events: list, costs: list | None = None
    ) -> list:
        """One judgement round finished here: record changes and the round's flagged devices."""
        fire = []
        if costs is not None:
            self._costs = list(costs)
        own = self._meta["device"]
        for v in verdicts:
            kept = self._restored.get(v.device)
            if kept is not None:
                if Status(v.status) == Status.UNKNOWN:
                    continue  # no evidence yet since the restart: the saved verdict stands
                del self._restored[v.device]
            old = self._verdicts.get(v.device)
            self._verdicts[v.device] = v
            if old is None or old.status != v.status:
                fire.append(("verdict", v, None))
                if v.device == own:
                    self._save_state(v)
        self._events = events
        self._judged_n += 1
        self._rounds[self._judged_n] = self._flagged()
        if isinstance(self._gatherer, LocalGather):
            self._due = self._judged_n
            fire += self._apply_due()
        return fire

    def _apply_due(self) -> list:
        """Act on the round every rank has finished: the same round, at the same step, everywhere."""
        due = self._due
        if due < self._applied or due not in self._rounds:
            return []
        self._applied = due
        flagged = self._rounds[due]
        for r in [r for r in self._rounds if r < due]:
            del self._rounds[r]
        for d in [d for d in self._acted if d not in flagged]:
            self._acted.discard(d)  # recovered: act again if it degrades again
        targets = sorted(
            d
            for d, v in flagged.items()
            if Status(v.status).severity >= self._act_at and d not in self._acted
        )
        if not targets:
            return []
        self._acted.update(targets)
        own = self._meta["device"]
        fire: list = []
        for d in targets:
            if d == own or self.act_on == "any":
                fire.append(("callback", flagged[d], None))
        if own in targets:
            fire.append(("act", flagged[own], "degraded"))
        else:
            fire.append(("act", flagged[targets[0]], "peer"))
        return fire

    def _fire(self, fire: list) -> None:
        # user callbacks and the action run outside the never-crash guard on purpose:
        # an exception there is the user's (or the requested DeviceDegradedError)
        for kind, v, _ in fire:
            if kind == "verdict" and self.on_verdict is not None:
                self.on_verdict(v)
        for kind, v, _ in fire:
            if kind == "callback" and self.on_degraded is not None:
                self.on_degraded(v)
        for kind, v, role in fire:
            if kind != "act":
                continue
            if role == "degraded":
                action, code = self._action, self._exit_code
            else:
                action = resolve_peer_action(self._peer_action, self._action)
                code = self._peer_exit_code
            self._outcome = {
                "role": role,
                "device": v.device,
                "own_device": self._meta["device"],
                "rank": self._meta["rank"],
                "step": self._n,
                "action": action,
                "exit_code": code if action == "exit" else None,
                "verdict": v,
            }
            self._carried = False
            if not self.defer_action:
                self.carry_out()

    def outcome(self) -> dict | None:
        """The coordinated decision of this rank, or None while no device reached ``act_at``.

        ``{"role": "degraded" | "peer", "device", "own_device", "rank", "step",
        "action", "exit_code", "verdict"}``: ``role`` says whether this rank's
        own device is the degraded one; ``step`` is the step at which every
        rank decided.
        """
        return None if self._outcome is None else dict(self._outcome)

    @property
    def stop_requested(self) -> bool:
        """True once every rank has decided to act on a degraded device (the same step on all)."""
        return self._outcome is not None

    def carry_out(self) -> None:
        """Carry out the decided action now (once); a no-op without a decision.

        With ``defer_action=True`` the framework callbacks call this after the
        trainer has stopped cleanly on every rank.
        """
        o = self._outcome
        if o is None or self._carried:
            return
        self._carried = True
        if o["action"] in ("exit", "raise"):
            self._save_outcome(o)
        act(
            o["action"],
            o["verdict"],
            o["exit_code"] or 0,
            role=o["role"],
            rank=o["rank"],
            step=o["step"],
        )

    # ----------------------------------------------------------------- memory
    def _save_outcome(self, o: dict) -> None:
        """Record the decision in this device's file, for a launcher that hides exit codes."""
        if not self._state_dir:
            return
        own = self._meta["device"]
        v = self._verdicts.get(own) or Verdict(device=own, status=Status.UNKNOWN)
        out = {
            "role": o["role"],
            "device": str(o["device"]),
            "step": int(o["step"]),
            "action": o["action"],
            "exit_code": o["exit_code"],
            "time": time(),
        }
        self._save_state(v, outcome=out)

    def _load_state(self) -> Verdict | None:
        if not self._state_dir:
            return None
        from ._state import load_device

        try:
            v, self._history = load_device(self._state_dir, self._meta["device"])
        except Exception as exc:  # noqa: BLE001 - a bad file must not stop training
            if self.strict:
                raise
            log.warning("degrade: ignoring the saved state of %s: %s", self._meta["device"], exc)
            return None
        if v is not None:
            log.warning(
                "degrade: device %s was %s before this start (%s)",
                v.device,
                Status(v.status).value,
                v.reasons[-1],
            )
        return v

    def _save_state(self, v: Verdict, outcome: dict | None = None) -> None:
        if not self._state_dir:
            return
        from ._state import save_device

        try:
            save_device(
                self._state_dir,
                v,
                rank=self._meta["rank"],
                step=self._n,
                history=self._history,
                outcome=outcome,
            )
        except Exception as exc:  # noqa: BLE001 - a full or read-only volume must not stop training
            if self.strict:
                raise
            if not self._state_warned:
                log.warning("degrade: cannot save the device state: %s", exc)
                self._state_warned = True

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
            st = os.stat(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("degrade: ignoring control file %s: %s", path, exc)
            return
        key = (st.st_mtime_ns, st.st_ino, st.st_mode)
        if key == self._control_mtime:
            return
        self._control_mtime = key
        if not stat.S_ISREG(st.st_mode):
            # a FIFO would block the training loop in open(); a device could be endless
            log.warning(
                "degrade: ignoring control file %s: not a regular file (a FIFO, device or "
                "directory); write the JSON to a regular file",
                path,
            )
            return
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the stat
                    raise InputError("not a regular file")
                raw = os.read(fd, _CONTROL_MAX_BYTES + 1)
            finally:
                os.close(fd)
            if len(raw) > _CONTROL_MAX_BYTES:
                raise InputError(f"larger than {_CONTROL_MAX_BYTES} bytes")
            ctl = json.loads(raw.decode("utf-8"))
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
        enabled: bool | str | None = None,
        min_slowdown: float | None = None,
        action: str | None = None,
        peer_action: str | None = None,
        act_at: str | None = None,
        exit_code: int | None = None,
        peer_exit_code: int | None = None,
    ) -> None:
        """Change settings at run time (also what the control file does).

        Every value is checked before any is applied, so a bad one changes
        nothing. ``enabled`` takes a bool or the strings true/false (1/0,
        yes/no, on/off). A new ``min_slowdown`` restarts the judgement with
        the new engine configuration from the next exchange on.
        """
        new_action = None if action is None else check_action(action)
        new_peer = None if peer_action is None else check_peer_action(peer_action)
        new_code = None if exit_code is None else check_exit_code(exit_code)
        new_peer_code = (
            None if peer_exit_code is None else check_exit_code(peer_exit_code, "peer_exit_code")
        )
        new_at = None if act_at is None else self._check_status(act_at)
        new_ms = None if min_slowdown is None else _check_min_slowdown(min_slowdown)
        new_on = None if enabled is None else _parse_bool(enabled, "enabled")
        if new_action is not None:
            self._action = new_action
        if new_peer is not None:
            self._peer_action = new_peer
        if new_code is not None:
            self._exit_code = new_code
        if new_peer_code is not None:
            self._peer_exit_code = new_peer_code
        if new_at is not None:
            self._act_at = new_at
        if new_ms is not None and new_ms != self._min_slowdown:
            self._min_slowdown = new_ms
            if self._worker is not None:
                self._worker.reconfigure()
            elif self._judge is not None:
                self._judge = self._make_judge()
        if new_on is not None:
            self.enable() if new_on else self.disable()

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

    def job_costs(self) -> list:
        """What the job lost to its flagged devices so far: :class:`~degrade.verdict.JobCost` (docs/cost.md)."""
        return list(self._costs)

    def collector(self):
        """A prometheus_client collector: ``degrade_job_lost_seconds_total`` and friends (docs/cost.md).

        Register it with ``prometheus_client.REGISTRY.register(mon.collector())``.
        """
        from ._prometheus import LoopCollector

        return LoopCollector(self)

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
            "peer_action": resolve_peer_action(self._peer_action, self._action),
            "exit_code": self._exit_code,
            "peer_exit_code": self._peer_exit_code,
            "host": self._meta["host"] if self._meta else None,
            "min_slowdown": self._min_slowdown,
            "median_compute_time": math.exp(self._window_median)
            if self._window_median == self._window_median
            else None,
            "last": self._last_dict(),
            "verdict": own.to_dict() if own is not None else None,
            "cost": self._costs[0].to_dict() if self._costs else None,
            "error": self.error_,
            "outcome": None
            if self._outcome is None
            else {k: v for k, v in self._outcome.items() if k != "verdict"},
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


def _verdict_dict(v: Verdict) -> dict:
    """A verdict as plain data, for the setup exchange (all_gather_object / a gather callable)."""
    from ._state import _verdict_tree

    return _verdict_tree(v)


def _verdict_from(d: dict) -> Verdict | None:
    try:
        return Verdict(
            device=str(d["device"]),
            status=Status(d["status"]),
            job=d.get("job"),
            host=d.get("host"),
            slowdown=d.get("slowdown"),
            onset_step=d.get("onset_step"),
            onset_time=d.get("onset_time"),
            detected_step=d.get("detected_step"),
            detected_time=d.get("detected_time"),
            score=d.get("score"),
            reasons=[str(r) for r in d.get("reasons") or []],
        )
    except (KeyError, ValueError, TypeError):
        log.warning("degrade: ignoring a peer's malformed restored verdict %r", d)
        return None
