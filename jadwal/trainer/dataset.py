"""``ScheduleDataset``: a PyTorch ``IterableDataset`` that realizes a scheduling index exactly, reading
shards sequentially.

Use it with ``DataLoader(ds, batch_size=None, num_workers=ds.readers_per_rank)`` (or ``num_workers=0``):
it yields whole micro-batches (dicts), one per step of this rank, in step order.  DataLoader worker
``w`` of rank ``r`` is the index's reader ``(r, w)`` and serves the steps ``t ≡ w (mod
readers_per_rank)``; the DataLoader alternates workers in the same way, so the delivered order is
the plan.  With ``num_workers=0`` the main process plays every reader of the rank (each reader keeps
its own shard cursors, so every shard is still read front to back).

The whole state is the next step: ``state_dict() == {"step", "index", "name"}``; resuming at any step
delivers the same sequence as an uninterrupted run, with one seek per shard reopened.  See
``docs/trainer.md``.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..sched_index.reader import ScheduleIndex, open_index
from ..shards.schema import AUDIO_MEMBER_SUFFIXES as AUDIO_SUFFIXES, member_key  # the one audio-member rule
from .readplan import ReadPlan, build_read_plan
from ..shards.shardio import (
    LoaderError,
    Opener,
    PipeFile,
    ShardError,
    ShardHandle,
    TarFormatError,
    default_opener,
    file_size,
    parse_members,
    shard_url,
)

log = logging.getLogger(__name__)

RESERVED = {"id", "ids", "step", "rank", "phase", "audio", "sample_rate", "features", "feature_kind",
            "audio_bytes", "audio_format"}
FEATURES = (None, "whisper_mel", "fbank")


def _dist_rank_world() -> tuple[int, int] | None:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except Exception:  # noqa: BLE001, S110 - torch without distributed support: single process
        pass
    return None


class _Reader:
    """Runtime of one reader: per-stream cursors over the read plan, open shard handles, the buffer of
    read-but-undelivered samples (raw member bytes, keyed by slot)."""

    def __init__(self, ds: ScheduleDataset, plan: ReadPlan, worker: int):
        self.ds = ds
        self.plan = plan
        self.worker = worker
        self.cursor = plan.stream_start.copy()
        self.stream_end = np.r_[plan.stream_start[1:], len(plan.order)] if len(plan.stream_start) else plan.stream_start
        self.handles: dict[int, tuple[ShardHandle, int]] = {}
        self.buffer: dict[int, dict[str, bytes]] = {}
        self.max_buffer = 0
        self.buffer_bytes = 0  # sample bytes held in the buffer now
        self.max_buffer_bytes = 0
        self.sample_bytes_read = 0  # sample bytes read from shards (what a resume re-reads counts here too)
        self.bytes_delivered = 0
        self.opens = 0
        self.current_step: int | None = None  # the step being prepared (for messages)

    # -- delivery --------------------------------------------------------------------------------
    def fetch(self, i: int) -> dict[str, bytes]:
        """Raw members of slot ``i`` (reading its stream forward up to it when needed)."""
        p = self.plan
        got = self.buffer.pop(i, None)
        if got is not None:
            self.buffer_bytes -= int(p.size[i])
            self.bytes_delivered += int(p.size[i])
            return got
        s = int(p.stream[i])
        g = int(p.rank_in_order[i])
        if g < self.cursor[s]:
            raise LoaderError(f"internal error: slot {i} (sample {p.ids[i]!r}, step {int(p.step_of[i])}) was read "
                              "but is not in the buffer")
        while self.cursor[s] <= g:
            c = int(self.cursor[s])
            j = int(p.order[c])
            members = self._read(s, c, j)
            self.cursor[s] = c + 1
            self.sample_bytes_read += int(p.size[j])
            if j == i:
                self.bytes_delivered += int(p.size[j])
                return members
            self.buffer[j] = members
            self.buffer_bytes += int(p.size[j])
            self.max_buffer_bytes = max(self.max_buffer_bytes, self.buffer_bytes)
            limit = self.ds.buffer_bytes_limit
            if limit is not None and self.buffer_bytes > limit:
                raise LoaderError(
                    f"index {self.ds.index_name!r}: reader (rank {self.ds.rank}, worker {self.worker}) would hold "
                    f"{self.buffer_bytes} bytes of read-but-undelivered samples ({len(self.buffer)} samples) at "
                    f"step {int(p.step_of[i])}, over buffer_bytes_limit={limit}. Raise the limit, or re-plan with "
                    f"a smaller `buffer` (the spec's bound on samples held per reader).")
            if len(self.buffer) > self.max_buffer:
                self.max_buffer = len(self.buffer)
                if self.max_buffer > self.ds.buffer_bound:
                    raise LoaderError(
                        f"index {self.ds.index_name!r}: reader (rank {self.ds.rank}, worker {self.worker}) holds "
                        f"{self.max_buffer} read-but-undelivered samples at step {int(p.step_of[i])}, over the "
                        f"index's bound {self.ds.buffer_bound} (the index does not match its read order; re-plan)")
        raise AssertionError("unreachable")  # pragma: no cover

    # -- I/O -------------------------------------------------------------------------------------
    def _fail(self, j: int, problem: str, url: str | None = None, cause: BaseException | None = None) -> ShardError:
        p, ds = self.plan, self.ds
        sid = int(p.shard_id[j])
        rel = ds.shard_paths.get(sid, f"<shard {sid}>")
        step = int(p.step_of[j])
        where = f" ({url})" if url and url != str(ds.ws_root / rel) else ""
        now = self.current_step if self.current_step is not None else step
        ahead = f" (read ahead while preparing step {now})" if now != step else ""
        msg = (f"index {ds.index_name!r}, step {step}, rank {ds.rank}: shard {rel!r} (shard_id {sid}){where} {problem}; "
               f"sample {p.ids[j]!r} (pos {int(p.pos[j])}, bytes {int(p.offset[j])}..{int(p.offset[j] + p.size[j])}) "
               f"is planned for step {step}{ahead}. No sample is substituted: restore the shard (e.g. re-run `jadwal "
               f"shard`, check with `jadwal shard verify`) and resume at step {min(now, step)}.")
        if cause is not None:
            msg += f" [{type(cause).__name__}: {cause}]"
        return ShardError(msg, shard=rel, step=step, sample=p.ids[j])

    def _open(self, s: int, j: int) -> ShardHandle:
        p, ds = self.plan, self.ds
        sid = int(p.shard_id[j])
        old = self.handles.pop(s, None)
        if old is not None:
            old[0].close()
        rel = ds.shard_paths.get(sid)
        if rel is None:
            raise self._fail(j, "is not listed in the shard set's shards.parquet")
        url = shard_url(rel, ds.ws_root, ds.shard_root, ds.allow_remote)
        try:
            f = ds.opener(url)
        except FileNotFoundError as e:
            raise self._fail(j, "is missing", url, e) from e
        except OSError as e:
            raise self._fail(j, "cannot be opened", url, e) from e
        h = ShardHandle(f, seek_gap=ds.seek_gap)
        h.url = url
        self.opens += 1
        want = ds.shard_bytes.get(sid)
        have = file_size(f)
        if want is not None and have is not None and have != want:
            h.close()
            kind = "truncated" if have < want else "longer than indexed"
            raise self._fail(j, f"is {kind}: it has {have} bytes, the shard index says {want}", url)
        self.handles[s] = (h, sid)
        return h

    def _read(self, s: int, c: int, j: int) -> dict[str, bytes]:
        p, ds = self.plan, self.ds
        off, size = int(p.offset[j]), int(p.size[j])
        if p.visit_start[c] or s not in self.handles:
            h = self._open(s, j)
            first = True
        else:
            h = self.handles[s][0]
            # a resume skips what this reader delivered before its start step with one forward seek
            first = bool(p.resume_hole[c]) and ds.seek_gap is not None
        url = h.url
        try:
            h.advance_to(off, first=first)
            data = h.read_exact(size)
        except TarFormatError as e:
            self._close(s)
            raise self._fail(j, f"is truncated or damaged: {e}", url) from None
        except OSError as e:
            self._close(s)
            raise self._fail(j, "cannot be read", url, e) from e
        if len(data) != size:
            extra = ""
            if isinstance(h.f, PipeFile) and h.f.proc is not None:
                try:
                    rc = h.f.proc.wait(timeout=5)
                    extra = f" (command {h.f.cmd!r} exited with status {rc})"
                except Exception:  # noqa: BLE001, S110 - the status is only a hint in the message
                    pass
            self._close(s)
            raise self._fail(j, f"is truncated: it ends at byte {h.pos}, inside the sample{extra}", url)
        try:  # structure and names first (the more specific messages), then the content hash
            members = parse_members(data, off)
        except TarFormatError as e:
            self._close(s)
            raise self._fail(j, f"is corrupted: {e}", url) from None
        key = member_key(p.ids[j])
        out: dict[str, bytes] = {}
        for name, payload in members:
            k, dot, suffix = name.partition(".")
            if k != key or not dot or not suffix:
                self._close(s)
                raise self._fail(j, f"does not match the shard index: member {name!r} where "
                                    f"'{key}.<ext>' was expected")
            out[suffix] = payload
        if "json" not in out:
            self._close(s)
            raise self._fail(j, f"does not match the shard index: sample has no '{key}.json' member "
                                f"(members: {[n for n, _ in members]})")
        if ds.verify and p.sha1 is not None and p.sha1[j] and hashlib.sha1(data).hexdigest() != p.sha1[j]:
            self._close(s)
            raise self._fail(j, "is corrupted: the sample's bytes differ from the shard index (sha1)", url)
        if p.visit_end[c]:
            self._close(s)
        return out

    def _close(self, s: int) -> None:
        old = self.handles.pop(s, None)
        if old is not None:
            old[0].close()

    def close(self) -> None:
        for s in list(self.handles):
            self._close(s)


class ScheduleDataset(IterableDataset):
    """Stream the micro-batches a scheduling index plans for this rank (see the module docstring).

    Args:
        workspace, index_name: the index ``index/<index_name>/`` of the workspace.
        rank, world_size: from ``torch.distributed`` when initialized, else these, else 0 / 1.  The
            world size must be the index's (an elastic resume uses an index re-planned for the new
            world size, which starts at its ``start_step``).
        start_step: first step to deliver (default: the index's ``start_step``); ``load_state_dict``
            overrides it.
        features: ``None``, ``"whisper_mel"`` (Whisper log-mel, 80 bins by default) or ``"fbank"``
            (Kaldi fbank, 80 bins); computed per micro-batch in the loader and delivered as
            ``batch["features"]`` (one tensor per sample: ``[n_mels, frames]`` / ``[frames, n_mels]``).
        feature_kwargs: extra arguments for the feature function (e.g. ``n_mels=128``).
        decode_audio: False delivers the encoded bytes (``audio_bytes``, ``audio_format``) instead.
        sample_rate: resample decoded audio to this rate when it differs (default: as stored, which is
            the rate the shards were written at).
        mono: average multi-channel audio to one channel (default True).
        prefetch: micro-batches a background thread reads and decodes ahead (0: no thread).
        shard_root: where the workspace's shards live when not in the workspace: a prefix
            (``"s3://bucket/ws"``, ``"/mnt/ws"``) or a template with ``{path}``
            (``"pipe:aws s3 cp s3://bucket/ws/{path} -"``); the shard index's paths are appended.
        opener: ``url → binary file`` (default: local files unbuffered, ``pipe:`` commands, fsspec).
        allow_remote: URL schemes a shard path *stored in the shard index* may use (``{"s3"}``; local
            paths, ``file://`` and ``memory://`` always); ``pipe:`` paths there are always refused.
        seek_gap: gaps between needed samples of at least this many bytes are skipped with a forward
            seek; shorter gaps are read and dropped (None: always read).  Default 1 MiB.
        verify: check each sample's sha1 when the shard index records one.
        buffer_bytes_limit: raise when one reader's buffer of read-but-undelivered samples would hold more
            than this many sample bytes (None: no byte limit; the index's bound on their number always
            applies).  ``stats["max_buffer_bytes"]`` reports what a run held.
        check_inputs: verify that the shard set still is the one the index was planned against.
    """

    def __init__(
        self,
        workspace: str | os.PathLike,
        index_name: str,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        start_step: int | None = None,
        features: str | None = None,
        feature_kwargs: dict | None = None,
        decode_audio: bool = True,
        sample_rate: int | None = None,
        mono: bool = True,
        prefetch: int = 2,
        shard_root: str | None = None,
        opener: Opener | None = None,
        seek_gap: int | None = 1 << 20,
        verify: bool = True,
        check_inputs: bool = True,
        allow_remote=frozenset(),
        buffer_bytes_limit: int | None = None,
    ):
        super().__init__()
        if features not in FEATURES:
            raise LoaderError(f"ScheduleDataset: features={features!r}; allowed: None, 'whisper_mel', 'fbank'")
        if features and not decode_audio:
            raise LoaderError("ScheduleDataset: features need decoded audio (decode_audio=True)")
        if prefetch < 0:
            raise LoaderError(f"ScheduleDataset: prefetch must be ≥ 0, got {prefetch}")
        self.workspace = workspace
        self.index_name = index_name
        from ..sched_index.reader import IndexDamaged

        try:
            idx = open_index(workspace, index_name, verify_shards=False)
        except IndexDamaged as e:
            raise LoaderError(f"ScheduleDataset: {e}") from e
        self._idx: ScheduleIndex | None = idx
        self.ws_root = idx.ws.root
        dist_rw = _dist_rank_world()
        if dist_rw is not None:
            if (rank is not None and rank != dist_rw[0]) or (world_size is not None and world_size != dist_rw[1]):
                raise LoaderError(f"ScheduleDataset: rank={rank}, world_size={world_size} disagree with "
                                  f"torch.distributed (rank {dist_rw[0]}, world size {dist_rw[1]})")
            rank, world_size = dist_rw
        rank = 0 if rank is None else int(rank)
        world_size = 1 if world_size is None else int(world_size)
        if world_size != idx.world_size:
            raise LoaderError(
                f"index {index_name!r} was planned for world size {idx.world_size}, but this run has world size "
                f"{world_size}. To resume on a different world size, re-plan the rest of the run for {world_size} "
                f"ranks from the resume step S (spec with world_size: {world_size}): `jadwal plan SPEC --name NEW "
                f"--continue-from {index_name} --at-step S`, and load that index (it starts at step S).")
        if not 0 <= rank < world_size:
            raise LoaderError(f"ScheduleDataset: rank {rank} outside world size {world_size}")
        self.rank, self.world_size = rank, world_size
        self.readers_per_rank = idx.readers_per_rank
        self.num_steps = idx.num_steps
        self.index_start_step = idx.start_step
        self.fingerprint = idx.fingerprint
        self.buffer_bound = max(int(idx.meta.get("buffer", 0) or 0), int(idx.meta.get("max_buffer", 0) or 0))
        start = idx.start_step if start_step is None else int(start_step)
        self._check_step(start, "start_step")
        if check_inputs:
            try:
                idx.check_inputs()
            except IndexDamaged as e:
                raise LoaderError(f"ScheduleDataset (index {index_name!r}, start step {start}, rank {rank}): {e}") from e
        self.allow_remote = frozenset(allow_remote)
        # shard id -> path / size, looked up per shard read (no Python object per shard of the corpus)
        self.shard_paths, self.shard_bytes = idx.loader_shards(
            self.allow_remote, where=f"index {index_name!r}: shards.parquet")
        self._next_step = start
        self._origin: int | None = None  # see _my_readers
        self.features = features
        self.feature_kwargs = dict(feature_kwargs or {})
        self.decode_audio = decode_audio
        self.sample_rate = sample_rate
        self.mono = mono
        self.prefetch = int(prefetch)
        self.shard_root = shard_root
        self.opener: Opener = opener or default_opener
        self.seek_gap = seek_gap
        self.verify = verify
        if buffer_bytes_limit is not None and int(buffer_bytes_limit) < 0:
            raise LoaderError(f"ScheduleDataset: buffer_bytes_limit must be ≥ 0, got {buffer_bytes_limit}")
        self.buffer_bytes_limit = None if buffer_bytes_limit is None else int(buffer_bytes_limit)
        self.stats: dict[str, Any] = {}

    # -- pickling (DataLoader spawn) ---------------------------------------------------------------
    def __getstate__(self):
        d = dict(self.__dict__)
        d["_idx"] = None
        return d

    @property
    def index(self) -> ScheduleIndex:
        if self._idx is None:
            self._idx = open_index(self.workspace, self.index_name, verify_shards=False)
        return self._idx

    def _check_step(self, step: int, what: str) -> None:
        if not self.index_start_step <= step <= self.num_steps:
            raise LoaderError(f"ScheduleDataset: {what} {step} is outside index {self.index_name!r}'s steps "
                              f"[{self.index_start_step}, {self.num_steps}]")

    def __len__(self) -> int:
        """Micro-batches this rank still receives (from the current state's step to the end)."""
        return self.num_steps - self._next_step

    # -- state -------------------------------------------------------------------------------------
    @property
    def step(self) -> int:
        """The next step to deliver."""
        return self._next_step

    def state_dict(self, step: int | None = None) -> dict:
        """``{"step": next step, "index": fingerprint, "name": index name}``.

        In the process that iterates (``num_workers=0``, or inside a worker) ``step`` follows the
        delivered micro-batches.  With a plain DataLoader and workers, the main process's copy does not
        see them: pass ``step=batch["step"] + 1`` (or use torchdata's ``StatefulDataLoader``).  Inside a
        DataLoader worker the state also records ``worker_origin`` (the step the workers' round-robin
        started at), so a worker restored by ``StatefulDataLoader`` keeps playing the same reader."""
        state = {"step": int(self._next_step if step is None else step), "index": self.fingerprint,
                 "name": self.index_name}
        if step is None and self._origin is not None and get_worker_info() is not None:
            state["worker_origin"] = int(self._origin)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue at ``state["step"]``.  A state saved with another index is accepted only when this index
        continues that one exactly there (``jadwal plan … --continue-from OLD --at-step S``: an elastic
        re-plan or an amendment, ``start_step == state["step"] == S``): the switch needs no restart."""
        try:
            step = int(state["step"])
        except (KeyError, TypeError, ValueError):
            raise LoaderError(f"ScheduleDataset.load_state_dict: expected {{'step', 'index', 'name'}}, got {state!r}") from None
        fp = state.get("index")
        if fp is not None and fp != self.fingerprint:
            cont = self.index.meta.get("continues") or {}
            if cont:  # a re-plan (`jadwal plan --continue-from OLD --at-step S`) records what it continues
                ok = cont.get("fingerprint") == fp and step == int(cont.get("at_step", -1)) == self.index_start_step
            else:
                ok = step == self.index_start_step > 0
            if not ok:
                raise LoaderError(
                    f"ScheduleDataset.load_state_dict: the state was saved with index {state.get('name')!r} "
                    f"(fingerprint {str(fp)[:12]}…) at step {step}, but this dataset reads index {self.index_name!r} "
                    f"(fingerprint {self.fingerprint[:12]}…, steps [{self.index_start_step}, {self.num_steps})"
                    + (f", continuing index {cont.get('index')!r} at step {cont.get('at_step')}" if cont else "")
                    + f"). Resume with the same index, or re-plan one that continues it at step {step}: "
                    f"`jadwal plan SPEC --name NEW --continue-from {state.get('name')} --at-step {step}`.")
        self._check_step(step, "state step")
        self._next_step = step
        origin = state.get("worker_origin")
        self._origin = None if origin is None else int(origin)

    # -- iteration ---------------------------------------------------------------------------------
    def _my_readers(self) -> list[int]:
        """Readers this process plays.  DataLoader asks its workers round-robin starting with worker 0, so
        worker ``i`` plays reader ``(origin + i) % readers_per_rank`` where ``origin`` is the step the
        iteration started at (0 for a fresh run: worker ``w`` is reader ``w``)."""
        info = get_worker_info()
        if info is None:
            self._origin = None
            return list(range(self.readers_per_rank))
        if info.num_workers != self.readers_per_rank:
            raise LoaderError(
                f"index {self.index_name!r} was planned for {self.readers_per_rank} DataLoader worker(s) per rank "
                f"(readers_per_rank), but the DataLoader has num_workers={info.num_workers}. Use "
                f"num_workers={self.readers_per_rank} (or 0), or re-plan with readers_per_rank={info.num_workers}.")
        if self._origin is None:
            self._origin = self._next_step
        return [(self._origin + info.id) % self.readers_per_rank]

    def __iter__(self) -> Iterator[dict]:
        workers = self._my_readers()
        start = self._next_step
        idx = self.index
        readers = {w: _Reader(self, build_read_plan(idx, self.rank, w, start), w) for w in workers}
        steps = sorted(t for w in readers for t in idx.layout.steps_of(w, start, self.num_steps))
        return self._iterate(readers, steps)

    def _iterate(self, readers: dict[int, _Reader], steps: list[int]) -> Iterator[dict]:
        layout = self.index.layout
        counters = {w: 0 for w in readers}

        def produce(t: int) -> dict:
            w = layout.worker_of(t)
            r = readers[w]
            k = counters[w]
            counters[w] += 1
            if int(r.plan.steps[k]) != t:  # pragma: no cover - guards the step bookkeeping
                raise LoaderError(f"internal error: reader {w} expected step {int(r.plan.steps[k])}, got {t}")
            slots = r.plan.step_slots(k)
            r.current_step = t
            raw = [r.fetch(i) for i in slots]
            return self._assemble(t, [r.plan.ids[i] for i in slots], raw, r, slots)

        try:
            if self.prefetch == 0:
                for t in steps:
                    batch = produce(t)
                    self._next_step = t + 1
                    yield batch
            else:
                gen = _prefetched(produce, steps, self.prefetch)
                try:
                    for batch in gen:
                        self._next_step = batch["step"] + 1
                        yield batch
                finally:
                    gen.close()  # stops the thread before the shards are closed
        finally:
            self.stats = {
                "opens": sum(r.opens for r in readers.values()),
                "max_buffer": max([r.max_buffer for r in readers.values()] + [0]),
                # bytes of raw samples held by one reader's buffer at most, and over all readers of this process
                "max_buffer_bytes": max([r.max_buffer_bytes for r in readers.values()] + [0]),
                "sample_bytes_read": sum(r.sample_bytes_read for r in readers.values()),
                "bytes_delivered": sum(r.bytes_delivered for r in readers.values()),
            }
            for r in readers.values():
                r.close()

    # -- decoding ----------------------------------------------------------------------------------
    def _assemble(self, step: int, ids: list[str], raw: list[dict[str, bytes]], reader: _Reader, slots: range) -> dict:
        rows, audio, rates, abytes, afmt = [], [], [], [], []
        for i, m in zip(slots, raw):
            try:
                row = json.loads(m["json"])
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")  # noqa: TRY004 - reported as corrupted below
            except (ValueError, UnicodeDecodeError) as e:
                raise reader._fail(i, f"is corrupted: the sample's .json member cannot be parsed ({e})") from None
            suffix = next((s for s in m if s.split(".")[-1].lower() in AUDIO_SUFFIXES), None)
            if suffix is None and row.get("modality") == "audio":
                raise reader._fail(i, f"does not match the manifest: sample {reader.plan.ids[i]!r} has modality "
                                      f"'audio' but no audio member (members: {sorted(m)})")
            rows.append(row)
            if suffix is None:
                audio.append(None)
                rates.append(None)
                abytes.append(None)
                afmt.append(None)
                continue
            if not self.decode_audio:
                audio.append(None)
                rates.append(row.get("sample_rate"))
                abytes.append(m[suffix])
                afmt.append(suffix)
                continue
            wav, sr = self._decode(m[suffix], reader, i)
            audio.append(wav)
            rates.append(sr)
        batch: dict[str, Any] = {"step": step, "rank": self.rank, "phase": self.index.phase_of(step), "ids": ids}
        if self.decode_audio:
            batch["audio"] = audio
        else:
            batch["audio"] = [None] * len(ids)
            batch["audio_bytes"] = abytes
            batch["audio_format"] = afmt
        known = {r for r in rates if r is not None}
        batch["sample_rate"] = (next(iter(known)) if len(known) == 1 else (None if not known else rates))
        keys: dict[str, None] = {}
        for row in rows:
            for k in row:
                if k not in RESERVED:
                    keys.setdefault(k)
        for k in keys:
            batch[k] = [row.get(k) for row in rows]
        if self.features and self.decode_audio:
            from ..models.features import compute_features

            batch["features"] = compute_features(self.features, audio, rates, **self.feature_kwargs)
            batch["feature_kind"] = self.features
        return batch

    def _decode(self, data: bytes, reader: _Reader, i: int) -> tuple[torch.Tensor, int]:
        import soundfile as sf

        try:
            x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except Exception as e:  # noqa: BLE001 - libsndfile raises various types
            raise reader._fail(i, "is corrupted: the sample's audio cannot be decoded", cause=e) from None
        if self.mono or x.shape[1] == 1:
            x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
            wav = torch.from_numpy(np.ascontiguousarray(x))
        else:
            wav = torch.from_numpy(np.ascontiguousarray(x.T))
        if self.sample_rate and sr != self.sample_rate:
            import torchaudio.functional as AF

            wav = AF.resample(wav, sr, int(self.sample_rate))
            sr = int(self.sample_rate)
        return wav, int(sr)


_END = object()


def _prefetched(produce: Callable[[int], dict], steps: list[int], depth: int) -> Iterator[dict]:
    """Run ``produce(t)`` for ``steps`` in a background thread, ``depth`` results ahead, in order."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for t in steps:
                if stop.is_set() or not put(("ok", produce(t))):
                    return
            put(("end", None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put(("err", e))

    th = threading.Thread(target=run, name="jadwal-prefetch", daemon=True)
    th.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "ok":
                yield item
            elif kind == "end":
                return
            else:
                raise item
    finally:
        stop.set()
        th.join(timeout=30)
