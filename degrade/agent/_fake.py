"""A fake NVML with pynvml's function interface, replaying simulated counters.

:class:`FakeNVML` answers the subset of nvidia-ml-py calls the collector
makes, from a (ticks × GPUs) table of canonical counters — normally one host
of ``degrade.simulate.simulate(load_scenario(name)).counters``. It raises
pynvml's own exception classes with NVML's return codes, so the collector
runs the same code on it as on the driver. Failures are injectable: a call
that is not supported, a GPU lost or removed mid-run, no driver at all, an
old driver without the clock-event-reasons call, and a call that hangs.

The clock is simulated: :meth:`time` is the timestamp of the current tick
and :meth:`advance` moves to the next one, so an agent can replay an hour
of telemetry in a second.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

from degrade.errors import InputError

from ._collector import COUNTER_COLUMNS

__all__ = ["FakeNVML"]

_VALUE_COLUMNS = tuple(c for c in COUNTER_COLUMNS if c not in ("device_lost",))


class _Handle:
    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"<fake nvmlDevice {self.index}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Handle) and other.index == self.index

    def __hash__(self) -> int:
        return hash(("fake-nvml-handle", self.index))


class FakeNVML:
    """Replay canonical counters through pynvml's function interface.

    Parameters
    ----------
    values
        Column name -> array of shape (T, G): T ticks, G GPUs; NaN where a
        sample is missing. A column that is absent or all-NaN for a GPU
        makes its NVML call raise ``NotSupported`` for that GPU.
    timestamps
        (T,) epoch seconds of the ticks (default: 1 s apart from 1.7e9).
    uuids, names, pci_bus_ids
        Identity per GPU (defaults are generated; ``names`` is the model).

    Examples
    --------
    >>> fake = FakeNVML.from_arrays({"sm_clock_mhz": [[1980.0], [1410.0]]})
    >>> fake.nvmlInit(); h = fake.nvmlDeviceGetHandleByIndex(0)
    >>> fake.nvmlDeviceGetClockInfo(h, fake.NVML_CLOCK_SM)
    1980
    >>> fake.advance(); fake.nvmlDeviceGetClockInfo(h, fake.NVML_CLOCK_SM)
    1410
    """

    def __init__(
        self,
        values: Mapping[str, Any],
        *,
        timestamps: Sequence[float] | None = None,
        uuids: Sequence[str] | None = None,
        names: Sequence[str] | None = None,
        pci_bus_ids: Sequence[str] | None = None,
    ) -> None:
        import pynvml  # constants and exception classes are the real ones

        self._pynvml = pynvml
        cols: dict[str, np.ndarray] = {}
        shape = None
        for k, v in values.items():
            if k not in COUNTER_COLUMNS:
                raise InputError(f"FakeNVML: unknown counter column {k!r}; expected one of docs/schema.md")
            a = np.asarray(v, dtype=np.float64)
            if a.ndim != 2 or (shape is not None and a.shape != shape):
                raise InputError(f"FakeNVML: column {k!r} has shape {a.shape}; expected (ticks, gpus) like the others")
            shape = a.shape
            cols[k] = a
        if shape is None or shape[0] == 0 or shape[1] == 0:
            raise InputError("FakeNVML: needs at least one counter column with one tick and one GPU")
        self.n_ticks, self.n_gpus = shape
        self._cols = cols
        self._supported = {k: ~np.all(np.isnan(a), axis=0) for k, a in cols.items()}
        ts = np.arange(self.n_ticks, dtype=np.float64) + 1.7e9 if timestamps is None else np.asarray(timestamps, np.float64)
        if ts.shape != (self.n_ticks,):
            raise InputError(f"FakeNVML: timestamps has shape {ts.shape}; expected ({self.n_ticks},)")
        self._ts = ts
        G = self.n_gpus
        self.uuids = list(uuids) if uuids is not None else [f"GPU-fa4e0000-0000-4000-8000-{i:012x}" for i in range(G)]
        self.names = list(names) if names is not None else ["NVIDIA H100 80GB HBM3"] * G
        self.pci_bus_ids = list(pci_bus_ids) if pci_bus_ids is not None else [f"00000000:{0x18 + 0x10 * i:02X}:00.0" for i in range(G)]
        for what, seq in (("uuids", self.uuids), ("names", self.names), ("pci_bus_ids", self.pci_bus_ids)):
            if len(seq) != G:
                raise InputError(f"FakeNVML: {what} has {len(seq)} entries; expected one per GPU ({G})")
        # a GPU whose data stops for good after XID 79 / device_lost is lost from then on
        self._lost_at = np.full(G, np.iinfo(np.int64).max, dtype=np.int64)
        present = np.zeros((self.n_ticks, G), dtype=bool)
        for a in cols.values():
            present |= ~np.isnan(a)
        xid = cols.get("xid_last")
        lostcol = values.get("device_lost")
        for g in range(G):
            rows = np.flatnonzero(present[:, g])
            last = rows[-1] if rows.size else -1
            fatal = (xid is not None and last >= 0 and xid[last, g] == 79) or (
                lostcol is not None and np.nanmax(np.asarray(lostcol, np.float64)[:, g], initial=0) >= 1
            )
            if fatal and last < self.n_ticks - 1:
                self._lost_at[g] = last + 1
        self._xid_events: list[tuple[int, int, int]] = []  # (tick, gpu, xid), sorted by tick
        if xid is not None:
            for g in range(G):
                prev = 0.0
                for t in range(self.n_ticks):
                    v = xid[t, g]
                    if not math.isnan(v):
                        if v != 0 and v != prev:
                            self._xid_events.append((t, g, int(v)))
                        prev = v
            self._xid_events.sort()
        self.tick = 0
        self.loop = False  # replay again from the start (with time moving on) instead of stopping
        self._offset = 0.0
        self._next_event = 0
        self._initialised = False
        self._no_driver = False
        self._old_driver = False
        self._not_supported: set[tuple[str, int | None]] = set()
        self._removed: dict[int, int] = {}
        self._hangs: list[tuple[str, int | None, float, int]] = []
        self._release = threading.Event()
        self._events: queue.Queue = queue.Queue()
        self._registered: set[int] = set()
        self.calls = 0

    # ------------------------------------------------------------ builders
    @classmethod
    def from_arrays(cls, values: Mapping[str, Any], *, model: str = "NVIDIA H100 80GB HBM3", **kw) -> FakeNVML:
        """Build from a dict of (T, G) arrays, every GPU of one ``model``."""
        first = np.asarray(next(iter(values.values())))
        G = first.shape[1] if first.ndim == 2 else 0
        return cls(values, names=[model] * G, **kw)

    @classmethod
    def from_counters(cls, counters, host: str | None = None) -> FakeNVML:
        """Build from a canonical counters frame (polars), for one ``host``.

        GPUs are ordered by the ``gpu`` column when present, else by device
        id; ticks are the distinct timestamps of that host.
        """
        pl = _polars()
        df = counters if isinstance(counters, pl.DataFrame) else pl.DataFrame(counters)
        for need in ("device", "timestamp"):
            if need not in df.columns:
                raise InputError(f"FakeNVML.from_counters: column {need!r} is missing; expected canonical counters")
        if "host" in df.columns:
            hosts = df.get_column("host").unique(maintain_order=True).to_list()
            if host is None:
                host = sorted(h for h in hosts if h is not None)[0]
            elif host not in hosts:
                raise InputError(f"FakeNVML.from_counters: host {host!r} not in the counters; hosts: {sorted(map(str, hosts))[:10]}")
            df = df.filter(pl.col("host") == host)
        if df.height == 0:
            raise InputError("FakeNVML.from_counters: no counter rows to replay")
        ident = df.group_by("device", maintain_order=True).first()
        if "gpu" in ident.columns:
            ident = ident.sort(["gpu", "device"])
        else:
            ident = ident.sort("device")
        devices = ident.get_column("device").to_list()
        gidx = {d: i for i, d in enumerate(devices)}
        ts = np.unique(df.get_column("timestamp").cast(pl.Float64).to_numpy())
        ti = np.searchsorted(ts, df.get_column("timestamp").cast(pl.Float64).to_numpy())
        gi = np.array([gidx[d] for d in df.get_column("device").to_list()], dtype=np.int64)
        values = {}
        for c in COUNTER_COLUMNS:
            if c in df.columns:
                a = np.full((ts.size, len(devices)), np.nan)
                a[ti, gi] = df.get_column(c).cast(pl.Float64).fill_null(float("nan")).to_numpy()
                values[c] = a

        def ident_col(name, default):
            if name in ident.columns:
                return [default(i) if v is None else str(v) for i, v in enumerate(ident.get_column(name).to_list())]
            return [default(i) for i in range(len(devices))]

        fake = cls(
            values,
            timestamps=ts,
            uuids=ident_col("uuid", lambda i: f"GPU-fa4e0000-0000-4000-8000-{i:012x}"),
            names=ident_col("model", lambda i: "NVIDIA H100 80GB HBM3"),
            pci_bus_ids=ident_col("pci_bus_id", lambda i: f"00000000:{0x18 + 0x10 * i:02X}:00.0"),
        )
        fake.host = host
        fake.devices = devices
        return fake

    @classmethod
    def from_scenario(cls, scenario: str, *, seed: int | None = None, host: str | None = None) -> FakeNVML:
        """Simulate ``scenario`` (a name or path, see docs/simulator.md) and replay one host."""
        from degrade.simulate import load_scenario, simulate

        res = simulate(load_scenario(scenario), seed=seed)
        fake = cls.from_counters(res.counters, host=host)
        fake.truth = res.truth
        return fake

    # ------------------------------------------------------------ simulated clock
    def time(self) -> float:
        """Timestamp of the current tick (the collector's clock in fake mode)."""
        return float(self._ts[self.tick]) + self._offset

    @property
    def done(self) -> bool:
        return not self.loop and self.tick >= self.n_ticks - 1

    def advance(self, n: int = 1) -> None:
        """Move ``n`` ticks forward (not past the last) and fire the XID events on the way.

        With ``loop = True`` the replay starts over after the last tick, its
        clock moving on by the span of the telemetry (soak tests, demos).
        """
        if self.loop and self.tick + n >= self.n_ticks:
            step = float(np.median(np.diff(self._ts))) if self.n_ticks > 1 else 1.0
            self._offset += float(self._ts[-1] - self._ts[0]) + step
            n -= self.n_ticks - self.tick
            self.tick = 0
            self._next_event = 0
            self.advance(n)
            return
        self.tick = min(self.tick + n, self.n_ticks - 1)
        while self._next_event < len(self._xid_events) and self._xid_events[self._next_event][0] <= self.tick:
            _, g, x = self._xid_events[self._next_event]
            self._next_event += 1
            if g in self._registered:
                self._events.put((g, x))

    # ------------------------------------------------------------ fault injection
    def inject_no_driver(self) -> None:
        """Make ``nvmlInit`` fail as on a machine without the NVIDIA driver."""
        self._no_driver = True

    def inject_old_driver(self) -> None:
        """Drop ``nvmlDeviceGetCurrentClocksEventReasons`` (drivers before r535)."""
        self._old_driver = True

    def inject_not_supported(self, call: str, gpu: int | None = None) -> None:
        """Make NVML function ``call`` raise NotSupported (for ``gpu``, or every GPU)."""
        self._not_supported.add((call, gpu))

    def inject_lost(self, gpu: int, at_tick: int | None = None) -> None:
        """The GPU falls off the bus at ``at_tick`` (default: now): XID 79, then GPU_IS_LOST."""
        t = self.tick if at_tick is None else at_tick
        self._lost_at[gpu] = min(self._lost_at[gpu], t)
        self._xid_events.append((t, gpu, 79))
        self._xid_events[self._next_event:] = sorted(self._xid_events[self._next_event:])

    def inject_removed(self, gpu: int, at_tick: int | None = None) -> None:
        """The GPU disappears (hot-removed, or gone at the next restart): NOT_FOUND, fewer devices."""
        self._removed[gpu] = self.tick if at_tick is None else at_tick

    def inject_hang(self, call: str, gpu: int | None = None, seconds: float = math.inf, at_tick: int = 0) -> None:
        """Make ``call`` block for ``seconds`` (or until :meth:`release`) from ``at_tick`` on.

        Any call can hang, ``nvmlInit``, ``nvmlDeviceGetCount`` and the
        identification calls of start-up (handle, UUID, name, PCI info)
        included; the block is a real ``threading.Event.wait``.
        """
        self._release.clear()
        self._hangs.append((call, gpu, seconds, at_tick))

    def release(self) -> None:
        """Unblock every hung call and stop hanging."""
        self._hangs.clear()
        self._release.set()

    # ------------------------------------------------------------ pynvml interface
    def __getattr__(self, name: str):
        # constants (NVML_*, nvmlEventType*) and exception classes (NVMLError*) are pynvml's own
        if name.startswith(("NVML", "nvmlEventType", "nvmlClocksEventReason", "nvmlClocksThrottleReason")):
            return getattr(self.__dict__["_pynvml"], name)
        raise AttributeError(name)

    def _err(self, code: int):
        return self._pynvml.NVMLError(code)

    def _hang(self, call: str, g: int | None) -> None:
        # a real blocking wait (Event.wait), as a call stuck in the driver blocks its thread
        for c, hg, seconds, at in list(self._hangs):
            if c == call and (hg is None or g is None or hg == g) and self.tick >= at:
                self._release.wait(None if math.isinf(seconds) else seconds)

    def _enter(self, call: str, h: _Handle | None = None, index: int | None = None) -> None:
        self.calls += 1
        if not self._initialised:
            raise self._err(self._pynvml.NVML_ERROR_UNINITIALIZED)
        if h is None:
            self._hang(call, index)
            return
        g = h.index
        self._hang(call, g)
        if self._removed.get(g, np.iinfo(np.int64).max) <= self.tick:
            raise self._err(self._pynvml.NVML_ERROR_NOT_FOUND)
        if self._lost_at[g] <= self.tick:
            raise self._err(self._pynvml.NVML_ERROR_GPU_IS_LOST)
        if (call, g) in self._not_supported or (call, None) in self._not_supported:
            raise self._err(self._pynvml.NVML_ERROR_NOT_SUPPORTED)

    def _v(self, col: str, h: _Handle) -> float:
        a = self._cols.get(col)
        if a is None or not self._supported[col][h.index]:
            raise self._err(self._pynvml.NVML_ERROR_NOT_SUPPORTED)
        v = a[self.tick, h.index]
        if math.isnan(v):
            # a sample the telemetry lacks: NVML answers with a transient error
            raise self._err(self._pynvml.NVML_ERROR_UNKNOWN)
        return float(v)

    def _i(self, col: str, h: _Handle) -> int:
        return int(round(self._v(col, h)))

    def nvmlInit(self) -> None:
        self.calls += 1
        self._hang("nvmlInit", None)
        if self._no_driver:
            raise self._err(self._pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        # enumeration is fixed at init, as with the driver: removed GPUs vanish on the next init
        self._order = [g for g in range(self.n_gpus) if self._removed.get(g, np.iinfo(np.int64).max) > self.tick]
        self._initialised = True

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self._initialised = False

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self._order)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._enter("nvmlDeviceGetHandleByIndex", index=index)
        if not 0 <= index < len(self._order):
            raise self._err(self._pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(self._order[index])

    def nvmlDeviceGetUUID(self, h: _Handle) -> str:
        self._enter("nvmlDeviceGetUUID", h)
        return self.uuids[h.index]

    def nvmlDeviceGetName(self, h: _Handle) -> str:
        self._enter("nvmlDeviceGetName", h)
        return self.names[h.index]

    def nvmlDeviceGetPciInfo(self, h: _Handle):
        self._enter("nvmlDeviceGetPciInfo", h)
        return SimpleNamespace(busId=self.pci_bus_ids[h.index])

    def nvmlDeviceGetClockInfo(self, h: _Handle, clock: int) -> int:
        self._enter("nvmlDeviceGetClockInfo", h)
        return self._i("sm_clock_mhz" if clock == self._pynvml.NVML_CLOCK_SM else "mem_clock_mhz", h)

    def nvmlDeviceGetMaxClockInfo(self, h: _Handle, clock: int) -> int:
        self._enter("nvmlDeviceGetMaxClockInfo", h)
        return self._i("sm_clock_max_mhz" if clock == self._pynvml.NVML_CLOCK_SM else "mem_clock_max_mhz", h)

    def nvmlDeviceGetPowerUsage(self, h: _Handle) -> int:
        self._enter("nvmlDeviceGetPowerUsage", h)
        return int(round(self._v("power_watts", h) * 1000))  # NVML reports milliwatts

    def nvmlDeviceGetEnforcedPowerLimit(self, h: _Handle) -> int:
        self._enter("nvmlDeviceGetEnforcedPowerLimit", h)
        return int(round(self._v("power_limit_watts", h) * 1000))

    def nvmlDeviceGetTemperature(self, h: _Handle, sensor: int) -> int:
        self._enter("nvmlDeviceGetTemperature", h)
        return self._i("gpu_temp_celsius", h)

    def nvmlDeviceGetFieldValues(self, h: _Handle, field_ids: Sequence[int]):
        self._enter("nvmlDeviceGetFieldValues", h)
        out = []
        for fid in field_ids:
            if fid != self._pynvml.NVML_FI_DEV_MEMORY_TEMP:
                out.append(SimpleNamespace(fieldId=fid, nvmlReturn=self._pynvml.NVML_ERROR_NOT_SUPPORTED, value=None))
                continue
            try:
                v = self._i("memory_temp_celsius", h)
                out.append(SimpleNamespace(fieldId=fid, nvmlReturn=0, value=SimpleNamespace(uiVal=v)))
            except self._pynvml.NVMLError as exc:
                out.append(SimpleNamespace(fieldId=fid, nvmlReturn=exc.value, value=None))
        return out

    def nvmlDeviceGetUtilizationRates(self, h: _Handle):
        self._enter("nvmlDeviceGetUtilizationRates", h)
        gpu = self._v("gpu_util_ratio", h)
        a = self._cols.get("mem_util_ratio")
        mem = a[self.tick, h.index] if a is not None else math.nan
        # the telemetry may lack memory utilisation; None (never from the driver) keeps it missing
        return SimpleNamespace(gpu=int(round(gpu * 100)), memory=None if math.isnan(mem) else int(round(mem * 100)))

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: _Handle) -> int:
        self._enter("nvmlDeviceGetCurrentClocksEventReasons", h)
        if self._old_driver:
            raise self._err(self._pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        return self._i("clock_event_reasons", h)

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: _Handle) -> int:
        self._enter("nvmlDeviceGetCurrentClocksThrottleReasons", h)
        return self._i("clock_event_reasons", h)

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h: _Handle) -> int:
        self._enter("nvmlDeviceGetCurrPcieLinkGeneration", h)
        return self._i("pcie_link_gen", h)

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: _Handle) -> int:
        self._enter("nvmlDeviceGetMaxPcieLinkGeneration", h)
        return self._i("pcie_link_gen_max", h)

    def nvmlDeviceGetCurrPcieLinkWidth(self, h: _Handle) -> int:
        self._enter("nvmlDeviceGetCurrPcieLinkWidth", h)
        return self._i("pcie_link_width", h)

    def nvmlDeviceGetMaxPcieLinkWidth(self, h: _Handle) -> int:
        self._enter("nvmlDeviceGetMaxPcieLinkWidth", h)
        return self._i("pcie_link_width_max", h)

    def nvmlDeviceGetPcieReplayCounter(self, h: _Handle) -> int:
        self._enter("nvmlDeviceGetPcieReplayCounter", h)
        return self._i("pcie_replay_total", h)

    def nvmlDeviceGetTotalEccErrors(self, h: _Handle, error_type: int, counter_type: int) -> int:
        self._enter("nvmlDeviceGetTotalEccErrors", h)
        col = "ecc_corrected_total" if error_type == self._pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED else "ecc_uncorrected_total"
        return self._i(col, h)

    def nvmlDeviceGetRemappedRows(self, h: _Handle) -> tuple[int, int, int, int]:
        self._enter("nvmlDeviceGetRemappedRows", h)
        return (
            self._i("remapped_rows_correctable", h),
            self._i("remapped_rows_uncorrectable", h),
            self._i("remap_pending", h),
            self._i("remap_failure", h),
        )

    _NVLINKS = 4

    def nvmlDeviceGetNvLinkState(self, h: _Handle, link: int) -> int:
        self._enter("nvmlDeviceGetNvLinkState", h)
        if "nvlink_crc_errors_total" not in self._cols or not self._supported["nvlink_crc_errors_total"][h.index]:
            raise self._err(self._pynvml.NVML_ERROR_NOT_SUPPORTED)
        if link >= self._NVLINKS:
            raise self._err(self._pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return 1

    def nvmlDeviceGetNvLinkErrorCounter(self, h: _Handle, link: int, counter: int) -> int:
        self._enter("nvmlDeviceGetNvLinkErrorCounter", h)
        col = {
            self._pynvml.NVML_NVLINK_ERROR_DL_CRC_FLIT: "nvlink_crc_errors_total",
            self._pynvml.NVML_NVLINK_ERROR_DL_REPLAY: "nvlink_replay_errors_total",
            self._pynvml.NVML_NVLINK_ERROR_DL_RECOVERY: "nvlink_recovery_errors_total",
        }[counter]
        if col not in self._cols:
            return 0
        # the whole count sits on link 0; the collector sums over links
        return self._i(col, h) if link == 0 else 0

    def nvmlEventSetCreate(self):
        self._enter("nvmlEventSetCreate")
        return self._events

    def nvmlDeviceRegisterEvents(self, h: _Handle, event_types: int, event_set) -> None:
        self._enter("nvmlDeviceRegisterEvents", h)
        if event_types & self._pynvml.nvmlEventTypeXidCriticalError:
            self._registered.add(h.index)

    def nvmlEventSetWait_v2(self, event_set, timeoutms: int):
        self.calls += 1
        try:
            g, x = event_set.get(timeout=timeoutms / 1000.0)
        except queue.Empty:
            raise self._err(self._pynvml.NVML_ERROR_TIMEOUT) from None
        return SimpleNamespace(device=_Handle(g), eventType=self._pynvml.nvmlEventTypeXidCriticalError, eventData=x)

    nvmlEventSetWait = nvmlEventSetWait_v2

    def nvmlEventSetFree(self, event_set) -> None:
        self.calls += 1


def _polars():
    from degrade._optional import import_optional

    return import_optional("polars", "batch")
