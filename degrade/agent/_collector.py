"""NVML collection: one row of canonical counters per GPU per poll.

The collector only talks to an object with pynvml's function interface, so
the same code runs on the real driver (``import pynvml``) and on
:class:`degrade.agent.FakeNVML`. Every NVML call is guarded:

- ``NotSupported`` makes that one metric missing for that GPU, for good (the
  call is not repeated: the answer does not change while the driver runs);
- ``GPU is lost`` marks the GPU lost (``device_lost=1``), and it is no longer
  polled;
- ``Not found`` (the GPU left the bus or was removed) makes it absent;
- any other error makes that metric missing for this poll and is counted;
- a call that hangs costs at most ``timeout`` seconds: each GPU is polled by
  its own worker thread, a GPU whose worker is still stuck yields an empty
  row (missing data, so the engine calls it ``unknown``) and gets no new
  work until the stuck call returns;
- start-up has deadlines too: ``nvmlInit`` and ``nvmlDeviceGetCount`` get
  ``init_timeout`` seconds (then :class:`NVMLUnavailableError`), and each
  GPU is identified (handle, UUID, name, PCI info) on its own worker within
  ``timeout``: a GPU whose identification hangs is listed as
  ``GPU-index-<i>``, stalled, and takes its real identity if the call ever
  returns; XID event registration runs on the event thread, and
  ``nvmlShutdown`` is given ``timeout`` seconds at close.

XID errors come through an NVML event set on a background thread
(``nvmlEventSetWait_v2``), not by polling.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any

from degrade.errors import InputError, NVMLUnavailableError

__all__ = [
    "GPUInfo", "NVMLCollector", "FAST_METRICS", "SLOW_METRICS", "COUNTER_COLUMNS", "load_nvml", "rows_to_frame",
]

#: every metric column a row may hold (canonical counter names, docs/architecture.md)
COUNTER_COLUMNS: tuple[str, ...] = (
    "sm_clock_mhz", "sm_clock_max_mhz", "mem_clock_mhz", "mem_clock_max_mhz",
    "power_watts", "power_limit_watts", "gpu_temp_celsius", "memory_temp_celsius",
    "gpu_util_ratio", "mem_util_ratio", "clock_event_reasons",
    "pcie_link_gen", "pcie_link_gen_max", "pcie_link_width", "pcie_link_width_max",
    "pcie_replay_total", "ecc_corrected_total", "ecc_uncorrected_total",
    "remapped_rows_correctable", "remapped_rows_uncorrectable", "remap_pending", "remap_failure",
    "xid_last", "nvlink_crc_errors_total", "nvlink_replay_errors_total",
    "nvlink_recovery_errors_total", "device_lost",
)  # fmt: skip

# NVML return codes (nvml.h); pynvml and the fake backend share them
_NOT_SUPPORTED = 3
_NO_PERMISSION = 4
_NOT_FOUND = 6
_DRIVER_NOT_LOADED = 9
_TIMEOUT = 10
_LIBRARY_NOT_FOUND = 12
_FUNCTION_NOT_FOUND = 13
_GPU_IS_LOST = 15
_GPU_NOT_FOUND = 28


def load_nvml():
    """The real NVML binding (module ``pynvml`` of nvidia-ml-py), imported lazily."""
    from degrade._optional import import_optional

    return import_optional("pynvml", "agent", package="nvidia-ml-py")


def _hkey(handle: Any) -> Any:
    """A key equal for two handles of the same GPU (pynvml rebuilds ctypes pointers per event)."""
    import ctypes

    try:
        return ctypes.cast(handle, ctypes.c_void_p).value
    except (TypeError, ctypes.ArgumentError):
        return handle


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


# --------------------------------------------------------------- metric probes
# Each probe reads one NVML call (or a tight group) and returns canonical columns.
# A probe that raises NotSupported is disabled for that GPU.


def _p_sm_clock(nv, h):
    return {"sm_clock_mhz": nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)}


def _p_mem_clock(nv, h):
    return {"mem_clock_mhz": nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)}


def _p_power(nv, h):
    return {"power_watts": nv.nvmlDeviceGetPowerUsage(h) / 1000.0}


def _p_gpu_temp(nv, h):
    return {"gpu_temp_celsius": nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)}


def _p_memory_temp(nv, h):
    # HBM temperature has no dedicated call; it is field NVML_FI_DEV_MEMORY_TEMP
    (fv,) = nv.nvmlDeviceGetFieldValues(h, [nv.NVML_FI_DEV_MEMORY_TEMP])
    if fv.nvmlReturn != 0:
        raise nv.NVMLError(fv.nvmlReturn)
    return {"memory_temp_celsius": fv.value.uiVal}


def _p_util(nv, h):
    u = nv.nvmlDeviceGetUtilizationRates(h)
    out = {"gpu_util_ratio": u.gpu / 100.0}
    if u.memory is not None:
        out["mem_util_ratio"] = u.memory / 100.0
    return out


def _p_reasons(nv, h):
    try:
        return {"clock_event_reasons": nv.nvmlDeviceGetCurrentClocksEventReasons(h)}
    except nv.NVMLError as exc:
        # drivers before r535 only have the older name of the same call
        if exc.value not in (_FUNCTION_NOT_FOUND, _NOT_SUPPORTED):
            raise
    return {"clock_event_reasons": nv.nvmlDeviceGetCurrentClocksThrottleReasons(h)}


def _p_pcie_link(nv, h):
    return {
        "pcie_link_gen": nv.nvmlDeviceGetCurrPcieLinkGeneration(h),
        "pcie_link_width": nv.nvmlDeviceGetCurrPcieLinkWidth(h),
    }


def _p_sm_clock_max(nv, h):
    return {"sm_clock_max_mhz": nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM)}


def _p_mem_clock_max(nv, h):
    return {"mem_clock_max_mhz": nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_MEM)}


def _p_power_limit(nv, h):
    return {"power_limit_watts": nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0}


def _p_pcie_max(nv, h):
    return {
        "pcie_link_gen_max": nv.nvmlDeviceGetMaxPcieLinkGeneration(h),
        "pcie_link_width_max": nv.nvmlDeviceGetMaxPcieLinkWidth(h),
    }


def _p_pcie_replay(nv, h):
    return {"pcie_replay_total": nv.nvmlDeviceGetPcieReplayCounter(h)}


def _p_ecc(nv, h):
    kinds = (nv.NVML_MEMORY_ERROR_TYPE_CORRECTED, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED)
    c, u = (nv.nvmlDeviceGetTotalEccErrors(h, k, nv.NVML_AGGREGATE_ECC) for k in kinds)
    return {"ecc_corrected_total": c, "ecc_uncorrected_total": u}


def _p_remap(nv, h):
    corr, unc, pending, failure = nv.nvmlDeviceGetRemappedRows(h)
    return {
        "remapped_rows_correctable": corr,
        "remapped_rows_uncorrectable": unc,
        "remap_pending": 1 if pending else 0,
        "remap_failure": 1 if failure else 0,
    }


def _p_nvlink(nv, h):
    kinds = (
        ("nvlink_crc_errors_total", nv.NVML_NVLINK_ERROR_DL_CRC_FLIT),
        ("nvlink_replay_errors_total", nv.NVML_NVLINK_ERROR_DL_REPLAY),
        ("nvlink_recovery_errors_total", nv.NVML_NVLINK_ERROR_DL_RECOVERY),
    )
    out = dict.fromkeys((k for k, _ in kinds), 0)
    active = 0
    for link in range(nv.NVML_NVLINK_MAX_LINKS):
        try:
            if not nv.nvmlDeviceGetNvLinkState(h, link):
                continue
        except nv.NVMLError as exc:
            # links are numbered densely: the first unsupported index ends the list
            if exc.value in (_NOT_SUPPORTED, 2):  # 2 = invalid argument (no such link)
                break
            raise
        active += 1
        for col, kind in kinds:
            out[col] += nv.nvmlDeviceGetNvLinkErrorCounter(h, link, kind)
    if active == 0:
        raise nv.NVMLError(_NOT_SUPPORTED)
    return out


#: probes read every poll (1 Hz by default): cheap, and what moves first in a fault
FAST_METRICS: dict[str, Callable] = {
    "sm_clock": _p_sm_clock,
    "mem_clock": _p_mem_clock,
    "power": _p_power,
    "gpu_temp": _p_gpu_temp,
    "memory_temp": _p_memory_temp,
    "util": _p_util,
    "clock_event_reasons": _p_reasons,
    "pcie_link": _p_pcie_link,
}

#: probes read every ``slow_interval`` seconds: maxima, limits and error counters
SLOW_METRICS: dict[str, Callable] = {
    "sm_clock_max": _p_sm_clock_max,
    "mem_clock_max": _p_mem_clock_max,
    "power_limit": _p_power_limit,
    "pcie_max": _p_pcie_max,
    "pcie_replay": _p_pcie_replay,
    "ecc": _p_ecc,
    "remapped_rows": _p_remap,
    "nvlink": _p_nvlink,
}


@dataclass
class GPUInfo:
    """Identity of one GPU and what the collector knows about its state."""

    index: int
    uuid: str
    name: str
    pci_bus_id: str
    handle: Any = field(repr=False, default=None)
    unsupported: set[str] = field(default_factory=set)
    lost: bool = False
    absent: bool = False
    xid_last: int = 0
    slow: dict[str, float] = field(default_factory=dict)
    #: identification still running on the GPU's worker (it hung at start-up)
    pending: Future | None = field(repr=False, default=None)
    #: identified after start-up: register it for XID events at its next poll
    xid_register: bool = False


class _Worker:
    """One daemon thread per GPU, so a hung NVML call blocks only that GPU.

    Daemon threads (not a ThreadPoolExecutor) because a call stuck in the
    driver must not keep the process from exiting.
    """

    def __init__(self, name: str) -> None:
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self.busy: Future | None = None
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            fn, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)

    def submit(self, fn: Callable[[], Any]) -> Future:
        fut: Future = Future()
        self._q.put((fn, fut))
        self.busy = fut
        return fut

    def stop(self) -> None:
        self._q.put(None)


class _Hung(Exception):
    """An NVML call at start-up or shutdown that did not return within its deadline."""


def _call_with_deadline(fn: Callable[[], Any], timeout: float, name: str) -> Any:
    """Run ``fn`` on a daemon thread; raise :class:`_Hung` if it is not done within ``timeout`` s.

    A call stuck inside the driver cannot be cancelled: the thread is left
    behind (daemon, so it does not keep the process alive).
    """
    fut: Future = Future()

    def run() -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            fut.set_exception(exc)

    threading.Thread(target=run, name=f"degrade-{name}", daemon=True).start()
    try:
        return fut.result(timeout=timeout)
    except TimeoutError:
        raise _Hung(f"{name} did not return within {timeout:g} s") from None


class NVMLCollector:
    """Poll NVML for every GPU on the node and return canonical counter rows.

    Parameters
    ----------
    nvml
        The NVML binding: ``None`` loads nvidia-ml-py's ``pynvml``; tests and
        demos pass a :class:`degrade.agent.FakeNVML`.
    slow_interval
        Seconds between reads of the slow metrics (maxima, limits, error
        counters); 10–60 s is plenty for counters that move rarely.
    timeout
        Seconds one GPU's poll may take before its row is given up as missing.
    clock
        Source of sample timestamps (epoch seconds); the fake backend passes
        its own simulated clock.
    host
        Host name recorded in the rows (default: the machine's).
    xid_events
        Listen for XID critical-error events on a background thread.
    init_timeout
        Seconds ``nvmlInit`` and ``nvmlDeviceGetCount`` may take at start-up
        (a driver without persistence mode can take seconds per GPU).

    Examples
    --------
    >>> from degrade.agent import FakeNVML, NVMLCollector
    >>> fake = FakeNVML.from_arrays({"sm_clock_mhz": [[1980.0, 1410.0]]}, model="NVIDIA H100")
    >>> with NVMLCollector(fake, clock=fake.time) as col:
    ...     rows = col.poll()
    >>> [(r["gpu"], r["sm_clock_mhz"]) for r in rows]
    [(0, 1980.0), (1, 1410.0)]
    """

    def __init__(
        self,
        nvml: Any = None,
        *,
        slow_interval: float = 30.0,
        timeout: float = 2.0,
        clock: Callable[[], float] | None = None,
        host: str | None = None,
        xid_events: bool = True,
        init_timeout: float = 30.0,
    ) -> None:
        if not (init_timeout > 0 and math.isfinite(init_timeout)):
            raise InputError(f"init_timeout={init_timeout!r}: expected a positive number of seconds")
        if not (slow_interval > 0 and math.isfinite(slow_interval)):
            raise InputError(f"slow_interval={slow_interval!r}: expected a positive number of seconds")
        if not (timeout > 0 and math.isfinite(timeout)):
            raise InputError(f"timeout={timeout!r}: expected a positive number of seconds")
        self.nvml = nvml
        self.slow_interval = slow_interval
        self.timeout = timeout
        self.clock = clock
        self.host = host
        self.xid_events = xid_events
        self.init_timeout = init_timeout
        self.gpus_: list[GPUInfo] = []
        self.errors_: dict[tuple[int, str], int] = {}
        self.timeouts_ = 0
        self._workers: list[_Worker] = []
        self._last_slow = -math.inf
        self._lock = threading.Lock()
        self._events_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._started = False

    # ------------------------------------------------------------ lifecycle
    def start(self) -> NVMLCollector:
        """Initialise NVML and enumerate the GPUs (raises NVMLUnavailableError without a driver)."""
        if self._started:
            return self
        if self.nvml is None:
            self.nvml = load_nvml()
        nv = self.nvml
        if self.host is None:
            import socket

            self.host = socket.gethostname()
        try:
            _call_with_deadline(nv.nvmlInit, self.init_timeout, "nvmlInit")
        except _Hung as exc:
            raise NVMLUnavailableError(f"NVML is hanging: {exc}; check the driver (nvidia-smi)") from None
        except nv.NVMLError as exc:
            if exc.value in (_LIBRARY_NOT_FOUND, _DRIVER_NOT_LOADED, _NO_PERMISSION):
                raise NVMLUnavailableError(
                    f"NVML is unavailable ({_s(exc)}): no NVIDIA driver on this machine, or the "
                    "container lacks the NVIDIA runtime (nvidia.com/gpu resource, --gpus all). "
                    "For a demo without a GPU run: degrade agent --fake SCENARIO"
                ) from exc
            raise NVMLUnavailableError(f"NVML failed to initialise: {_s(exc)}") from exc
        self._started = True
        try:
            count = int(_call_with_deadline(nv.nvmlDeviceGetCount, self.init_timeout, "nvmlDeviceGetCount"))
        except (_Hung, nv.NVMLError) as exc:
            self._started = False
            raise NVMLUnavailableError(f"NVML cannot count the GPUs: {_s(exc)}") from None
        self.gpus_ = [GPUInfo(index=i, uuid=f"GPU-index-{i}", name="unknown", pci_bus_id="") for i in range(count)]
        self._workers = [_Worker(f"degrade-nvml-gpu{i}") for i in range(count)]
        # every GPU is identified on its own worker, in parallel: a hung call costs one timeout
        futs = [w.submit(lambda i=i: self._identify(i)) for i, w in enumerate(self._workers)]
        if futs:
            wait_futures(futs, timeout=self.timeout)
        for g, fut in zip(self.gpus_, futs):
            if fut.done():
                self._apply_identity(g, fut)
            else:
                g.pending = fut  # the poll reports it stalled until the call returns
                with self._lock:
                    self.timeouts_ += 1
                self._count_error(g.index, _Timeout())
        if self.xid_events:
            self._start_xid_listener()
        return self

    def _identify(self, i: int) -> tuple[Any, str, str, str]:
        nv = self.nvml
        h = nv.nvmlDeviceGetHandleByIndex(i)
        return h, _s(nv.nvmlDeviceGetUUID(h)), _s(nv.nvmlDeviceGetName(h)), _s(nv.nvmlDeviceGetPciInfo(h).busId)

    def _apply_identity(self, g: GPUInfo, fut: Future) -> None:
        g.pending = None
        try:
            g.handle, g.uuid, g.name, g.pci_bus_id = fut.result()
        except Exception as exc:  # noqa: BLE001 - NVMLError or a broken binding: the GPU is reported
            # a GPU that cannot even be identified is reported, not skipped silently
            self._count_error(g.index, exc)
            if getattr(exc, "value", None) == _GPU_IS_LOST:
                g.lost = True
            else:
                g.absent = True

    def close(self) -> None:
        """Stop the worker and event threads and shut NVML down."""
        if not self._started:
            return
        self._stop.set()
        for w in self._workers:
            w.stop()
        if self._events_thread is not None:
            self._events_thread.join(timeout=self.timeout + 1.5)
        try:
            _call_with_deadline(self.nvml.nvmlShutdown, self.timeout, "nvmlShutdown")
        except (_Hung, self.nvml.NVMLError):
            pass
        self._started = False

    def __enter__(self) -> NVMLCollector:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ XID events
    def _start_xid_listener(self) -> None:
        # creating the event set and registering may hang like any NVML call: done on the thread
        self._xid_ready = threading.Event()
        self._events_thread = threading.Thread(target=self._xid_loop, name="degrade-nvml-xid", daemon=True)
        self._events_thread.start()
        # wait for the registration (so no event of the first polls is missed), but not forever
        self._xid_ready.wait(self.timeout)

    def _xid_register(self) -> bool:
        nv = self.nvml
        try:
            evset = nv.nvmlEventSetCreate()
        except nv.NVMLError as exc:
            self._count_error(-1, exc)
            return False
        by_handle = {}
        for g in self.gpus_:
            if g.handle is None:
                continue
            try:
                nv.nvmlDeviceRegisterEvents(g.handle, nv.nvmlEventTypeXidCriticalError, evset)
                by_handle[_hkey(g.handle)] = g
            except nv.NVMLError as exc:
                self._count_error(g.index, exc)
        self._evset = evset
        self._by_handle = by_handle
        return True

    def _xid_register_one(self, g: GPUInfo) -> None:
        """Register XID events for a GPU identified after start-up (its identification hung)."""
        g.xid_register = False
        nv = self.nvml
        try:
            nv.nvmlDeviceRegisterEvents(g.handle, nv.nvmlEventTypeXidCriticalError, self._evset)
        except nv.NVMLError as exc:
            self._count_error(g.index, exc)
            return
        with self._lock:
            self._by_handle[_hkey(g.handle)] = g

    def _xid_loop(self) -> None:
        try:
            self._xid_events_loop()
        except Exception as exc:  # noqa: BLE001 - a broken event stream must not end with a traceback
            self._count_error(-1, exc)
            import logging

            logging.getLogger("degrade.agent").warning(
                "XID event listener stopped: %s: %s; XIDs are no longer seen", type(exc).__name__, exc)
        finally:
            if hasattr(self, "_xid_ready"):
                self._xid_ready.set()

    def _xid_events_loop(self) -> None:
        nv = self.nvml
        try:
            ok = self._xid_register()
        finally:
            self._xid_ready.set()
        if not ok:
            return
        while not self._stop.is_set():
            try:
                data = nv.nvmlEventSetWait_v2(self._evset, 1000)
            except nv.NVMLError as exc:
                if exc.value == _TIMEOUT:
                    continue
                self._count_error(-1, exc)
                if self._stop.wait(1.0):
                    break
                continue
            g = self._by_handle.get(_hkey(data.device))
            if g is not None:
                with self._lock:
                    g.xid_last = int(data.eventData)
                    if g.xid_last == 79:  # fallen off the bus
                        g.lost = True
        try:
            nv.nvmlEventSetFree(self._evset)
        except nv.NVMLError:
            pass

    # ------------------------------------------------------------ polling
    def _count_error(self, index: int, exc: Exception) -> None:
        value = getattr(exc, "value", None)
        kind = {
            _NOT_SUPPORTED: "not_supported",
            _GPU_IS_LOST: "gpu_lost",
            _NOT_FOUND: "not_found",
            _GPU_NOT_FOUND: "not_found",
            _TIMEOUT: "timeout",
            _NO_PERMISSION: "no_permission",
        }.get(value, "other")
        with self._lock:
            self.errors_[(index, kind)] = self.errors_.get((index, kind), 0) + 1

    def _poll_gpu(self, g: GPUInfo, slow: bool) -> dict[str, float]:
        nv = self.nvml
        if g.xid_register:
            self._xid_register_one(g)
        out: dict[str, float] = {}
        probes = list(FAST_METRICS.items()) + (list(SLOW_METRICS.items()) if slow else [])
        for name, probe in probes:
            if name in g.unsupported:
                continue
            try:
                vals = probe(nv, g.handle)
            except nv.NVMLError as exc:
                self._count_error(g.index, exc)
                if exc.value in (_NOT_SUPPORTED, _FUNCTION_NOT_FOUND):
                    g.unsupported.add(name)
                elif exc.value == _GPU_IS_LOST:
                    g.lost = True
                    return out
                elif exc.value in (_NOT_FOUND, _GPU_NOT_FOUND):
                    g.absent = True
                    return out
                continue
            for k, v in vals.items():
                out[k] = float(v)
            if slow and name in SLOW_METRICS:
                g.slow.update({k: float(v) for k, v in vals.items()})
        return out

    def poll(self) -> list[dict[str, Any]]:
        """Read every GPU once and return one row per GPU (canonical column names).

        Metrics that are unsupported, failed or timed out are absent from a
        row's keys (missing). Slow metrics are re-read every
        ``slow_interval`` seconds and repeated in between.
        """
        if not self._started:
            self.start()
        now = self.clock() if self.clock is not None else time.time()
        slow = now - self._last_slow >= self.slow_interval
        if slow:
            self._last_slow = now
        futures: dict[int, Future] = {}
        stuck: set[int] = set()
        for g, w in zip(self.gpus_, self._workers):
            if g.pending is not None and g.pending.done():
                self._apply_identity(g, g.pending)  # a hung identification finally returned
                # XIDs were registered at start without it: its next poll (on its worker) registers it
                g.xid_register = g.handle is not None and getattr(self, "_by_handle", None) is not None
            if g.pending is not None:
                stuck.add(g.index)
                continue
            if g.lost or g.absent or g.handle is None:
                continue
            if w.busy is not None and not w.busy.done():
                stuck.add(g.index)  # still inside a hung call from an earlier poll
                continue
            futures[g.index] = w.submit(lambda g=g, s=slow: self._poll_gpu(g, s))
        if futures:
            wait_futures(list(futures.values()), timeout=self.timeout)
        rows = []
        for g in self.gpus_:
            row: dict[str, Any] = {
                "device": g.uuid,
                "timestamp": now,
                "host": self.host,
                "model": g.name,
                "uuid": g.uuid,
                "gpu": g.index,
                "pci_bus_id": g.pci_bus_id,
            }
            fut = futures.get(g.index)
            if fut is not None and fut.done():
                try:
                    vals = fut.result()
                except Exception as exc:  # noqa: BLE001 - a bug in a probe must not stop the agent
                    self._count_error(g.index, exc)
                    vals = {}
                row.update(vals)
                for k, v in g.slow.items():
                    row.setdefault(k, v)
                if not g.lost and not g.absent:
                    row["xid_last"] = float(g.xid_last)
                    row["device_lost"] = 0.0
            elif fut is not None or g.index in stuck:
                with self._lock:
                    self.timeouts_ += 1
                self._count_error(g.index, _Timeout())
            if g.lost:
                row["device_lost"] = 1.0
                row["xid_last"] = float(g.xid_last)
            row["present"] = not g.absent
            row["stalled"] = g.index in stuck or (fut is not None and not fut.done())
            rows.append(row)
        return rows


class _Timeout(Exception):
    value = _TIMEOUT


_IDENTITY = ("device", "timestamp", "host", "model", "uuid", "gpu", "pci_bus_id")


def rows_to_frame(rows: list[dict[str, Any]]):
    """Collector rows as a polars DataFrame in the canonical counters schema.

    Every counter column is present (null where a metric was missing);
    integer-valued counters are Int64, the rest Float64. Write it with
    ``.write_parquet`` and ``degrade analyze`` / ``read_counters`` read it.
    """
    from degrade._optional import import_optional

    pl = import_optional("polars", "batch")
    ints = {"clock_event_reasons", "pcie_link_gen", "pcie_link_gen_max", "pcie_link_width",
            "pcie_link_width_max", "pcie_replay_total", "ecc_corrected_total", "ecc_uncorrected_total",
            "remapped_rows_correctable", "remapped_rows_uncorrectable", "remap_pending", "remap_failure",
            "xid_last", "nvlink_crc_errors_total", "nvlink_replay_errors_total",
            "nvlink_recovery_errors_total", "device_lost"}
    schema = {"device": pl.String, "timestamp": pl.Float64, "host": pl.String, "model": pl.String,
              "uuid": pl.String, "gpu": pl.Int64, "pci_bus_id": pl.String}
    schema.update({c: (pl.Int64 if c in ints else pl.Float64) for c in COUNTER_COLUMNS})
    data = {
        c: [None if (v := r.get(c)) is None or (isinstance(v, float) and math.isnan(v))
            else (int(v) if schema[c] == pl.Int64 else v) for r in rows]
        for c in schema
    }
    return pl.DataFrame(data, schema=schema)
