"""``degrade simulate``: write a simulated fleet with ground truth."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate a GPU fleet with labelled faults (timings, counters, truth)",
        description=(
            "Simulate SCENARIO (a name from datasets/scenarios or a TOML path) and write "
            "timings.parquet, counters.parquet and truth.parquet into --out."
        ),
    )
    p.add_argument("scenario", nargs="?", metavar="SCENARIO", help="scenario name or TOML file")
    p.add_argument("--out", "-o", metavar="DIR", help="output directory")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's)")
    p.add_argument("--partition-by", choices=("job",), default=None,
                   help="write timings as a hive dataset timings/job=.../ and counters as counters/host=.../")
    p.add_argument("--list", action="store_true", help="list the known scenarios and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    from ..errors import InputError
    from ..simulate import list_scenarios, load_scenario, simulate

    if args.list:
        for name in list_scenarios():
            sc = load_scenario(name)
            print(f"{name:<20} {sc.description}")
        return 0
    if not args.scenario or not args.out:
        raise InputError("usage: degrade simulate SCENARIO --out DIR [--seed N] (or --list)")
    t0 = time.perf_counter()
    res = simulate(load_scenario(args.scenario), seed=args.seed)
    paths = res.write(args.out, partition_by=args.partition_by)
    print(
        f"{res.scenario.name} (seed {res.seed}): {res.timings.height:,} timing rows, "
        f"{res.counters.height:,} counter rows, {res.timings['device'].n_unique():,} devices, "
        f"{res.truth.height} faults in {time.perf_counter() - t0:.1f} s -> {args.out}"
    )
    for kind, path in paths.items():
        print(f"  {kind:<9} {path}")
    return 0
