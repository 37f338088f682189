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
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from . import __version__

META = "meta.json"
STAGE_DIRS = ("manifests", "shards", "embeddings", "clusters", "groups", "index", "runs")


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
