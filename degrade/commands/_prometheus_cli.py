"""``degrade analyze prometheus+http://HOST:PORT``: the options of the Prometheus source."""

from __future__ import annotations

__all__ = ["prometheus_options", "prometheus_paths"]


def prometheus_options(p) -> None:
    """Add ``--since``, ``--until``, ``--match``, ``--step`` and ``--timeout`` to a parser."""
    g = p.add_argument_group("Prometheus source (PATH = prometheus+http://HOST:PORT)")
    g.add_argument("--since", metavar="DURATION|TIME",
                   help="start of the range: a duration before --until (6h, 30m, 2d), epoch seconds or "
                        "ISO 8601 (default: 1h)")
    g.add_argument("--until", metavar="TIME", help="end of the range (default: now)")
    g.add_argument("--match", metavar="'{LABEL=~\"...\"}'",
                   help="label matchers added to every query, e.g. '{Hostname=~\"node-0.*\"}'")
    g.add_argument("--step", metavar="DURATION", help="query resolution (default: the scrape interval)")
    g.add_argument("--timeout", metavar="SECONDS", type=float, default=None,
                   help="seconds per Prometheus request (default: 30)")


def prometheus_paths(args) -> list:
    """``args.paths`` with the Prometheus options folded into each prometheus+http:// URL."""
    from ..io._prometheus import is_prometheus_url, prometheus_url

    opts = {k: getattr(args, k, None) for k in ("since", "until", "match", "step", "timeout")}
    if not any(is_prometheus_url(p) for p in args.paths):
        given = [f"--{k}" for k, v in opts.items() if v is not None]
        if given:
            from ..errors import InputError

            raise InputError(f"{', '.join(given)}: only for a prometheus+http://HOST:PORT input")
        return args.paths
    return [prometheus_url(p, **opts) if is_prometheus_url(p) else p for p in args.paths]
