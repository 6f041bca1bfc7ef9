"""dcgm-exporter field names and units, mapped onto the canonical counters.

dcgm-exporter publishes DCGM fields as ``DCGM_FI_DEV_<FIELD>`` (the names
used since DCGM 1.x) and, from DCGM 4.6, also under names that carry their
unit (``GPU_TEMP_CELSIUS``, ``BOARD_POWER_WATTS``, ``GPU_UTIL_RATIO``,
``PCIE_REPLAY_TOTAL``, ...). Both are accepted, with or without the
``DCGM_FI_DEV_`` / ``DCGM_FI_`` / ``dcgm_`` prefix and in any case. Values
are converted to base units: percentages become ratios 0..1, milliwatts
become watts.

``DCGM_FI_DEV_XID_ERRORS`` (and ``XID_ERROR``) is the value of the *last*
XID seen, not a count; it maps onto ``xid_last``.
"""

from __future__ import annotations

__all__ = ["DCGM_FIELDS", "metric_for", "is_long_layout", "normalise_field", "METRIC_NAME_COLUMNS"]

# normalised field name -> (canonical column, factor to base units)
DCGM_FIELDS: dict[str, tuple[str, float]] = {
    # clocks (MHz)
    "SM_CLOCK": ("sm_clock_mhz", 1.0),
    "SM_CLOCK_MHZ": ("sm_clock_mhz", 1.0),
    "MEM_CLOCK": ("mem_clock_mhz", 1.0),
    "MEM_CLOCK_MHZ": ("mem_clock_mhz", 1.0),
    "MEMORY_CLOCK_MHZ": ("mem_clock_mhz", 1.0),
    "MAX_SM_CLOCK": ("sm_clock_max_mhz", 1.0),
    "SM_CLOCK_MAX": ("sm_clock_max_mhz", 1.0),
    "SM_CLOCK_MAX_MHZ": ("sm_clock_max_mhz", 1.0),
    "MAX_MEM_CLOCK": ("mem_clock_max_mhz", 1.0),
    "MEM_CLOCK_MAX": ("mem_clock_max_mhz", 1.0),
    "MEM_CLOCK_MAX_MHZ": ("mem_clock_max_mhz", 1.0),
    # temperatures (C)
    "GPU_TEMP": ("gpu_temp_celsius", 1.0),
    "GPU_TEMP_CELSIUS": ("gpu_temp_celsius", 1.0),
    "MEMORY_TEMP": ("memory_temp_celsius", 1.0),
    "MEMORY_TEMP_CELSIUS": ("memory_temp_celsius", 1.0),
    # power (W)
    "POWER_USAGE": ("power_watts", 1.0),
    "POWER_USAGE_INSTANT": ("power_watts", 1.0),
    "BOARD_POWER_WATTS": ("power_watts", 1.0),
    "POWER_WATTS": ("power_watts", 1.0),
    "POWER_MGMT_LIMIT": ("power_limit_watts", 1.0),
    "ENFORCED_POWER_LIMIT": ("power_limit_watts", 1.0),
    "POWER_LIMIT_WATTS": ("power_limit_watts", 1.0),
    "ENFORCED_POWER_LIMIT_WATTS": ("power_limit_watts", 1.0),
    # utilisation: the old fields are percent, the 4.6 ones ratios
    "GPU_UTIL": ("gpu_util_ratio", 0.01),
    "GPU_UTIL_RATIO": ("gpu_util_ratio", 1.0),
    "MEM_COPY_UTIL": ("mem_util_ratio", 0.01),
    "MEM_UTIL_RATIO": ("mem_util_ratio", 1.0),
    "MEM_COPY_UTIL_RATIO": ("mem_util_ratio", 1.0),
    # clock-event reasons (NVML bitmask); THROTTLE is the pre-DCGM-3.3 name
    "CLOCKS_EVENT_REASONS": ("clock_event_reasons", 1.0),
    "CLOCK_THROTTLE_REASONS": ("clock_event_reasons", 1.0),
    "CLOCK_EVENT_REASONS": ("clock_event_reasons", 1.0),
    # PCIe
    "PCIE_LINK_GEN": ("pcie_link_gen", 1.0),
    "PCIE_LINK_WIDTH": ("pcie_link_width", 1.0),
    "PCIE_MAX_LINK_GEN": ("pcie_link_gen_max", 1.0),
    "PCIE_MAX_LINK_WIDTH": ("pcie_link_width_max", 1.0),
    "PCIE_LINK_GEN_MAX": ("pcie_link_gen_max", 1.0),
    "PCIE_LINK_WIDTH_MAX": ("pcie_link_width_max", 1.0),
    "PCIE_REPLAY_COUNTER": ("pcie_replay_total", 1.0),
    "PCIE_REPLAY_TOTAL": ("pcie_replay_total", 1.0),
    # ECC (aggregate counts survive reboots; volatile ones are the fallback)
    "ECC_SBE_AGG_TOTAL": ("ecc_corrected_total", 1.0),
    "ECC_DBE_AGG_TOTAL": ("ecc_uncorrected_total", 1.0),
    "ECC_SBE_VOL_TOTAL": ("ecc_corrected_total", 1.0),
    "ECC_DBE_VOL_TOTAL": ("ecc_uncorrected_total", 1.0),
    "ECC_CORRECTED_TOTAL": ("ecc_corrected_total", 1.0),
    "ECC_UNCORRECTED_TOTAL": ("ecc_uncorrected_total", 1.0),
    # row remapping
    "CORRECTABLE_REMAPPED_ROWS": ("remapped_rows_correctable", 1.0),
    "UNCORRECTABLE_REMAPPED_ROWS": ("remapped_rows_uncorrectable", 1.0),
    "REMAPPED_ROWS_CORRECTABLE": ("remapped_rows_correctable", 1.0),
    "REMAPPED_ROWS_UNCORRECTABLE": ("remapped_rows_uncorrectable", 1.0),
    "ROW_REMAP_FAILURE": ("remap_failure", 1.0),
    "ROW_REMAP_PENDING": ("remap_pending", 1.0),
    # XID: the last one seen, not a count
    "XID_ERRORS": ("xid_last", 1.0),
    "XID_ERROR": ("xid_last", 1.0),
    "XID_LAST": ("xid_last", 1.0),
    # NVLink error counters (summed over links by DCGM's *_TOTAL fields)
    "NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL": ("nvlink_crc_errors_total", 1.0),
    "NVLINK_CRC_ERRORS_TOTAL": ("nvlink_crc_errors_total", 1.0),
    "NVLINK_CRC_FLIT_ERRORS_TOTAL": ("nvlink_crc_errors_total", 1.0),
    "NVLINK_REPLAY_ERROR_COUNT_TOTAL": ("nvlink_replay_errors_total", 1.0),
    "NVLINK_REPLAY_ERRORS_TOTAL": ("nvlink_replay_errors_total", 1.0),
    "NVLINK_RECOVERY_ERROR_COUNT_TOTAL": ("nvlink_recovery_errors_total", 1.0),
    "NVLINK_RECOVERY_ERRORS_TOTAL": ("nvlink_recovery_errors_total", 1.0),
}

