"""Exchange of per-rank summaries: a separate gloo group, a user callable, or none.

A summary is a plain dict (the public format a custom ``gather`` callable
receives and must return one of per rank, in rank order)::

    {"device": "node3/gpu1", "group": "stage0", "host": "node3", "rank": 5,
     "steps": [..], "compute_time": [..], "step_time": [..],
     "n": 50, "median_log_compute": -2.31, "last_compute": 0.0991}

The torch path sends the same content more cheaply: identities once through
``all_gather_object``, then a fixed-size float64 tensor per exchange with
``all_gather(async_op=True)`` on a gloo group created for degrade alone, so
the exchange never enters the NCCL stream and never blocks the step that
starts it; its result is picked up on a later step.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["make_summary", "Gathered", "LocalGather", "CallableGather", "TorchGather"]


def make_summary(
    meta: dict,
    steps: np.ndarray,
    compute: np.ndarray,
    wall: np.ndarray,
    stamp: np.ndarray,
    *,
    enabled: bool = True,
    broken: bool = False,
    judged: int = 0,
) -> dict:
    """The public summary dict of one rank for one exchange window.

    ``enabled``/``broken`` carry the rank's control state, so that all ranks
    switch the monitor on, off, or stop exchanging at the same exchange.
    ``judged`` is how many judgement rounds the rank had finished when it
    sent the summary: the smallest over the ranks is the round whose
    verdicts every rank acts on, at the same step (see ``Monitor``).
    """
    compute = np.asarray(compute, dtype=np.float64)
    ok = np.isfinite(compute) & (compute > 0)
    n = int(ok.sum())
    med = float(np.median(np.log(compute[ok]))) if n else math.nan
    last = float(compute[ok][-1]) if n else math.nan
    return {
        **meta,
        # ndarray.tolist(): plain ints/floats in one C loop (a JSON-ready summary)
        "steps": np.asarray(steps, dtype=np.int64).tolist(),
        "compute_time": np.asarray(compute, dtype=np.float64).tolist(),
        "step_time": np.asarray(wall, dtype=np.float64).tolist(),
        "timestamp": np.asarray(stamp, dtype=np.float64).tolist(),
        "enabled": bool(enabled),
        "broken": bool(broken),
        "judged": int(judged),
        "n": n,
        "median_log_compute": med,
        "last_compute": last,
    }


def check_summaries(out: Any, who: str) -> list[dict]:
    """Validate what a gather returned: one summary dict per rank."""
    if not isinstance(out, (list, tuple)) or not out:
        raise InputError(
            f"{who} must return a non-empty list of summary dicts, got {type(out).__name__}"
        )
    for i, s in enumerate(out):
        if not isinstance(s, dict) or "device" not in s or "steps" not in s:
            raise InputError(
                f"{who} returned entry {i} = {type(s).__name__} without 'device'/'steps'; "
                "expected the summary dicts degrade passed in, one per rank"
            )
        if len(s["steps"]) != len(s.get("compute_time", ())):
            raise InputError(
                f"{who} entry {i} ({s['device']!r}): 'steps' and 'compute_time' differ in length"
            )
    return list(out)


class Gathered:
    """The result of one torch all-gather: control flags at once, summaries on demand.

    ``summaries()`` returns the same dicts as the other gathers (and
    :func:`make_summary`); it is called by the judge's thread.
    """

    __slots__ = ("_metas", "_block", "enabled", "broken", "judged", "n_steps", "devices")

    def __init__(self, metas: list[dict], block: np.ndarray, cap: int, devices: list | None = None):
        # block: (world, 4, cap + 1); rows step, compute, wall, stamp; last column flags
        self._metas = metas
        self._block = block
        flags = block[:, :3, cap]
        self.enabled = flags[:, 0].astype(bool).tolist()
        self.broken = flags[:, 1].astype(bool).tolist()
        self.judged = np.where(np.isfinite(flags[:, 2]), flags[:, 2], 0).astype(np.int64).tolist()
        self.n_steps = np.isfinite(block[:, 0, :cap]).sum(axis=1).tolist()
        self.devices = devices if devices is not None else [m["device"] for m in metas]

    def summaries(self) -> list[dict]:
        out = []
        for r, meta in enumerate(self._metas):
            a, k = self._block[r], self.n_steps[r]
            out.append(
                make_summary(
                    meta,
                    a[0, :k].astype(np.int64),
                    a[1, :k],
                    a[2, :k],
                    a[3, :k],
                    enabled=self.enabled[r],
                    broken=self.broken[r],
                    judged=self.judged[r],
                )
            )
        return out


class LocalGather:
    """One process, no peers: the device is judged against its own history only."""

    kind = "local"
    world_size = 1
    rank = 0
    sync = True

    def setup(self, meta: dict) -> list[dict]:
        return [meta]

    def start(self, summary: dict) -> Any:
        return [summary]

    def poll(self, handle: Any, block: bool) -> list[dict] | None:
        return handle


class CallableGather:
    """A user-supplied ``gather(local_summary) -> list_of_summaries`` (synchronous).

    The callable runs in a daemon thread of its own and is waited for at most
    ``timeout_s`` seconds: a gather that hangs (a peer that is gone, a
    key-value store that does not answer) raises :class:`TimeoutError` in
    the monitor, which then switches itself off (or raises, ``strict=True``)
    instead of blocking the training loop for ever.
    """

    kind = "callable"
    sync = True

    def __init__(self, fn: Callable[[dict], list[dict]], timeout_s: float | None = 300.0):
        self.fn = fn
        self.timeout_s = timeout_s
        self.world_size = 0
        self.rank = 0
        self._q: queue.SimpleQueue | None = None
        self._done = threading.Event()
        self._box: list = [None, None]

    def _serve(self) -> None:
        while True:
            summary = self._q.get()
            try:
                self._box[0] = self.fn(summary)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self._box[1] = exc
            finally:
                self._done.set()

    def _call(self, summary: dict) -> Any:
        if self.timeout_s is None:
            return self.fn(summary)
        if self._q is None:
            self._q = queue.SimpleQueue()
            threading.Thread(target=self._serve, name="degrade-gather", daemon=True).start()
        self._box[0] = self._box[1] = None
        self._done.clear()
        self._q.put(summary)
        if not self._done.wait(self.timeout_s):
            raise TimeoutError(
                f"the gather callable {getattr(self.fn, '__name__', self.fn)!r} did not return "
                f"within gather_timeout={self.timeout_s} s; the monitor stops exchanging"
            )
        if self._box[1] is not None:
            raise self._box[1]
        return self._box[0]

    def setup(self, meta: dict) -> list[dict]:
        return []  # identities (and restored verdicts) travel inside every summary

    def start(self, summary: dict) -> Any:
        out = check_summaries(self._call(summary), "gather callable")
        self.world_size = len(out)
        return out

    def poll(self, handle: Any, block: bool) -> list[dict] | None:
        return handle


class TorchGather:
    """``torch.distributed`` all_gather on a dedicated gloo group.

    Every rank must construct it (``new_group`` is collective) and call
    ``start`` the same number of times, which the monitor guarantees by
    exchanging at fixed step counts.
    """

    kind = "torch"
    sync = False

    def __init__(self, capacity: int, timeout_s: float = 300.0):
        from .._optional import import_optional

        self.torch = import_optional("torch", "torch")
        self.dist = self.torch.distributed
        self.capacity = int(capacity)
        self.rank = self.dist.get_rank()
        self.world_size = self.dist.get_world_size()
        # a gloo group of our own: CPU tensors, never the NCCL communicator/stream of the job
        self.group = self.dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
        self._metas: list[dict] = []

    def setup(self, meta: dict) -> list[dict]:
        metas: list = [None] * self.world_size
        self.dist.all_gather_object(metas, meta, group=self.group)
        self._metas = [{k: v for k, v in m.items() if k != "restored"} for m in metas]
        self._devices = [m["device"] for m in self._metas]
        return metas

    def start(self, summary: dict) -> Any:
        cap = self.capacity
        steps = summary["steps"]
        if len(steps) > cap:  # the monitor never sends more; keep the invariant loud
            raise InputError(
                f"summary holds {len(steps)} steps, more than the exchange capacity {cap}"
            )
        # rows: step, compute_time, step_time, timestamp; last column: control flags
        buf = np.full((4, cap + 1), np.nan)
        k = len(steps)
        buf[0, :k] = steps
        buf[1, :k] = summary["compute_time"]
        buf[2, :k] = summary["step_time"]
        buf[3, :k] = summary["timestamp"]
        buf[0, cap] = float(summary["enabled"])
        buf[1, cap] = float(summary["broken"])
        buf[2, cap] = float(summary["judged"])
        t = self.torch.from_numpy(buf)
        # one contiguous (world, 4, cap + 1) block, gathered into per-rank views:
        # read back as one array, with no copy and no per-rank Python work
        block = self.torch.empty((self.world_size, *buf.shape), dtype=t.dtype)
        work = self.dist.all_gather(list(block.unbind(0)), t, group=self.group, async_op=True)
        return (work, block)

    def poll(self, handle: Any, block: bool) -> list[dict] | None:
        work, out = handle
        if not block and not work.is_completed():
            return None
        work.wait()
        # the flags are read now; the per-rank summary dicts are built where they
        # are judged (the judge's thread), so this costs the training thread the
        # same at 8 ranks as at 1024
        return Gathered(self._metas, out.numpy(), self.capacity, self._devices)

    def close(self) -> None:
        try:
            self.dist.destroy_process_group(self.group)
        except Exception:  # noqa: BLE001 - teardown after the job's own group may already be gone
            pass
