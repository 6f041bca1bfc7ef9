"""dcgm-exporter input: the field table, DCGM 4.6 names and units, stock-exporter signals, MIG, .prom."""

from __future__ import annotations

import csv
import os

import pytest

pl = pytest.importorskip("polars")

from degrade.io import COUNTER_COLUMNS, COUNTER_METRICS, read_counters  # noqa: E402
from degrade.io._dcgm import DCGM_FIELDS, FIELD_TABLE, metric_for, normalise_field  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNTERS_CSV = os.path.join(ROOT, "deploy", "dcgm-exporter", "degrade-counters.csv")

# units the table may name, and the factor each one needs to reach the canonical column's unit
_FACTOR = {"MHz": 1.0, "Hz": 1e-6, "%": 0.01, "ratio": 1.0, "W": 1.0, "C": 1.0}


# --------------------------------------------------------------------------- the table


def test_table_rows_are_well_formed():
    keys = [f.key for f in FIELD_TABLE]
    assert len(keys) == len(set(keys)), "two rows normalise to one name"
    for f in FIELD_TABLE:
        assert f.name.startswith(("DCGM_FI_DEV_", "DCGM_FI_PROF_", "DCGM_EXP_")), f.name
        assert f.column in COUNTER_METRICS, f"{f.name} fills {f.column}, not a counter column"
        assert f.agg in ("last", "sum") and f.naming in ("legacy", "4.6", "4.6.1", "exporter")
        assert f.type in ("INT64", "DOUBLE", ""), f.name
        assert (f.field_id == -1) == (f.naming == "exporter") == f.name.startswith("DCGM_EXP_")
        if f.unit in _FACTOR:
            assert f.factor == _FACTOR[f.unit], f"{f.name}: {f.unit} needs factor {_FACTOR[f.unit]}"
        else:
            assert f.factor == 1.0, f.name
        # ratios land in *_ratio columns, clocks in *_mhz, and nothing else does
        assert (f.unit in ("%", "ratio")) == f.column.endswith("_ratio"), f.name
        assert (f.unit in ("MHz", "Hz")) == f.column.endswith("_mhz"), f.name


def test_renamed_fields_keep_their_column():
    # a DCGM 4.6 rename is the same field id: it must fill the same column with the same factor
    by_id = {}
    for f in FIELD_TABLE:
        if f.field_id > 0:
            by_id.setdefault(f.field_id, set()).add((f.column, f.factor))
    assert all(len(v) == 1 for v in by_id.values()), {k: v for k, v in by_id.items() if len(v) > 1}


