"""The canonical frames: column names, types and the aliases accepted on input.

Pure data, no polars at import time: the readers turn these tables into
polars expressions.
"""

from __future__ import annotations

__all__ = [
    "TIMING_COLUMNS",
    "COUNTER_COLUMNS",
    "COUNTER_METRICS",
    "TIMING_ALIASES",
    "TIMING_MS_ALIASES",
    "LABEL_ALIASES",
    "detect_kind",
]

# dtype names are polars type names, resolved lazily by the readers
TIMING_COLUMNS: dict[str, str] = {
    "device": "String",
    "step": "Int64",
    "step_time": "Float64",
    "compute_time": "Float64",
    "job": "String",
    "host": "String",
    "rank": "Int64",
    "group": "String",
    "timestamp": "Float64",
    # pipeline parallelism (docs/cost.md): the pipeline (data-parallel replica) a stage's device
    # belongs to, and the microbatches each pipeline runs per step; optional, for the lost-time estimate
    "pipeline": "Int64",
    "microbatches": "Int64",
}

#: metric columns of the counters frame and their dtype (missing = null)
COUNTER_METRICS: dict[str, str] = {
    "sm_clock_mhz": "Float64",
    "sm_clock_max_mhz": "Float64",
    "mem_clock_mhz": "Float64",
    "mem_clock_max_mhz": "Float64",
    "power_watts": "Float64",
    "power_limit_watts": "Float64",
    "gpu_temp_celsius": "Float64",
    "memory_temp_celsius": "Float64",
    "gpu_util_ratio": "Float64",
    "mem_util_ratio": "Float64",
    "clock_event_reasons": "Int64",
    "pcie_link_gen": "Int64",
    "pcie_link_gen_max": "Int64",
    "pcie_link_width": "Int64",
    "pcie_link_width_max": "Int64",
    "pcie_replay_total": "Int64",
    "ecc_corrected_total": "Int64",
    "ecc_uncorrected_total": "Int64",
    "remapped_rows_correctable": "Int64",
    "remapped_rows_uncorrectable": "Int64",
    "remap_pending": "Int64",
    "remap_failure": "Int64",
    "xid_last": "Int64",
    "nvlink_crc_errors_total": "Int64",
    "nvlink_replay_errors_total": "Int64",
    "nvlink_recovery_errors_total": "Int64",
    "device_lost": "Int64",
    # signals of the stock dcgm-exporter counters file (docs/schema.md, "dcgm-exporter input")
    "gr_engine_active_ratio": "Float64",
    "sm_active_ratio": "Float64",
    "tensor_active_ratio": "Float64",
    "dram_active_ratio": "Float64",
    "power_violation_total": "Int64",
    "thermal_violation_total": "Int64",
    "clock_events_count": "Int64",
    "xid_errors_count": "Int64",
    "pcie_tx_bytes_per_second": "Float64",
    "pcie_rx_bytes_per_second": "Float64",
    "nvlink_tx_bytes_per_second": "Float64",
    "nvlink_rx_bytes_per_second": "Float64",
}

COUNTER_COLUMNS: dict[str, str] = {
    "device": "String",
    "timestamp": "Float64",
    "host": "String",
    "model": "String",
    "uuid": "String",
    "gpu": "Int64",
    "pci_bus_id": "String",
    "gpu_instance": "Int64",  # MIG GPU instance id (dcgm-exporter's GPU_I_ID label)
    "mig_profile": "String",  # MIG profile (GPU_I_PROFILE), e.g. "3g.40gb"
    **COUNTER_METRICS,
}

#: alias (lower case) -> canonical timing column
TIMING_ALIASES: dict[str, str] = {
    "uuid": "device",
    "gpu_uuid": "device",
    "device_id": "device",
    "device_uuid": "device",
    "worker": "device",
    "iteration": "step",
    "iter": "step",
    "global_step": "step",
    "step_idx": "step",
    "batch_idx": "step",
    "batch_time": "step_time",
    "iter_time": "step_time",
    "iteration_time": "step_time",
    "step_seconds": "step_time",
    "step_duration": "step_time",
    "wall_time": "step_time",
    "compute_seconds": "compute_time",
    "fwd_bwd_time": "compute_time",
    "gpu_time": "compute_time",
    "job_id": "job",
    "job_name": "job",
    "hostname": "host",
    "node": "host",
    "node_name": "host",
    "global_rank": "rank",
    "stage": "group",
    "peer_group": "group",
    "pp_stage": "group",
    "ts": "timestamp",
    "time": "timestamp",
    "epoch": "timestamp",
}

#: aliases whose values are milliseconds (divided by 1000 on read)
TIMING_MS_ALIASES: dict[str, str] = {
    "step_time_ms": "step_time",
    "batch_time_ms": "step_time",
    "iter_time_ms": "step_time",
    "iteration_time_ms": "step_time",
    "compute_time_ms": "compute_time",
}

#: dcgm-exporter / Prometheus labels (lower case) -> canonical counter column
LABEL_ALIASES: dict[str, str] = {
    "uuid": "uuid",
    "gpu_uuid": "uuid",
    "hostname": "host",
    "host": "host",
    "instance": "instance",
    "gpu": "gpu",
    "gpu_index": "gpu",
    "index": "gpu",
    "pci_bus_id": "pci_bus_id",
    "modelname": "model",
    "model": "model",
    "model_name": "model",
    "gpu_i_id": "gpu_instance",
    "gpu_i_profile": "mig_profile",
}

_TIMING_HINTS = ("step", "iteration", "iter", "global_step", "step_idx", "batch_idx")


def detect_kind(columns) -> str:
    """Tell ``"timings"`` from ``"counters"`` by column names alone.

    Parameters
    ----------
    columns : sequence of str
        Column names of a file or frame.

    Returns
    -------
    str
        ``"timings"`` or ``"counters"``.

    Raises
    ------
    SchemaError
        When the columns fit neither frame.

    Examples
    --------
    >>> detect_kind(["uuid", "iteration", "batch_time"])
    'timings'
    >>> detect_kind(["UUID", "Hostname", "DCGM_FI_DEV_SM_CLOCK"])
    'counters'
    """
    from ..errors import SchemaError
    from ._dcgm import is_long_layout, metric_for

    cols = [str(c) for c in columns]
    lower = {c.lower() for c in cols}
    if is_long_layout(cols):
        return "counters"
    if any(c in COUNTER_METRICS or metric_for(c) is not None for c in cols):
        return "counters"
    has_step = any(c in lower for c in _TIMING_HINTS)
    has_time = any(
        c.endswith("_time") or c.endswith("_time_ms") or TIMING_ALIASES.get(c) in ("step_time", "compute_time")
        for c in lower
    )
    if has_step and has_time:
        return "timings"
    raise SchemaError(
        f"cannot tell timings from counters by the columns {cols[:12]}; expected step timings "
        "(device, step, step_time and/or compute_time) or device counters (device, timestamp "
        "and metric columns such as sm_clock_mhz, or dcgm-exporter DCGM_FI_* fields); see docs/schema.md"
    )
