"""``engine="dask"``: the same per-job function on a dask.distributed LocalCluster, same verdicts."""

from __future__ import annotations

import pytest
from conftest import require

pl = require("polars")
distributed = require("distributed")

from test_analyze import fleet  # noqa: E402

from degrade.analyze import analyze  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                       dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def _same(a, b):
    assert [v.to_dict() for v in a.verdicts] == [v.to_dict() for v in b.verdicts]
    assert [e.to_dict() for e in a.jobs] == [e.to_dict() for e in b.jobs]
    assert [w.to_dict() for w in a.warnings] == [w.to_dict() for w in b.warnings]
    assert a.stats["rows"] == b.stats["rows"]


def test_dask_equals_polars_on_a_hive_dataset(tmp_path, client):
    df = fleet(21, jobs=4, n_step=300, slow={0: 3, 2: 6}, onset=120)
    df = pl.concat([df, df.slice(10, 3)])  # duplicates: warnings must match too
    root = tmp_path / "hive"
    df.write_parquet(root, partition_by="job")
    local = analyze(root, chunk_rows=700)
    remote = analyze(root, engine="dask", client=client, chunk_rows=700)
    _same(local, remote)
    assert remote.stats["engine"] == "dask" and remote.config["engine"] == "dask"
    assert {"job0-gpu3", "job2-gpu6"} <= {v.device for v in remote.flagged()}
    # workers ran one task per job
    assert remote.stats["units"] == 4


def test_dask_with_counters_and_frames(client):
    timings = fleet(22, jobs=2, n_step=200, slow={})
    counters = pl.DataFrame({
        "device": [f"job0-gpu{d}" for d in range(8)] * 50,
        "host": "node0-0", "model": "H100",
        "timestamp": [1.7e9 + t for t in range(50) for _ in range(8)],
        "sm_clock_mhz": 1980.0, "gpu_util_ratio": 0.95,
    })
    _same(analyze([timings, counters]), analyze([timings, counters], engine="dask", client=client))


def test_dask_starts_its_own_cluster_when_none_runs(tmp_path):
    df = fleet(23, jobs=1, n_step=120, slow={})
    res = analyze(df, engine="dask")
    assert len(res.verdicts) == 8 and res.stats["engine"] == "dask"
