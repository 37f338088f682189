"""Forward-only shard access for the streaming loader: opening shards (local, fsspec URLs, ``pipe:``),
reading exact byte ranges, skipping forward, and parsing one sample's tar members.

Nothing here seeks backward.  A shard is opened once per *visit* (a run of samples a reader needs from
it, front to back), positioned once at the visit's first sample (one ``seek``; for ``pipe:`` streams,
by reading), and then read forward: each needed sample's ``[offset, offset + size)`` exactly, gaps
between needed samples skipped forward (read and dropped when shorter than ``seek_gap`` bytes or when
the stream cannot seek, else one forward ``seek``).
"""
from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

BLOCK = 512
_ZERO_BLOCK = b"\0" * BLOCK
SKIP_CHUNK = 1 << 20


class LoaderError(ValueError):
    """The loader cannot deliver the planned samples (bad configuration, index or shard)."""


class ShardError(LoaderError):
    """A shard is missing, truncated or corrupted, or does not match the shard index.

    The message names the shard (workspace-relative path and URL), the sample and the step that needs
    it.  Constructible from the message alone, so it survives DataLoader worker re-raising.
    """

    def __init__(self, message: str, *, shard: str | None = None, step: int | None = None,
                 sample: str | None = None):
        super().__init__(message)
        self.shard = shard
        self.step = step
        self.sample = sample


class TarFormatError(ValueError):
    """A sample's bytes are not the tar members the index describes (internal; wrapped in ShardError)."""


# -- opening ------------------------------------------------------------------------------------
Opener = Callable[[str], BinaryIO]


def shard_url(rel_path: str, workspace_root: Path, shard_root: str | None) -> str:
    """Where the shard ``rel_path`` (relative to the workspace) lives.

    ``shard_root`` None → ``<workspace>/<rel_path>``; a string containing ``{path}`` is a template
    (``"pipe:aws s3 cp s3://bucket/ws/{path} -"``); any other string is a prefix joined with ``/``
    (``"s3://bucket/ws"``, ``"/mnt/ws"``, ``"file:///mnt/ws"``).  A ``rel_path`` that is already a
    URL (shards written with ``jadwal shard --output URL``) is used as is.
    """
    if "://" in rel_path:
        return rel_path
    if shard_root is None:
        return str(workspace_root / rel_path)
    if "{path}" in shard_root:
        return shard_root.replace("{path}", rel_path)
    return shard_root.rstrip("/") + "/" + rel_path


class PipeFile:
    """Read-only, forward-only file over a shell command's stdout (webdataset's ``pipe:`` URLs)."""

    def __init__(self, cmd: str):
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE, bufsize=0)
        self.raw = self.proc.stdout

    def read(self, n: int = -1) -> bytes:
        return self.raw.read(n)

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            self.raw.close()
        finally:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                proc.kill()
                proc.wait()
        # a command that failed before we stopped reading is reported by the reader (short read)


def default_opener(url: str) -> BinaryIO:
    """Open ``url`` for reading: a local path (unbuffered: exactly one ``read`` per request), ``pipe:CMD``,
    or any fsspec URL (``file://``, ``memory://``, ``s3://`` …)."""
    if url.startswith("pipe:"):
        return PipeFile(url[5:])
    if "://" in url:
        import fsspec

        return fsspec.open(url, "rb").open()
    return open(url, "rb", buffering=0)


def file_size(f) -> int | None:
    """Size of an open file without reading or seeking it (``fstat`` or fsspec's ``size``), else None."""
    try:
        return os.fstat(f.fileno()).st_size
    except (AttributeError, OSError, ValueError, TypeError):
        pass
    size = getattr(f, "size", None)
    if isinstance(size, int):
        return size
    return None


