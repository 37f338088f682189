"""Source importers.  Each yields :class:`RawRow` objects in a deterministic order; everything else
(decoding checks, normalization, probing, validation, splits, ids) happens once, in
:mod:`jadwal.manifests.core`.

An importer is a module with ``FORMAT`` (its ``--format`` name) and ``open_source(ctx)`` returning a
:class:`Source`: ``inputs`` (the index files it reads, recorded in ``meta.json``) and ``rows``
(an iterator of :class:`RawRow`).  Importers never raise for a bad *row*: they yield it with
``reject=(reason, detail)``.  They raise ``ValueError``/``FileNotFoundError`` only when the *source*
as a whole is unusable (wrong folder, no index file).

Text read from files is decoded with ``errors="surrogateescape"``: a line with bytes that are not
UTF-8 survives parsing with lone surrogates in its strings, and the common path rejects exactly
that row with ``bad_encoding`` (the rejects table shows the bytes as ``\\xNN``).  A UTF-8 byte-order
mark at the start of a file is dropped (the first row is kept).

Audio values that are URLs (``s3://…``, ``ftp://…``) are passed through unchanged; the core refuses
them (``remote_audio_not_allowed``) unless the user's :class:`~jadwal.access.Access` grant names
the scheme.  An importer never opens a URL itself.
"""
from __future__ import annotations

import functools
import gzip
import importlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ...access import LOCAL_ONLY, Access

FORMATS = ("kaldi", "commonvoice", "audiofolder", "hf", "lhotse", "jsonl", "csv", "nemo")
_MODULES = {
    "nemo": "tabular",
    "kaldi": "kaldi",
    "commonvoice": "commonvoice",
    "audiofolder": "audiofolder",
    "hf": "hf",
    "lhotse": "lhotse",
    "jsonl": "tabular",
    "csv": "tabular",
}

#: Longest line (bytes) a line-oriented reader accepts; a longer one is one ``bad_row`` reject.
MAX_LINE_BYTES = 64 << 20

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".wma", ".aiff", ".aif", ".sph", ".webm")

# Logical manifest field → column names tried in order (jsonl/csv/hf/audiofolder metadata).
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "audio": ("audio", "audio_path", "path", "file_name", "audio_filepath", "wav"),
    "text": ("text", "sentence", "transcript", "transcription", "normalized_text"),
    "label": ("label",),
    "id": ("id", "utt_id", "uttid", "key"),
    "speaker": ("speaker", "speaker_id", "spk", "client_id"),
    "offset": ("offset", "offset_s", "start"),
    "duration": ("duration", "duration_s"),
    "target": ("target", "answer", "summary"),
    "instruction": ("instruction", "prompt", "question"),
    "recording_id": ("recording_id",),
    "split": ("split",),
    "lang": ("lang", "language", "locale"),
}


@dataclass(slots=True)
class RawRow:
    """One row as found in a source, before validation.  Strings may carry lone surrogates."""

    source_id: str | None  # id inside the source (utterance id, file stem, id column); None → row hash
    source: str  # where it came from: "file:line" (relative to the source root)
    raw: dict  # the row as found (JSON-serializable), kept in the rejects table
    audio: str | None = None  # absolute path of the audio file
    audio_bytes: bytes | None = None  # embedded audio (HF); extracted by the core
    audio_ext: str | None = None  # extension for audio_bytes (".wav", …)
    audio_key: str | None = None  # name of the extracted audio_bytes file (default: source_id); rows
    #   sharing one recording (Kaldi segments of a command entry) share one key and one file
    file_duration: Any = None  # seconds the source says the whole audio file lasts (Kaldi reco2dur/utt2dur);
    #   checked against the probe (``duration_mismatch`` beyond the end tolerance)
    offset: Any = None  # seconds (segment start); None → whole file
    duration: Any = None  # seconds (segment length); None → to the end of the file
    text: str | None = None
    label: str | None = None
    target: str | None = None
    instruction: str | None = None
    speaker: str | None = None
    recording_id: str | None = None
    split: str | None = None  # source-given split name (mapped by the core to train/dev/test)
    lang: str | None = None
    extra: dict | None = None
    channels: tuple[int, ...] | None = None  # the audio file's channels (0-based) the row uses; None → all
    reject: tuple[str, str] | None = None  # (reason, detail) decided by the importer


