"""The package itself: import cost, laziness, CLI wiring."""

from __future__ import annotations

import subprocess
import sys

import pytest

import degrade

HEAVY = ("numba", "polars", "pyarrow", "pynvml", "prometheus_client", "sklearn", "torch", "dask")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


def test_import_is_cheap_and_lazy():
    # -X importtime writes one line per imported module to stderr; sum the
    # cumulative time of the top-level degrade import.
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import degrade"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("import time:")]
    top = [ln for ln in lines if ln.rstrip().endswith("| degrade")]
    assert top, proc.stderr[-2000:]
    cumulative_us = int(top[-1].split("|")[1])
    assert cumulative_us < 300_000, f"import degrade took {cumulative_us / 1e3:.0f} ms"
    imported = {ln.split("|")[2].strip() for ln in lines}
    for mod in HEAVY:
        assert mod not in imported, f"import degrade imported {mod}"


def test_import_loads_no_optional_dependency():
    out = _run(
        "import sys, degrade; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    ).stdout.strip()
    assert out == ""


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        degrade.nope  # noqa: B018


def test_all_is_sorted_and_resolvable_names_exist():
    assert degrade.__all__ == sorted(degrade.__all__)
    assert "warmup" in degrade.__all__


def test_cli_help_and_version():
    out = subprocess.run(
        [sys.executable, "-m", "degrade", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"degrade {degrade.__version__}"
    help_out = subprocess.run(
        [sys.executable, "-m", "degrade", "--help"], capture_output=True, text=True, check=True
    )
    assert "warmup" in help_out.stdout


def test_missing_dependency_message():
    from degrade._optional import import_optional
    from degrade.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match=r"pip install 'degrade\[batch\]'"):
        import_optional("surely_not_a_module_xyz", "batch")


def test_every_public_name_resolves():
    for name in degrade.__all__:
        if name == "__version__":
            continue
        assert getattr(degrade, name) is not None, name


@pytest.mark.parametrize("name", ["analyze", "simulate", "evaluate"])
def test_function_named_like_its_subpackage_stays_callable(name):
    # `import degrade.<name>` binds the module to the attribute; it must still
    # behave as the function users call.
    out = _run(
        f"import degrade.{name}, degrade, inspect; "
        f"f = degrade.{name}; print(callable(f))"
    ).stdout.strip()
    assert out == "True"