class ShardHandle:
    """One open shard, read forward only; ``pos`` is tracked here (no ``tell()`` calls)."""

    def __init__(self, f: BinaryIO, *, seek_gap: int | None):
        self.f = f
        self.pos = 0
        self.seekable: bool | None = None  # unknown until the first seek is tried (no lseek probe)
        self.seek_gap = seek_gap
        self.bytes_read = 0
        self.seeks = 0
        self.url: str | None = None

    def read_exact(self, n: int) -> bytes:
        """Read ``n`` bytes (fewer only at end of file)."""
        if n <= 0:
            return b""
        first = self.f.read(n)
        if first is None:
            first = b""
        if len(first) == n:
            self.pos += n
            self.bytes_read += n
            return first
        parts = [first]
        got = len(first)
        while got < n:
            chunk = self.f.read(n - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        self.pos += got
        self.bytes_read += got
        return b"".join(parts)

    def advance_to(self, offset: int, *, first: bool = False) -> None:
        """Move forward to ``offset``: one ``seek`` for the first positioning of a visit or a gap of at
        least ``seek_gap`` bytes on a seekable file; otherwise read and drop the gap."""
        gap = offset - self.pos
        if gap < 0:
            raise TarFormatError(f"internal error: backward move from byte {self.pos} to {offset}")
        if gap == 0:
            return
        if self.seekable is not False and (first or (self.seek_gap is not None and gap >= self.seek_gap)):
            try:
                self.f.seek(offset)
            except (AttributeError, io.UnsupportedOperation, OSError, ValueError):
                if self.seekable:  # it could seek before: a real I/O error
                    raise
                self.seekable = False  # a pipe or stream: skip by reading
            else:
                self.seekable = True
                self.seeks += 1
                self.pos = offset
                return
        while gap > 0:
            chunk = self.read_exact(min(gap, SKIP_CHUNK))
            if not chunk:
                raise TarFormatError(f"file ends at byte {self.pos}, before byte {offset}")
            gap -= len(chunk)

    def close(self) -> None:
        try:
            self.f.close()
        except Exception:  # noqa: BLE001, S110 - closing a damaged stream must not hide the real error
            pass


# -- tar members of one sample --------------------------------------------------------------------
def _parse_pax(payload: bytes) -> dict[str, str]:
    out = {}
    i, n = 0, len(payload)
    while i < n:
        sp = payload.find(b" ", i)
        if sp < 0:
            raise TarFormatError("malformed pax extended header")
        try:
            length = int(payload[i:sp])
        except ValueError as e:
            raise TarFormatError("malformed pax extended header") from e
        rec = payload[sp + 1 : i + length]
        if length <= 0 or not rec.endswith(b"\n") or b"=" not in rec:
            raise TarFormatError("malformed pax extended header")
        k, _, v = rec[:-1].partition(b"=")
        out[k.decode("utf-8", "surrogateescape")] = v.decode("utf-8", "surrogateescape")
        i += length
    return out


def parse_members(data: bytes, base: int = 0) -> list[tuple[str, bytes]]:
    """The regular members ``[(name, data)]`` of a sample's tar bytes (headers validated: checksum,
    type, sizes within the sample).  PAX extended headers and GNU long names are applied.  ``base`` is
    the sample's offset in its shard (for messages)."""
    out: list[tuple[str, bytes]] = []
    mv = memoryview(data)
    p, n = 0, len(data)
    pending: dict[str, str] = {}
    while p < n:
        if n - p < BLOCK:
            raise TarFormatError(f"truncated tar header at byte {base + p}")
        block = data[p : p + BLOCK]
        if block == _ZERO_BLOCK:
            raise TarFormatError(f"end-of-archive marker at byte {base + p}, inside the sample")
        try:
            ti = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as e:
            raise TarFormatError(f"bad tar header at byte {base + p} ({e})") from None
        p += BLOCK
        if ti.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.SOLARIS_XHDTYPE):
            if p + ti.size > n:
                raise TarFormatError(f"extended header at byte {base + p - BLOCK} runs past the sample's end")
            payload = bytes(mv[p : p + ti.size])
            p += ti.size + (-ti.size) % BLOCK
            if ti.type == tarfile.GNUTYPE_LONGNAME:
                pending["path"] = payload.rstrip(b"\0").decode("utf-8", "surrogateescape")
            elif ti.type != tarfile.XGLTYPE:
                pending.update(_parse_pax(payload))
            continue
        name = pending.pop("path", ti.name)
        size = ti.size
        if "size" in pending:
            try:
                size = int(pending.pop("size"))
            except ValueError:
                raise TarFormatError(f"bad pax size for member {name!r}") from None
        pending.clear()
        if not ti.isreg():
            raise TarFormatError(f"member {name!r} at byte {base + p - BLOCK} is not a regular file (type {ti.type!r})")
        if p + size > n:
            raise TarFormatError(f"member {name!r} ({size} bytes at byte {base + p}) runs past the sample's end "
                                 f"(byte {base + n})")
        out.append((name, bytes(mv[p : p + size])))
        p += size + (-size) % BLOCK
    if pending:
        raise TarFormatError("extended header without a following member")
    return out
