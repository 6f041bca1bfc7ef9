"""Build the datasets of this folder.

    python datasets/generate.py demo     # datasets/demo/ (committed; fixed seed)
    python datasets/generate.py pai      # datasets/pai/ from ../shared/data/pai-minibatch (committed)
    python datasets/generate.py bench    # datasets/generated/<scenario>/ (large, git-ignored; hive by job/host)

The demo and benchmark sets come from the simulator (`degrade simulate`), so
they are reproducible from the scenario file and the seed alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEMO_SEED = 20260101
BENCH = {"fleet_bench": 2026, "healthy_only": 11}
PAI_SRC = os.environ.get("DEGRADE_PAI_SRC", os.path.join(HERE, "..", "..", "shared", "data", "pai-minibatch"))


def demo(out: str = os.path.join(HERE, "demo")) -> None:
    from degrade.simulate import load_scenario, simulate

    res = simulate(load_scenario("demo"), seed=DEMO_SEED)
    res.write(out)
    print(f"demo: {res} -> {out}")


def pai(src: str = PAI_SRC, out: str = os.path.join(HERE, "pai")) -> None:
    from degrade.io._pai import read_pai_minibatch

    df, stats = read_pai_minibatch(src)
    os.makedirs(out, exist_ok=True)
    df.write_parquet(os.path.join(out, "timings.parquet"), compression="zstd")
    print(f"pai: {df.height} rows, {df['device'].n_unique()} workers in {df['job'].n_unique()} jobs "
          f"(source rows {stats['rows']}, duplicates dropped {stats['duplicates']}, "
          f"zero times -> missing {stats['zero_times']}) -> {out}")


def bench(names=None, root: str = os.path.join(HERE, "generated")) -> None:
    from degrade.simulate import load_scenario, simulate

    for name in names or BENCH:
        t0 = time.perf_counter()
        res = simulate(load_scenario(name), seed=BENCH.get(name))
        t1 = time.perf_counter()
        res.write(os.path.join(root, name), partition_by="job")
        print(f"{name}: {res.timings.height:,} timing rows, {res.counters.height:,} counter rows, "
              f"{res.truth.height} faults; simulate {t1 - t0:.1f} s, write {time.perf_counter() - t1:.1f} s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("demo", "pai", "bench"))
    p.add_argument("scenarios", nargs="*", help="bench: scenario names (default: fleet_bench healthy_only)")
    a = p.parse_args(argv)
    if a.what == "demo":
        demo()
    elif a.what == "pai":
        pai()
    else:
        bench(a.scenarios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
