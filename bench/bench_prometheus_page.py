"""One Prometheus ``query_range`` page into canonical counter rows: time and memory.

Builds a synthetic ``query_range`` answer (dcgm-exporter metric names and
labels, N series x 500 points), then times degrade's conversion
(``degrade.io._prometheus._page_frame`` + the long-layout reader) against a
peer: the naive conversion, one Python dict per sample into
``polars.DataFrame(rows)``, then the same reader. Peak RSS growth of each is
measured in a fresh subprocess.

    python bench/bench_prometheus_page.py            # 250,000 and 500,000 samples

Figures: docs/analyze.md, "Prometheus as a source".
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

NAMES = ["DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_CLOCKS_EVENT_REASONS", "DCGM_FI_DEV_MAX_SM_CLOCK",
         "DCGM_FI_PROF_SM_ACTIVE", "DCGM_FI_DEV_PCIE_LINK_WIDTH", "DCGM_FI_DEV_PCIE_LINK_GEN", "DCGM_FI_DEV_XID_ERRORS",
         "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_GPU_TEMP"]


def answer(n_series: int, points: int = 500) -> bytes:
    res = [{"metric": {"__name__": NAMES[i % 10], "UUID": f"GPU-{i // 10}", "gpu": str(i // 10 % 8),
                       "Hostname": f"n{i // 80}", "modelName": "NVIDIA H100 80GB HBM3",
                       "pci_bus_id": "00000000:18:00.0", "device": "nvidia0", "instance": "10.0.0.1:9400",
                       "job": "dcgm-exporter"},
            "values": [[1.7e9 + 15 * k, "1980"] for k in range(points)]} for i in range(n_series)]
    return json.dumps({"status": "success", "data": {"resultType": "matrix", "result": res}}).encode()


def one(way: str, n_series: int) -> None:
    import polars as pl

    from degrade.io import read_counters
    from degrade.io._prometheus import _page_frame

    raw = answer(n_series)
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    result = json.loads(raw)["data"]["result"]
    if way == "degrade":
        df = _page_frame(result)
    else:
        df = pl.DataFrame([{**s["metric"], "timestamp": float(v[0]), "value": float(v[1])}
                           for s in result for v in s["values"]])
    del result
    out = read_counters(df).collect()
    dt = time.perf_counter() - t
    grow = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - r0) / 1024
    print(json.dumps({"way": way, "samples": n_series * 500, "rows": out.height, "seconds": dt, "rss_mb": grow}))


def main() -> None:
    if len(sys.argv) == 3:
        one(sys.argv[1], int(sys.argv[2]))
        return
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    print(f"{'samples':>8} {'degrade s':>10} {'naive s':>8} {'ratio':>6} {'degrade MB':>11} {'naive MB':>9}")
    for n in (500, 1000):
        got = {}
        for way in ("degrade", "naive"):
            line = subprocess.run([sys.executable, __file__, way, str(n)], capture_output=True, text=True,
                                  env=env, check=True, timeout=600).stdout.strip().splitlines()[-1]
            got[way] = json.loads(line)
        d, p = got["degrade"], got["naive"]
        print(f"{d['samples']:>8} {d['seconds']:>10.2f} {p['seconds']:>8.2f} {p['seconds'] / d['seconds']:>6.2f} "
              f"{d['rss_mb']:>11.0f} {p['rss_mb']:>9.0f}")


if __name__ == "__main__":
    main()