@pytest.mark.parametrize(
    "name, field_id, type_, column, factor",
    [
        # DCGM 4.6.0 dcgm_fields.py / dcgm_fields.cpp: field 203 is INT64 0-100 under both names
        ("DCGM_FI_DEV_GPU_UTIL", 203, "INT64", "gpu_util_ratio", 0.01),
        ("DCGM_FI_DEV_GPU_UTIL_RATIO", 203, "INT64", "gpu_util_ratio", 0.01),
        ("DCGM_FI_DEV_BOARD_POWER_RAW_WATTS", 157, "DOUBLE", "power_watts", 1.0),
        ("DCGM_FI_DEV_BOARD_POWER_LIMIT_ENFORCED_WATTS", 164, "DOUBLE", "power_limit_watts", 1.0),
        ("DCGM_FI_DEV_BOARD_POWER_LIMIT_REQUESTED_WATTS", 160, "DOUBLE", "power_limit_watts", 1.0),
        (
            "DCGM_FI_DEV_ROW_REMAP_UNCORRECTABLE_TOTAL",
            393,
            "INT64",
            "remapped_rows_uncorrectable",
            1.0,
        ),
        ("DCGM_FI_DEV_ROW_REMAP_CORRECTABLE_TOTAL", 394, "INT64", "remapped_rows_correctable", 1.0),
        ("DCGM_FI_DEV_ROW_REMAP_FAILED", 395, "INT64", "remap_failure", 1.0),
        ("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_TOTAL", 409, "INT64", "nvlink_crc_errors_total", 1.0),
        ("DCGM_FI_DEV_NVLINK_REPLAY_ERROR_TOTAL", 429, "INT64", "nvlink_replay_errors_total", 1.0),
        (
            "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_TOTAL",
            439,
            "INT64",
            "nvlink_recovery_errors_total",
            1.0,
        ),
        ("DCGM_FI_DEV_GPU_TEMP_CELSIUS", 150, "INT64", "gpu_temp_celsius", 1.0),
        ("DCGM_FI_DEV_SM_CLOCK", 100, "INT64", "sm_clock_mhz", 1.0),
        # DCGM 4.6.1 base-unit fields (go-dcgm base_unit_fields_test.go)
        ("DCGM_FI_DEV_SM_CLOCK_HERTZ", 1603, "", "sm_clock_mhz", 1e-6),
        ("DCGM_FI_DEV_MEMORY_CLOCK_HERTZ", 1604, "", "mem_clock_mhz", 1e-6),
        ("DCGM_FI_DEV_SM_MAX_CLOCK_HERTZ", 1608, "", "sm_clock_max_mhz", 1e-6),
        ("DCGM_FI_PROF_SM_ACTIVE", 1002, "DOUBLE", "sm_active_ratio", 1.0),
        ("DCGM_FI_PROF_TENSOR_UTIL_RATIO", 1004, "DOUBLE", "tensor_active_ratio", 1.0),
    ],
)
def test_upstream_facts(name, field_id, type_, column, factor):
    f = next(x for x in FIELD_TABLE if x.name == name)
    assert (f.field_id, f.type, f.column, f.factor) == (field_id, type_, column, factor)
    assert metric_for(name) == (column, factor)


def test_invented_names_are_gone():
    # names degrade once accepted that no DCGM release or dcgm-exporter ever wrote
    for bogus in (
        "SM_CLOCK_MHZ",
        "MEM_CLOCK_MAX_MHZ",
        "POWER_WATTS",
        "POWER_LIMIT_WATTS",
        "MEM_UTIL_RATIO",
        "MEM_COPY_UTIL_RATIO",
        "ECC_CORRECTED_TOTAL",
        "XID_LAST",
        "NVLINK_CRC_ERRORS_TOTAL",
        "CLOCK_EVENT_REASONS",
        "PCIE_LINK_GEN_MAX",
        "REMAPPED_ROWS_CORRECTABLE",
    ):
        assert bogus not in DCGM_FIELDS, bogus
        assert metric_for("DCGM_FI_DEV_" + bogus) is None


# --------------------------------------------------------------------------- units on read


def _frame(**cols):
    base = {"UUID": ["GPU-1"], "Hostname": ["n1"], "gpu": ["0"], "timestamp": [1.7e9]}
    return pl.DataFrame({**base, **{k: [v] for k, v in cols.items()}})


def test_gpu_util_ratio_is_percent_and_base_units_convert():
    r = read_counters(
        _frame(
            DCGM_FI_DEV_GPU_UTIL_RATIO=87,
            DCGM_FI_DEV_SM_CLOCK_HERTZ=1.98e9,
            DCGM_FI_DEV_MEMORY_CLOCK_HERTZ=2.619e9,
            DCGM_FI_DEV_BOARD_POWER_RAW_WATTS=612.5,
            DCGM_FI_DEV_ROW_REMAP_FAILED=1,
            DCGM_FI_DEV_NVLINK_REPLAY_ERROR_TOTAL=3,
        )
    ).collect()
    row = r.row(0, named=True)
    assert row["gpu_util_ratio"] == pytest.approx(0.87)
    assert row["sm_clock_mhz"] == pytest.approx(1980.0) and row["mem_clock_mhz"] == pytest.approx(
        2619.0
    )
    assert (
        row["power_watts"] == 612.5
        and row["remap_failure"] == 1
        and row["nvlink_replay_errors_total"] == 3
    )


