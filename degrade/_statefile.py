"""Data-only state files: a versioned zip of one JSON tree and ``.npy`` arrays.

Every file degrade reads state from (the agent's ``--state``, the training
loop monitor's state, an engine saved to disk) uses this format, so no state
file can run code: nothing is ever unpickled.

Layout (a plain zip, readable with ``unzip`` and ``python -m json.tool``)::

    tree.json     {"format": "degrade-state", "kind": KIND, "version": N, "tree": {...}}
    a0.npy ...    one member per NumPy array, written and read with allow_pickle=False

In ``tree.json`` an array is the object ``{"$array": "a0"}``. The tree holds
dicts with ``str`` keys, lists (tuples are written as lists), ``str``,
``int``, ``float`` (NaN and infinities included), ``bool``, ``None`` and
arrays of boolean, numeric or string dtype.

Writes are atomic: a temporary file in the same directory (named
``.<name>.<pid>.<random>.degrade-tmp``, mode 0600), flushed and fsynced,
then renamed over the target; a crash or a full disk leaves the old file
intact and at worst a temporary file, which :func:`cleanup_temp` removes.

Reads never block and never trust the file: the path must be a regular file
(a FIFO, a directory or a device is refused without opening it for a
blocking read), at most ``max_bytes`` long; every member's size is checked
before anything is allocated; kind, version and structure are validated.
Anything wrong raises :class:`degrade.errors.StateFileError` with one line
naming the file and what was wrong.

Examples
--------
>>> import numpy as np, tempfile, os
>>> from degrade import _statefile
>>> p = os.path.join(tempfile.mkdtemp(), "s.state")
>>> _statefile.dump(p, {"t": 3, "mu": np.arange(3.0)}, kind="example", version=1)
>>> tree = _statefile.load(p, kind="example", version=1)
>>> tree["t"], tree["mu"].tolist(), tree.version
(3, [0.0, 1.0, 2.0], 1)
"""

from __future__ import annotations

import io
import json
import math
import os
import secrets
import stat
import struct
import threading
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from degrade.errors import StateFileError

__all__ = ["dump", "load", "cleanup_temp", "StateTree", "TEMP_SUFFIX", "MAX_BYTES"]

FORMAT = "degrade-state"
TEMP_SUFFIX = ".degrade-tmp"
#: default largest state file :func:`load` accepts (and largest total of its members)
MAX_BYTES = 512 * 1024 * 1024
_MAX_DEPTH = 64
_TREE = "tree.json"
_ARRAY_KINDS = frozenset(
    "biufcUS"
)  # bool, ints, floats, complex, str, bytes: nothing that holds objects
_ARRAY_KEY = "$array"

# what reading a damaged zip member can raise (encrypted or unknown compression included)
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    struct.error,
    ValueError,
    OSError,
    EOFError,
    KeyError,
    NotImplementedError,
    RuntimeError,
)

# temp files this process is writing right now (cleanup_temp must not remove them)
_IN_FLIGHT: set[str] = set()
_IN_FLIGHT_LOCK = threading.Lock()


class StateTree(dict):
    """The tree :func:`load` returns: a plain dict, plus the file's ``kind`` and ``version``."""

    kind: str = ""
    version: int = 0


