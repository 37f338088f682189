"""Build a scheduling index: compose → assign → resolve → simulate → write.

* **compose**: each phase's policy turns cells into a ``[steps, slots]`` array of requested cells
  (independent of world size, so a re-plan on another world size continues the same schedule);
  exhaustion rules (repeat / stop / fail) are applied in global step order.
* **assign**: slot ``j`` of step ``t`` goes to rank ``j // micro_batch``; rank ``r`` serves step ``t``
  from reader ``(r, t % readers_per_rank)`` — whole micro-batches per reader, as DataLoader workers do.
* **resolve**: per phase, each stream's sample sequence (its shards in a seeded order per pass,
  each shard front to back) is cut into one contiguous *chunk* per reader, sized by that reader's
  demand, in reader order; the k-th request of reader r for a cell gets the k-th sample of that cell
  in r's chunk.  Streams holding a single cell (the usual case, and always after regrouping by the
  policy's columns) need no lookahead; streams mixing cells are matched within the chunk, and what
  cannot be matched is a counted *deviation* (an error unless ``fallback: substitute``).
* **simulate**: the read-but-undelivered samples of every reader are tracked step by step and must
  stay within ``buffer``.

Every array op is vectorized over slots; Python loops run over phases, streams and cells only.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..shards import sets as shard_sets
from ..workspace import Workspace
from .duration import nominal_cut, pack_all
from .policies import PolicyContext, get_policy, load_policy_modules, phase_modality, read_groups
from .arrays import mix64 as _mix64, blocks, count_cells, dense_unique, segmented_cumcount as _segmented_cumcount, stable_order  # noqa: F401 (re-exported)
from .format import ReaderLayout
from .layout import PassLayout
from .samestep import defer_same_step_repeats, pair_slots, undo
from .samples import CellSet, SampleScan, scan_samples
from .spec import Phase, Spec, SpecError, load_spec, resolve_phase_steps
from .targets import TargetColumns
from .writer import cells_table, chunks_table, write_files, write_index

log = logging.getLogger(__name__)


BLOCK_SLOTS = 1 << 20  # slots resolved at once: bounds resolution's temporaries (no effect on the result)
COMPOSE_BLOCK_SLOTS = 1 << 20  # slots a policy composes at once (part of the planning rule: fixed)


class PlanError(ValueError):
    """The spec cannot be realized within its bounds; the message gives numbers and the fix."""


def _seed(*parts) -> np.random.Generator:
    ints = []
    for p in parts:
        if isinstance(p, str):
            ints.append(int.from_bytes(hashlib.sha1(p.encode("utf-8")).digest()[:4], "little"))
        else:
            ints.append(int(p))
    return np.random.default_rng(np.random.SeedSequence(ints))


# -- inputs ---------------------------------------------------------------------------------------
def pick_shard_set(ws: Workspace, name: str | None) -> str:
    """The shard set the spec's ``shards`` names (:func:`jadwal.shards.sets.pick_shard_set`), as a SpecError."""
    return shard_sets.pick_shard_set(ws, name, named_by="spec: `shards`", error=SpecError)


# -- stream sequences -------------------------------------------------------------------------------