def test_stock_exporter_signals_are_counter_columns():
    r = read_counters(
        _frame(
            DCGM_FI_PROF_GR_ENGINE_ACTIVE=0.91,
            DCGM_FI_PROF_SM_ACTIVE=0.85,
            DCGM_FI_PROF_PIPE_TENSOR_ACTIVE=0.42,
            DCGM_FI_PROF_DRAM_ACTIVE=0.33,
            DCGM_FI_DEV_POWER_VIOLATION=1234,
            DCGM_FI_DEV_THERMAL_VIOLATION=0,
            DCGM_FI_PROF_PCIE_TX_BYTES=1.5e9,
            DCGM_FI_PROF_NVLINK_RX_BYTES=2.0e11,
            DCGM_EXP_XID_ERRORS_COUNT=2,
            DCGM_EXP_CLOCK_EVENTS_COUNT=5,
        )
    ).collect()
    row = r.row(0, named=True)
    assert (
        row["gr_engine_active_ratio"],
        row["sm_active_ratio"],
        row["tensor_active_ratio"],
        row["dram_active_ratio"],
    ) == (0.91, 0.85, 0.42, 0.33)
    assert row["power_violation_total"] == 1234 and row["thermal_violation_total"] == 0
    assert row["pcie_tx_bytes_per_second"] == 1.5e9 and row["nvlink_rx_bytes_per_second"] == 2.0e11
    assert row["xid_errors_count"] == 2 and row["clock_events_count"] == 5
    assert r.schema["xid_errors_count"] == pl.Int64 and r.schema["sm_active_ratio"] == pl.Float64


def _long(rows):
    return pl.DataFrame(rows, infer_schema_length=None)


