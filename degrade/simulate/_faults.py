"""The fault catalogue: what each fault does to timings and to counters.

Every fault acts on one device from ``onset_step`` to ``end_step`` (exclusive;
None = to the end). ``magnitude`` is the fractional slowdown of the device's
compute (0.15 = 15 % slower); for ``nvlink_crc`` it slows the job's
communication instead, and for ``row_remap`` it is 0 (no speed effect).
Counter effects are tied to the same window, so the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FAULTS", "FaultKind", "expected_status", "MIN_SLOWDOWN"]

#: below this slowdown a fault is expected to be reported as suspect, not degraded
MIN_SLOWDOWN = 0.05

# NVML clock-event-reason bits
IDLE, APP_CLOCKS, SW_POWER, HW_SLOWDOWN, SYNC_BOOST, SW_THERMAL, HW_THERMAL, HW_POWER_BRAKE = (
    0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40, 0x80,
)


@dataclass(frozen=True)
class FaultKind:
    name: str
    default_magnitude: float
    description: str
    hard_signal: bool  # does a counter show it unambiguously?
    status: str  # expected status when the slowdown is large enough


FAULTS: dict[str, FaultKind] = {
    k.name: k
    for k in (
        FaultKind("slowdown", 0.15, "persistent slowdown with no counter signature (software, driver, memory)", False, "degraded"),
        FaultKind("drift", 0.20, "slowdown growing linearly over `ramp_steps` to `magnitude`", False, "degraded"),
        FaultKind("stall", 0.15, "intermittent stalls: with probability `prob` a step takes `stall_factor` x longer", False, "degraded"),
        FaultKind("thermal", 0.15, "thermal throttling: temperature up, SW/HW thermal reason bits, SM clock down", True, "degraded"),
        FaultKind("hw_slowdown", 0.8, "HW slowdown (reason 0x8): SM clock halved", True, "degraded"),
        FaultKind("power_brake", 0.8, "HW power brake (0x8|0x80): clock halved, power drops", True, "degraded"),
        FaultKind("pcie_downgrade", 0.06, "PCIe link trained narrower (x16 -> x8) or at a lower generation", True, "degraded"),
        FaultKind("pcie_replay", 0.03, "PCIe replay counter rising (`rate` per second)", True, "suspect"),
        FaultKind("nvlink_crc", 0.08, "NVLink CRC/replay errors rising; slows the job's communication", True, "suspect"),
        FaultKind("row_remap", 0.0, "uncorrectable ECC and a pending row remap (reset needed)", True, "degraded"),
        FaultKind("xid79", 0.0, "XID 79: the GPU falls off the bus; its data stops and the job stops", True, "failed"),
        FaultKind("silent_clock", 0.12, "SM clock lower with no reason bit set", True, "degraded"),
    )
}


def expected_status(kind: str, magnitude: float, params: dict | None = None) -> str:
    """What a good detector should call this fault: degraded, failed or suspect.

    >>> expected_status("slowdown", 0.03), expected_status("slowdown", 0.2), expected_status("xid79", 0.0)
    ('suspect', 'degraded', 'failed')
    """
    if kind == "row_remap":
        return "failed" if (params or {}).get("remap_failure") else "degraded"
    k = FAULTS[kind]
    if k.status != "degraded" or kind in ("thermal", "hw_slowdown", "power_brake", "pcie_downgrade"):
        return k.status
    return "degraded" if magnitude >= MIN_SLOWDOWN else "suspect"


def timing_effect(kind: str, m: float, params: dict, rel: np.ndarray, rng: np.random.Generator):
    """Per-step compute factor (>= 1) and communication factor for steps ``rel`` after onset.

    ``rel`` holds step offsets from onset (negative before onset, -1 after
    the end); the factors are 1 outside the fault window.
    """
    on = rel >= 0
    comp = np.ones(rel.shape)
    comm = np.ones(rel.shape)
    if kind in ("slowdown", "thermal", "hw_slowdown", "power_brake", "pcie_downgrade", "pcie_replay", "silent_clock"):
        comp[on] = 1.0 + m
    elif kind == "drift":
        ramp = max(1, int(params.get("ramp_steps", 500)))
        comp[on] = 1.0 + m * np.minimum(1.0, (rel[on] + 1) / ramp)
    elif kind == "stall":
        factor = float(params.get("stall_factor", 4.0))
        prob = float(params.get("prob", m / max(factor - 1.0, 1e-9)))
        hit = on & (rng.random(rel.shape) < prob)
        comp[hit] = factor
    elif kind == "nvlink_crc":
        comm[on] = 1.0 + m
    return comp, comm


def counter_effect(kind: str, m: float, params: dict, C: dict, on: np.ndarray, dt: np.ndarray,
                   spec: dict, rng: np.random.Generator) -> None:
    """Apply the fault to one device's counter arrays ``C`` (in place) where ``on``.

    ``dt`` is the time in seconds since onset of each sample.
    """
    if not on.any():
        return
    reasons = C["clock_event_reasons"]
    if kind == "thermal":
        C["gpu_temp_celsius"][on] = np.maximum(C["gpu_temp_celsius"][on], 87.0 + rng.normal(0, 1.0, on.sum()))
        C["memory_temp_celsius"][on] = np.maximum(C["memory_temp_celsius"][on], 92.0 + rng.normal(0, 1.0, on.sum()))
        bits = SW_THERMAL | (HW_THERMAL if m > 0.2 else 0)
        reasons[on] = (reasons[on] & ~SW_POWER) | bits
        C["sm_clock_mhz"][on] = _snap(spec["sm_max"] / (1.0 + m))
        C["power_watts"][on] *= 1.0 / (1.0 + m)  # dynamic power falls with the clock
    elif kind in ("hw_slowdown", "power_brake"):
        bits = HW_SLOWDOWN | (HW_POWER_BRAKE if kind == "power_brake" else 0)
        reasons[on] = (reasons[on] & ~SW_POWER) | bits
        C["sm_clock_mhz"][on] = _snap(spec["sm_max"] / 2.0)
        C["power_watts"][on] *= 0.45 if kind == "power_brake" else 0.6
    elif kind == "silent_clock":
        C["sm_clock_mhz"][on] = _snap(spec["sm_max"] / (1.0 + m))
        C["power_watts"][on] *= 1.0 / (1.0 + m)
    elif kind == "pcie_downgrade":
        if params.get("gen"):
            C["pcie_link_gen"][on] = int(params["gen"])
        else:
            C["pcie_link_width"][on] = int(params.get("width", spec["pcie_width"] // 2))
    elif kind == "pcie_replay":
        rate = float(params.get("rate", 5.0))
        C["pcie_replay_total"] += _cum_poisson(on, dt, rate, rng)
    elif kind == "nvlink_crc":
        rate = float(params.get("rate", 20.0))
        C["nvlink_crc_errors_total"] += _cum_poisson(on, dt, rate, rng)
        C["nvlink_replay_errors_total"] += _cum_poisson(on, dt, rate / 4, rng)
    elif kind == "row_remap":
        n_unc = int(params.get("uncorrectable", 2))
        C["ecc_uncorrected_total"][on] += n_unc
        C["remapped_rows_uncorrectable"][on] += max(1, n_unc // 2)
        C["remap_pending"][on] = 1
        if params.get("remap_failure"):
            C["remap_failure"][on] = 1
    elif kind == "xid79":
        C["xid_last"][on] = 79


def _snap(mhz: float) -> float:
    return float(np.round(mhz / 15.0) * 15.0)


def _cum_poisson(on: np.ndarray, dt: np.ndarray, rate: float, rng) -> np.ndarray:
    """Cumulative count of a Poisson process of ``rate``/s, zero before onset."""
    t = np.where(on, dt, 0.0)
    gaps = np.diff(np.concatenate([[0.0], t]))
    inc = rng.poisson(np.maximum(gaps, 0.0) * rate)
    return np.cumsum(np.where(on, inc, 0)).astype(np.int64)