class StreamSequences:
    """Virtual sample sequences: position ``v`` of stream s is sample ``v % n_s`` of pass ``v // n_s``,
    where a pass lists the stream's eligible rows shard by shard (each shard front to back), shards in
    an order drawn per (seed, stream, pass) from a hash — no per-stream generator objects, so any
    (stream, position) batch is resolved in a few vectorized passes.  Built from the shard set's runs:
    O(shards) memory, whatever the number of samples."""

    def __init__(self, scan: SampleScan, seed: int):
        self.seed = seed
        self.names = scan.stream_names
        self.row_of_rank = scan.eligible_row
        S = len(self.names)
        # units: the runs holding eligible samples, stream-major (file order inside a stream)
        unit = np.flatnonzero(scan.run_elig > 0)
        unit = unit[np.lexsort((scan.run_row0[unit], scan.run_stream[unit]))]
        self.shard_start = scan.eligible_rank0()[unit]  # eligible rank of the unit's first sample
        self.shard_len = scan.run_elig[unit]
        self.shard_stream = scan.run_stream[unit]
        self.shard_gid = scan.run_shard[unit]
        self.n = np.bincount(self.shard_stream, weights=self.shard_len, minlength=S).astype(np.int64)
        self.first_shard = np.searchsorted(self.shard_stream, np.arange(S + 1))
        self.salt = int.from_bytes(hashlib.sha1(f"jadwal-pass-{seed}".encode()).digest()[:8], "little")

    def _pass_orders(self, ps: np.ndarray, pp: np.ndarray):
        """For (stream, pass) pairs: their shards in pass order (concatenated), per-pair offsets into
        that list, and the cumulative sample counts (laid end to end)."""
        cnt = self.first_shard[ps + 1] - self.first_shard[ps]
        owner = np.repeat(np.arange(len(ps)), cnt)
        shard = np.repeat(self.first_shard[ps], cnt) + (np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt))
        key = _mix64(self.shard_gid[shard].astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
                     ^ _mix64(pp[owner].astype(np.uint64) + np.uint64(self.salt)))
        shard = shard[np.lexsort((key, owner))]
        cum = np.cumsum(self.shard_len[shard])
        first = np.r_[0, np.cumsum(cnt)]
        return shard, first, cum

    def range_rows(self, s: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
        """Rows of the virtual ranges ``[start, start + length)`` of streams ``s``, concatenated in order.
        Work is per range and per shard touched, plus one vectorized pass over the output."""
        keep = length > 0
        s, start, length = s[keep].astype(np.int64), start[keep].astype(np.int64), length[keep].astype(np.int64)
        if len(s) == 0:
            return np.zeros(0, dtype=np.int64)
        n = self.n[s]
        p0, p1 = start // n, (start + length - 1) // n
        # split ranges at pass boundaries
        k = p1 - p0 + 1
        rid = np.repeat(np.arange(len(s)), k)
        p = np.repeat(p0, k) + (np.arange(k.sum()) - np.repeat(np.cumsum(k) - k, k))
        ss, nn = s[rid], n[rid]
        lo = np.maximum(start[rid], p * nn) - p * nn
        hi = np.minimum(start[rid] + length[rid], (p + 1) * nn) - p * nn
        pmax = int(p.max()) + 1
        upair, inv = dense_unique(ss * pmax + p)
        shard, first, cum = self._pass_orders(upair // pmax, upair % pmax)
        base = np.r_[0, cum][first[:-1]]  # samples before each pair in the laid-out cumulative
        a, b = base[inv] + lo, base[inv] + hi  # [a, b) in laid-out coordinates
        j0 = np.searchsorted(cum, a, side="right")  # shard containing a
        j1 = np.searchsorted(cum, b - 1, side="right")  # shard containing b - 1
        m = j1 - j0 + 1
        j = np.repeat(j0, m) + (np.arange(m.sum()) - np.repeat(np.cumsum(m) - m, m))
        seg_a = np.maximum(np.repeat(a, m), cum[j] - self.shard_len[shard[j]])
        seg_b = np.minimum(np.repeat(b, m), cum[j])
        seg_len = seg_b - seg_a
        seg_start = self.shard_start[shard[j]] + (seg_a - (cum[j] - self.shard_len[shard[j]]))
        idx = np.repeat(seg_start - (np.cumsum(seg_len) - seg_len), seg_len) + np.arange(seg_len.sum())
        return self.row_of_rank(idx)

    def rows_many(self, s: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Sample rows at virtual positions ``v`` of streams ``s`` (arrays of equal length)."""
        if len(v) == 0:
            return np.zeros(0, dtype=np.int64)
        s = s.astype(np.int64)
        n = self.n[s]
        p, i = np.divmod(v, n)
        # every pass (the first included) takes the stream's shards in a seeded order
        pmax = int(p.max()) + 1
        upair, inv = dense_unique(s * pmax + p)
        shard, first, cum = self._pass_orders(upair // pmax, upair % pmax)
        lens = self.shard_len[shard]
        target = np.r_[0, cum][first[:-1]][inv] + i  # in the laid-out cumulative of the pairs
        j = np.searchsorted(cum, target, side="right")
        within = target - (cum[j] - lens[j])
        return self.row_of_rank(self.shard_start[shard[j]] + within)


# -- the plan -------------------------------------------------------------------------------------
@dataclass
class PhasePlan:
    phase: int
    policy: str
    start: int
    end: int
    slots: int  # global slots per step
    cellset: CellSet
    comp: np.ndarray  # [steps, slots] cell ids (requested)
    targets: dict
    domain: str | None = None
    reassigned: int = 0  # slots moved off exhausted `stop` streams
    meta: dict = dataclasses.field(default_factory=dict)  # more phase meta: modality, parts, expected_reuse

    @property
    def cells(self) -> pd.DataFrame:
        return self.cellset.cells


def sample_columns(ws: Workspace, shard_set: str) -> list[str]:
    """The columns of the shard set's ``samples.parquet`` (its schema only)."""
    import pyarrow.parquet as pq

    from ..shards.schema import SAMPLES_FILE

    return pq.read_schema(ws.path("shards", shard_set, SAMPLES_FILE)).names


def effective_modality(pdef, params: dict, where: str, names=None) -> str:
    """The modality a phase keeps: its ``modality`` key, else the policy's default — which a shard set
    without a ``modality`` column (``names``: its columns) cannot apply: ``any`` then (``ads`` still
    skips samples without a cluster, i.e. without audio)."""
    m = phase_modality(pdef, params, where)
    if "modality" not in params and names is not None and "modality" not in names:
        return "any"
    return m


def phase_columns(spec: Spec, names=None) -> list[tuple[str, ...]]:
    """The composition columns of each phase's policy (the cell sets to count), and ``modality`` when
    the phase keeps one modality (``names``: the shard set's sample columns, see
    :func:`effective_modality`)."""
    out = []
    for ph in spec.phases:
        where = f"phases[{ph.index}]"
        pdef = get_policy(ph.policy, where)
        cols = list(pdef.columns({k: v for k, v in ph.params.items() if k != "modality"}))
        if effective_modality(pdef, ph.params, where, names) != "any":
            cols.append("modality")
        out.append(tuple(dict.fromkeys(cols)))
    return out


def modality_cells(cells: pd.DataFrame, modality: str, where: str) -> tuple[pd.DataFrame, np.ndarray | None]:
    """The cells a phase of ``modality`` composes from, renumbered 0…k−1, and their ids in ``cells``
    (``None``: all cells, ``any``)."""
    if modality == "any":
        return cells, None
    keep = np.flatnonzero(cells["modality"].astype(object).to_numpy() == modality)
    if not len(keep):
        found = sorted({str(x) for x in cells["modality"].tolist()})
        raise SpecError(f"{where}: `modality: {modality}` leaves no sample (modalities in the shard set: "
                        f"{found}); use `modality: any` or shard {modality} samples")
    sub = cells.iloc[keep].reset_index(drop=True)
    sub["cell"] = np.arange(len(keep), dtype=cells["cell"].dtype)
    return sub, keep


def expected_reuse(cells: pd.DataFrame, comp: np.ndarray, columns) -> dict:
    """Before any GPU hour: per (task, label) cell (or per value of the policy's first column), the
    expected ratio of distinct samples among the slots requesting it (``min(slots, samples)`` per
    composition cell, as pass order delivers every sample once before any twice) and the most times
    one sample comes back (``ceil(slots / samples)``); over the phase, the same."""
    counts = np.bincount(comp.reshape(-1), minlength=len(cells)).astype(np.int64)
    n = cells["n"].to_numpy().astype(np.int64)
    distinct = np.minimum(counts, n)
    reuse = np.where(counts > 0, -(-counts // np.maximum(n, 1)), 0)
    cols = [c for c in ("task", "label") if c in cells.columns]
    if len(cols) < 2:
        cols = [c for c in columns if c in cells.columns and c != "modality"][:1]
    tc = TargetColumns(tuple(cols))
    keys = tc.encode_rows(*[cells[c].tolist() for c in cols]) if cols else ["all"] * len(cells)
    by: dict = {}
    for k, c, d, r in zip(keys, counts.tolist(), distinct.tolist(), reuse.tolist()):
        if c:
            e = by.setdefault(k, [0, 0, 0])
            e[0] += c
            e[1] += d
            e[2] = max(e[2], r)
    total = max(int(counts.sum()), 1)
    return {"by": tc.name or "all", "distinct_ratio": round(float(distinct.sum()) / total, 5),
            "max_reuse": int(reuse.max()) if len(reuse) else 0,
            "cells": {k: {"slots": e[0], "distinct_ratio": round(e[1] / max(e[0], 1), 5), "max_reuse": e[2]}
                      for k, e in sorted(by.items())}}


def phase_parts(ph, parts: dict, slots: int) -> list[dict]:
    """A composite phase's parts in order: policy, steps [start, end), own requested shares."""
    out, s = [], ph.start
    for name, p in parts.items():
        e = s + int(p["steps"])
        out.append({"policy": name, "start_step": s, "end_step": e,
                    "targets": {col: {v: x / max(1, (e - s) * slots) for v, x in d.items()}
                                for col, d in p["targets"].items()}})
        s = e
    return out


def policy_params(ws: Workspace, ph) -> dict:
    """A phase's parameters as its policy receives them: files named in the spec are read here, once
    (``gst``'s ``groups: NAME`` → the lists of ``groups/NAME/groups.json``), so policies do no I/O."""
    params = dict(ph.params)
    if isinstance(params.get("groups"), str):
        params["groups"] = read_groups(ws, params["groups"], f"phases[{ph.index}] ({ph.policy})")
    return params


def compose(spec: Spec, scan: SampleScan, ws: Workspace) -> list[PhasePlan]:
    samples_per_step = spec.batch_size
    n_eligible = scan.n_eligible
    if samples_per_step is None:  # duration mode: expected samples per step
        mean = scan.mean_duration or 1.0
        samples_per_step = spec.world_size * max(1.0, spec.max_duration / mean)
    total = resolve_phase_steps(spec, n_eligible, samples_per_step)
    plans = []
    import pyarrow.parquet as pq

    names = pq.read_schema(scan.path).names
    for ph, columns in zip(spec.phases, phase_columns(spec, names)):
        where = f"phases[{ph.index}]"
        pdef = get_policy(ph.policy, where)
        cellset = scan.cells(columns)
        modality = effective_modality(pdef, ph.params, where, names)
        # the modality filter comes before composition: the policy sees only the cells it keeps
        cells, kept = modality_cells(cellset.cells, modality, f"{where} ({ph.policy})")
        factor = pdef.slots_factor(ph.params)
        slots = spec.batch_size * factor
        T = ph.end - ph.start
        comp = np.empty((T, slots), dtype=np.int32)
        targets: dict = {}
        parts: dict = {}
        per_block = max(1, COMPOSE_BLOCK_SLOTS // slots)  # whole steps per block: independent of the world size
        params = {k: v for k, v in policy_params(ws, ph).items() if k != "modality"}
        for b, off in enumerate(range(0, T, per_block)):
            n = min(per_block, T - off)
            rng = _seed(spec.seed, "phase", ph.index, ph.policy) if b == 0 else \
                _seed(spec.seed, "phase", ph.index, ph.policy, b)
            ctx = PolicyContext(cells=cells, n_steps=n, slots=slots, rng=rng, step0=ph.start + off,
                                total_steps=total, workspace=ws, phase=ph.index, targets=targets,
                                phase_steps=T, phase_offset=off, parts=parts)
            part = np.asarray(pdef.fn(ctx, **params))
            if part.dtype.kind not in "iu":
                raise PlanError(f"phases[{ph.index}]: policy {ph.policy!r} returned {part.dtype} values; it must "
                                "return integer cell ids")
            if part.shape != (n, slots) or part.min() < 0 or part.max() >= len(cells):
                raise PlanError(f"phases[{ph.index}]: policy {ph.policy!r} returned shape {part.shape} "
                                f"(expected {(n, slots)}) or cell ids out of range")
            comp[off : off + n] = part if kept is None else kept[part]
            del part, ctx
        meta: dict = {"expected_reuse": expected_reuse(cellset.cells, comp, columns)}
        if modality != "any":
            meta["modality"] = modality
        if parts:
            meta["parts"] = phase_parts(ph, parts, slots)
            for part in meta["parts"]:
                part["expected_reuse"] = expected_reuse(
                    cellset.cells, comp[part["start_step"] - ph.start : part["end_step"] - ph.start], columns)
        plans.append(PhasePlan(ph.index, ph.policy, ph.start, ph.end, slots, cellset,
                               comp, targets, pdef.domain(ph.params), meta=meta))
    return plans


def apply_exhaustion(spec: Spec, plans: list[PhasePlan], seq: StreamSequences, stats: dict,
                     capacity: np.ndarray | None = None) -> None:
    """Enforce ``on_exhaustion`` in global step order: ``fail`` raises, ``stop`` moves the slots of an
    exhausted stream to the phase's other streams (∝ their share of the phase), ``repeat`` starts a
    new pass (nothing to do here).  Works block by block on the composition (edited in place).
    ``capacity``: samples each stream can still give before it is exhausted (default: a whole pass;
    an amendment: what is left of the current pass)."""
    S = len(seq.names)
    cap = seq.n if capacity is None else capacity
    used = np.zeros(S, dtype=np.int64)
    for pp in plans:
        cstream = pp.cells["stream_code"].to_numpy().astype(np.int64)
        for _ in range(S + 1):
            demand = count_cells(pp.comp, S, cstream)
            over = [s for s in np.flatnonzero(used + demand > cap) if spec.exhaustion_of(seq.names[s]) != "repeat"]
            if not over:
                break
            s = over[0]
            name, beh = seq.names[s], spec.exhaustion_of(seq.names[s])
            cut = max(0, int(cap[s] - used[s]))
            of_s = np.flatnonzero(cstream == s)
            pos = np.concatenate([o + np.flatnonzero(np.isin(b, of_s)) for o, b in blocks(pp.comp)])
            if beh == "fail":
                step = pp.start + int(pos[cut]) // pp.slots
                raise PlanError(f"stream {name!r} ({seq.n[s]} samples) is exhausted at step {step} in "
                                f"phases[{pp.phase}] (on_exhaustion: fail); it would need "
                                f"{used[s] + demand[s]} samples by the end of the phase. Use `repeat`, "
                                "`stop`, fewer steps, or lower its weight.")
            excess = pos[cut:]
            alive = np.array([spec.exhaustion_of(seq.names[k]) == "repeat" or used[k] + demand[k] < cap[k]
                              for k in range(S)])
            alive[s] = False
            cand = np.flatnonzero(alive[cstream])
            share = count_cells(pp.comp, len(cstream))[cand].astype(np.float64)
            if share.sum() == 0:
                raise PlanError(f"all streams of phases[{pp.phase}] are exhausted (on_exhaustion: stop) at "
                                f"step {pp.start + int(excess[0]) // pp.slots}; use `repeat` or fewer steps")
            from .policies import spread

            flat = pp.comp.reshape(-1)  # a view: the composition is edited in place
            flat[excess] = cand[spread(share, len(excess), _seed(spec.seed, "stop", pp.phase, name))]
            pp.reassigned += len(excess)
            stats.setdefault("stopped_streams", {})[name] = pp.start + int(excess[0]) // pp.slots
        used += count_cells(pp.comp, S, cstream)


@dataclass
class Resolved:
    rows: np.ndarray  # sample row per slot, plan order
    vpos: np.ndarray  # virtual position per slot
    chunks: dict  # arrays: phase, stream (code), reader, start, length
    deviations: dict
    max_buffer: int
    buffer_at: dict


def phase_demand(spec: Spec, pp: PhasePlan, n_streams: int) -> np.ndarray:
    """``D[s, r]``: slots of reader r requesting stream s in this phase."""
    rl = ReaderLayout.of(spec)
    W, R = rl.world_size, rl.n_readers
    T, m = pp.end - pp.start, pp.slots // W
    cstream = pp.cells["stream_code"].to_numpy().astype(np.int64)
    D = np.zeros(n_streams * R, dtype=np.int64)
    per_block = max(1, BLOCK_SLOTS // pp.slots)
    for b0 in range(0, T, per_block):
        b1 = min(T, b0 + per_block)
        reader = rl.grid(pp.start + b0, pp.start + b1)
        key = cstream[pp.comp[b0:b1].reshape(b1 - b0, W, m)] * R + reader[:, :, None]
        D += np.bincount(key.reshape(-1), minlength=n_streams * R)
    return D.reshape(n_streams, R)


def chunk_layout(demands: list[np.ndarray]) -> list[np.ndarray]:
    """Virtual start of each phase's consumption per (stream, reader).  Reader r owns one contiguous
    range of each stream for the whole run (readers in order), consumed phase after phase."""
    total = sum(demands)
    start = np.cumsum(total, axis=1) - total
    out, used = [], np.zeros_like(total)
    for d in demands:
        out.append(start + used)
        used = used + d
    return out


class Supply:
    """Remaining supply for a re-plan: per stream, the sorted virtual positions still to deliver;
    supply coordinate u of stream s is virtual position ``U[off[s] + u]``."""

    def __init__(self, per_stream: list[np.ndarray]):
        self.off = np.r_[0, np.cumsum([len(u) for u in per_stream])].astype(np.int64)
        self.U = np.concatenate(per_stream) if per_stream else np.zeros(0, np.int64)
        self.n = np.diff(self.off)

    def virtual(self, s: np.ndarray, u: np.ndarray) -> np.ndarray:
        if len(u) and (u >= self.n[s]).any():
            raise PlanError("re-plan: demand exceeds the remaining supply of a stream (spec changed?)")
        return self.U[self.off[s] + u]


def resolve_phase(spec: Spec, pp: PhasePlan, seq: StreamSequences, start: np.ndarray, stats: dict,
                  supply: Supply | None = None, layout: PassLayout | None = None) -> Resolved:
    """Exact samples for one phase (count mode); ``start[s, r]``: reader-major coordinate where reader
    r's consumption of stream s in this phase begins (see :func:`chunk_layout`); ``layout`` maps those
    coordinates to positions of the stream's sequence pass by pass (:class:`PassLayout`; none: the
    identity), ``supply`` those positions to virtual positions (a re-plan)."""
    rl = ReaderLayout.of(spec)
    W, R, S = rl.world_size, rl.n_readers, len(seq.names)
    T = pp.end - pp.start
    m = pp.slots // W  # slots per micro-batch
    cstream = pp.cells["stream_code"].to_numpy().astype(np.int64)
    impure = np.bincount(cstream, minlength=S) > 1
    if not impure[cstream[count_cells(pp.comp, len(cstream)) > 0]].any():
        return _resolve_pure(spec, pp, seq, start, cstream, layout, stats, supply)
    flat = pp.comp.reshape(-1)  # plan order: (t, rank, j)
    reader3 = rl.grid(pp.start, pp.end)[:, :, None]  # reader of each slot
    s_of = cstream[flat]
    key = s_of * R + np.broadcast_to(reader3, (T, W, m)).reshape(-1)  # (stream, reader)
    del reader3
    order = stable_order(key)  # slots grouped by (stream, reader), time order inside
    D = np.bincount(key, minlength=S * R).reshape(S, R)
    Dflat = D.reshape(-1)
    cs_, cr_ = np.nonzero(D)  # the chunks, in key order
    chunks = _chunks(pp, cs_, cr_, start[cs_, cr_], D[cs_, cr_], layout)
    impure_used = bool(impure[s_of].any())
    reader = key % R
    k = np.empty(len(key), dtype=np.int64)  # occurrence index within (stream, reader)
    k[order] = np.arange(len(key)) - np.repeat(np.cumsum(Dflat) - Dflat, Dflat)
    q, deviations = k, {}
    if impure_used:
        q, deviations = _match_impure(spec, pp, seq, flat, s_of, reader, key, start, D, impure, k, supply,
                                      layout)
    v = start[s_of, reader] + q
    if layout is not None:
        v = layout.virtual(s_of, v)
    if supply is not None:
        v = supply.virtual(s_of, v)
    rows = seq.rows_many(s_of, v)
    cand = _repeat_candidates(pp, layout)
    if impure_used:  # matching can mix passes in any step of an impure stream
        p_ = v // seq.n[s_of]
        tk = (np.arange(len(flat), dtype=np.int64) // pp.slots) * S + s_of
        sel = np.flatnonzero(impure[s_of])
        o = sel[np.lexsort((p_[sel], tk[sel]))]
        b = np.flatnonzero((tk[o][1:] == tk[o][:-1]) & (p_[o][1:] != p_[o][:-1]))
        cand += [(int(k % S), pp.start + int(k // S)) for k in np.unique(tk[o][b]).tolist()]
    moved, left, touched, swaps = defer_same_step_repeats(spec, pp, rows, v, cstream, seq.n, cand, q)
    sim = impure.copy()
    sim[[s for _, s in touched]] = True
    max_buf, at = _simulate_buffer(reader, s_of, q, sim, R)
    if swaps and max_buf > spec.buffer:  # no room to defer: keep the repeats (counted)
        undo(swaps, rows, v, q)
        moved, left = 0, moved + left
        max_buf, at = _simulate_buffer(reader, s_of, q, impure, R)
    _count_repeats(stats, moved, left)
    return Resolved(rows, v, chunks, deviations, max_buf, at)


def _repeat_candidates(pp: PhasePlan, layout: PassLayout | None) -> list[tuple[int, int]]:
    """(stream, step) pairs of the phase where a stream's next pass begins (see :mod:`.samestep`)."""
    if layout is None:
        return []
    bs, bt = layout.boundaries
    sel = (bt >= pp.start) & (bt < pp.end)
    return list(zip(bs[sel].tolist(), bt[sel].tolist()))


def _count_repeats(stats: dict, moved: int, left: int) -> None:
    if moved:
        stats["same_step_repeats_deferred"] = stats.get("same_step_repeats_deferred", 0) + moved
    if left:
        stats["same_step_repeats_left"] = stats.get("same_step_repeats_left", 0) + left


def _resolve_pure(spec: Spec, pp: PhasePlan, seq: StreamSequences, start: np.ndarray,
                  cstream: np.ndarray, layout: PassLayout | None = None, stats: dict | None = None,
                  supply: Supply | None = None) -> Resolved:
    """Every stream of the phase is one cell: each (stream, reader) takes its range in order.  Resolved
    in blocks of whole steps with running per-(stream, reader) offsets, so temporaries stay
    O(block + streams × readers) whatever the phase length; rows are generated range by range (slot by
    slot through ``supply`` for an index that continues another)."""
    rl = ReaderLayout.of(spec)
    W, R, S = rl.world_size, rl.n_readers, len(seq.names)
    T = pp.end - pp.start
    m = pp.slots // W
    n = T * pp.slots
    rows = np.empty(n, dtype=np.int64)
    v = np.empty(n, dtype=np.int64)
    used = np.zeros(S * R, dtype=np.int64)
    start_flat = start.reshape(-1)
    per_block = max(1, BLOCK_SLOTS // pp.slots)
    for b0 in range(0, T, per_block):
        b1 = min(T, b0 + per_block)
        reader = rl.grid(pp.start + b0, pp.start + b1)[:, :, None]
        key = (cstream[pp.comp[b0:b1].reshape(b1 - b0, W, m)] * R + reader).reshape(-1)
        order = stable_order(key)  # grouped by (stream, reader), time order inside
        Db = np.bincount(key, minlength=S * R)
        ck = np.flatnonzero(Db)  # chunks touched by this block, in key order
        lens, st = Db[ck], start_flat[ck] + used[ck]
        o0 = b0 * pp.slots
        x = np.repeat(st - (np.cumsum(lens) - lens), lens) + np.arange(len(key))
        if supply is not None:
            s_rep = np.repeat(ck // R, lens)
            vb = supply.virtual(s_rep, x if layout is None else layout.virtual(s_rep, x))
            rows[o0 + order] = seq.rows_many(s_rep, vb)
            v[o0 + order] = vb
        elif layout is None:
            rows[o0 + order] = seq.range_rows(ck // R, st, lens)
            v[o0 + order] = x
        else:
            rows[o0 + order] = seq.range_rows(*layout.ranges(ck // R, st, lens))
            v[o0 + order] = layout.virtual(np.repeat(ck // R, lens), x)
        used[ck] += lens
    cs_, cr_ = np.divmod(np.flatnonzero(used), R)
    chunks = _chunks(pp, cs_, cr_, start[cs_, cr_], used.reshape(S, R)[cs_, cr_], layout)
    moved, left, touched, swaps = defer_same_step_repeats(spec, pp, rows, v, cstream, seq.n,
                                                          _repeat_candidates(pp, layout))
    stats = {} if stats is None else stats
    if not touched:
        _count_repeats(stats, moved, left)
        return Resolved(rows, v, chunks, {}, 0, {})
    sl, reader, s_of, q = pair_slots(spec, pp, cstream, v, touched)
    max_buf, at = _simulate_buffer(reader, s_of, q, np.ones(S, dtype=bool), R)
    if max_buf > spec.buffer:  # no room to defer: keep the repeats (counted)
        undo(swaps, rows, v)
        _count_repeats(stats, 0, moved + left)
        return Resolved(rows, v, chunks, {}, 0, {})
    _count_repeats(stats, moved, left)
    if at:
        at["slot"] = int(sl[at["slot"]])
    return Resolved(rows, v, chunks, {}, max_buf, at)


def _chunks(pp: PhasePlan, cs_: np.ndarray, cr_: np.ndarray, x0: np.ndarray, length: np.ndarray,
            layout: PassLayout | None) -> dict:
    """The (phase, stream, reader) ranges of the supply layout, in sequence positions (a chunk that
    spans passes is one range per pass)."""
    cr_ = cr_.astype(np.int64)
    if layout is not None:
        keep = length > 0
        cs_, cr_, x0, length = cs_[keep], cr_[keep], x0[keep], length[keep]
        a = layout.xbase[cs_] + x0
        k = (np.searchsorted(layout.gx0, a + length - 1, side="right")
             - np.searchsorted(layout.gx0, a, side="right") + 1)  # pieces of each chunk
        cr_ = np.repeat(cr_, k)
        cs_, x0, length = layout.ranges(cs_, x0, length)
    return {"phase": np.full(len(cs_), pp.phase, np.int32), "stream": cs_, "reader": cr_.astype(np.int32),
            "start": x0, "length": length}


def _match_impure(spec, pp, seq, flat, s_of, reader, key, start, D, impure, q, supply=None, layout=None):
    """Within chunks of impure streams, give the k-th request of a cell the k-th sample of that cell;
    leftover requests take leftover samples in order (counted deviations)."""
    R = ReaderLayout.of(spec).n_readers
    C = len(pp.cells)
    sel = np.flatnonzero(impure[s_of])
    # chunk samples of the impure (stream, reader) pairs, in position order
    pairs = np.argwhere((D > 0) & impure[:, None])
    lens = D[pairs[:, 0], pairs[:, 1]]
    ci = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)  # position in chunk
    cs = np.repeat(pairs[:, 0], lens)
    cr = np.repeat(pairs[:, 1], lens)
    cv = start[cs, cr] + ci
    if layout is not None:
        cv = layout.virtual(cs, cv)
    crow = seq.rows_many(cs, supply.virtual(cs, cv) if supply is not None else cv)
    ccell = pp.cellset.cell_of_rows(crow, cs)
    # requests: (stream, reader, cell) occurrence index in time order; samples: in position order
    rkey = key[sel] * C + flat[sel]
    _, rk = _segmented_cumcount(rkey)
    skey = (cs * R + cr) * C + ccell
    sorder, sk = _segmented_cumcount(skey)
    # lookup: sample of (skey, k)
    sk_sorted = skey[sorder]
    first = np.searchsorted(sk_sorted, rkey)
    count = np.searchsorted(sk_sorted, rkey, side="right") - first
    hit = rk < count
    q_sel = np.full(len(sel), -1, dtype=np.int64)
    q_sel[hit] = ci[sorder[first[hit] + rk[hit]]]
    used = np.zeros(len(ci), dtype=bool)
    used[sorder[first[hit] + rk[hit]]] = True
    n_dev = int((~hit).sum())
    deviations = {}
    if n_dev:
        # leftover requests (time order) ↔ leftover samples (position order), per (stream, reader)
        miss = np.flatnonzero(~hit)
        lo_r = key[sel][miss]
        free = np.flatnonzero(~used)
        lo_s = (cs * R + cr)[free]
        o1, k1 = _segmented_cumcount(lo_r)
        o2, k2 = _segmented_cumcount(lo_s)
        # both sides have equal counts per (stream, reader); sort both by (key, k)
        a = np.lexsort((k1, lo_r))
        b = np.lexsort((k2, lo_s))
        q_sel[miss[a]] = ci[free[b]]
        per_stream = np.bincount(s_of[sel][miss], minlength=len(seq.names))
        deviations = {seq.names[s]: int(c) for s, c in enumerate(per_stream) if c}
        if spec.fallback != "substitute":
            cols = [c for c in pp.cells.columns if c not in ("cell", "stream", "n", "duration_s", "stream_code")]
            worst = sorted(deviations.items(), key=lambda x: -x[1])[:5]
            raise PlanError(
                f"phases[{pp.phase}] ({pp.policy}): {n_dev} of {len(flat)} slots cannot get a sample of the "
                f"requested cell from their reader's chunk, because streams mix values of {cols} "
                f"(worst streams: {worst}). Fix: regroup the shards so streams follow those columns, e.g. "
                f"`jadwal shard regroup --by {','.join(cols)}`, or allow `fallback: substitute` "
                "(deviations are then counted in the report).")
    q = q.copy()
    q[sel] = q_sel
    return q, deviations


def _simulate_buffer(reader, s_of, q, impure, R) -> tuple[int, dict]:
    """Max over time of read-but-undelivered samples per reader.  A reader reads each chunk front to
    back; delivering chunk position q needs positions ≤ q read.  Pure streams deliver in order (0)."""
    sel = np.flatnonzero(impure[s_of])
    if len(sel) == 0:
        return 0, {}
    r, s, qq = reader[sel].astype(np.int64), s_of[sel].astype(np.int64), q[sel]
    g = r * (int(s.max()) + 1) + s
    order = np.argsort(g, kind="stable")  # by (reader, stream), time order inside
    gs = g[order]
    big = int(qq.max()) + 2
    gid = np.r_[0, np.cumsum(gs[1:] != gs[:-1])]
    front = np.maximum.accumulate(qq[order] + 1 + gid * big) - gid * big
    prev = np.r_[0, front[:-1]]
    prev[np.r_[True, gs[1:] != gs[:-1]]] = 0
    inc = np.empty(len(sel), dtype=np.int64)
    inc[order] = front - prev
    # back to time order per reader
    o2 = np.argsort(r, kind="stable")
    rr = r[o2]
    read = np.cumsum(inc[o2])
    cnt = np.arange(1, len(o2) + 1)
    starts = np.r_[0, np.flatnonzero(rr[1:] != rr[:-1]) + 1]
    base_read = np.repeat(np.r_[0, read[starts[1:] - 1]], np.diff(np.r_[starts, len(rr)]))
    base_cnt = np.repeat(starts, np.diff(np.r_[starts, len(rr)]))
    buf = (read - base_read) - (cnt - base_cnt)
    i = int(np.argmax(buf))
    return int(buf[i]), {"reader": int(rr[i]), "slot": int(sel[o2[i]])}


# -- the pipeline ---------------------------------------------------------------------------------
def targets_of(pp: PhasePlan) -> dict:
    """Requested shares of a truncated phase, from the cells its remaining steps request (as slot
    counts, the unit :class:`PolicyContext.add_target` uses)."""
    counts = np.bincount(pp.comp.reshape(-1), minlength=len(pp.cells))
    out = {}
    for col in pp.targets:
        tc = TargetColumns.parse(col, pp.cells.columns)
        vals = tc.encode_rows(*[pp.cells[c].tolist() for c in tc.columns])
        d: dict = {}
        for v, c in zip(vals, counts.tolist()):
            if c:
                d[v] = d.get(v, 0.0) + float(c)
        out[col] = d
    return out


def cut_at(plans: list[PhasePlan], step: int) -> list[PhasePlan]:
    """The phases' compositions from ``step`` on (a phase cut there starts there; edited in place)."""
    kept = []
    for pp in plans:
        if pp.end <= step:
            continue
        if pp.start < step:
            pp.comp = pp.comp[step - pp.start:]
            pp.start = step
            pp.targets = targets_of(pp)
        kept.append(pp)
    return kept


def resolve_all(spec: Spec, plans: list[PhasePlan], seq: StreamSequences, stats: dict, source=None,
                progress: bool = False, name: str = "", check_buffer: bool = True) -> list[Resolved]:
    """exhaustion (already applied by the caller) → demand → supply → chunk layout → pass-major layout →
    resolve → buffer bound, for the phases ``plans`` (in global step order).  ``source``: where the
    streams' samples come from when the index continues another (``source.supply(need, seq)`` →
    (:class:`Supply`, segment lengths per stream)); none: the streams' own passes."""
    S = len(seq.names)
    demands = [phase_demand(spec, pp, S) for pp in plans]
    supply, rows_of, seg = None, seq.rows_many, {"pass_len": seq.n}
    if source is not None:
        supply, seg_len = source.supply(sum(demands).sum(axis=1) if demands else np.zeros(S, np.int64), seq)
        rows_of = (lambda s_, y: seq.rows_many(s_, supply.virtual(s_, y)))
        seg = {"seg_len": seg_len, "pass_len": seq.n}
    starts = chunk_layout(demands)
    total = sum(demands).sum(axis=1) if demands else np.zeros(S, np.int64)
    layout = PassLayout.build(spec, plans, S, rows_of=rows_of, total=total, **seg)
    results = []
    for pp, start in zip(tqdm(plans, desc=f"plan {name}", unit="phase", disable=not progress), starts):
        res = resolve_phase(spec, pp, seq, start, stats, supply=supply, layout=layout)
        if check_buffer and res.max_buffer > spec.buffer:
            at = res.buffer_at
            step = pp.start + at["slot"] // pp.slots
            raise PlanError(
                f"phases[{pp.phase}] ({pp.policy}): reader {at['reader']} would hold {res.max_buffer} "
                f"read-but-undelivered samples at step {step}, over the bound `buffer: {spec.buffer}`. "
                f"Fix: regroup the shards by the policy's columns (`jadwal shard regroup --by …`) or raise "
                f"`buffer` to {res.max_buffer}.")
        results.append(res)
    return results


def plan_index(ws: Workspace, spec: Spec, st: SampleScan, shard_set: str, name: str, *, start_step: int = 0,
               source=None, progress: bool = True, extra: dict | None = None, files: dict | None = None) -> dict:
    """The one planning pipeline: compose → exhaustion → cut at ``start_step`` → demand → supply →
    chunk layout → pass-major layout → resolve → buffer bound (→ packing in duration mode) → write.

    Modes are parameters: a fresh plan (``start_step`` 0, no ``source``); an elastic re-plan (a source
    replaying what the old index had left, ``source.exhaust_before_cut``: exhaustion decided on the
    whole run, as the old index did); an amendment (a ledger source: ``source.capacity`` is what is
    left of each stream's current pass, exhaustion decided from ``start_step``); duration budget
    (``spec.max_duration``: nominal micro-batches packed per reader)."""
    seq = StreamSequences(st, spec.seed)
    if spec.batch_size is None:
        return _plan_duration(ws, spec, st, seq, shard_set, name, start_step=start_step, source=source,
                              progress=progress, extra=extra, files=files)
    stats: dict = {}
    plans = compose(spec, st, ws)
    if plans[-1].end <= start_step:
        raise PlanError(f"the spec ends at step {plans[-1].end}, not after step {start_step}")
    all_phases = list(plans)
    if source is None or source.exhaust_before_cut:
        apply_exhaustion(spec, plans, seq, stats)
        kept = cut_at(plans, start_step)
    else:
        kept = cut_at(plans, start_step)
        apply_exhaustion(spec, kept, seq, stats, capacity=source.capacity)
    results = resolve_all(spec, kept, seq, stats, source, progress, name)
    if source is not None:
        extra = {**(extra or {}), **source.meta(kept, spec)}
    return write_index(ws, spec, st, shard_set, name, kept, results, stats, start_step=start_step, extra=extra,
                       all_phases=all_phases if start_step else None, files=files)


def _plan_duration(ws, spec, st, seq, shard_set: str, name: str, *, start_step: int = 0, source=None,
                   progress: bool = True, extra: dict | None = None, files: dict | None = None) -> dict:
    """Duration mode (see :mod:`.duration`): the schedule planned as in count mode with a nominal
    micro-batch and a margin of steps, then each reader's sequence packed within the budget.  From
    ``start_step`` each phase's nominal composition is cut where its real steps reach it."""
    W, nw = spec.world_size, spec.readers_per_rank
    for ph in spec.phases:
        factor = get_policy(ph.policy, f"phases[{ph.index}]").slots_factor(ph.params)
        if factor != 1:
            raise SpecError(f"phases[{ph.index}] ({ph.policy}): candidate pools of {factor} × the batch need "
                            "`batch_size`; duration mode (`max_duration`) has no fixed batch to multiply")
    durations = st.durations()  # per row: packing needs every planned sample's duration
    mu = st.mean_duration or 1.0  # exact now that the durations are loaded
    budget = spec.max_duration
    n0 = max(1, int(0.9 * budget / mu))
    resolve_phase_steps(spec, st.n_eligible, W * budget / mu)  # the real phase steps
    real_all = [(ph.start, ph.end) for ph in spec.phases]
    if real_all[-1][1] <= start_step:
        raise PlanError(f"the spec ends at step {real_all[-1][1]}, not after step {start_step}")
    # the window of read samples bucketing chooses from; it is what the buffer holds
    window = spec.bucket_window or max(n0 + 1, min(8 * n0, spec.buffer))
    margin = 1.15
    for _attempt in range(6):
        nominal_phases = [Phase(ph.index, ph.policy, int(math.ceil((e - s) * margin)) + nw, dict(ph.params))
                          for ph, (s, e) in zip(spec.phases, real_all)]
        nominal = dataclasses.replace(spec, batch_size=W * n0, max_duration=None, steps=None, epochs=None,
                                      phases=nominal_phases)
        stats: dict = {}
        plans, real = nominal_cut(compose(nominal, st, ws), real_all, start_step, nw, targets_of)
        apply_exhaustion(nominal, plans, seq, stats, capacity=None if source is None else source.capacity)
        results = resolve_all(nominal, plans, seq, stats, source, progress, name, check_buffer=False)
        packed = pack_all(spec, plans, results, real, durations, n0, budget, window, st.stream_of_rows, start_step)
        if packed is not None:
            break
        margin *= 1.3
    else:  # pragma: no cover - needs pathological durations
        raise PlanError("duration mode: could not fill the micro-batches within the budget; raise max_duration")
    mb_rows, mb_vpos, mb_req, max_buf, unused = packed
    sizes = np.array([len(x) for x in mb_rows], dtype=np.int64)
    if sizes.min() == 0:
        raise PlanError("duration mode: an empty micro-batch (a sample longer than max_duration?)")
    rows = np.concatenate(mb_rows)
    vpos = np.concatenate(mb_vpos)
    requested = np.concatenate(mb_req)
    offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    if max_buf > spec.buffer:
        raise PlanError(f"duration mode: bucketing needs {max_buf} read-but-undelivered samples per reader, over "
                        f"`buffer: {spec.buffer}`; raise `buffer` or lower `bucket_window` ({window})")
    cells, ph_meta = [], []
    for pp, (s, e), r, un in zip(plans, real, results, unused):
        cells.append(cells_table(pp))
        total_slots = max(1, pp.comp.size)
        ph_meta.append({"index": pp.phase, "policy": pp.policy, "start_step": s, "end_step": e,
                        "slots_per_step": None, "micro_batch": None, "nominal_micro_batch": n0,
                        "domain": pp.domain, "unused": int(un), "deviations": r.deviations,
                        "reassigned": pp.reassigned, "max_buffer": int(max_buf),
                        "targets": {col: {v: x / total_slots for v, x in d.items()} for col, d in pp.targets.items()},
                        **{k: v for k, v in pp.meta.items() if k != "parts"}})
    done = {p["index"] for p in ph_meta}  # phases over before start_step are listed, as in a re-plan
    ph_meta = [{"index": ph.index, "policy": ph.policy, "start_step": s, "end_step": e, "slots_per_step": None,
                "micro_batch": None, "nominal_micro_batch": n0, "domain": None, "unused": 0, "deviations": {},
                "reassigned": 0, "max_buffer": 0, "targets": {}}
               for ph, (s, e) in zip(spec.phases, real_all) if ph.index not in done] + ph_meta
    if source is not None:
        extra = {**(extra or {}), **source.meta(plans, spec)}
    return write_files(ws, spec, st, shard_set, name, rows, vpos, requested, offsets, cells, chunks_table(st, results),
                       ph_meta, {"bucket_window": window, "nominal_margin": margin}, num_steps=real[-1][1],
                       start_step=start_step, extra=extra, files=files)


def build_index(workspace, spec_source, name: str, *, progress: bool = True) -> dict:
    """Plan ``spec_source`` (path, YAML text or dict) into ``index/<name>/``. Returns the meta dict."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    spec = load_spec(spec_source)
    load_policy_modules(spec.policy_modules)
    shard_set = pick_shard_set(ws, spec.shards)
    st = scan_samples(ws, shard_set, spec, phase_columns(spec, sample_columns(ws, shard_set)))
    return plan_index(ws, spec, st, shard_set, name, progress=progress)
