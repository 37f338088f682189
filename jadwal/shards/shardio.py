"""Forward-only shard access for the streaming loader: opening shards (local, fsspec URLs, ``pipe:``),
reading exact byte ranges, skipping forward, and parsing one sample's tar members.

Nothing here seeks backward.  A shard is opened once per *visit* (a run of samples a reader needs from
it, front to back), positioned once at the visit's first sample (one ``seek``; for ``pipe:`` streams,
by reading), and then read forward: each needed sample's ``[offset, offset + size)`` exactly, gaps
between needed samples skipped forward (read and dropped when shorter than ``seek_gap`` bytes or when
the stream cannot seek, else one forward ``seek``).

Security (``docs/security.md``): a ``path`` read from ``shards.parquet`` never runs a command and
never reaches the network unless its scheme was allowed (:func:`shard_path_refusal`, checked when an
index is planned and again when the loader builds a shard's URL).  ``pipe:`` commands come only from
the user's own ``shard_root`` argument; the stored path substituted for ``{path}`` is shell-quoted.
"""
from __future__ import annotations

import io
import os
import shlex
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ..access import LOCAL_SCHEMES, Access, chain_schemes

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


def shard_path_refusal(path, allow_remote=frozenset()) -> str | None:
    """``None`` when ``path`` (a shard path as stored in ``shards.parquet``) may be opened; else why
    not, in one line naming the option that would allow it.

    A stored path is a workspace-relative or absolute local path, or a URL whose every scheme is
    local (``file``, ``memory``) or in ``allow_remote`` (CLI ``--allow-remote``).  Refused: ``pipe:``
    (a command; commands come only from the user's ``shard_root``), empty values, NUL/newline
    characters, and a leading ``-`` (an option, once substituted into a user's command)."""
    if not isinstance(path, str) or not path.strip():
        return f"shard path {path!r} is empty or not a string"
    if any(c in path for c in "\0\n\r"):
        return f"shard path {path!r} holds a NUL or newline character"
    if path.lstrip().lower().startswith("pipe:"):
        return (f"shard path {path!r} is a command; a path read from the shard index never runs "
                f"(pass commands yourself: shard_root='pipe:… {{path}}' / --shard-root)")
    if path.startswith("-"):
        return f"shard path {path!r} starts with '-'"
    if Access(allow_remote=frozenset(allow_remote)).remote_refusal(path):
        denied = [s for s in chain_schemes(path) if s not in LOCAL_SCHEMES and s not in allow_remote]
        opt = ",".join(dict.fromkeys(denied))
        return (f"shard path {path!r} uses scheme {denied[0]!r}; remote shards are read only when allowed "
                f"(pass --allow-remote {opt}, or allow_remote={{{', '.join(repr(d) for d in dict.fromkeys(denied))}}} in code)")
    return None


def check_shard_paths(paths, allow_remote=frozenset(), *, where: str = "shards.parquet") -> None:
    """Raise :class:`LoaderError` naming the first refused path of ``paths`` (see
    :func:`shard_path_refusal`) and how many were refused."""
    bad = [(p, why) for p in paths if (why := shard_path_refusal(p, allow_remote))]
    if bad:
        more = f" (and {len(bad) - 1} more refused path(s))" if len(bad) > 1 else ""
        raise LoaderError(f"{where}: {bad[0][1]}{more}")


def shard_url(rel_path: str, workspace_root: Path, shard_root: str | None,
              allow_remote=frozenset()) -> str:
    """Where the shard ``rel_path`` (as stored in the shard index) lives.

    ``rel_path`` is first checked (:func:`shard_path_refusal`; :class:`LoaderError` when refused).
    ``shard_root`` None → ``<workspace>/<rel_path>``; a string containing ``{path}`` is a template
    (``"pipe:aws s3 cp s3://bucket/ws/{path} -"``; in a ``pipe:`` template ``{path}`` is replaced by
    the shell-quoted path, so write it unquoted); any other string is a prefix joined with ``/``
    (``"s3://bucket/ws"``, ``"/mnt/ws"``, ``"file:///mnt/ws"``; a ``pipe:`` root needs ``{path}``).
    A ``rel_path`` that is already a URL (shards written with ``jadwal shard --output URL``) is used
    as is.  ``shard_root`` is the user's own argument: its schemes and commands are trusted.
    """
    why = shard_path_refusal(rel_path, allow_remote)
    if why:
        raise LoaderError(why)
    if "://" in rel_path:
        return rel_path
    if shard_root is None:
        return str(workspace_root / rel_path)
    is_pipe = shard_root.startswith("pipe:")
    if "{path}" in shard_root:
        return shard_root.replace("{path}", shlex.quote(rel_path) if is_pipe else rel_path)
    if is_pipe:
        raise LoaderError(f"shard_root {shard_root!r}: a pipe: command needs a {{path}} placeholder "
                          f"(e.g. 'pipe:cat /mnt/ws/{{path}}')")
    return shard_root.rstrip("/") + "/" + rel_path


class PipeFile:
    """Read-only, forward-only file over a shell command's stdout (webdataset's ``pipe:`` URLs).

    ``cmd`` is the user's own command line (their ``shard_root`` template with the quoted shard path
    substituted, see :func:`shard_url`), so it runs in ``/bin/sh`` as written (pipelines, ``$VARS``);
    a ``list`` runs without a shell.  Never built from a value read out of a workspace."""

    def __init__(self, cmd: str | list[str]):
        self.cmd = cmd
        # shell only for the user's own command string (see the class docstring)
        self.proc = subprocess.Popen(cmd, shell=isinstance(cmd, str), stdout=subprocess.PIPE, bufsize=0)
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

        f = fsspec.open(url, "rb").open()
        if url.startswith("memory://"):  # fsspec hands every open the same stored object: one shared position
            from fsspec.implementations.memory import MemoryFile

            f = MemoryFile(None, None, f.getvalue())
        return f
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
