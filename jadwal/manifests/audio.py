"""Audio probing at import: duration, sample rate, channels and content hash of one file.

``probe_file`` checks and decodes the whole file with :mod:`jadwal.audio_decode`, the decoder
``jadwal shard`` and ``jadwal embed`` use (libsndfile; PyAV for containers libsndfile cannot read), so
a file the probe accepts is one the writer can decode: grant and location (``remote_audio_not_allowed``,
``missing_audio``, ``not_a_file``), header bounds (``bad_sample_rate``, ``bad_channels``), finite
samples (``nonfinite_audio``), decoded length vs the header's (``duration_mismatch``).  ``frames`` is
the decoded length.  The sha1 covers the file's bytes (read once for files up to 64 MiB: hashed and
decoded from memory).  Results are plain tuples so that batches travel cheaply between processes;
:class:`Prober` runs batches on a process pool and hands results back in submission order.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from typing import NamedTuple

from .. import audio_decode, storage
from ..access import LOCAL_ONLY, Access
from ..executors import Done, PoolOwner


class Probe(NamedTuple):
    reason: str | None  # None (ok) or a reject code (audio_decode.REASONS)
    detail: str
    frames: int
    sample_rate: int
    channels: int
    sha1: str | None

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def sha1_file(path: str, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha1()
    with storage.open_read(path) as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def probe_file(path: str, hash_audio: bool = True, access: Access = LOCAL_ONLY) -> Probe:
    """Probe one audio file; never raises for a bad file (the reason is in the result).  Remote URLs
    are read only when ``access`` grants their scheme."""
    try:
        src = audio_decode.open_source(path, access)
        info, frames = audio_decode.scan(src)
        return Probe(None, "", frames, info.sample_rate, info.channels, src.sha1() if hash_audio else None)
    except audio_decode.DecodeError as e:
        return Probe(e.reason, e.detail, 0, 0, 0, None)
    except OSError as e:  # permission denied, I/O error while hashing
        return Probe("unreadable_audio", f"{path}: {type(e).__name__}: {e}", 0, 0, 0, None)


def probe_batch(paths: list[str], hash_audio: bool = True, access: Access = LOCAL_ONLY) -> list[Probe]:
    return [probe_file(p, hash_audio, access) for p in paths]


def _probe_unit(args: tuple) -> list[Probe]:
    """``probe_batch`` as one executor unit (a single argument)."""
    return probe_batch(*args)


class Prober(PoolOwner):
    """Probe files in batches, on ``workers`` processes (``1`` = in this process).

    ``submit(paths)`` returns a future of ``list[Probe]``; callers consume futures in the order
    they submitted them, so output order never depends on scheduling.  The first ``inline_files``
    files are probed in this process: a small source never pays the pool's start-up (~0.5 s).
    """

    def __init__(self, workers: int = 1, hash_audio: bool = True, inline_files: int = 64, executor=None,
                 access: Access = LOCAL_ONLY):
        self.workers = max(1, int(workers))
        self.hash_audio = hash_audio
        self.access = access  # the user's grants (remote schemes) for audio URLs
        self.inline_files = inline_files
        self.submitted = 0
        self._pool: ProcessPoolExecutor | None = None
        self.executor = executor  # a jadwal.executors executor (Ray): batches run there instead

    def submit(self, paths: list[str]) -> Future | Done:
        self.submitted += len(paths)
        if self.executor is not None:  # every batch (no inline head): the same probe_batch, on Ray tasks
            return self.executor.submit(_probe_unit, (paths, self.hash_audio, self.access), label=paths[0] if paths else "")
        if self.workers == 1 or self.submitted <= self.inline_files:
            return Done(probe_batch(paths, self.hash_audio, self.access))
        if self._pool is None:
            # fork on Linux: workers start in milliseconds and, unlike spawn/forkserver, do not re-run
            # the caller's __main__ (a script without an `if __name__ == "__main__"` guard still works).
            # Workers only run the decoders/hashlib on their own file handles, so threads of the parent
            # (pyarrow pools, tqdm's monitor) hold nothing they need.
            ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx)
        return self._pool.submit(probe_batch, paths, self.hash_audio, self.access)
