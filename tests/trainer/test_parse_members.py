"""``shardio.parse_members`` on what stock ``tarfile`` writes: the PAX and GNU long-name branches
(names over 100 characters, non-ASCII names), several members per sample, and the errors."""
from __future__ import annotations

import io
import tarfile

import pytest

from jadwal.shards.shardio import TarFormatError, parse_members

LONG = "k" * 120  # > 100 characters: does not fit a ustar name field


def sample_bytes(members: list[tuple[str, bytes]], fmt: int) -> bytes:
    """One sample's tar bytes as ``tarfile`` writes them in ``fmt``, without the end-of-archive blocks."""
    buf = io.BytesIO()
    tf = tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8")
    for name, data in members:
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    end = tf.offset  # the members end here; close() appends the zero blocks
    tf.close()
    return buf.getvalue()[:end]


MEMBERS = [(f"{LONG}.json", b'{"id": "x"}'), (f"{LONG}.flac", bytes(range(256)) * 3), ("short.txt", b"")]


def test_pax_long_names():
    data = sample_bytes(MEMBERS, tarfile.PAX_FORMAT)
    assert b" path=" + LONG.encode() in data  # the PAX branch is what carries the name
    assert parse_members(data) == MEMBERS


def test_pax_non_ascii_name():
    members = [("عينة-١.json", b"{}"), ("عينة-١.oga", b"\x00" * 700)]
    data = sample_bytes(members, tarfile.PAX_FORMAT)
    assert parse_members(data) == members


def test_gnu_long_names():
    data = sample_bytes(MEMBERS, tarfile.GNU_FORMAT)
    assert b"././@LongLink" in data and b" path=" not in data  # the GNU long-name branch, no PAX
    assert parse_members(data) == MEMBERS


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_extended_header_without_member(fmt):
    data = sample_bytes(MEMBERS[:1], fmt)
    header_only = data[: data.index(b'{"id"') - 512]  # the long-name header(s), not the member
    with pytest.raises(TarFormatError, match="extended header without a following member"):
        parse_members(header_only)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_long_name_payload_past_the_end(fmt):
    data = sample_bytes(MEMBERS[:1], fmt)
    with pytest.raises(TarFormatError, match="extended header at byte 1000 runs past"):
        parse_members(data[:600], base=1000)


def test_malformed_pax_record():
    data = bytearray(sample_bytes(MEMBERS[:1], tarfile.PAX_FORMAT))
    i = data.index(b" path=")
    data[i - 3 : i] = b"xyz"  # the record's length is no longer a number
    # the header checksum still matches: only the payload changed
    with pytest.raises(TarFormatError, match="malformed pax extended header"):
        parse_members(bytes(data))


def test_end_marker_inside_the_sample():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        ti = tarfile.TarInfo(f"{LONG}.json")
        ti.size = 2
        tf.addfile(ti, io.BytesIO(b"{}"))
    with pytest.raises(TarFormatError, match="end-of-archive marker at byte"):
        parse_members(buf.getvalue())
