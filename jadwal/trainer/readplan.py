"""What one reader (rank, DataLoader worker) reads, and in which order, from a given step on.

The planner (:mod:`jadwal.sched_index.planner`) gives every reader one contiguous *chunk* of each
stream's virtual sample sequence per phase and records each slot's virtual position (``vpos.npy``).
A reader reads each stream in increasing virtual position, lazily: to deliver a slot it reads that
stream forward up to the slot; samples passed on the way wait in a buffer until their step (the
planner simulated exactly this and bounded it by the spec's ``buffer``).

From a resume step ``s`` the reader considers only slots of steps ≥ ``s``: per stream, their
virtual positions sorted; consecutive entries in the same shard at increasing positions form a
*visit* (one open, one seek to the first entry, then forward reads); a visit never spans two passes
(a reader owns one contiguous range of each pass, so what lies between them belongs to others).  Samples that sat in the buffer
at ``s`` are simply the first entries of their stream's order, so a resume re-reads them forward from
the one seek and never replays from the start.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ReadPlan:
    """Slots (plan order) of one reader from a start step, with everything needed to read them."""

    steps: np.ndarray  # steps served, increasing
    bounds: np.ndarray  # [len(steps)+1] slot boundaries per step
    rows: np.ndarray  # sample row per slot
    ids: list  # sample id per slot
    shard_id: np.ndarray
    pos: np.ndarray
    offset: np.ndarray
    size: np.ndarray
    sha1: list | None  # per-slot sha1 of the sample's bytes when the shard index records it
    step_of: np.ndarray  # step of each slot
    stream: np.ndarray  # stream code per slot (local to this plan)
    order: np.ndarray  # slot indices sorted by (stream, virtual position): the read order
    rank_in_order: np.ndarray  # position of each slot in ``order``
    stream_start: np.ndarray  # [n_streams] first position in ``order`` of each stream
    visit_start: np.ndarray  # bool per position in ``order``: a new shard open starts here
    visit_end: np.ndarray  # bool per position in ``order``: the shard is closed after it
    resume_hole: np.ndarray  # bool per position in ``order``: the bytes before it (same visit) hold samples
    # this reader delivered before the start step (a resume skips them with a seek, whatever their size)

    def step_slots(self, k: int) -> range:
        return range(int(self.bounds[k]), int(self.bounds[k + 1]))


def build_read_plan(idx, rank: int, worker: int, start: int) -> ReadPlan:
    """The read plan of reader (rank, worker) of index ``idx`` for steps ≥ ``start``."""
    steps, bounds, rows, vpos = idx.reader_slots(rank, worker, start)
    c = idx.sample_rows(rows)  # only these rows: memory and time in proportion to the reader's slots
    n = len(rows)
    # streams coded by first appearance in delivery order (the order shards are first opened in)
    uniq, first_at, inverse = np.unique(c.stream, return_index=True, return_inverse=True)
    by_first = np.argsort(first_at, kind="stable")
    code_of = np.empty(len(uniq), np.int64)
    code_of[by_first] = np.arange(len(uniq))
    names = uniq[by_first]
    stream_codes = code_of[inverse.reshape(-1)] if n else np.zeros(0, np.int64)
    shard_id, pos = c.shard_id, c.pos
    order = np.lexsort((vpos, stream_codes)) if n else np.zeros(0, np.int64)
    rank_in_order = np.empty(n, dtype=np.int64)
    rank_in_order[order] = np.arange(n)
    so, sh, ps = stream_codes[order], shard_id[order], pos[order]
    # the pass of each slot (vpos // eligible samples of its stream): a reader reads its range of each
    # pass of a stream front to back, so a new pass is a new visit even in the same shard
    n_of = np.array([max(1, int(idx.meta["streams"].get(str(c.stream_names[int(x)]), 1))) for x in names],
                    dtype=np.int64)
    pa_ = vpos[order] // n_of[so] if n else np.zeros(0, np.int64)
    new_stream = np.r_[True, so[1:] != so[:-1]] if n else np.zeros(0, bool)
    visit_start = new_stream | np.r_[True, (sh[1:] != sh[:-1]) | (ps[1:] <= ps[:-1])
                                     | (pa_[1:] != pa_[:-1])] if n else np.zeros(0, bool)
    visit_end = np.r_[visit_start[1:], True] if n else np.zeros(0, bool)
    n_streams = int(stream_codes.max()) + 1 if n else 0
    stream_start = np.full(n_streams, n, dtype=np.int64)
    if n:
        first = np.flatnonzero(new_stream)
        stream_start[so[first]] = first
    step_of = np.repeat(steps, np.diff(bounds))
    resume_hole = _resume_holes(idx, rank, worker, start, c.stream[order] if n else np.zeros(0, np.int64),
                                vpos[order] if n else np.zeros(0, np.int64), visit_start)
    return ReadPlan(
        steps=steps, bounds=bounds, rows=rows, ids=c.ids, shard_id=shard_id, pos=pos, offset=c.offset, size=c.size,
        sha1=c.sha1,
        step_of=step_of, stream=stream_codes, order=order, rank_in_order=rank_in_order,
        stream_start=stream_start, visit_start=visit_start, visit_end=visit_end, resume_hole=resume_hole,
    )


def _resume_holes(idx, rank: int, worker: int, start: int, gstream: np.ndarray, vo: np.ndarray,
                  visit_start: np.ndarray) -> np.ndarray:
    """Per position in the read order: does a sample this reader delivered before ``start`` lie between it
    and the previous position of its visit?  (Only mixed streams resumed mid-run have such holes: the
    samples buffered at ``start`` are read again, those delivered between them are not.)"""
    n = len(vo)
    hole = np.zeros(n, dtype=bool)
    if n < 2 or start <= idx.start_step or int(idx.meta.get("max_buffer", 0) or 0) == 0:
        return hole
    _, _, prow, pv = idx.reader_slots(rank, worker, idx.start_step, start)
    if not len(prow):
        return hole
    ps = idx.sample_rows(prow, with_ids=False).stream  # same stream codes as ``gstream``
    big = int(max(int(pv.max()), int(vo.max()))) + 2
    past = np.sort(ps * big + pv)
    key = gstream * big + vo
    between = np.searchsorted(past, key[1:], side="left") - np.searchsorted(past, key[:-1], side="right")
    hole[1:] = (between > 0) & ~visit_start[1:]
    return hole
