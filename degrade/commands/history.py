"""``degrade history DEVICE SOURCE...``: one GPU's episodes across jobs (fleet memory, docs/fleet.md)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "history",
        help="one GPU's history across jobs: episodes, repeat offences, replacement, accumulated evidence",
        description=(
            "Print a device's history from degrade analyze --format json documents (their 'fleet' "
            "section), saved fleet histories (--save) or agent state files (--state of degrade agent). "
            "Several sources are merged, so analyses of different days add up to one history."
        ),
    )
    p.add_argument(
        "device",
        metavar="DEVICE",
        help="GPU UUID (or a unique prefix of one), or HOST:GPU for the device now in that slot",
    )
    p.add_argument(
        "sources",
        metavar="SOURCE",
        nargs="+",
        help="analyze JSON, saved fleet history or agent state file",
    )
    p.add_argument("--json", action="store_true", help="print the device's record as JSON")
    p.add_argument(
        "--save", metavar="PATH", help="also write the merged history (data-only state file)"
    )
    p.set_defaults(func=run)


def load_source(path: str):
    """A :class:`~degrade.fleet.FleetHistory` from one file; :class:`InputError` naming it otherwise."""
    import json
    import os

    from ..errors import InputError, StateFileError
    from ..fleet import FleetHistory, agent_history_from_state

    if not os.path.exists(path):
        raise InputError(
            f"{path}: no such file; expected an analyze JSON, a fleet history or an agent state file"
        )
    if not os.path.isfile(path):
        raise InputError(
            f"{path}: not a regular file; expected an analyze JSON, a fleet history or an agent "
            "state file"
        )
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if head == b"PK":  # a degrade state file (zip)
        try:
            return FleetHistory.load(path)
        except StateFileError as first:
            from ..agent._state import load_state

            try:
                state = load_state(path)
            except StateFileError:
                raise first from None
            if state is None or "fleet" not in state:
                raise InputError(
                    f"{path}: an agent state file without a fleet history (saved by an agent "
                    "older than fleet memory); let the agent save it again"
                ) from None
            return agent_history_from_state(state["fleet"], path)[0]
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"{path}: not JSON ({exc.__class__.__name__}: {exc}); expected degrade analyze "
            "--format json output, a fleet history or an agent state file"
        ) from None
    if not isinstance(doc, dict) or "fleet" not in doc:
        raise InputError(
            f"{path}: a JSON document without a 'fleet' section; expected degrade analyze "
            "--format json output (degrade >= schema 1.1)"
        )
    return FleetHistory.from_dict(doc["fleet"], where=f"{path}: fleet")


def run(args) -> int:
    import json

    from ..fleet import FleetHistory
    from ..fleet._text import device_text

    hist: FleetHistory | None = None
    for src in args.sources:
        h = load_source(src)
        if hist is None:
            hist = h
        else:
            hist.merge(h)
    assert hist is not None
    if args.save:
        hist.save(args.save)
    if args.json:
        print(json.dumps(hist.record(args.device), indent=2, allow_nan=False))
    else:
        print(device_text(hist, args.device))
    return 0
