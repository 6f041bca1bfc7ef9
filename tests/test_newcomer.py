"""A newcomer's first minutes: missing extras, the demo command, the first-run status, the README."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import require

REPO = Path(__file__).resolve().parents[1]

# Makes the named top-level modules unimportable in a subprocess, as if the extra were not installed.
_BLOCKER = """
import os, sys
_BLOCKED = {n for n in os.environ.get("DEGRADE_TEST_BLOCK", "").split(",") if n}
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Blocker())
"""


@pytest.fixture(scope="module")
def blocker(tmp_path_factory):
    d = tmp_path_factory.mktemp("blocker")
    (d / "sitecustomize.py").write_text(_BLOCKER)
    return d


def _degrade(args, *, block="", blocker=None, cwd=None, env=None, timeout=300):
    e = dict(os.environ if env is None else env)
    paths = [str(blocker)] if blocker else []
    e["PYTHONPATH"] = os.pathsep.join([*paths, str(REPO), e.get("PYTHONPATH", "")])
    e["DEGRADE_TEST_BLOCK"] = block
    return subprocess.run([sys.executable, "-m", "degrade", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env=e, timeout=timeout)


@pytest.mark.parametrize(("args", "block", "package", "extra"), [
    (["agent", "--fake", "agent-node", "--speed", "0", "--duration", "1"], "pynvml", "nvidia-ml-py", "agent"),
    (["agent", "--fake", "agent-node", "--speed", "0", "--duration", "1"], "prometheus_client",
     "prometheus-client", "agent"),
    # polars belongs to [agent] too: an agent user is told the one extra that makes it work
    (["agent", "--fake", "agent-node", "--speed", "0", "--duration", "1"], "polars", "polars", "agent"),
    (["analyze", "datasets/demo"], "polars", "polars", "batch"),
    (["analyze", "datasets/demo"], "rich", "rich", "batch"),
    (["simulate", "tiny", "--out", "x"], "polars", "polars", "batch"),
    (["demo"], "rich", "rich", "batch"),
])
def test_a_missing_extra_is_one_line_with_the_pip_command(args, block, package, extra, blocker, tmp_path):
    p = _degrade(args, block=block, blocker=blocker, cwd=tmp_path if args[0] != "analyze" else None,
                 timeout=120)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines == [f"degrade {args[0]}: error: degrade needs the optional dependency {package!r} "
                     f"for this command: pip install 'degrade[{extra}]'"], p.stderr


def test_the_blocker_really_blocks(blocker):
    e = dict(os.environ, PYTHONPATH=str(blocker), DEGRADE_TEST_BLOCK="json")
    p = subprocess.run([sys.executable, "-c", "import json"], capture_output=True, text=True, env=e,
                       timeout=60)
    assert p.returncode == 1 and "No module named 'json'" in p.stderr


def test_first_run_status_is_said_once_and_only_for_real_compiles():
    import io
    import types

    from numba import njit

    from degrade._warmup import STATUS_LINE, FirstRunStatus

    mod = types.ModuleType("degrade._first_run_probe")  # counts as one of degrade's kernels
    exec(textwrap.dedent("""
        def add(a, b):
            return a + b

        def mul(a, b):
            return a * b
    """), mod.__dict__)
    add, mul = njit(cache=False)(mod.add), njit(cache=False)(mod.mul)

    def other(a):  # not degrade's: never announced
        return a - 1

    other_j = njit(cache=False)(other)
    buf = io.StringIO()
    with FirstRunStatus(stream=buf) as st:
        other_j(1)
        assert st.compiled == 0 and buf.getvalue() == ""
        add(1, 2)
        mul(1.0, 2.0)
        add(1, 2)  # already compiled: no event
    assert st.compiled == 2
    assert buf.getvalue() == STATUS_LINE + "\n"
    quiet = io.StringIO()
    with FirstRunStatus(enabled=False, stream=quiet) as st2:
        add(1.0, 2.0)  # a new specialisation compiles, silently
    assert st2.compiled == 1 and quiet.getvalue() == ""
    with FirstRunStatus(stream=buf) as st3:  # the listener is gone after exit: nothing leaks
        pass
    add(1j, 2j)
    assert st3.compiled == 0


def test_demo_command_in_any_directory(tmp_path, monkeypatch, capsys):
    require("polars")
    require("rich")
    from degrade.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "simulating the demo fleet" in err
    assert "Planted faults" in out and "Scored against the truth: precision" in out
    assert "truth.parquet: ground truth" not in out  # the demo never passes the truth as data
    for fault in ("thermal", "slowdown", "pcie_downgrade", "hw_slowdown", "drift", "xid79"):
        assert fault in out
    (d,) = (tmp_path / "cache" / "degrade").iterdir()
    assert sorted(p.name for p in d.iterdir()) == ["counters.parquet", "timings.parquet", "truth.parquet"]
    # the cached files are reused; analyze --demo is the same analysis
    assert main(["analyze", "--demo", "--no-progress"]) == 0
    out2, err2 = capsys.readouterr()
    assert "simulating" not in err2
    assert re.search(r"Devices that are not healthy: \d+ of 58", out2)
    assert sorted(os.listdir(tmp_path)) == ["cache"]  # nothing written into the working directory


def test_demo_files_equal_the_committed_demo(tmp_path):
    pl = require("polars")
    from degrade.commands.demo import demo_data

    d = demo_data(str(tmp_path / "demo"))
    for name in ("timings", "counters", "truth"):
        a = pl.read_parquet(Path(d) / f"{name}.parquet")
        b = pl.read_parquet(REPO / "datasets" / "demo" / f"{name}.parquet")
        assert a.equals(b), name


def test_analyze_usage_for_demo_and_paths(capsys):
    require("polars")
    require("rich")
    from degrade.cli import main

    assert main(["analyze"]) == 2
    assert "--demo for the demo fleet" in capsys.readouterr().err
    assert main(["analyze", "--demo", "datasets/demo"]) == 2
    assert "either --demo or PATHs" in capsys.readouterr().err


def _readme_block(marker: str) -> str:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    (block,) = [b for b in blocks if marker in b]
    return block


def test_readme_loop_snippet_runs(tmp_path):
    require("torch")
    code = _readme_block("from degrade.loop import Monitor")
    assert "loader" in code and "model" in code
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("marker", ["from degrade import CUSUM", "degrade.evaluate(result.verdicts"])
def test_readme_examples_run_and_print_what_they_say(marker, tmp_path):
    require("polars")
    code = _readme_block(marker)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
    assert p.returncode == 0, p.stderr
    for expected in re.findall(r"# -> (.+)$", code, re.M):  # the output each example promises
        assert expected.strip() in p.stdout, (expected, p.stdout)


def test_readme_names_no_missing_extra():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    text = (REPO / "README.md").read_text()
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = set(re.findall(r"degrade\[(\w+)\]|\.\[(\w+)\]", text))
    for pair in named:
        for name in pair:
            assert not name or name in extras, name