_PREFIXES = ("DCGM_FI_DEV_", "DCGM_FI_", "DCGM_")

#: column names that hold the metric name in a long (Prometheus) export
METRIC_NAME_COLUMNS = ("__name__", "metric_name", "metric", "name", "field")
_VALUE_COLUMNS = ("value", "metric_value", "val")


def normalise_field(name: str) -> str:
    """Upper-case field name without the DCGM prefixes.

    >>> normalise_field("dcgm_fi_dev_gpu_temp")
    'GPU_TEMP'
    """
    up = str(name).upper()
    for p in _PREFIXES:
        if up.startswith(p):
            return up[len(p):]
    return up


def metric_for(name: str) -> tuple[str, float] | None:
    """(canonical column, factor) for a dcgm-exporter field name, or None.

    Plain names without a ``DCGM`` prefix are only accepted when they are not
    already a canonical column (those pass through unchanged).

    >>> metric_for("DCGM_FI_DEV_GPU_UTIL")
    ('gpu_util_ratio', 0.01)
    >>> metric_for("GPU_UTIL_RATIO")
    ('gpu_util_ratio', 1.0)
    >>> metric_for("step_time") is None
    True
    """
    up = str(name).upper()
    key = normalise_field(name)
    hit = DCGM_FIELDS.get(key)
    if hit is None:
        return None
    if up == key and str(name) != up:
        # a lower-case plain name like "gpu_temp" is ambiguous; need DCGM spelling
        return None
    return hit


def _find(columns, candidates) -> str | None:
    lower = {str(c).lower(): str(c) for c in columns}
    for c in candidates:
        if c in lower:
            return lower[c]
    return None


def is_long_layout(columns) -> bool:
    """True for a long export: one metric-name column and one value column.

    >>> is_long_layout(["__name__", "UUID", "value", "timestamp"])
    True
    """
    return _find(columns, METRIC_NAME_COLUMNS) is not None and _find(columns, _VALUE_COLUMNS) is not None


def long_columns(columns) -> tuple[str, str]:
    """(metric-name column, value column) of a long export."""
    return _find(columns, METRIC_NAME_COLUMNS), _find(columns, _VALUE_COLUMNS)