@dataclass
class ImportContext:
    """What an importer gets: the source path and the user's options."""

    src: Path
    dataset: str
    columns: dict[str, str] = field(default_factory=dict)  # logical field → column name (user-given)
    options: dict = field(default_factory=dict)  # format-specific options
    access: Access = LOCAL_ONLY  # what the user allowed: remote schemes, commands (jadwal/access.py)
    defaults: dict[str, tuple[str, ...]] | None = None  # a format preset's column candidates (nemo)

    def column_candidates(self, name: str) -> tuple[str, ...]:
        if name in self.columns:
            return (self.columns[name],)
        if self.defaults and name in self.defaults:
            return self.defaults[name]
        return DEFAULT_COLUMNS.get(name, (name,))

    def pick_columns(self, available: Iterable[str], strict: bool = True) -> dict[str, str]:
        """Map each logical field to the first candidate column present in ``available``.

        ``strict``: a column the user named explicitly must be present (else ``ValueError``)."""
        available = list(available)
        out = {}
        for name in DEFAULT_COLUMNS.keys() | self.columns.keys():
            for cand in self.column_candidates(name):
                if cand in available:
                    out[name] = cand
                    break
            else:
                if strict and name in self.columns:
                    raise ValueError(
                        f"column {self.columns[name]!r} (for {name}) not found; available: {', '.join(available)}"
                    )
        return out


@dataclass
class Source:
    inputs: list[Path]  # index files read (hashed into meta.json)
    rows: Iterator[RawRow]
    info: dict = field(default_factory=dict)  # counts worth reporting (e.g. unlisted audio files)


def get_importer(fmt: str) -> Callable[[ImportContext], Source]:
    if fmt not in _MODULES:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    mod = importlib.import_module(f"{__name__}.{_MODULES[fmt]}")
    if fmt in ("jsonl", "csv", "nemo"):
        return lambda ctx: mod.open_source(ctx, fmt)
    return mod.open_source


# -- helpers shared by importers ----------------------------------------------------------------
def open_bytes(path: Path) -> io.BufferedIOBase:
    """Open a (possibly gzip-compressed) file for binary reading."""
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


def read_lines(path: Path, max_bytes: int | None = None) -> Iterator[tuple[int, str | None]]:
    """``(line_number, text)`` for each non-blank line, decoded with surrogateescape (see module doc);
    a leading BOM is dropped.  With ``max_bytes``, a longer line is skipped without being held in
    memory and yields ``(line_number, None)`` (the caller rejects it)."""
    with open_bytes(path) as f:
        n = 0
        while True:
            line = f.readline() if max_bytes is None else f.readline(max_bytes + 1)
            if not line:
                return
            n += 1
            if n == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            if max_bytes is not None and len(line) > max_bytes and not line.endswith(b"\n"):
                while (more := f.readline(1 << 20)) and not more.endswith(b"\n"):
                    pass  # skip the rest of the over-long line
                yield n, None
                continue
            s = line.decode("utf-8", "surrogateescape").rstrip("\r\n")
            if s.strip():
                yield n, s


def read_text(path: Path) -> str:
    with open_bytes(path) as f:
        data = f.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", "surrogateescape")


def resolve_audio(path: str, bases: Iterable[Path]) -> str:
    """Absolute path of ``path``: as is when absolute, else the first base where it exists (else the first base)."""
    return _resolve(path, tuple(str(b) for b in bases))


@functools.lru_cache(maxsize=1 << 16)
def _resolve(path: str, bases: tuple[str, ...]) -> str:
    if "://" in path:  # an fsspec URL (s3://bucket/a.flac): read through fsspec, as is
        return path
    if os.path.isabs(path):
        return os.path.normpath(path)
    for b in bases:
        cand = os.path.normpath(os.path.join(b, path))
        if os.path.exists(cand):
            return cand
    return os.path.normpath(os.path.join(bases[0], path))


def rel_source(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def relpath_no_ext(path: str | Path, root: Path | str) -> str:
    """``path`` relative to ``root`` without its extension (posix); the file stem when outside root."""
    path, root = os.fspath(path), os.fspath(root)
    if path.startswith(root.rstrip(os.sep) + os.sep):
        rel = path[len(root.rstrip(os.sep)) + 1:]
    else:
        rel = os.path.basename(path)
    stem, ext = os.path.splitext(rel)
    return (stem if ext else rel).replace(os.sep, "/")


def to_str(v: Any) -> str | None:
    """A cell value as a string (None stays None; floats like 3.0 print as 3.0)."""
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, float) and v != v:  # NaN
        return None
    return str(v)


SPLIT_TOKENS = {
    "train": "train", "training": "train",
    "dev": "dev", "valid": "dev", "validation": "dev", "val": "dev", "development": "dev",
    "test": "test", "eval": "test", "evaluation": "test",
}


def split_from_name(name: str) -> str | None:
    """A split name found in a file name (``train.jsonl``, ``cuts_dev.jsonl.gz``, ``test-00000-of-00002``)."""
    import re

    tokens = [t for t in re.split(r"[^A-Za-z0-9]+", name.lower()) if t]
    for t in reversed(tokens):
        if t in SPLIT_TOKENS:
            return t
    return None
