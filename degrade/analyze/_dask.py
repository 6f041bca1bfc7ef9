"""The Dask engine: the same :func:`run_unit` per job, on a dask.distributed cluster.

Each unit (one job, or one host's counters) is a task; a task reads only its
own rows (hive partitions are pruned by the job filter), so workers need the
input paths to be reachable from where they run — a shared filesystem or
object store, as with any Dask Parquet workload.
"""

from __future__ import annotations

import uuid

from .._optional import import_optional
from ._plan import run_unit

__all__ = ["run_units_dask"]


def run_units_dask(units, sources, config, chunk_rows: int, *, client=None) -> list:
    """Run every unit on a Dask cluster; results in the order of ``units``."""
    distributed = import_optional("distributed", "dask", "dask")
    own = None
    if client is None:
        try:
            client = distributed.get_client()
        except ValueError:
            # no cluster running: start a local one sized for this machine, threads only
            # in-process so in-memory frames need not be pickled across processes
            own = distributed.Client(
                distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                         dashboard_address=None),
                set_as_default=False,
            )
            client = own
    try:
        if not units:
            return []
        tag = uuid.uuid4().hex[:12]  # a key reused across calls would return the old result
        futures = client.map(
            run_unit, units, sources=sources, config=config, chunk_rows=chunk_rows,
            pure=False, key=[f"degrade-unit-{i}-{tag}" for i in range(len(units))],
        )
        return client.gather(futures)
    finally:
        if own is not None:
            cluster = own.cluster
            own.close()
            cluster.close()