def test_long_layout_keeps_the_signals_and_sums_per_reason_series():
    lab = {"UUID": "GPU-1", "Hostname": "n1", "gpu": "0", "timestamp": 1_700_000_000_000}
    rows = [
        {**lab, "__name__": "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "value": 0.4},
        {**lab, "__name__": "DCGM_FI_PROF_SM_ACTIVE", "value": 0.8},
        {**lab, "__name__": "DCGM_FI_DEV_GPU_UTIL_RATIO", "value": 87.0},
        {**lab, "__name__": "DCGM_FI_DEV_THERMAL_VIOLATION", "value": 10.0},
        # dcgm-exporter writes one series per clock-event reason and one per XID
        {
            **lab,
            "__name__": "DCGM_EXP_CLOCK_EVENTS_COUNT",
            "clock_event": "hw_slowdown",
            "value": 3.0,
        },
        {
            **lab,
            "__name__": "DCGM_EXP_CLOCK_EVENTS_COUNT",
            "clock_event": "sw_thermal",
            "value": 2.0,
        },
        {**lab, "__name__": "DCGM_EXP_XID_ERRORS_COUNT", "xid": "79", "value": 1.0},
        {**lab, "__name__": "DCGM_EXP_XID_ERRORS_COUNT", "xid": "48", "value": 1.0},
    ]
    out = read_counters(_long(rows)).collect()
    assert out.height == 1
    r = out.row(0, named=True)
    assert r["tensor_active_ratio"] == 0.4 and r["sm_active_ratio"] == 0.8
    assert r["gpu_util_ratio"] == pytest.approx(0.87) and r["thermal_violation_total"] == 10
    assert r["clock_events_count"] == 5 and r["xid_errors_count"] == 2
    assert "clock_event" not in out.columns and "xid" not in out.columns


# --------------------------------------------------------------------------- MIG


def test_mig_instances_are_devices_of_their_own():
    t = 1_700_000_000.0
    common = {"Hostname": "n1", "modelName": "NVIDIA A100-SXM4-80GB", "timestamp": t}
    rows = [
        # a whole GPU, and two MIG instances of another GPU: dcgm-exporter gives them the parent UUID
        {
            **common,
            "__name__": "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
            "UUID": "GPU-w",
            "gpu": "0",
            "value": 0.9,
        },
        {
            **common,
            "__name__": "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
            "UUID": "GPU-m",
            "gpu": "1",
            "GPU_I_ID": "1",
            "GPU_I_PROFILE": "3g.40gb",
            "value": 0.5,
        },
        {
            **common,
            "__name__": "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
            "UUID": "GPU-m",
            "gpu": "1",
            "GPU_I_ID": "2",
            "GPU_I_PROFILE": "3g.40gb",
            "value": 0.6,
        },
    ]
    out = read_counters(_long(rows)).collect().sort("device")
    assert out["device"].to_list() == ["GPU-m/mig1", "GPU-m/mig2", "GPU-w"]
    assert out["gr_engine_active_ratio"].to_list() == [0.5, 0.6, 0.9]
    assert out["gpu_instance"].to_list() == [1, 2, None]
    assert out["model"].to_list() == ["NVIDIA A100-SXM4-80GB MIG 3g.40gb"] * 2 + [
        "NVIDIA A100-SXM4-80GB"
    ]
    # the same in a wide export
    wide = pl.DataFrame(
        {
            "UUID": ["GPU-m", "GPU-m"],
            "GPU_I_ID": ["1", "2"],
            "GPU_I_PROFILE": ["1g.10gb"] * 2,
            "modelName": ["NVIDIA A100"] * 2,
            "timestamp": [t, t],
            "DCGM_FI_DEV_GPU_UTIL": [10, 20],
        }
    )
    w = read_counters(wide).collect()
    assert w["device"].to_list() == ["GPU-m/mig1", "GPU-m/mig2"] and w.height == 2
    assert set(w["model"]) == {"NVIDIA A100 MIG 1g.10gb"}


def test_mig_instances_never_share_a_peer_group_with_whole_gpus():
    from degrade.analyze._inputs import Source
    from degrade.analyze._plan import plan_units
    from degrade.analyze._warnings import WarningLog

    t0 = 1_700_000_000.0
    rows = []
    for k in range(3):
        for dev, gi, prof in (
            ("GPU-w", None, None),
            ("GPU-m", "1", "3g.40gb"),
            ("GPU-m", "2", "3g.40gb"),
        ):
            rows.append(
                {
                    "UUID": dev,
                    "Hostname": "n1",
                    "modelName": "NVIDIA A100",
                    "GPU_I_ID": gi,
                    "GPU_I_PROFILE": prof,
                    "timestamp": t0 + k,
                    "DCGM_FI_DEV_SM_CLOCK": 1400,
                }
            )
    src = Source("counters", "<frame>", frame=pl.DataFrame(rows, infer_schema_length=None))
    units, _ = plan_units([src], WarningLog())
    meta = pl.concat([u.counter_meta for u in units if u.counter_meta is not None])
    group = dict(zip(meta["device"], meta["group"]))
    assert group["GPU-m/mig1"] == group["GPU-m/mig2"] != group["GPU-w"]


# --------------------------------------------------------------------------- the counters file we ship


def _counters_file_fields():
    out = []
    with open(COUNTERS_CSV, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            cells = [c.strip() for c in next(csv.reader([line]))]
            assert len(cells) >= 3, f"not 'field, type, help': {line!r}"
            assert cells[1] in ("gauge", "counter"), line
            assert cells[2], line
            out.append(cells[0])
    return out


def test_shipped_counters_file_has_exactly_what_degrade_reads():
    from degrade.verdict.engine import COUNTER_COLUMNS as ENGINE_COLUMNS

    fields = _counters_file_fields()
    assert len(fields) == len(set(fields))
    table = {f.name: f for f in FIELD_TABLE}
    unknown = [f for f in fields if f not in table]
    assert not unknown, f"fields degrade does not read: {unknown}"
    columns = {table[f].column for f in fields}
    # every counter the verdict engine reads (device_lost is the agent's own) ...
    assert set(ENGINE_COLUMNS) - {"device_lost"} <= columns
    # ... and the stock exporter's signals
    assert {
        "gr_engine_active_ratio",
        "sm_active_ratio",
        "tensor_active_ratio",
        "dram_active_ratio",
        "power_violation_total",
        "thermal_violation_total",
        "clock_events_count",
        "xid_errors_count",
        "pcie_tx_bytes_per_second",
        "nvlink_tx_bytes_per_second",
    } <= columns
    # one field per column: a second name for the same column would be scraped for nothing
    assert len(columns) == len(fields)


def test_canonical_columns_are_documented():
    with open(os.path.join(ROOT, "docs", "schema.md"), encoding="utf-8") as fh:
        doc = fh.read()
    for c in list(COUNTER_METRICS) + ["gpu_instance", "mig_profile"]:
        assert f"`{c}`" in doc or c in doc, c
    for f in FIELD_TABLE:
        assert f"`{normalise_field(f.name)}`" in doc, f"docs/schema.md does not list {f.name}"
    assert "gpu_instance" in COUNTER_COLUMNS


# --------------------------------------------------------------------------- saved scrapes


def _scrape(path, t, clocks):
    lines = [
        "# HELP DCGM_FI_DEV_SM_CLOCK SM clock frequency (in MHz).",
        "# TYPE DCGM_FI_DEV_SM_CLOCK gauge",
    ]
    for g, clk in enumerate(clocks):
        lines.append(
            f'DCGM_FI_DEV_SM_CLOCK{{gpu="{g}",UUID="GPU-{g}",device="nvidia{g}",'
            f'modelName="NVIDIA H100 80GB HBM3",Hostname="n1"}} {clk}'
        )
    lines.append("# TYPE DCGM_FI_DEV_GPU_UTIL_RATIO gauge")
    for g in range(len(clocks)):
        lines.append(f'DCGM_FI_DEV_GPU_UTIL_RATIO{{gpu="{g}",UUID="GPU-{g}",Hostname="n1"}} 97')
    (path / f"n1-{t}.prom").write_text("\n".join(lines) + "\n")


def test_a_directory_of_scrapes_reads_and_analyses(tmp_path):
    from degrade.analyze import analyze

    for k in range(3):
        _scrape(tmp_path, 1_767_225_600 + 10 * k, [1980, 1980, 1100 + k])
    (tmp_path / "notes.txt").write_text("not data")
    out = read_counters(str(tmp_path)).collect()
    assert out.height == 9 and sorted(set(out["timestamp"])) == [
        1_767_225_600.0,
        1_767_225_610.0,
        1_767_225_620.0,
    ]
    assert out.filter(pl.col("device") == "GPU-2")["sm_clock_mhz"].to_list() == [
        1100.0,
        1101.0,
        1102.0,
    ]
    assert out["gpu_util_ratio"].max() == pytest.approx(0.97)
    res = analyze(str(tmp_path))  # a directory of scrapes is one counters source
    assert sorted(v.device for v in res.verdicts) == ["GPU-0", "GPU-1", "GPU-2"]
    assert [s["kind"] for s in res.inputs] == ["counters"]
    one = analyze(str(tmp_path / "n1-1767225600.prom"))  # one scrape named on its own
    assert len(one.verdicts) == 3


def test_a_bad_scrape_names_the_file(tmp_path):
    from degrade.errors import DegradeError

    (tmp_path / "bad.prom").write_text('DCGM_FI_DEV_SM_CLOCK{gpu="0" 1980\n')
    with pytest.raises(DegradeError, match=r"bad\.prom"):
        read_counters(str(tmp_path / "bad.prom"))


def test_dcgm_blank_sentinels_are_missing():
    # dcgm-exporter prints DCGM_INT64_BLANK (and its neighbours) and DCGM_FP64_BLANK for unsupported fields
    r = (
        read_counters(
            _frame(
                DCGM_FI_DEV_MEMORY_TEMP=9223372036854775794,
                DCGM_FI_DEV_GPU_TEMP=61,
                DCGM_FI_DEV_POWER_USAGE=140737488355328.0,
                DCGM_FI_DEV_SM_CLOCK_HERTZ=9223372036854775792,
                DCGM_FI_DEV_POWER_VIOLATION=10**15,
            )
        )
        .collect()
        .row(0, named=True)
    )
    assert r["memory_temp_celsius"] is None and r["gpu_temp_celsius"] == 61.0
    assert r["power_watts"] is None and r["sm_clock_mhz"] is None
    assert r["power_violation_total"] == 10**15  # a large real counter is kept
    lab = {"UUID": "GPU-1", "timestamp": 1.7e9}
    out = read_counters(
        _long(
            [
                {**lab, "__name__": "DCGM_FI_DEV_GPU_UTIL", "value": 9.223372036854776e18},
                {**lab, "__name__": "DCGM_FI_DEV_SM_CLOCK", "value": 1980.0},
            ]
        )
    ).collect()
    assert out["gpu_util_ratio"].to_list() == [None] and out["sm_clock_mhz"].to_list() == [1980.0]


def test_a_scrape_without_dcgm_metrics_holds_no_counters(tmp_path):
    from degrade.errors import SchemaError

    # e.g. degrade's own textfile output, or an exporter's process metrics only
    (tmp_path / "degrade.prom").write_text(
        "# TYPE degrade_device_status gauge\n"
        'degrade_device_status{UUID="GPU-1",status="healthy"} 1\n'
        "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3.5\n"
    )
    with pytest.raises(SchemaError, match="no counter rows"):
        read_counters(str(tmp_path / "degrade.prom")).collect()


def test_cli_analyses_one_scrape_and_a_directory(tmp_path, capsys):
    # `degrade analyze x.prom` once failed with InvalidFooter (read as Arrow IPC)
    import json

    from degrade.cli import main

    for k in range(3):
        _scrape(tmp_path, 1_767_225_600 + 10 * k, [1980, 1980, 1100])
    one = tmp_path / "n1-1767225600.prom"
    assert main(["analyze", str(one), "--format", "json", "--no-progress"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sorted(v["device"] for v in doc["verdicts"]) == ["GPU-0", "GPU-1", "GPU-2"]
    assert main(["analyze", str(tmp_path), "--format", "json", "--no-progress"]) == 0
    assert len(json.loads(capsys.readouterr().out)["verdicts"]) == 3
    assert main(["analyze", str(one), "--since", "1h"]) == 2
    assert "only for a prometheus+http://HOST:PORT input" in capsys.readouterr().err


def test_whole_gpus_with_empty_mig_labels_stay_whole():
    # dcgm-exporter writes GPU_I_ID="" and GPU_I_PROFILE="" on whole GPUs (gpu_collector.go toMetric)
    t = 1_700_000_000.0
    common = {
        "Hostname": "n1",
        "modelName": "NVIDIA H100",
        "timestamp": t,
        "__name__": "DCGM_FI_DEV_SM_CLOCK",
    }
    rows = [
        {
            **common,
            "UUID": "GPU-w",
            "gpu": "0",
            "GPU_I_ID": "",
            "GPU_I_PROFILE": "",
            "value": 1980.0,
        },
        {
            **common,
            "UUID": "GPU-m",
            "gpu": "1",
            "GPU_I_ID": "3",
            "GPU_I_PROFILE": "1g.10gb",
            "value": 1410.0,
        },
    ]
    out = read_counters(_long(rows)).collect().sort("device")
    assert out["device"].to_list() == ["GPU-m/mig3", "GPU-w"]
    assert out["model"].to_list() == ["NVIDIA H100 MIG 1g.10gb", "NVIDIA H100"]
    assert out["gpu_instance"].to_list() == [3, None]
