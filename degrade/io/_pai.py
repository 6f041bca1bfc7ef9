"""Reader for the Alibaba PAI mini-batch trace (cluster-trace-gpu-v2020/mini-batch-time).

Data: "Alibaba PAI cluster trace (cluster-trace-gpu-v2020)", from the AntMan
paper (Xiao et al., "AntMan: Dynamic Scaling on GPU Clusters for Deep
Learning", USENIX OSDI 2020), licensed CC BY 4.0. Keep this attribution with
anything derived from it.

Column handling (``job_N_norm.csv``: ``,worker,gpu,time,batch_time_norm``):

- ``batch_time_norm`` -> ``compute_time``: the worker's own mini-batch time,
  **normalised to 0..1000 by the publishers: relative units, not seconds**.
  Ratios between workers and over time are meaningful; absolute values are
  not. Zero values become missing (a time cannot be zero).
- ``time`` (seconds from the job's start, logged every ~10 s) -> ``timestamp``
  (relative seconds, not epoch) and ``step`` (index of the logging tick: the
  dense rank of ``time`` within the job).
- ``worker`` -> ``rank``; ``device`` = ``pai-job<N>/worker<w>``; ``job`` =
  ``pai-job<N>``; ``group`` = ``workers``.
- ``gpu`` -> ``gpu_share_pct``: the share of one GPU the worker requested
  (workers are co-located, so part of their variation is not hardware).
- Duplicate (worker, time) rows keep the first; their count is returned.
"""

from __future__ import annotations

import os
import re

from ..errors import SchemaError

__all__ = ["read_pai_minibatch"]

_NAME = re.compile(r"job_(\d+)_norm\.csv$")
_EXPECTED = ("worker", "gpu", "time", "batch_time_norm")


def read_pai_minibatch(path) -> tuple:
    """Read one ``job_N_norm.csv`` (or a directory of them) into canonical timings.

    Parameters
    ----------
    path : str or path
        A ``job_N_norm.csv`` file or the directory holding them.

    Returns
    -------
    (polars.DataFrame, dict)
        Canonical timings and ``{"rows": ..., "duplicates": ..., "zero_times": ...}``.
    """
    from .._optional import import_optional

    pl = import_optional("polars", "batch")
    path = os.fspath(path)
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if _NAME.search(f))
        if not files:
            raise SchemaError(f"{path}: no job_N_norm.csv files (Alibaba PAI mini-batch trace)")
    else:
        files = [path]
    frames, stats = [], {"rows": 0, "duplicates": 0, "zero_times": 0}
    for f in files:
        m = _NAME.search(os.path.basename(f))
        if not m:
            raise SchemaError(f"{f}: expected a file named job_N_norm.csv from the PAI mini-batch trace")
        try:
            df = pl.read_csv(f)
        except Exception as exc:
            raise SchemaError(f"{f}: cannot read as CSV ({str(exc).splitlines()[0]})") from None
        missing = [c for c in _EXPECTED if c not in df.columns]
        if missing:
            raise SchemaError(f"{f}: missing column(s) {missing}; expected {list(_EXPECTED)}")
        job = f"pai-job{int(m.group(1))}"
        n0 = df.height
        df = df.unique(subset=["worker", "time"], keep="first", maintain_order=True)
        stats["rows"] += n0
        stats["duplicates"] += n0 - df.height
        stats["zero_times"] += int((df["batch_time_norm"] <= 0).sum())
        frames.append(
            df.select(
                pl.lit(job).alias("job"),
                ("pai-job" + pl.lit(m.group(1)) + "/worker" + pl.col("worker").cast(pl.String)).alias("device"),
                pl.col("worker").cast(pl.Int64).alias("rank"),
                pl.lit("workers").alias("group"),
                (pl.col("time").rank("dense").cast(pl.Int64) - 1).alias("step"),
                pl.col("time").cast(pl.Float64).alias("timestamp"),
                pl.when(pl.col("batch_time_norm") > 0).then(pl.col("batch_time_norm").cast(pl.Float64))
                .otherwise(None).alias("compute_time"),
                pl.col("gpu").cast(pl.Float64).alias("gpu_share_pct"),
            ).sort(["device", "step"])
        )
    return pl.concat(frames), stats
