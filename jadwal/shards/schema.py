"""The shard-index contract (defined once here; documented in README).

A *shard set* lives in ``shards/<set>/`` (default set name ``by-<keys>``, e.g. ``by-dataset``):

* ``<stream>/shard-000000.tar`` … plain WebDataset tars, members ``<key>.flac`` (or the original
  encoding) and ``<key>.json`` (the manifest row); text-only samples have only ``<key>.json``.
  ``<key>`` is the sample id sanitized for tar member names (:func:`member_key`).
* ``samples.parquet`` (:data:`SAMPLES_SCHEMA`) one row per sample, **sorted by (shard_id, pos)**; the row
  number is the sample's *row* that scheduling indexes refer to.
* ``shards.parquet`` (:data:`SHARDS_SCHEMA`) one row per shard, sorted by shard_id.
* ``meta.json`` written last.

With ``jadwal shard --output URL`` (or ``regroup --output``) the tars and their sidecars live under
``URL/<set>/<stream>/shard-NNNNNN.tar`` (any fsspec URL: ``s3://``, ``gs://``, ``file://``,
``memory://``) while the index files above stay in the workspace's ``shards/<set>/``; a shard's
``path`` is then the full URL.  The writer's lock is an ``fcntl`` lock on the local set folder: one
writer per set.

Units: bytes for offsets/sizes (offset = position of the sample's first tar header in the tar file;
size = bytes of all the sample's members, headers and padding included, so a sample occupies
``[offset, offset + size)``), seconds for durations.
"""
from __future__ import annotations

import hashlib
import re

import pyarrow as pa

MEMBER = pa.struct(
    [
        pa.field("name", pa.string()),  # member suffix, e.g. "flac", "json"
        pa.field("offset", pa.int64()),  # byte offset of the member's data (after its header)
        pa.field("size", pa.int64()),  # bytes of the member's data
    ]
)

# Scheduling attributes copied from the manifest into the shard index so the planner needs no join.
ATTRIBUTE_COLUMNS = ["dataset", "task", "lang", "split", "modality", "label", "speaker"]

SAMPLES_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("stream", pa.string(), nullable=False),
        pa.field("shard_id", pa.int32(), nullable=False),
        pa.field("pos", pa.int32(), nullable=False),  # position of the sample within its shard
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("members", pa.list_(MEMBER)),
        pa.field("duration_s", pa.float64()),
        pa.field("sha1", pa.string()),  # sha1 of the sample's bytes [offset, offset + size) (loaders verify it)
        *[pa.field(c, pa.string()) for c in ATTRIBUTE_COLUMNS],
    ]
)
# Extra key columns (e.g. "cluster:k500", int64) may follow the schema's columns.

SHARDS_SCHEMA = pa.schema(
    [
        pa.field("shard_id", pa.int32(), nullable=False),
        pa.field("path", pa.string(), nullable=False),  # relative to the workspace, or a URL
        pa.field("stream", pa.string(), nullable=False),
        pa.field("num_samples", pa.int64(), nullable=False),
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("duration_s", pa.float64()),
        pa.field("sha256", pa.string(), nullable=False),
    ]
)

SAMPLES_FILE = "samples.parquet"
SAMPLES_ROW_GROUP = 65_536  # rows per Parquet row group of samples.parquet
SHARDS_FILE = "shards.parquet"

# The audio-member contract, defined once: a sample's audio member is the member whose suffix is one
# of these (the first such member of a sample wins).  They are exactly the suffixes the shard writer
# can produce (``shards.audio.FORMAT_SUFFIXES`` plus ``opus``; any other source format is re-encoded
# as FLAC), and what embed, export and the loader treat as audio.
AUDIO_MEMBER_SUFFIXES = ("flac", "wav", "mp3", "ogg", "opus", "oga", "aiff", "aif", "au", "w64", "caf", "sph")


def member_suffix(name: str) -> str:
    """The suffix of a tar member name or of a ``members`` entry (``"abc.FLAC"`` or ``"flac"`` →
    ``"flac"``), lower-cased."""
    return name.rsplit(".", 1)[-1].lower()


def is_audio_member(name: str) -> bool:
    """Whether a member (full name or bare suffix) holds the sample's audio (:data:`AUDIO_MEMBER_SUFFIXES`)."""
    return member_suffix(name) in AUDIO_MEMBER_SUFFIXES

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]+")


def member_key(sample_id: str) -> str:
    """Tar member key for a sample id: only ``[A-Za-z0-9_-]`` (no dots, slashes, ``..``), never empty.

    An id that is already safe is its own key; otherwise the sanitized id gets an 8-hex-digit hash of
    the original id appended, so distinct ids never collide.
    """
    key = _UNSAFE.sub("_", sample_id).strip("_")
    if key == sample_id and key:
        return key
    return f"{key or 'sample'}_{hashlib.sha1(sample_id.encode('utf-8')).hexdigest()[:8]}"


def stream_dirname(stream: str) -> str:
    """Folder name for a stream value (same rule as :func:`member_key`)."""
    return member_key(str(stream))


def set_name(keys: list[str]) -> str:
    """Default shard-set name for grouping keys, e.g. ``['cluster:k500', 'task']`` → ``by-cluster-k500-task``."""
    return "by-" + "-".join(_UNSAFE.sub("-", k).strip("-") for k in keys)
