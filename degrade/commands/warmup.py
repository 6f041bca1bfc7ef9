"""``degrade warmup``: compile (or load from cache) every kernel."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("warmup", help="compile every numba kernel once (agent start-up)")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import warmup

    spent = warmup(verbose=True)
    print(f"compiled {len(spent)} kernel packages in {sum(spent.values()):.2f} s")
    return 0
