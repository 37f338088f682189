"""The workspace: one folder per project, one subfolder per stage, a ``meta.json`` per output.

Contract
--------
* Every command takes ``-w/--workspace DIR``.
* A stage output folder (``manifests/<dataset>``, ``shards/<set>``, ``index/<name>``, …) holds a
  ``meta.json`` written last (atomically) with: jadwal version, stage, command line, config,
  ``inputs`` and ``outputs`` as {relative path: sha256}.  An output is *complete* when its
  ``meta.json`` exists, and *stale* when an input's current hash differs from the recorded one.
* Paths stored inside a workspace are relative to it, so a workspace can be moved.
* All writes go through :func:`atomic_write` / :func:`atomic_path` (temp name, then ``os.replace``).
* A stage that writes ``<stage dir>/<name>`` does so inside :meth:`Workspace.stage`: the name is
  validated (:func:`check_name`), one writer at a time holds ``<stage dir>/.<name>.lock`` (an
  ``fcntl`` lock, as ``shard`` takes on its set folder), and temp outputs left by killed runs
  (``.<name>.tmp-PID``, ``.<name>.old-PID`` beside the output, ``.*.tmp-PID`` inside it, PID dead)
  are removed first.
* A stage writes its files through :meth:`Workspace.stage_output` (a :class:`StageOutput`): the old
  ``meta.json`` is deleted before the first new byte is written (a killed run is visibly incomplete),
  every file goes through a temp name, and ``meta.json`` is written last by :meth:`StageOutput.finish`.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from . import __version__

META = "meta.json"
STAGE_DIRS = ("manifests", "shards", "embeddings", "clusters", "groups", "index", "runs")
MAX_NAME_CHARS = 200
_TMP_PID = re.compile(r"^\..*\.(?:tmp|old)-(\d+)$")


class StageError(ValueError):
    """A stage cannot start: a bad output name, or another run holds the output's lock (one line)."""


