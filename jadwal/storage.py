"""Where files live: a local path or an fsspec URL (``s3://…``, ``gs://…``,
``file://…``, ``memory://…``).

Every file operation of the shards stage on a tar or a sidecar goes through this module, so the
local code path stays exactly what it was (``open``, ``os.replace``, ``fsync``) and URLs go through
``fsspec.core.url_to_fs``:

* :func:`atomic_open` writes to a temp key ``.<name>.tmp-<pid>`` in the same folder, then commits it
  with ``fs.mv`` (on S3/GCS a copy + delete; completeness is decided by the sidecar, written after
  the tar, so a half-moved shard is never taken as complete).
* :func:`size`, :func:`read_text`, :func:`remove`, :func:`list_files`, :func:`open_read` read and
  clean up.

A ``memory://`` filesystem lives in one process: Ray workers (or a process pool's workers) do not see
the driver's store, so ``memory://`` output is for single-process runs and tests (``--workers 1``).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO, Iterator

from .workspace import atomic_path, atomic_write


def is_url(loc) -> bool:
    """``True`` for an fsspec URL (``scheme://…``), ``False`` for a local path."""
    return isinstance(loc, str) and "://" in loc


def join(base: str | os.PathLike, *parts: str) -> str | Path:
    if is_url(base):
        return "/".join([str(base).rstrip("/"), *[p.strip("/") for p in parts]])
    return Path(base).joinpath(*parts)


def _fs(url: str):
    from fsspec.core import url_to_fs

    return url_to_fs(url)


def _tmp_name(loc: str) -> str:
    head, _, name = loc.rpartition("/")
    return f"{head}/.{name}.tmp-{os.getpid()}"


@contextlib.contextmanager
def atomic_open(loc, *, fault_hook=None) -> Iterator[BinaryIO]:
    """Open ``loc`` for writing through a temp name; commit (rename / ``fs.mv``) when the block ends
    without an error, remove the temp file otherwise.  ``fault_hook()`` runs after the temp file is
    complete and before the commit (fault-injection tests)."""
    if not is_url(loc):
        with atomic_path(loc) as tmp, open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            if fault_hook:
                fault_hook()
        return
    fs, path = _fs(loc)
    tmp = _tmp_name(path)
    fs.makedirs(path.rpartition("/")[0], exist_ok=True)
    committed = False
    try:
        with fs.open(tmp, "wb") as f:
            yield f
        if fault_hook:
            fault_hook()
        fs.mv(tmp, path)
        committed = True
    finally:
        if not committed:
            with contextlib.suppress(Exception):
                if fs.exists(tmp):
                    fs.rm(tmp)


def write_text(loc, text: str) -> None:
    """Write ``text`` (UTF-8) to ``loc`` atomically."""
    if not is_url(loc):
        atomic_write(loc, text)
        return
    with atomic_open(loc) as f:
        f.write(text.encode("utf-8"))


def read_text(loc) -> str | None:
    """The UTF-8 text of ``loc``, or ``None`` when it cannot be read."""
    try:
        if not is_url(loc):
            return Path(loc).read_text(encoding="utf-8")
        fs, path = _fs(loc)
        with fs.open(path, "rb") as f:
            return f.read().decode("utf-8")
    except (OSError, ValueError):
        return None


def size(loc) -> int | None:
    """Size in bytes of ``loc``, or ``None`` when it does not exist."""
    try:
        if not is_url(loc):
            return Path(loc).stat().st_size
        fs, path = _fs(loc)
        return int(fs.info(path)["size"])
    except (OSError, KeyError):
        return None


def exists(loc) -> bool:
    return size(loc) is not None


def open_read(loc) -> BinaryIO:
    """Open ``loc`` for sequential reading."""
    if not is_url(loc):
        return open(loc, "rb")
    fs, path = _fs(loc)
    return fs.open(path, "rb")


def remove(loc) -> None:
    if not is_url(loc):
        Path(loc).unlink(missing_ok=True)
        return
    fs, path = _fs(loc)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path)


def list_files(loc) -> list[str]:
    """URLs of all files under the folder ``loc`` (recursive, sorted); ``[]`` when it does not exist.
    Only for URLs (local folders are walked with :mod:`pathlib`)."""
    fs, path = _fs(loc)
    base = str(loc).rstrip("/")
    root = path.rstrip("/")
    try:
        found = fs.find(root)
    except FileNotFoundError:
        return []
    out = []
    for p in found:
        p = p.rstrip("/")
        # fsspec returns paths without the protocol (memory fs: with a leading "/"); rebuild URLs
        rel = p[len(root):].lstrip("/") if p.startswith(root) else p.lstrip("/")[len(root.lstrip("/")):].lstrip("/")
        if rel:
            out.append(f"{base}/{rel}")
    return sorted(out)
