"""Audio probing: duration, sample rate, channels and content hash of one file, without decoding.

``probe_file`` opens the header with soundfile (libsndfile ≥ 1.1 reads wav/flac/ogg/opus/mp3/…);
only when libsndfile cannot open a file does it fall back to ``audioread`` (ffmpeg/gstreamer
backends, when installed).  The sha1 covers the file's bytes.  Results are plain tuples so that
batches travel cheaply between processes; :class:`Prober` runs batches on a process pool and hands
results back in submission order.
"""
from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from typing import NamedTuple

from .. import storage
from ..executors import Done, PoolOwner


class Probe(NamedTuple):
    reason: str | None  # None (ok), "missing_audio" or "unreadable_audio"
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


def _fallback(path: str) -> tuple[int, int, int]:
    import warnings

    with warnings.catch_warnings():  # audioread imports modules deprecated in Python 3.11+
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioread  # optional; needs ffmpeg or gstreamer to do anything soundfile cannot

        with audioread.audio_open(path) as f:
            return int(round(f.duration * f.samplerate)), int(f.samplerate), int(f.channels)


def probe_file(path: str, hash_audio: bool = True) -> Probe:
    """Probe one audio file; never raises for a bad file (the reason is in the result)."""
    import soundfile as sf

    try:
        url = storage.is_url(path)  # audio on object storage (s3://, gs://, …) is read through fsspec
        if not (storage.exists(path) if url else os.path.isfile(path)):
            return Probe("missing_audio", f"no such file: {path}", 0, 0, 0, None)
        try:
            with (storage.open_read(path) if url else contextlib.nullcontext(path)) as src, sf.SoundFile(src) as f:
                frames, sr, ch = int(f.frames), int(f.samplerate), int(f.channels)
        except Exception as e:  # libsndfile could not open it: try audioread, else report soundfile's error
            try:
                if url:
                    raise
                frames, sr, ch = _fallback(path)
            except Exception:
                return Probe("unreadable_audio", f"{type(e).__name__}: {e}", 0, 0, 0, None)
        if frames < 0 or sr <= 0 or ch <= 0:
            return Probe("unreadable_audio", f"bad header: frames={frames} sample_rate={sr} channels={ch}", 0, 0, 0, None)
        return Probe(None, "", frames, sr, ch, sha1_file(path) if hash_audio else None)
    except OSError as e:  # permission denied, I/O error while hashing
        return Probe("unreadable_audio", f"{type(e).__name__}: {e}", 0, 0, 0, None)


def probe_batch(paths: list[str], hash_audio: bool = True) -> list[Probe]:
    return [probe_file(p, hash_audio) for p in paths]


def _probe_unit(args: tuple[list[str], bool]) -> list[Probe]:
    """``probe_batch`` as one executor unit (a single argument)."""
    return probe_batch(*args)


class Prober(PoolOwner):
    """Probe files in batches, on ``workers`` processes (``1`` = in this process).

    ``submit(paths)`` returns a future of ``list[Probe]``; callers consume futures in the order
    they submitted them, so output order never depends on scheduling.  The first ``inline_files``
    files are probed in this process: a small source never pays the pool's start-up (~0.5 s).
    """

    def __init__(self, workers: int = 1, hash_audio: bool = True, inline_files: int = 64, executor=None):
        self.workers = max(1, int(workers))
        self.hash_audio = hash_audio
        self.inline_files = inline_files
        self.submitted = 0
        self._pool: ProcessPoolExecutor | None = None
        self.executor = executor  # a jadwal.executors executor (Ray): batches run there instead

    def submit(self, paths: list[str]) -> Future | Done:
        self.submitted += len(paths)
        if self.executor is not None:  # every batch (no inline head): the same probe_batch, on Ray tasks
            return self.executor.submit(_probe_unit, (paths, self.hash_audio), label=paths[0] if paths else "")
        if self.workers == 1 or self.submitted <= self.inline_files:
            return Done(probe_batch(paths, self.hash_audio))
        if self._pool is None:
            # fork on Linux: workers start in milliseconds and, unlike spawn/forkserver, do not re-run
            # the caller's __main__ (a script without an `if __name__ == "__main__"` guard still works).
            # Workers only run soundfile/hashlib on their own file handles, so threads of the parent
            # (pyarrow pools, tqdm's monitor) hold nothing they need.
            ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx)
        return self._pool.submit(probe_batch, paths, self.hash_audio)