# ------------------------------------------------------------------ writing
def _encode(x: Any, arrays: dict[str, np.ndarray], where: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise StateFileError(f"state tree deeper than {_MAX_DEPTH} levels at {where}")
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, np.generic) and not isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise StateFileError(f"cannot store a {x.dtype} scalar at {where}")
        x = x.item()
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return float(x)
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in _ARRAY_KINDS or x.dtype.hasobject:
            raise StateFileError(
                f"cannot store an array of dtype {x.dtype} at {where} (no object arrays)"
            )
        name = f"a{len(arrays)}"
        arrays[name] = x
        return {_ARRAY_KEY: name}
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            if not isinstance(k, str):
                raise StateFileError(f"cannot store the non-string key {k!r} at {where}")
            out[k] = _encode(v, arrays, f"{where}[{k!r}]", depth + 1)
        if set(out) == {_ARRAY_KEY}:
            raise StateFileError(f"the key {_ARRAY_KEY!r} alone is reserved (at {where})")
        return out
    if isinstance(x, (list, tuple)):
        return [_encode(v, arrays, f"{where}[{i}]", depth + 1) for i, v in enumerate(x)]
    raise StateFileError(
        f"cannot store a {type(x).__name__} at {where}; expected dict, list, str, number, "
        "bool, None or a numeric array"
    )


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def dump(path: str | os.PathLike, tree: dict, *, kind: str, version: int) -> None:
    """Write ``tree`` to ``path`` atomically (temp file in the same directory, fsync, rename).

    Raises :class:`StateFileError` (one line, naming the file) if the tree
    holds something that is not data or the file cannot be written (full
    disk, read-only file system); the previous file, if any, is untouched.
    """
    path = Path(path)
    if not isinstance(tree, dict):
        raise StateFileError(f"{path}: the state tree must be a dict, not {type(tree).__name__}")
    if not isinstance(version, int) or isinstance(version, bool):
        raise StateFileError(f"{path}: version must be an int, not {version!r}")
    arrays: dict[str, np.ndarray] = {}
    try:
        doc = {
            "format": FORMAT,
            "kind": str(kind),
            "version": version,
            "tree": _encode(tree, arrays, "tree", 0),
        }
    except StateFileError as exc:
        raise StateFileError(f"{path}: {exc}") from None
    body = json.dumps(doc, allow_nan=True, separators=(",", ":")).encode()
    tmp = _temp_name(path)
    with _IN_FLIGHT_LOCK:
        _IN_FLIGHT.add(str(tmp))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
                    z.writestr(_TREE, body)
                    for name, a in arrays.items():
                        with z.open(f"{name}.npy", "w", force_zip64=True) as m:
                            np.lib.format.write_array(m, np.asanyarray(a), allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as exc:
        raise StateFileError(
            f"{path}: cannot write the state file ({exc.strerror or exc})"
        ) from exc
    finally:
        with _IN_FLIGHT_LOCK:
            _IN_FLIGHT.discard(str(tmp))
    try:  # make the rename durable; not every file system lets a directory be fsynced
        dfd = os.open(path.parent if str(path.parent) else ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def cleanup_temp(path: str | os.PathLike, *, max_age: float = 3600.0) -> list[str]:
    """Remove temporary files left next to ``path`` by interrupted saves; return what was removed.

    A temporary file is removed when the process that wrote it is gone, when
    it was written by this process's id but is not being written now (a
    container restarted with the same pid), or when it is older than
    ``max_age`` seconds. Only regular files are touched; errors are ignored.
    """
    path = Path(path)
    prefix = f".{path.name}."
    removed = []
    try:
        entries = list(os.scandir(path.parent if str(path.parent) else "."))
    except OSError:
        return removed
    now = time.time()
    me = os.getpid()
    for e in entries:
        if not (e.name.startswith(prefix) and e.name.endswith(TEMP_SUFFIX)):
            continue
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        with _IN_FLIGHT_LOCK:
            if e.path in _IN_FLIGHT or str(path.with_name(e.name)) in _IN_FLIGHT:
                continue
        pid_part = e.name[len(prefix) : -len(TEMP_SUFFIX)].split(".")[0]
        stale = now - st.st_mtime > max_age
        if not stale and pid_part.isdigit() and int(pid_part) != me:
            try:
                os.kill(int(pid_part), 0)
            except ProcessLookupError:
                stale = True
            except OSError:
                pass  # alive but not ours to signal: leave it
        else:
            stale = True
        if stale:
            try:
                os.unlink(e.path)
                removed.append(e.path)
            except OSError:
                pass
    return removed


# ------------------------------------------------------------------ reading
def _read_regular(path: Path, max_bytes: int) -> bytes:
    flags = (
        os.O_RDONLY
        | getattr(os, "O_NONBLOCK", 0)
        | getattr(os, "O_CLOEXEC", 0)
        | getattr(os, "O_NOCTTY", 0)
    )
    try:
        fd = os.open(path, flags)  # O_NONBLOCK: opening a FIFO does not wait for a writer
    except FileNotFoundError as exc:
        raise StateFileError(f"{path}: no such state file", missing=True) from exc
    except IsADirectoryError as exc:
        raise StateFileError(f"{path}: is a directory, not a state file") from exc
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise StateFileError(
            f"{path}: cannot open the state file ({getattr(exc, 'strerror', None) or exc})"
        ) from exc
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise StateFileError(f"{path}: is a directory, not a state file")
        if not stat.S_ISREG(st.st_mode):
            what = (
                "a FIFO"
                if stat.S_ISFIFO(st.st_mode)
                else "a socket"
                if stat.S_ISSOCK(st.st_mode)
                else "a device"
            )
            raise StateFileError(f"{path}: is {what}, not a regular state file")
        if st.st_size > max_bytes:
            raise StateFileError(
                f"{path}: {st.st_size} bytes, more than the {max_bytes} a state file may have"
            )
        os.set_blocking(fd, True)
        chunks, left = [], max_bytes + 1
        while left > 0:
            b = os.read(fd, min(left, 1 << 20))
            if not b:
                break
            chunks.append(b)
            left -= len(b)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise StateFileError(
                f"{path}: grew past the {max_bytes} bytes a state file may have while read"
            )
        return data
    except OSError as exc:
        raise StateFileError(f"{path}: cannot read the state file ({exc.strerror or exc})") from exc
    finally:
        os.close(fd)


def _read_array(path: Path, z: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    fmt = np.lib.format
    with z.open(info) as m:
        try:
            major, minor = fmt.read_magic(m)
            if (major, minor) == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(m)
            elif (major, minor) in ((2, 0), (3, 0)):
                shape, fortran, dtype = fmt.read_array_header_2_0(m)
            else:
                raise ValueError(f"npy format version {major}.{minor}")
        except (*_ZIP_ERRORS, SyntaxError) as exc:
            raise StateFileError(
                f"{path}: member {info.filename} is not a valid .npy array ({exc})"
            ) from exc
        if dtype.hasobject or dtype.kind not in _ARRAY_KINDS:
            raise StateFileError(
                f"{path}: member {info.filename} holds dtype {dtype}; only bool, numeric and "
                "string arrays are read (no objects, no pickle)"
            )
        n = math.prod(shape) * dtype.itemsize
        if n > info.file_size:
            raise StateFileError(
                f"{path}: member {info.filename} claims {n} bytes of data but holds "
                f"{info.file_size}"
            )
    with z.open(info) as m:
        try:
            a = fmt.read_array(m, allow_pickle=False)
        except _ZIP_ERRORS as exc:
            raise StateFileError(f"{path}: member {info.filename} cannot be read ({exc})") from exc
    return a


def _decode(
    x: Any, arrays: dict[str, np.ndarray], used: set[str], path: Path, where: str, depth: int
) -> Any:
    if depth > _MAX_DEPTH:
        raise StateFileError(f"{path}: state tree deeper than {_MAX_DEPTH} levels at {where}")
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, list):
        return [_decode(v, arrays, used, path, f"{where}[{i}]", depth + 1) for i, v in enumerate(x)]
    if isinstance(x, dict):
        if set(x) == {_ARRAY_KEY}:
            name = x[_ARRAY_KEY]
            if not isinstance(name, str) or name not in arrays:
                raise StateFileError(f"{path}: {where} refers to a missing array member {name!r}")
            if name in used:
                raise StateFileError(f"{path}: array member {name!r} is referenced twice")
            used.add(name)
            return arrays[name]
        return {
            k: _decode(v, arrays, used, path, f"{where}[{k!r}]", depth + 1) for k, v in x.items()
        }
    raise StateFileError(
        f"{path}: unexpected {type(x).__name__} at {where}"
    )  # pragma: no cover - json gives none


def load(
    path: str | os.PathLike,
    *,
    kind: str,
    version: int | tuple[int, ...],
    max_bytes: int = MAX_BYTES,
) -> StateTree:
    """Read a state file written by :func:`dump`, without unpickling anything.

    ``version`` is the version (or tuple of versions) the caller reads; the
    returned dict carries the file's ``.kind`` and ``.version``. Raises
    :class:`StateFileError` (one line naming the file) for a missing file
    (``exc.missing`` is true then), a FIFO, directory or device, a file over
    ``max_bytes``, a file that is not a degrade state, another kind or
    version, or a malformed tree.
    """
    path = Path(path)
    versions = (version,) if isinstance(version, int) else tuple(version)
    data = _read_regular(path, max_bytes)
    if not data:
        raise StateFileError(f"{path}: is empty, not a state file (an interrupted write?)")
    if data[:2] == b"\x80\x04" or data[:1] == b"\x80" or data[:2] in (b"(d", b"(l", b"}q", b"]q"):
        raise StateFileError(
            f"{path}: is a pickle (an old degrade state or something else); degrade no longer "
            "reads pickles. Move it away to start fresh"
        )
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS as exc:
        raise StateFileError(
            f"{path}: not a degrade state file (not a zip archive: {exc})"
        ) from exc
    with z:
        infos = z.infolist()
        if sum(i.file_size for i in infos) > max_bytes:
            raise StateFileError(f"{path}: members would expand past {max_bytes} bytes")
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise StateFileError(f"{path}: duplicate members in the archive")
        by = {i.filename: i for i in infos}
        if _TREE not in by:
            raise StateFileError(f"{path}: not a degrade state file (no {_TREE} member)")
        try:
            raw = z.read(by[_TREE])
            doc = json.loads(raw.decode("utf-8"))
        except RecursionError as exc:
            raise StateFileError(f"{path}: {_TREE} is nested too deeply") from exc
        except _ZIP_ERRORS as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise StateFileError(
                f"{path}: {_TREE} is not valid JSON ({type(exc).__name__}: {str(exc)[:120]})"
            ) from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise StateFileError(
                f"{path}: not a degrade state file (no format {FORMAT!r} in {_TREE})"
            )
        if doc.get("kind") != kind:
            raise StateFileError(f"{path}: holds a {doc.get('kind')!r} state, not {kind!r}")
        v = doc.get("version")
        if not isinstance(v, int) or isinstance(v, bool) or v not in versions:
            want = " or ".join(map(str, versions))
            raise StateFileError(
                f"{path}: {kind} state version {v!r}; this degrade reads version {want}. "
                "Move the file away to start fresh"
            )
        if not isinstance(doc.get("tree"), dict):
            raise StateFileError(
                f"{path}: the state tree is a {type(doc.get('tree')).__name__}, not an object"
            )
        arrays = {}
        for name, info in by.items():
            if name == _TREE:
                continue
            if not (name.endswith(".npy") and name[:-4].isidentifier()):
                raise StateFileError(f"{path}: unexpected member {name!r} in the archive")
            try:
                arrays[name[:-4]] = _read_array(path, z, info)
            except StateFileError:
                raise
            except _ZIP_ERRORS as exc:  # a damaged local header, an encrypted member...
                raise StateFileError(
                    f"{path}: member {name} cannot be read ({type(exc).__name__}: {str(exc)[:120]})"
                ) from exc
        used: set[str] = set()
        try:
            tree = _decode(doc["tree"], arrays, used, path, "tree", 0)
        except RecursionError as exc:  # pragma: no cover - the depth check comes first
            raise StateFileError(f"{path}: the state tree is nested too deeply") from exc
        if used != set(arrays):
            raise StateFileError(
                f"{path}: array members {sorted(set(arrays) - used)} are not referenced"
            )
    out = StateTree(tree)
    out.kind, out.version = kind, v
    return out
