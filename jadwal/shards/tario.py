"""Byte-exact tar writing and safe sequential tar reading for shards.

Writing: :class:`ShardWriter` emits plain POSIX (PAX/ustar) tar members with fixed metadata
(``mtime=0``, ``uid=gid=0``, empty user/group names, mode ``0644``) so the same samples always give
the same bytes, and reports for every sample where it landed (offset of its first header, size up to
the end of its last member's padding, and each member's data offset/size), a sha1 of the sample's
byte range and the sha256 of the whole shard, computed while writing (no re-read).

Reading: :func:`iter_members` streams a tar front to back (``tarfile`` stream mode: reads only, no
seek) through a :class:`TrackingReader` that hashes what it reads; member names are checked with
:func:`check_member_name` (no ``/``, ``\\``, ``..``, absolute paths or non-regular members), and nothing
is ever extracted to disk.
"""
from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from typing import BinaryIO

BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 10240: the end of archive is padded to a record, like GNU tar
MTIME = 0
_ZEROS = b"\0" * RECORD


class UnsafeMember(ValueError):
    """A tar member whose name or type could escape the shard folder."""


def member_header(name: str, size: int) -> bytes:
    """The (deterministic) header bytes of a regular member ``name`` of ``size`` bytes."""
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mtime = MTIME
    ti.mode = 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.type = tarfile.REGTYPE
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class ShardWriter:
    """Append samples to a binary file object as tar members; track offsets and hashes."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.pos = 0
        self.sha256 = hashlib.sha256()
        self.closed = False

    def _write(self, data, hashers=()) -> None:
        self.f.write(data)
        self.sha256.update(data)
        for h in hashers:
            h.update(data)
        self.pos += len(data)

    def add(self, key: str, members: list[tuple[str, bytes]]) -> dict:
        """Write one sample (``<key>.<suffix>`` for each member, in the given order).

        Returns ``{"offset", "size", "members": [(suffix, data_offset, data_size)], "sha1"}``.
        """
        start = self.pos
        h = hashlib.sha1()
        out = []
        for suffix, data in members:
            self._write(member_header(f"{key}.{suffix}", len(data)), (h,))
            off = self.pos
            self._write(memoryview(data), (h,))
            pad = (-len(data)) % BLOCK
            if pad:
                self._write(_ZEROS[:pad], (h,))
            out.append((suffix, off, len(data)))
        return {"offset": start, "size": self.pos - start, "members": out, "sha1": h.hexdigest()}

    def close(self) -> None:
        """Write the end-of-archive marker (two zero blocks) and pad to a full record."""
        if self.closed:
            return
        end = 2 * BLOCK
        end += (-(self.pos + end)) % RECORD
        self._write(_ZEROS[:end])
        self.closed = True

    @property
    def hexdigest(self) -> str:
        return self.sha256.hexdigest()


def check_member_name(name: str) -> None:
    """Raise :class:`UnsafeMember` for a member name that is not a plain file name."""
    if not name or "\0" in name or "/" in name or "\\" in name or ".." in name or ":" in name or name.startswith("."):
        raise UnsafeMember(f"unsafe tar member name {name!r} (path separators, '..', drive or hidden names)")


def split_name(name: str) -> tuple[str, str]:
    """``"<key>.<suffix>"`` → (key, suffix), split at the first dot like webdataset does."""
    key, dot, suffix = name.partition(".")
    if not dot or not key or not suffix:
        raise UnsafeMember(f"tar member {name!r} is not named <key>.<suffix>")
    return key, suffix


class TrackingReader(io.RawIOBase):
    """Read-only, forward-only wrapper: counts bytes, hashes everything read (sha256) and, optionally,
    the byte ranges ``[(start, end)]`` given (sha1 each, ranges sorted and disjoint)."""

    def __init__(self, f: BinaryIO, ranges: list[tuple[int, int]] | None = None):
        self.f = f
        self.pos = 0
        self.sha256 = hashlib.sha256()
        self.ranges = ranges or []
        self.range_sha1 = [hashlib.sha1() for _ in self.ranges]
        self.range_seen = [0] * len(self.ranges)
        self._ri = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        if data:
            self._feed(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def _feed(self, data: bytes) -> None:
        start, end = self.pos, self.pos + len(data)
        self.sha256.update(data)
        mv = memoryview(data)
        i = self._ri
        while i < len(self.ranges) and self.ranges[i][0] < end:
            rs, re_ = self.ranges[i]
            lo, hi = max(rs, start), min(re_, end)
            if hi > lo:
                self.range_sha1[i].update(mv[lo - start : hi - start])
                self.range_seen[i] += hi - lo
            if re_ <= end:
                i += 1
            else:
                break
        self._ri = i
        self.pos = end

    def drain(self, bufsize: int = 1 << 20) -> None:
        """Read (and hash) the rest of the file."""
        while self.read(bufsize):
            pass

    def range_digest(self, i: int) -> str | None:
        """sha1 of range ``i`` if it was read completely, else ``None``."""
        rs, re_ = self.ranges[i]
        return self.range_sha1[i].hexdigest() if self.range_seen[i] == re_ - rs else None


def iter_members(f: BinaryIO, *, read_data: bool = True, check=None) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
    """Yield ``(TarInfo, data)`` for each member of the tar ``f``, front to back, without seeking.
    ``check(ti)`` (optional) runs on each header before its data is read (e.g. its size against an index).

    ``TarInfo.offset`` is the member's first header, ``offset_data`` its data.  Raises
    :class:`UnsafeMember` on names/types that are not plain files and ``tarfile.ReadError`` on damage
    that ``tarfile`` detects (a damaged header after the first is seen as the end of the archive:
    callers compare with the index).
    """
    with tarfile.open(fileobj=f, mode="r|") as tf:
        for ti in tf:
            check_member_name(ti.name)
            if not ti.isreg():
                raise UnsafeMember(f"tar member {ti.name!r} is not a regular file (type {ti.type!r})")
            if check is not None:
                check(ti)
            data = None
            if read_data:
                ex = tf.extractfile(ti)
                data = ex.read()
                if len(data) != ti.size:
                    raise tarfile.ReadError(f"unexpected end of data in member {ti.name!r}")
            yield ti, data
