"""The live pipeline: NVML rows → verdict engine → verdicts, with persistence.

One :class:`Agent` owns a collector and a :class:`degrade.verdict.VerdictEngine`.
Each poll feeds the engine one sample per GPU, with the GPUs of the same
model on the node as peers (``groups`` = model name). Exporters read a
consistent :meth:`Agent.snapshot` under a lock, so scrapes never see a
half-updated engine.

Faults never stop the agent: a state, record or textfile write that fails
(full disk, read-only file system), an unusable state file or a poll that
raises is logged (one line, through :mod:`logging`, logger
``degrade.agent``) and counted in :attr:`Agent.errors_total` by kind —
rendered as ``degrade_agent_errors_total{kind}`` — and the agent keeps
polling and serving.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from degrade.errors import InputError, StateFileError

from ._collector import NVMLCollector
from ._state import cleanup_temp, load_state, save_state, validate_engine_state

__all__ = ["Agent", "AgentConfig", "ERROR_KINDS"]

log = logging.getLogger("degrade.agent")

#: kinds of ``Agent.errors_total`` / ``degrade_agent_errors_total{kind}``
ERROR_KINDS = ("state_load", "state_write", "record_write", "textfile_write", "poll")
# a fault that repeats (a full disk fails every save) is logged again at most this often
_LOG_EVERY_S = 300.0


@dataclass
class AgentConfig:
    """How the agent polls, judges and persists.

    Parameters
    ----------
    interval
        Seconds between polls of the fast counters (clocks, reasons, link).
    slow_interval
        Seconds between reads of the slow counters (maxima, ECC, remaps, NVLink).
    timeout
        Seconds a GPU's poll may take before it counts as missing.
    state_path
        Where baselines are saved and restored (``None``: not persisted).
    save_interval
        Seconds between state saves (also saved on a clean stop).
    stale_after
        Seconds without a good sample after which a GPU is ``unknown``.
    forget_after
        Seconds a GPU may be absent from the node before its state is dropped.
    record_dir, record_interval
        If set, the collected counters are also written, every
        ``record_interval`` seconds, as Parquet files under
        ``record_dir/host=<host>/`` (the canonical counters schema, read by
        ``degrade analyze`` and ``read_counters``).
    engine
        Keyword arguments of :class:`degrade.verdict.EngineConfig`.
    """

    interval: float = 1.0
    slow_interval: float = 30.0
    timeout: float = 2.0
    state_path: str | None = None
    save_interval: float = 60.0
    stale_after: float = 30.0
    forget_after: float = 7 * 86400.0
    record_dir: str | None = None
    record_interval: float = 300.0
    engine: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("interval", "slow_interval", "timeout", "save_interval", "stale_after", "forget_after",
                     "record_interval"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                raise InputError(f"AgentConfig.{name}={v!r}: expected a positive number of seconds")


class Agent:
    """Poll NVML, keep per-GPU baselines, and judge the GPUs of one node.

    Parameters
    ----------
    collector
        An :class:`NVMLCollector` (on pynvml or on a :class:`FakeNVML`).
    config
        An :class:`AgentConfig`.
    advance
        Called after each poll; the fake backend's ``advance`` makes the
        agent replay simulated telemetry tick by tick.

    Examples
    --------
    >>> from degrade.agent import Agent, FakeNVML, NVMLCollector
    >>> fake = FakeNVML.from_arrays({"sm_clock_mhz": [[1980.0, 1980.0]] * 3,
    ...                              "gpu_util_ratio": [[1.0, 1.0]] * 3})
    >>> agent = Agent(NVMLCollector(fake, clock=fake.time), advance=fake.advance)
    >>> for _ in range(3):
    ...     rows = agent.poll_once()
    >>> [v.status.value for v in agent.verdicts()]
    ['unknown', 'unknown']
    >>> agent.close()
    """

    def __init__(
        self,
        collector: NVMLCollector,
        config: AgentConfig | None = None,
        *,
        advance: Callable[[], None] | None = None,
    ) -> None:
        self.collector = collector
        self.config = config or AgentConfig()
        self.advance = advance
        self._lock = threading.RLock()
        self._engine = None
        self._gpus: dict[str, dict[str, Any]] = {}  # device id -> labels, last row, last good time
        self._lost_marked: set[str] = set()
        self.polls_total = 0
        self.samples_total = 0
        self.poll_seconds_total = 0.0
        self.last_poll_seconds = math.nan
        self.last_poll_time = math.nan
        self.state_saves_total = 0
        self.restored_from = None
        self._last_save = -math.inf
        self._verdicts_cache: tuple[int, list] | None = None
        self._started = False
        self._record: list[dict[str, Any]] = []
        self._last_record = math.nan
        self.records_written = 0
        self.errors_total: dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)
        self._fault_logged: dict[str, tuple[float, int]] = {}  # kind -> (monotonic time, count) of last log
        self._failing: set[str] = set()
        self._fleet = None  # degrade.fleet.FleetHistory of this node's GPUs (saved with the state)
        self._fleet_open: dict[str, str] = {}

    # ------------------------------------------------------------ lifecycle
    @property
    def engine(self):
        if self._engine is None:
            from degrade.verdict.engine import EngineConfig, VerdictEngine

            self._engine = VerdictEngine(EngineConfig(**self.config.engine))
        return self._engine

    def start(self) -> Agent:
        """Start NVML and restore saved baselines (if ``state_path`` holds any).

        An unusable state file (not a state, a pickle, wrong types, a
        directory or a FIFO) is logged with one warning naming it and the
        agent starts with fresh baselines; it is replaced at the next save.
        Temporary files left by interrupted saves are removed.
        """
        if self._started:
            return self
        self.collector.slow_interval = self.config.slow_interval
        self.collector.timeout = self.config.timeout
        self.collector.start()
        if self.config.state_path:
            removed = cleanup_temp(self.config.state_path)
            if removed:
                log.info("removed %d temporary file(s) of interrupted state saves next to %s",
                         len(removed), self.config.state_path)
            try:
                state = load_state(self.config.state_path)
            except StateFileError as exc:
                self._fault("state_load", f"{exc}; starting with fresh baselines")
                state = None
            if state is not None and self._restore(state):
                self.restored_from = self.config.state_path
        if self.config.record_dir:
            self._cleanup_record_temp()
        self._started = True
        return self

    def close(self) -> None:
        """Flush recorded counters, save state (if configured) and stop the collector.

        A write that fails is logged and counted, never raised: the
        collector is stopped whatever happens.
        """
        try:
            if self._started and self.config.record_dir:
                self._flush_record_safely()
            if self._started and self.config.state_path:
                self._save_safely()
        finally:
            self.collector.close()
            self._started = False

    # ------------------------------------------------------------ faults
    def _fault(self, kind: str, message: str) -> None:
        """Count a fault of ``kind`` and log it (a repeating fault at most every few minutes)."""
        with self._lock:
            self.errors_total[kind] = self.errors_total.get(kind, 0) + 1
            n = self.errors_total[kind]
            last = self._fault_logged.get(kind)
            now = time.monotonic()
            self._failing.add(kind)
            if last is not None and now - last[0] < _LOG_EVERY_S:
                return
            self._fault_logged[kind] = (now, n)
        since = f" ({n - last[1]} times since the last report)" if last is not None else ""
        log.warning("%s%s", " ".join(str(message).split()), since)

    def _recovered(self, kind: str, what: str) -> None:
        with self._lock:
            if kind not in self._failing:
                return
            self._failing.discard(kind)
            self._fault_logged.pop(kind, None)
        log.info("%s works again", what)

    def _save_safely(self) -> bool:
        try:
            self.save()
        except (StateFileError, OSError) as exc:
            self._fault("state_write", f"cannot save the state: {exc}; still running, baselines kept in memory")
            return False
        self._recovered("state_write", f"saving the state to {self.config.state_path}")
        return True

    def _flush_record_safely(self) -> None:
        n = len(self._record)
        try:
            self.flush_record()
        except Exception as exc:  # noqa: BLE001 - OSError, or polars' own I/O errors: never fatal
            self._record = []
            self._fault("record_write", f"cannot write recorded counters under {self.config.record_dir}: "
                        f"{type(exc).__name__}: {exc}; {n} row(s) dropped")
            return
        self._recovered("record_write", f"recording counters under {self.config.record_dir}")

    def _cleanup_record_temp(self) -> None:
        from pathlib import Path

        try:
            for d in Path(self.config.record_dir).glob("host=*"):
                for f in d.glob(".counters-*.parquet.tmp"):
                    f.unlink()
        except OSError:
            pass


    def __enter__(self) -> Agent:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        """What the state file holds: engine state, GPU identities, and the current verdicts.

        The verdicts are saved too so that ``degrade check --state`` can
        answer without rebuilding an engine (it runs under NPD's timeout).
        """
        verdicts = self.verdicts()
        with self._lock:
            labelled = []
            for v in verdicts:
                d = v.to_dict()
                info = self._gpus.get(v.device, {})
                d.update(gpu=info.get("gpu"), uuid=info.get("uuid"), pci_bus_id=info.get("pci_bus_id"),
                         model=info.get("model"), present=info.get("present", True))
                labelled.append(d)
            return {
                "verdicts": labelled,
                "engine": self.engine.state_dict(),
                "gpus": {k: {kk: vv for kk, vv in v.items() if kk != "row"} for k, v in self._gpus.items()},
                "lost_marked": sorted(self._lost_marked),
                "counters": {
                    "polls_total": self.polls_total,
                    "samples_total": self.samples_total,
                },
                "saved_at": time.time(),
                "fleet": self._fleet_state(labelled),
            }

    def _fleet_state(self, labelled: list[dict[str, Any]]) -> dict[str, Any]:
        """This node's fleet memory, updated from the current verdicts (docs/fleet.md)."""
        from degrade.fleet import FleetHistory, agent_history_state, note_agent_verdicts

        if self._fleet is None:
            self._fleet = FleetHistory()
        now = self.last_poll_time if math.isfinite(self.last_poll_time) else time.time()
        note_agent_verdicts(self._fleet, self._fleet_open, labelled, now)
        return agent_history_state(self._fleet, self._fleet_open)

    @property
    def fleet(self):
        """This node's :class:`degrade.fleet.FleetHistory` (updated at every state save)."""
        from degrade.fleet import FleetHistory

        with self._lock:
            return self._fleet if self._fleet is not None else FleetHistory()

    def save(self) -> None:
        """Write the state file now (atomic)."""
        if not self.config.state_path:
            raise InputError("Agent.save: no state_path configured")
        save_state(self.config.state_path, self.state())
        self.state_saves_total += 1

    def _restore(self, state: dict[str, Any]) -> bool:
        """Restore a validated state; on anything wrong start fresh (one warning) and return False.

        The configured engine settings win over the saved ones: the saved
        baselines are loaded under this run's ``EngineConfig``, with a warning
        naming the settings that differ.
        """
        from dataclasses import asdict

        from degrade.verdict import JobEvent
        from degrade.verdict.engine import EngineConfig

        path = self.config.state_path
        try:
            eng = state["engine"]
            validate_engine_state(eng, path, EngineConfig, JobEvent)
            configured = asdict(EngineConfig(**self.config.engine))
            saved = eng["config"]
            differ = sorted(k for k in set(saved) | set(configured)
                            if k not in saved or not _same(saved[k], configured.get(k)))
            if differ:
                shown = ", ".join(f"{k}={saved.get(k)!r}->{configured.get(k)!r}" for k in differ[:6])
                more = f" (+{len(differ) - 6} more)" if len(differ) > 6 else ""
                log.warning("%s was saved with other engine settings (%s%s); the configured settings are used",
                            path, shown, more)
            self.engine.load_state_dict({**eng, "config": configured})
        except Exception as exc:  # noqa: BLE001 - an unusable state must never stop the agent
            self._engine = None
            self._gpus = {}
            self._lost_marked = set()
            msg = str(exc) if str(path) in str(exc) else f"{path}: {type(exc).__name__}: {exc}"
            self._fault("state_load", f"{msg}; starting with fresh baselines")
            return False
        for dev, info in state.get("gpus", {}).items():
            info = dict(info)
            info["present"] = False  # until this run's NVML sees it again
            self._gpus[dev] = info
        self._lost_marked = set(state.get("lost_marked", []))
        if "fleet" in state:
            from degrade.fleet import agent_history_from_state

            try:
                self._fleet, self._fleet_open = agent_history_from_state(state["fleet"], str(path))
            except Exception as exc:  # noqa: BLE001 - a bad history must never stop the agent
                self._fault("state_load", f"{exc}; starting a fresh fleet history")
        return True

    # ------------------------------------------------------------ polling
    def poll_once(self) -> list[dict[str, Any]]:
        """One poll: read NVML, feed the engine, return the rows."""
        if not self._started:
            self.start()
        t0 = time.perf_counter()
        rows = self.collector.poll()
        from degrade.verdict.engine import COUNTER_COLUMNS

        with self._lock:
            now = rows[0]["timestamp"] if rows else self.collector.clock() if self.collector.clock else time.time()
            seen = set()
            good = []
            for r in rows:
                dev = r["device"]
                seen.add(dev)
                info = self._gpus.setdefault(dev, {"first_seen": now})
                info.update(
                    uuid=r["uuid"], gpu=r["gpu"], pci_bus_id=r["pci_bus_id"], model=r["model"],
                    host=r["host"], present=bool(r["present"]), stalled=bool(r["stalled"]),
                )
                info["row"] = r
                if any(k in r for k in COUNTER_COLUMNS):
                    info["last_sample"] = now
                    good.append(r)
                if r.get("device_lost") == 1.0 and dev not in self._lost_marked:
                    self.engine.mark_lost(dev, timestamp=now, reason=_lost_reason(r))
                    self._lost_marked.add(dev)
            for dev, info in self._gpus.items():
                if dev not in seen:
                    info["present"] = False
            if good:
                n = len(good)
                values = {}
                for col in COUNTER_COLUMNS:
                    if any(col in r for r in good):
                        values[col] = np.array([r.get(col, np.nan) for r in good], dtype=np.float64)
                self.engine.update(
                    [r["device"] for r in good],
                    values,
                    timestamp=now,
                    groups=[r["model"] for r in good],
                    hosts=[r["host"] for r in good],
                )
                self.samples_total += n
            self._forget_absent(now)
            self.polls_total += 1
            dt = time.perf_counter() - t0
            self.poll_seconds_total += dt
            self.last_poll_seconds = dt
            self.last_poll_time = now
            self._verdicts_cache = None
        if self.config.record_dir:
            self._record.extend(good)
            if math.isnan(self._last_record):
                self._last_record = now
            elif now - self._last_record >= self.config.record_interval:
                self._flush_record_safely()
                self._last_record = now
        if self.config.state_path and now - self._last_save >= self.config.save_interval:
            self._save_safely()
            self._last_save = now
        if self.advance is not None:
            self.advance()
        return rows

    def flush_record(self) -> str | None:
        """Write the buffered counters to one Parquet file (temp file + rename); return its path."""
        if not self._record:
            return None
        from pathlib import Path

        from ._collector import rows_to_frame

        rows, self._record = self._record, []
        df = rows_to_frame(rows)
        host = str(rows[0]["host"] or "unknown").replace("/", "_")
        d = Path(self.config.record_dir) / f"host={host}"
        d.mkdir(parents=True, exist_ok=True)
        t0, t1 = rows[0]["timestamp"], rows[-1]["timestamp"]
        path = d / f"counters-{t0:.0f}-{t1:.0f}.parquet"
        tmp = d / f".{path.name}.tmp"
        try:
            df.write_parquet(tmp)
            os.replace(tmp, path)
        except BaseException:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise
        self.records_written += 1
        return str(path)

    def _forget_absent(self, now: float) -> None:
        gone = [d for d, i in self._gpus.items()
                if not i.get("present") and now - i.get("last_sample", now) > self.config.forget_after]
        if gone:
            self.engine.forget([d for d in gone if d in self.engine.devices_])
            for d in gone:
                del self._gpus[d]
                self._lost_marked.discard(d)

    def run(self, stop: threading.Event | None = None, *, max_polls: int | None = None,
            realtime: bool = True) -> None:
        """Poll until ``stop`` is set (or ``max_polls`` polls), every ``interval`` seconds.

        ``realtime=False`` polls back to back (fast-forward replay of the
        fake backend).
        """
        stop = stop or threading.Event()
        nxt = time.monotonic()
        while not stop.is_set() and (max_polls is None or self.polls_total < max_polls):
            try:
                self.poll_once()
            except Exception as exc:  # noqa: BLE001 - a bad poll must not stop the monitoring
                self._fault("poll", f"poll failed: {type(exc).__name__}: {exc}")
                if max_polls is not None:
                    self.polls_total += 1  # a bounded run still ends
            if realtime:
                # a fixed schedule, so a slow poll does not shift every later one
                nxt += self.config.interval
                delay = nxt - time.monotonic()
                if delay < 0:
                    nxt = time.monotonic()
                    delay = 0.0
                stop.wait(delay)

    # ------------------------------------------------------------ verdicts
    def verdicts(self) -> list:
        """Current verdicts, one per GPU this agent knows (present or restored)."""
        from degrade.verdict import Status

        with self._lock:
            if self._verdicts_cache is not None and self._verdicts_cache[0] == self.polls_total:
                return self._verdicts_cache[1]
            out = self.engine.verdicts() if self.engine.devices_ else []
            known = {v.device for v in out}
            from degrade.verdict import Verdict

            for dev, info in self._gpus.items():
                if dev not in known:
                    out.append(Verdict(device=dev, status=Status.UNKNOWN, host=info.get("host"),
                                       reasons=["no NVML sample yet"]))
            now = self.last_poll_time
            for v in out:
                info = self._gpus.get(v.device, {})
                if v.status is Status.FAILED:
                    continue
                if not info.get("present", True):
                    why = "not present on this node (removed, or gone since the last run)"
                elif info.get("stalled"):
                    why = "NVML calls for this GPU are hanging"
                elif math.isfinite(now) and now - info.get("last_sample", now) > self.config.stale_after:
                    why = f"no NVML data for {now - info['last_sample']:.0f} s"
                else:
                    continue
                v.status = Status.UNKNOWN
                v.reasons = [why, *v.reasons[:3]]
                v.action = "check the GPU with nvidia-smi and the agent's NVML access"
            self._verdicts_cache = (self.polls_total, out)
            return out

    def snapshot(self) -> dict[str, Any]:
        """Everything an exporter needs, copied under the lock."""
        verdicts = self.verdicts()
        with self._lock:
            gpus = {d: {k: v for k, v in i.items() if k != "row"} for d, i in self._gpus.items()}
            errors = dict(self.collector.errors_)
            return {
                "host": self.collector.host,
                "gpus": gpus,
                "verdicts": verdicts,
                "errors": errors,
                "timeouts_total": self.collector.timeouts_,
                "polls_total": self.polls_total,
                "samples_total": self.samples_total,
                "poll_seconds_total": self.poll_seconds_total,
                "last_poll_seconds": self.last_poll_seconds,
                "last_poll_time": self.last_poll_time,
                "state_saves_total": self.state_saves_total,
                "agent_errors": dict(self.errors_total),
                # lost time of jobs whose timings reached this agent's engine (docs/cost.md)
                "job_costs": self.engine.job_costs(verdicts) if self.engine.devices_ else [],
            }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                             and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def _lost_reason(row: dict[str, Any]) -> str:
    if row.get("xid_last") == 79.0:
        return "XID 79: GPU has fallen off the bus (NVML: GPU is lost)"
    return "NVML: GPU is lost"
