"""The built wheel, installed into a fresh venv, runs the demo outside the repository.

The venv sees this interpreter's site-packages (so numba, polars and friends
need not be reinstalled) through a plain path in a ``.pth`` file rather than
``--system-site-packages``: that way the ``.pth`` hooks of an editable
install of degrade there are not run, and the test checks that Python
imports the wheel's ``degrade`` from the venv, not the worktree.
The first run compiles with a fresh ``NUMBA_CACHE_DIR`` and stderr on a
pseudo-terminal, so it also shows the one-line "compiling kernels" status.
"""

from __future__ import annotations

import os
import pty
import re
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
from conftest import require

require("polars")
require("rich")

REPO = Path(__file__).resolve().parents[1]


def _run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert p.returncode == 0, f"{cmd}\n{p.stdout}\n{p.stderr}"
    return p


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(XDG_CACHE_HOME=str(tmp / "cache"), NUMBA_CACHE_DIR=str(tmp / "numba"), COLUMNS="80",
               HOME=str(tmp / "home"), PYTHONDONTWRITEBYTECODE="1")
    return env


def _with_tty_stderr(cmd, *, cwd, env, timeout):
    """Run ``cmd`` with stdout piped and stderr on a pseudo-terminal; return (rc, out, err)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=slave,
                            stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks: list[bytes] = []

    def drain():
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    reader.join(timeout=10)
    os.close(master)
    return proc.returncode, out.decode(), b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wheel_in_a_fresh_venv_runs_the_demo_anywhere(tmp_path):
    import setuptools

    assert int(setuptools.__version__.split(".")[0]) >= 77, (
        "the SPDX license string needs setuptools>=77 (in the dev extra)")
    # build from a clean copy: a stale build/ in the worktree cannot leak into the wheel
    src = tmp_path / "src"
    shutil.copytree(REPO / "degrade", src / "degrade",
                    ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    for f in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / f, src / f)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(wheels), str(src)], timeout=300)
    (whl,) = wheels.glob("degrade-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    for must in ("degrade/py.typed", "degrade/data/scenarios/demo.toml",
                 "degrade/data/scenarios/agent-node.toml", "degrade/schemas/verdicts.schema.json",
                 "degrade/commands/demo.py"):
        assert must in names, must
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    meta = zipfile.ZipFile(whl).read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    assert b"License-Expression: Apache-2.0" in meta and b"Classifier: Typing :: Typed" in meta
    assert not any(n.startswith(("tests/", "datasets/", "bench/")) for n in names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    py = venv / "bin" / "python"
    # install first: with the outer site-packages visible, pip would see degrade as installed
    (tmp_path / "home").mkdir()
    env = _env(tmp_path)
    _run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", "-q", str(whl)],
         env=env, timeout=300)
    venv_site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     env=env, timeout=120).stdout.strip()
    import site

    # plain directories: their .pth files (an editable degrade's finder among them) are not run
    Path(venv_site, "_outer_site.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([str(py), "-c", "import degrade; print(degrade.__file__)"], cwd=elsewhere, env=env,
                 timeout=120).stdout.strip()
    assert where.startswith(str(venv)), where  # the wheel's degrade, not the worktree's
    _run([str(py), "-c", "from degrade.simulate import load_scenario; load_scenario('agent-node')"],
         cwd=elsewhere, env=env, timeout=120)

    # first run: cold numba cache, stderr a terminal -> the one-line compile status
    rc, out, err = _with_tty_stderr([str(venv / "bin" / "degrade"), "demo"], cwd=elsewhere, env=env,
                                    timeout=600)
    assert rc == 0, out + err
    assert "compiling kernels (first run only" in err
    assert "Planted faults" in out and "Scored against the truth: precision" in out
    assert "failed" in out and "degraded" in out
    cache = str(tmp_path / "cache")  # the demo directory's path is printed whole, on its own line
    assert any(ln.strip().startswith(cache) for ln in out.splitlines())
    assert max(len(ln) for ln in out.splitlines() if not ln.strip().startswith(cache)) <= 80
    assert not list(elsewhere.iterdir())  # nothing written into the working directory

    # second run: the demo files and kernels come from the caches, and nothing is said
    rc, out2, err2 = _with_tty_stderr([str(venv / "bin" / "degrade"), "analyze", "--demo"],
                                      cwd=elsewhere, env=env, timeout=300)
    assert rc == 0, out2 + err2
    assert "compiling kernels" not in err2 and "simulating" not in err2
    assert re.search(r"Devices that are not healthy: \d+ of 58", out2)
