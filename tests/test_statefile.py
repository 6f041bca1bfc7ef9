"""degrade/_statefile.py: data-only state files that never run code and never hang."""

from __future__ import annotations

import io
import json
import os
import pickle
import threading
import time
import zipfile

import numpy as np
import pytest

from degrade import _statefile
from degrade.errors import DegradeError, StateFileError


class _Payload:
    """Unpickling this creates a marker file: the proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _load(p, **kw):
    return _statefile.load(p, kind=kw.pop("kind", "test"), version=kw.pop("version", 1), **kw)


def test_round_trip_nested(tmp_path):
    p = tmp_path / "s.state"
    tree = {
        "a": 1, "b": 2.5, "c": None, "d": True, "e": "x", "nan": float("nan"), "inf": -float("inf"),
        "lst": [1, [2, {"z": np.arange(4, dtype=np.int32)}]], "tup": (1, 2),
        "arr": np.arange(6.0).reshape(2, 3), "bools": np.array([True, False]),
        "strs": np.array(["gpu0", "gpu-long-name"]), "np_scalar": np.float64(3.0), "np_int": np.int64(7),
        "empty": np.zeros((0, 3)), "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    }  # fmt: skip
    _statefile.dump(p, tree, kind="test", version=1)
    got = _load(p)
    assert isinstance(got, dict) and got.kind == "test" and got.version == 1
    assert (
        got["a"] == 1
        and got["b"] == 2.5
        and got["c"] is None
        and got["d"] is True
        and got["e"] == "x"
    )
    assert np.isnan(got["nan"]) and got["inf"] == -np.inf
    assert got["tup"] == [1, 2]
    assert got["np_scalar"] == 3.0 and got["np_int"] == 7 and type(got["np_int"]) is int
    np.testing.assert_array_equal(got["lst"][1][1]["z"], np.arange(4, dtype=np.int32))
    assert got["lst"][1][1]["z"].dtype == np.int32
    for k in ("arr", "bools", "strs", "empty", "fortran"):
        np.testing.assert_array_equal(got[k], tree[k])
        assert got[k].dtype == tree[k].dtype
    assert got["arr"].flags.writeable
    assert oct(os.stat(p).st_mode & 0o777) == "0o600"
    assert not [f for f in os.listdir(tmp_path) if f.endswith(_statefile.TEMP_SUFFIX)]


def test_round_trip_engine_state_dict(tmp_path):
    from degrade.verdict import VerdictEngine

    rng = np.random.default_rng(0)
    eng = VerdictEngine()
    devs = [f"gpu{i}" for i in range(4)]
    for t in range(60):
        eng.update(devs, {"step_time": 1.0 + 0.01 * rng.standard_normal(4)}, timestamp=float(t))
    sd = eng.state_dict()
    p = tmp_path / "engine.state"
    _statefile.dump(p, sd, kind="engine", version=1)
    back = _load(p, kind="engine")
    other = VerdictEngine()
    other.load_state_dict(back)
    a, b = eng.state_dict(), other.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k])
    x = {"step_time": np.full(4, 1.0)}
    eng.update(devs, x, timestamp=61.0)
    other.update(devs, x, timestamp=61.0)
    assert [v.to_dict() for v in eng.verdicts()] == [v.to_dict() for v in other.verdicts()]


def test_pickle_file_is_refused_and_never_executes(tmp_path):
    marker = tmp_path / "PWNED"
    p = tmp_path / "evil.state"
    p.write_bytes(pickle.dumps({"magic": "degrade-agent-state", "x": _Payload(marker)}))
    with pytest.raises(StateFileError, match="pickle") as ei:
        _load(p)
    assert str(p) in str(ei.value) and "\n" not in str(ei.value)
    assert not marker.exists()
    # protocol 0 (text) pickles have no \x80 header: still refused, still inert
    p.write_bytes(pickle.dumps(_Payload(marker), protocol=0))
    with pytest.raises(StateFileError):
        _load(p)
    assert not marker.exists()


def test_object_array_in_npz_is_refused_and_never_executes(tmp_path):
    marker = tmp_path / "PWNED"
    p = tmp_path / "evil.state"
    obj = np.empty(1, dtype=object)
    obj[0] = _Payload(marker)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, obj, allow_pickle=True)
    doc = {"format": "degrade-state", "kind": "test", "version": 1, "tree": {"a": {"$array": "a0"}}}
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("tree.json", json.dumps(doc))
        z.writestr("a0.npy", buf.getvalue())
    with pytest.raises(StateFileError, match="dtype object") as ei:
        _load(p)
    assert str(p) in str(ei.value)
    assert not marker.exists()
    # the same payload as a plain np.savez archive is not a degrade state at all
    np.savez(tmp_path / "plain.npz", a=obj)
    with pytest.raises(StateFileError):
        _load(tmp_path / "plain.npz")
    assert not marker.exists()


def test_dump_refuses_objects(tmp_path):
    with pytest.raises(StateFileError, match=r"tree\['x'\]"):
        _statefile.dump(tmp_path / "s", {"x": object()}, kind="t", version=1)
    with pytest.raises(StateFileError, match="dtype object"):
        _statefile.dump(tmp_path / "s", {"x": np.array([None])}, kind="t", version=1)
    with pytest.raises(StateFileError, match="non-string key"):
        _statefile.dump(tmp_path / "s", {1: 2}, kind="t", version=1)
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("cut", [0, 10, 100, -30, -1])
def test_truncated_file(tmp_path, cut):
    p = tmp_path / "s.state"
    _statefile.dump(p, {"a": np.arange(100.0), "b": "x" * 50}, kind="test", version=1)
    data = p.read_bytes()
    p.write_bytes(data[:cut])
    with pytest.raises(StateFileError) as ei:
        _load(p)
    assert str(p) in str(ei.value) and "\n" not in str(ei.value)


def test_corrupt_bytes_inside_members(tmp_path):
    p = tmp_path / "s.state"
    _statefile.dump(p, {"a": np.arange(1000.0)}, kind="test", version=1)
    data = bytearray(p.read_bytes())
    for i in range(200, 260):
        data[i] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(StateFileError):
        _load(p)


def _write_doc(p, doc, members=()):
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("tree.json", doc if isinstance(doc, str) else json.dumps(doc))
        for name, data in members:
            z.writestr(name, data)


def _npy(a):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=False)
    return buf.getvalue()


@pytest.mark.parametrize(
    "doc, members, match",
    [
        ({"format": "other", "kind": "test", "version": 1, "tree": {}}, (), "not a degrade state"),
        ({"format": "degrade-state", "kind": "agent", "version": 1, "tree": {}}, (), "'agent' state"),
        ({"format": "degrade-state", "kind": "test", "version": 9, "tree": {}}, (), "version 9"),
        ({"format": "degrade-state", "kind": "test", "version": "1", "tree": {}}, (), "version '1'"),
        ({"format": "degrade-state", "kind": "test", "version": 1, "tree": []}, (), "not an object"),
        ({"format": "degrade-state", "kind": "test", "version": 1, "tree": {"a": {"$array": "a1"}}},
         (("a0.npy", _npy(np.zeros(2))),), "missing array"),
        ({"format": "degrade-state", "kind": "test", "version": 1, "tree": {}},
         (("a0.npy", _npy(np.zeros(2))),), "not referenced"),
        ({"format": "degrade-state", "kind": "test", "version": 1, "tree": {}}, (("../x.sh", b"#!"),), "unexpected member"),
        ("[" * 100000 + "]" * 100000, (), "nested too deeply|not valid JSON"),
        ("{not json", (), "not valid JSON"),
        ({"format": "degrade-state", "kind": "test", "version": 1, "tree": {"a": {"$array": "a0"}}},
         (("a0.npy", b"\x93NUMPY garbage"),), "not a valid .npy"),
    ],
)  # fmt: skip
def test_malformed_documents(tmp_path, doc, members, match):
    p = tmp_path / "s.state"
    _write_doc(p, doc, members)
    with pytest.raises(StateFileError, match=match) as ei:
        _load(p)
    assert str(p) in str(ei.value) and "\n" not in str(ei.value)


def test_deep_tree_refused(tmp_path):
    deep: dict = {}
    cur = deep
    for _ in range(100):
        cur["x"] = {}
        cur = cur["x"]
    with pytest.raises(StateFileError, match="deeper"):
        _statefile.dump(tmp_path / "s", deep, kind="test", version=1)
    doc = json.dumps({"format": "degrade-state", "kind": "test", "version": 1, "tree": deep})
    _write_doc(tmp_path / "d", doc)
    with pytest.raises(StateFileError, match="deeper"):
        _load(tmp_path / "d")


def test_npy_header_claiming_huge_shape_is_refused_before_allocating(tmp_path):
    small = _npy(np.zeros(4))
    hdr = small.replace(b"(4,)", b"(10000000000000,)")
    hdr = hdr[: len(small)]  # keep the header length valid
    p = tmp_path / "s.state"
    doc = {"format": "degrade-state", "kind": "test", "version": 1, "tree": {"a": {"$array": "a0"}}}
    _write_doc(p, doc, (("a0.npy", hdr),))
    with pytest.raises(StateFileError, match="claims|not a valid"):
        _load(p)


def test_version_tuple_and_kind(tmp_path):
    p = tmp_path / "s.state"
    _statefile.dump(p, {"a": 1}, kind="test", version=2)
    assert _load(p, version=(1, 2)).version == 2
    with pytest.raises(StateFileError, match="reads version 1 or 3"):
        _load(p, version=(1, 3))


def test_fifo_returns_promptly(tmp_path):
    p = tmp_path / "fifo.state"
    os.mkfifo(p)
    out = {}

    def go():
        try:
            _load(p)
        except StateFileError as exc:
            out["err"] = str(exc)

    th = threading.Thread(target=go, daemon=True)
    t0 = time.monotonic()
    th.start()
    th.join(5.0)
    assert not th.is_alive(), "load() blocked on a FIFO"
    assert time.monotonic() - t0 < 2.0
    assert "FIFO" in out["err"] and str(p) in out["err"]


def test_directory_missing_device_and_huge(tmp_path):
    with pytest.raises(StateFileError, match="directory"):
        _load(tmp_path)
    with pytest.raises(StateFileError, match="no such") as ei:
        _load(tmp_path / "nope")
    assert ei.value.missing
    with pytest.raises(StateFileError, match="device"):
        _load("/dev/zero")
    p = tmp_path / "big"
    with open(p, "wb") as f:
        f.truncate(2000)
    with pytest.raises(StateFileError, match="more than"):
        _load(p, max_bytes=1000)
    p.write_bytes(b"")
    with pytest.raises(StateFileError, match="empty"):
        _load(p)
    assert isinstance(ei.value, DegradeError)


def test_zip_bomb_members_refused(tmp_path):
    p = tmp_path / "s.state"
    doc = {"format": "degrade-state", "kind": "test", "version": 1, "tree": {"a": {"$array": "a0"}}}
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("tree.json", json.dumps(doc))
        z.writestr("a0.npy", _npy(np.zeros(2_000_000)))
    assert p.stat().st_size < 100_000
    with pytest.raises(StateFileError, match="expand past"):
        _load(p, max_bytes=1_000_000)


def test_cleanup_temp(tmp_path):
    p = tmp_path / "agent.state"
    dead = tmp_path / f".agent.state.999999999.abcd{_statefile.TEMP_SUFFIX}"
    mine = tmp_path / f".agent.state.{os.getpid()}.beef{_statefile.TEMP_SUFFIX}"
    live = (
        tmp_path / f".agent.state.1.cafe{_statefile.TEMP_SUFFIX}"
    )  # pid 1 exists (init of this container)
    other = tmp_path / f".other.state.999999999.abcd{_statefile.TEMP_SUFFIX}"
    for f in (dead, mine, live, other):
        f.write_bytes(b"half a save")
    (tmp_path / f".agent.state.999999999.dir{_statefile.TEMP_SUFFIX}").mkdir()
    removed = _statefile.cleanup_temp(p)
    assert sorted(removed) == sorted([str(dead), str(mine)])
    assert live.exists() and other.exists()
    old = time.time() - 7200
    os.utime(live, (old, old))
    assert _statefile.cleanup_temp(p) == [str(live)]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    p = tmp_path / "s.state"
    _statefile.dump(p, {"a": 1}, kind="test", version=1)
    with pytest.raises(StateFileError):
        _statefile.dump(p, {"a": object()}, kind="test", version=1)
    assert _load(p)["a"] == 1
    assert sorted(os.listdir(tmp_path)) == ["s.state"]