def check_name(name: str, what: str = "--name") -> str:
    """``name`` when it is a valid output name (one path component: not empty, no ``/``, ``\\`` or
    NUL, not ``.``/``..``, not starting with ``.`` (temp and lock files do), at most
    :data:`MAX_NAME_CHARS` characters); else :class:`StageError` naming ``what``."""
    bad = None
    if not isinstance(name, str) or not name.strip():
        bad = "is empty"
    elif any(c in name for c in "/\\\0"):
        bad = "holds a path separator (a name is one folder, inside the workspace)"
    elif name.startswith("."):
        bad = "starts with '.' (reserved for temp and lock files; '..' would leave the workspace)"
    elif len(name) > MAX_NAME_CHARS:
        bad = f"is longer than {MAX_NAME_CHARS} characters"
    elif any(ord(c) < 32 for c in name):
        bad = "holds a control character"
    if bad:
        raise StageError(f"{what} {name!r} {bad}")
    return name


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (``kill(pid, 0)``)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_dead_temps(folder: Path, prefix: str | None = None, *, recursive: bool = False) -> list[Path]:
    """Remove temp outputs ``.…tmp-PID`` / ``.…old-PID`` (files or folders) in ``folder`` whose PID is
    no live process (a killed run's leftovers); with ``prefix`` only names starting ``.<prefix>.``.
    Returns what was removed."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    it = folder.rglob(".*") if recursive else folder.glob(".*")
    for p in sorted(it):
        m = _TMP_PID.match(p.name)
        if not m or (prefix is not None and not p.name.startswith(f".{prefix}.")):
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or pid_alive(pid):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists() or p.is_symlink():
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


@contextlib.contextmanager
def exclusive_lock(lock_file: Path, held_message: str, *, shared: bool = False) -> Iterator[None]:
    """Hold an exclusive, non-blocking ``fcntl`` lock on ``lock_file`` (created) for the block; when
    another process holds it, :class:`StageError` with ``held_message``.  Released when the block ends
    or the process dies (a killed run never leaves a stale lock).  ``shared``: a shared lock instead
    (any number of shared holders at once; refused while an exclusive holder runs, and vice versa)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise StageError(held_message) from None
            raise
        yield
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike, bufsize: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it to ``path`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        mode = "wb" if isinstance(data, bytes) else "w"
        with open(tmp, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


@dataclass(frozen=True)
class Workspace:
    """A jadwal workspace rooted at ``root``."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root).resolve())

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @contextlib.contextmanager
    def stage(self, stage: str, name: str, *, what: str = "--name", incomplete: bool = False,
              shared: bool = False) -> Iterator[Path]:
        """Write ``<stage>/<name>`` (``stage``: a :data:`STAGE_DIRS` folder) as its only writer.

        Validates ``name`` (:func:`check_name`, ``what`` names the option in the message), takes the
        exclusive lock ``<stage>/.<name>.lock`` (:class:`StageError` "another jadwal run is writing …"
        when held), removes killed runs' temp outputs (dead PIDs only), and with ``incomplete`` removes
        ``meta.json`` (the output is marked unfinished until the stage writes it again).  Yields the
        output folder (not created).  ``shared``: one of several cooperating writers of disjoint parts
        of the output (``embed --part I/N``): a shared lock on the same file, so they run together
        while an exclusive writer (the merge, ``--force``) is refused and refuses them."""
        if stage not in STAGE_DIRS:
            raise ValueError(f"unknown stage folder {stage!r}; one of {STAGE_DIRS}")
        check_name(name, what)
        base = self.path(stage)
        out = base / name
        with exclusive_lock(base / f".{name}.lock", f"another jadwal run is writing {stage}/{name} (lock held); "
                                                   f"wait for it to finish or pick another {what}", shared=shared):
            remove_dead_temps(base, name)
            remove_dead_temps(out, recursive=True)
            if incomplete and (out / META).exists():
                (out / META).unlink()
            yield out

    @contextlib.contextmanager
    def stage_output(self, stage: str, name: str, meta_stage: str, *, what: str = "--name",
                     read_first: bool = False) -> Iterator["StageOutput"]:
        """Write ``<stage>/<name>`` through one routine: :meth:`stage` (name checked, lock held, killed
        runs' temps removed), ``meta.json`` deleted, then a :class:`StageOutput`
        whose writes go through temp names and whose :meth:`StageOutput.finish` writes ``meta.json``
        (``"stage": meta_stage``) last.  ``read_first``: keep the old ``meta.json`` until the caller
        has read it and calls :meth:`StageOutput.begin` (any write begins too).  A block left
        without ``finish`` (an exception, a kill) leaves the output incomplete: no ``meta.json``."""
        with self.stage(stage, name, what=what) as out:
            so = StageOutput(self, out, meta_stage)
            if not read_first:
                so.begin()
            yield so

    def rel(self, path: str | os.PathLike) -> str:
        """``path`` relative to the workspace root when inside it, else absolute (posix form); a URL
        (``s3://…``, ``memory://…``) is returned as is."""
        if isinstance(path, str) and "://" in path:
            return path
        p = Path(path).resolve()
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            return p.as_posix()

    def resolve(self, stored: str) -> Path:
        """Inverse of :meth:`rel`: a stored path back to an absolute one.  A URL (``s3://…``,
        ``memory://…``: shards written with ``--output``) is returned unchanged, as a string."""
        if isinstance(stored, str) and "://" in stored:
            return stored
        p = Path(stored)
        return p if p.is_absolute() else self.root / p

    # -- meta.json ---------------------------------------------------------------------------
    def write_meta(
        self,
        folder: str | os.PathLike,
        stage: str,
        *,
        config: dict | None = None,
        inputs: list[str | os.PathLike] = (),
        outputs: list[str | os.PathLike] = (),
        extra: dict | None = None,
    ) -> dict:
        """Write ``folder/meta.json`` recording version, command, config and input/output hashes."""
        folder = self.path(folder) if not Path(folder).is_absolute() else Path(folder)
        meta = {
            "jadwal_version": __version__,
            "stage": stage,
            "command": sys.argv,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": config or {},
            "inputs": {self.rel(p): sha256_file(p) for p in inputs},
            "outputs": {self.rel(p): sha256_file(p) for p in outputs},
        }
        if extra:
            meta.update(extra)
        atomic_write(folder / META, json.dumps(meta, indent=2, ensure_ascii=False, default=str))
        return meta

    def read_meta(self, folder: str | os.PathLike) -> dict | None:
        p = Path(folder) if Path(folder).is_absolute() else self.path(folder)
        p = p / META
        if not p.exists():
            return None
        return json.loads(p.read_text(encoding="utf-8"))

    def stages(self) -> list[dict]:
        """Every stage output in the workspace with its status: ``ok``, ``stale`` or ``incomplete``."""
        rows = []
        for stage_dir in STAGE_DIRS:
            base = self.path(stage_dir)
            if not base.is_dir():
                continue
            for folder in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
                meta = self.read_meta(folder)
                row = {"stage": stage_dir, "name": folder.name, "path": self.rel(folder)}
                if meta is None:
                    row.update(status="incomplete", detail="no meta.json (not finished)")
                else:
                    changed = [
                        p for p, h in {**meta.get("inputs", {}), **meta.get("outputs", {})}.items()
                        if not self.resolve(p).exists() or sha256_file(self.resolve(p)) != h
                    ]
                    row.update(
                        status="stale" if changed else "ok",
                        detail=("changed: " + ", ".join(changed[:3])) if changed else meta.get("created", ""),
                        outputs=len(meta.get("outputs", {})),
                    )
                rows.append(row)
        return rows


class StageOutput:
    """The files one stage run writes into its output folder ``folder`` (from
    :meth:`Workspace.stage_output`; created by the first write).

    Contract: :meth:`begin` (called by every write, idempotent) deletes ``meta.json`` first, so a run
    killed part-way leaves the output incomplete; :meth:`file`, :meth:`parquet`, :meth:`text` write
    through a temp name renamed into place (:func:`atomic_path`) and record the file as an output, in
    write order; :meth:`add` records a file a helper wrote (atomically) itself; :meth:`finish` writes
    ``meta.json`` last with the recorded outputs' sha256."""

    def __init__(self, ws: Workspace, folder: Path, stage: str):
        self.ws, self.folder, self.stage = ws, Path(folder), stage
        self.outputs: list[Path] = []
        self.meta: dict | None = None
        self._begun = False

    def begin(self) -> None:
        """Mark the output unfinished: delete ``meta.json`` (once; later calls do nothing)."""
        if not self._begun:
            (self.folder / META).unlink(missing_ok=True)
            self._begun = True

    def path(self, name: str) -> Path:
        """``folder/name`` (no write, nothing recorded)."""
        return self.folder / name

    def add(self, path: str | os.PathLike) -> Path:
        """Record ``path`` (written atomically by someone else) as an output; returns it."""
        self.begin()
        p = Path(path)
        if p not in self.outputs:
            self.outputs.append(p)
        return p

    @contextlib.contextmanager
    def file(self, name: str) -> Iterator[Path]:
        """Yield a temp path for ``folder/name``; on success renamed into place and recorded."""
        self.begin()
        with atomic_path(self.folder / name) as tmp:
            yield tmp
        self.add(self.folder / name)

    def parquet(self, name: str, table, **kwargs) -> Path:
        """Write the Arrow ``table`` to ``folder/name`` (``pyarrow.parquet.write_table(**kwargs)``)."""
        import pyarrow.parquet as pq

        with self.file(name) as tmp:
            pq.write_table(table, tmp, **kwargs)
        return self.folder / name

    def text(self, name: str, data: bytes | str) -> Path:
        """Write ``data`` (UTF-8 when ``str``) to ``folder/name``."""
        self.begin()
        atomic_write(self.folder / name, data)
        return self.add(self.folder / name)

    def finish(self, *, config: dict | None = None, inputs: list[str | os.PathLike] = (),
               extra: dict | None = None) -> dict:
        """Write ``meta.json`` last (:meth:`Workspace.write_meta` over the recorded outputs); returns it."""
        self.begin()
        self.meta = self.ws.write_meta(self.folder, self.stage, config=config, inputs=inputs,
                                       outputs=self.outputs, extra=extra)
        return self.meta
