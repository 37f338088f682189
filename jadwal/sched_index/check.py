"""An independent checker of a scheduling index.

It reads only what any consumer can read — :func:`open_index` (``plan``/``rows``, ``meta``) and the shard
set's ``samples.parquet``/``shards.parquet`` (and cluster assignments, :mod:`jadwal.shards.clusters`) —
never the planner's internals, and re-derives the properties of docs/sched_index.md ("Properties and how
they are proven"; the layers and contracts are in docs/architecture.md), one function per property over
a shared slot table (:class:`_SlotTable`), each reporting failures in the :class:`CheckReport`:

1. *exact*      (:func:`prop1_exact`) the index files are those meta.json records (sha256), phases tile
                the steps; every micro-batch names existing, eligible samples (split, duration) in
                existing shards, each of its requested cell (``requested.npy``/``cells.parquet``)
                unless meta declares the deviation; ``vpos`` addresses the delivered sample (within a
                pass of a stream, each shard is one run of consecutive positions, front to back), and
                a fresh count-mode index consumes every stream's sequence without a gap (a re-plan:
                exactly what the index it continues had left; an amendment's ledger is recomputed
                from its parent's files); a stream whose ``on_exhaustion`` is not ``repeat`` delivers
                no sample twice;
2. *sequential* (:func:`prop2_sequential`) a reader reads a shard once per pass, front to back, in one
                run no other reader interleaves (a sample delivered after a later one of the same
                shard waits in the reader's buffer);
3. *bounded*    (:func:`prop3_bounded`) the simulated buffer of read-but-undelivered samples never
                exceeds ``buffer`` nor the planner's own (conservative) simulation ``max_buffer``;
6. *distributed* (:func:`prop6_distributed`) every rank has every step, micro-batches are equal (or
                within the duration budget, none empty), and within a pass no sample is delivered twice;
7. *faithful*   (:func:`prop7_faithful`) per phase and part, realized shares of each target column
                (:mod:`.targets`) are within sampling error of the requested ones (deviations counted
                separately), and a phase's ``modality`` delivers no other;
8. *pass order* (:func:`prop8_pass_order`) in global step order, a sample of a stream comes back only
                once every eligible sample of the stream has been delivered as often (:mod:`.passorder`),
                up to a slack of ``readers × max buffer`` (0 when streams hold one cell) in count mode,
                and never twice in a step when the stream holds that step's requests (except repeats the
                planner declares in ``meta["stats"]["same_step_repeats_left"]``); for an index that
                continues another (re-plan or amendment), measured on the concatenated deliveries of the
                chain (samples matched by id), judging the steps from its start.

Determinism (4) is checked by building twice and comparing bytes, resumability (5) by the loader's
tests (``tests/sched_index``, ``tests/trainer``).  Readers follow :class:`.format.ReaderLayout`.
Vectorized branches whose integer keys could overflow have a slower fallback (``_LIM``, ``_DENSE``);
``tests/sched_index/test_check_properties.py`` runs the checker with the fallbacks forced and compares.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..shards.clusters import CLUSTER_PREFIX, AssignmentError, assignments_path, cluster_name, read_assignments
from ..shards.schema import SAMPLES_FILE, SHARDS_FILE
from ..workspace import sha256_file
from . import format as F
from .ledger import Ledger, delivered_before, id_column
from .reader import open_index
from .targets import TargetColumns


@dataclass
class CheckReport:
    ok: bool = True
    failures: list[str] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)

    def fail(self, msg: str) -> None:
        self.ok = False
        if len(self.failures) < 50:
            self.failures.append(msg)

    def __str__(self) -> str:
        head = "index check: OK" if self.ok else f"index check: {len(self.failures)} failure(s)"
        lines = [head] + [f"  - {f}" for f in self.failures] + [f"  {k}: {v}" for k, v in self.numbers.items()]
        return "\n".join(lines)


# numbers in the order ``str(report)`` prints them (properties run in their own order)
_NUMBERS = ("max_buffer", "shard_opens", "slots", "pass_order", "pass_order_slack", "same_step_repeats",
            "continuation", "ledger", "ledger_samples", "worst_fidelity_sigmas")


def check_index(workspace, name: str, *, tolerance_sigmas: float = 4.0) -> CheckReport:
    """Every property of index ``name`` (one function each, numbered as in docs/sched_index.md), failures
    reported, never raised; the index must open (:func:`open_index`)."""
    idx = open_index(workspace, name)
    rep = CheckReport()
    t = _slot_table(idx, rep)
    if t is not None:
        prop1_exact(t, rep)
        rs = _ReaderSequence.simulate(t)
        prop2_sequential(t, rep, rs)
        prop3_bounded(t, rep, rs)
        prop6_distributed(t, rep, rs)
        max_buf = rs.max_buffer
        del rs
        prop8_pass_order(t, rep, max_buf)
        prop7_faithful(t, rep, tolerance_sigmas)
    order = {k: i for i, k in enumerate(_NUMBERS)}
    rep.numbers = dict(sorted(rep.numbers.items(), key=lambda kv: order.get(kv[0], len(order))))
    return rep


@dataclass
class _SlotTable:
    """What every property reads: the shard set's samples and every slot of the index.

    Micro-batch ``i`` is (step ``start + i // W``, rank ``i % W``); its slots are ``plan[a[i]:b[i]]``
    (``lens``, and ``cum``: their start among all slots).  Slots of micro-batches whose rows are out of
    range are dropped from the ``*_v`` arrays (``valid``: per micro-batch)."""

    idx: object
    samples: "_Samples"
    shard_id: np.ndarray  # per sample row
    pos: np.ndarray
    duration: np.ndarray
    known_shards: set
    scode_raw: np.ndarray  # stream code per sample row …
    svals: list  # … and the stream values (first appearance order)
    arrays: tuple  # plan.npy, vpos.npy, offsets.npy
    lens: np.ndarray  # per micro-batch
    cum: np.ndarray
    rows_s: np.ndarray  # per slot (every micro-batch)
    oor: np.ndarray  # per micro-batch: a row out of range
    valid: np.ndarray
    rows_v: np.ndarray  # per slot of a valid micro-batch
    mb_v: np.ndarray
    vpos_v: np.ndarray
    ph_pos: np.ndarray  # per step: position of its phase in meta["phases"]
    unknown: np.ndarray  # per micro-batch: a shard not in shards.parquet

    @property
    def meta(self) -> dict:
        return self.idx.meta

    @property
    def W(self) -> int:
        return self.idx.world_size

    @property
    def start(self) -> int:
        return self.idx.start_step

    @property
    def n_steps(self) -> int:
        return self.idx.num_steps - self.idx.start_step


def _slot_table(idx, rep: CheckReport) -> _SlotTable | None:
    """The slot table; ``None`` (with the failure reported) when a step lies past the last phase."""
    sdir = idx.ws.path("shards", idx.shard_set)
    samples = _Samples(sdir / SAMPLES_FILE)
    shards = pq.read_table(sdir / SHARDS_FILE)
    n_rows = samples.num_rows
    shard_id = samples.column("shard_id").to_numpy()
    known_shards = set(shards.column("shard_id").to_pylist())
    known = np.array(sorted(x for x in known_shards if x is not None), dtype=np.int64)
    scode_raw, svals = _encode(samples.column("stream"))
    W, S = idx.world_size, idx.start_step
    n_steps = idx.num_steps - S
    steps = S + np.arange(n_steps, dtype=np.int64)
    ph_pos = np.searchsorted(idx._phase_ends, steps, side="right") if n_steps else np.zeros(0, np.int64)
    if len(ph_pos) and int(ph_pos.max()) >= len(idx.meta["phases"]):
        rep.fail(f"steps from {int(steps[np.argmax(ph_pos >= len(idx.meta['phases']))])} lie past the last "
                 "phase of meta.json")
        return None
    plan_all, vpos_all, off = arrays = _arrays(idx)
    n_mb = len(off) - 1
    a, b = _slice_bounds(off[:-1], len(plan_all)), _slice_bounds(off[1:], len(plan_all))
    lens = np.maximum(b - a, 0)
    cum = np.r_[0, np.cumsum(lens)].astype(np.int64)
    identity = bool(np.array_equal(a, cum[:-1])) and int(cum[-1]) == len(plan_all)
    slot_ix = None if identity else np.repeat(a - cum[:-1], lens) + np.arange(int(cum[-1]), dtype=np.int64)
    rows_s = plan_all if identity else plan_all[slot_ix]
    mb_of = np.repeat(np.arange(n_mb, dtype=np.int32 if n_mb < 2**31 else np.int64), lens)
    oor = np.bincount(mb_of[(rows_s < 0) | (rows_s >= n_rows)], minlength=n_mb) > 0
    valid = ~oor
    all_valid = bool(valid.all())
    rows_v = rows_s if all_valid else rows_s[valid[mb_of]]
    mb_v = mb_of if all_valid else mb_of[valid[mb_of]]
    del mb_of
    # virtual positions of the same slots (vpos.npy sliced like plan.npy)
    lv = len(vpos_all)
    if identity and lv == len(plan_all):
        vpos_s = vpos_all
    else:
        va, vb = _slice_bounds(off[:-1], lv), _slice_bounds(off[1:], lv)
        ok_len = np.maximum(vb - va, 0) == lens
        vix = np.repeat(va - cum[:-1], lens) + np.arange(int(cum[-1]), dtype=np.int64)
        vix = np.where(np.repeat(ok_len, lens), vix, 0)
        vpos_s = vpos_all[vix] if lv else np.zeros(len(vix), np.int64)
    vpos_v = vpos_s if all_valid else vpos_s[valid[np.repeat(np.arange(n_mb), lens)]]
    t = _SlotTable(idx, samples, shard_id, samples.column("pos").to_numpy(),
                   np.nan_to_num(samples.column("duration_s").to_numpy(zero_copy_only=False).astype(float)),
                   known_shards, scode_raw, svals, arrays, lens, cum, rows_s, oor, valid, rows_v, mb_v, vpos_v,
                   ph_pos, np.bincount(mb_v[~np.isin(shard_id[rows_v], known)], minlength=n_mb) > 0)
    return t


def prop1_exact(t: _SlotTable, rep: CheckReport) -> None:
    """1. *exact*: the index files are those meta.json records and its phases tile the steps; every
    micro-batch names existing, eligible samples in existing shards, each of its requested cell unless
    meta declares the deviation; ``vpos`` addresses the delivered sample and no stream's sequence has a
    gap; a stream that must not repeat delivers no sample twice."""
    idx, meta, W, S = t.idx, t.meta, t.W, t.start
    for f, h in meta.get("outputs_sha256", {}).items():
        if not (idx.dir / f).exists() or sha256_file(idx.dir / f) != h:
            rep.fail(f"{f}: sha256 differs from meta.json (edited or damaged since planning)")
    phases = meta["phases"]
    # a re-plan lists the phase it cut at its start step as starting there
    if (not phases or phases[0]["start_step"] not in (0, S) or phases[-1]["end_step"] != idx.num_steps
            or any(b["start_step"] != a["end_step"] and not (b["start_step"] == S and a["end_step"] <= S)
                   for a, b in pairwise(phases))
            or any(p["end_step"] <= p["start_step"] for p in phases)):
        rep.fail(f"phases {[(p['start_step'], p['end_step']) for p in phases]} do not tile the run's "
                 f"{idx.num_steps} steps")
    for i in np.flatnonzero(t.oor | (t.valid & t.unknown)).tolist():
        step, r = S + i // W, i % W
        if t.oor[i]:
            rep.fail(f"step {step} rank {r}: sample rows out of range")
            continue
        bad = set(t.shard_id[t.rows_s[t.cum[i]:t.cum[i + 1]]].tolist()) - t.known_shards
        if bad:
            rep.fail(f"step {step} rank {r}: shards {sorted(bad)[:3]} not in shards.parquet")
    # passes: the k-th delivery of a sample belongs to pass k of its stream
    delivered = np.bincount(t.rows_v, minlength=t.samples.num_rows)
    stream_passes = np.zeros(len(t.svals), dtype=np.int64)
    np.maximum.at(stream_passes, t.scode_raw, delivered)
    exh = meta["spec"].get("on_exhaustion", "repeat")
    exh = {"default": exh} if isinstance(exh, str) else {"default": "repeat", **exh}
    for s, c in zip(t.svals, stream_passes.tolist()):
        if exh.get(s, exh["default"]) != "repeat" and c > 1:
            rep.fail(f"stream {s!r}: a sample delivered {c} times but on_exhaustion is not repeat")
    _check_exact(idx, rep, t.samples, t.scode_raw, t.svals, t.shard_id, t.pos, t.duration, t.arrays)


@dataclass
class _ReaderSequence:
    """Every valid slot in reader order (readers in order, each delivering its micro-batches in step
    order: slot j of that sequence is time j), with its sample row, shard, position, pass and reader.
    The pass of a delivery is its virtual position divided by the stream's eligible sample count."""

    seq: np.ndarray
    pass_of: np.ndarray
    sh: np.ndarray
    pos: np.ndarray
    reader: np.ndarray
    unknown_streams: list  # stream values delivered that meta.json does not count
    _max_buffer: int | None = None

    @classmethod
    def simulate(cls, t: _SlotTable) -> _ReaderSequence:
        n_mb = len(t.lens)
        rl = F.ReaderLayout.of(t.idx)
        mb_reader = rl.grid(t.start, t.start + t.n_steps).reshape(-1) if n_mb else np.zeros(0, np.int64)
        vmb = np.flatnonzero(t.valid)
        vmb = vmb[np.argsort(mb_reader[vmb], kind="stable")]
        vlen = t.lens[vmb]
        vcum = np.r_[0, np.cumsum(t.lens * t.valid)].astype(np.int64)  # start of each mb among the valid slots
        order = (np.repeat(vcum[vmb] - np.r_[0, np.cumsum(vlen)][:-1], vlen)
                 + np.arange(int(vlen.sum()), dtype=np.int64))
        seq = t.rows_v[order]
        vp = np.asarray(t.vpos_v[order], dtype=np.int64)
        rd = np.repeat(mb_reader[vmb], vlen)
        del order
        n_stream = t.meta["streams"]
        code_seq = t.scode_raw[seq]
        n_code = np.array([n_stream.get(v, -1) if isinstance(v, str) else -1 for v in t.svals], dtype=np.int64)
        used = np.bincount(code_seq, minlength=len(t.svals)) > 0
        unknown = [t.svals[c] for c in np.flatnonzero(used & (n_code < 0)).tolist()]
        pass_of = vp // np.maximum(n_code[code_seq], 1)
        return cls(seq, pass_of, t.shard_id[seq].astype(np.int64), t.pos[seq].astype(np.int64), rd, unknown)

    @property
    def max_buffer(self) -> int:
        if self._max_buffer is None:
            self._max_buffer = _buffer(self.reader, self.sh, self.pass_of, self.pos)
        return self._max_buffer


def prop2_sequential(t: _SlotTable, rep: CheckReport, rs: _ReaderSequence) -> None:
    """2. *sequential*: a reader reads each (shard, pass) as one run front to back, a range no other
    reader's interleaves (the disjoint ranges of property 6); ``shard_opens`` counts (reader, shard, pass)."""
    rep.numbers["shard_opens"] = _check_disjoint(rep, rs.sh, rs.pass_of, rs.pos, rs.reader)


def prop3_bounded(t: _SlotTable, rep: CheckReport, rs: _ReaderSequence) -> None:
    """3. *bounded*: the simulated buffer of read-but-undelivered samples (a sample delivered after a later
    one of its shard waits) never exceeds ``buffer`` nor the planner's own simulation ``max_buffer``."""
    meta, max_buf = t.meta, rs.max_buffer
    rep.numbers["max_buffer"] = max_buf
    if max_buf > meta["buffer"]:
        rep.fail(f"simulated buffer reaches {max_buf} samples, over the bound {meta['buffer']}")
    if max_buf > meta.get("max_buffer", max_buf):
        rep.fail(f"simulated buffer reaches {max_buf} samples, over the planner's simulated maximum "
                 f"{meta['max_buffer']} (its simulation must be an upper bound)")


def prop6_distributed(t: _SlotTable, rep: CheckReport, rs: _ReaderSequence) -> None:
    """6. *distributed*: every rank has every step with an equal micro-batch (duration mode: within the
    budget, none empty), each phase's micro-batch × world size is its slots per step, and within a pass
    of its stream no sample is delivered twice (readers' ranges are disjoint: property 2's check)."""
    meta, phases, W = t.meta, t.meta["phases"], t.W
    max_dur = meta.get("max_duration")
    for p in phases:
        if not max_dur and p["end_step"] > t.start and p["micro_batch"] * W != p["slots_per_step"]:
            rep.fail(f"phase {p['index']}: micro-batch {p['micro_batch']} × world size {W} ≠ {p['slots_per_step']} "
                     "slots per step")
    n_mb, lens = len(t.lens), t.lens
    if max_dur:  # candidates by a vectorized sum, decided by the exact sum below
        dsum = np.bincount(t.mb_v, weights=t.duration[t.rows_v], minlength=n_mb)
        size_flag = t.valid & (dsum > max_dur + 1e-6 - 1e-7)
    else:
        mbsz = np.array([p["micro_batch"] for p in phases], dtype=np.int64)
        size_flag = t.valid & (lens != (mbsz[np.repeat(t.ph_pos, W)] if n_mb else np.zeros(0, np.int64)))
    empty = (t.valid & (lens == 0)).reshape(t.n_steps, W).any(axis=1)
    for k in np.flatnonzero(size_flag.reshape(t.n_steps, W).any(axis=1) | empty).tolist():
        step, ph = t.start + k, phases[int(t.ph_pos[k])]
        for r in range(W):
            i = k * W + r
            if not size_flag[i]:
                continue
            if max_dur:
                total = t.duration[t.rows_s[t.cum[i]:t.cum[i + 1]]].sum()
                if total > max_dur + 1e-6:
                    rep.fail(f"step {step} rank {r}: {total:.2f} s over the budget {max_dur} s")
            else:
                rep.fail(f"step {step} rank {r}: {int(lens[i])} samples, phase micro-batch is {ph['micro_batch']}")
        if empty[k]:
            rep.fail(f"step {step}: an empty micro-batch")
    for s in rs.unknown_streams:
        rep.fail(f"stream {s!r} is delivered but meta.json counts no eligible sample of it")
    _check_twice(rep, rs.seq, rs.pass_of)
    rep.numbers["slots"] = len(t.rows_v)


def prop7_faithful(t: _SlotTable, rep: CheckReport, tolerance_sigmas: float) -> None:
    """7. *faithful*: per phase (and per part of a composite phase), realized shares of each target
    column within sampling error of the requested ones (declared deviations apart); a phase's
    ``modality`` delivers no other modality."""
    idx, samples, meta, W, S = t.idx, t.samples, t.meta, t.W, t.start
    phases = meta["phases"]
    ph_key = (np.array([p["index"] for p in phases], dtype=np.int64)[np.repeat(t.ph_pos, W)][t.mb_v]
              if len(t.mb_v) else np.zeros(0, np.int64))
    # steps of the slots, only where a phase declares parts (their targets hold over their own steps)
    step_v = S + t.mb_v // W if any(p.get("parts") for p in phases) else None
    rows_v = t.rows_v
    allowed_cols = [c for c in samples.column_names if c not in ("id", "shard_id", "pos", "offset", "size", "duration_s")]
    enc: dict = {}

    def codes_of(c):
        """Codes and values of column ``c``; ``None`` (with the failure reported once) when it has none."""
        if c not in enc:
            if c in allowed_cols:
                enc[c] = _encode_np(samples.column(c))
            elif c.startswith(CLUSTER_PREFIX) and c not in samples.column_names:
                try:
                    enc[c] = _cluster_codes(idx, samples, c)
                except AssignmentError as e:
                    enc[c] = None
                    rep.fail(f"target column {c!r}: {e}")
            else:
                enc[c] = None
                rep.fail(f"target column {c!r} is neither a column of the shard set nor a cluster assignment")
        return enc[c]

    worst = 0.0
    for ph in phases:
        in_ph = ph_key == ph["index"]
        rows = rows_v[in_ph]
        if not len(rows):
            continue
        # substitutions (fallback) and slots moved off exhausted `stop` streams are declared changes
        declared = sum(ph.get("deviations", {}).values()) + ph.get("reassigned", 0)
        worst = max(worst, _faithful(rep, codes_of, allowed_cols, rows, ph.get("targets", {}), declared,
                                     tolerance_sigmas, f"phase {ph['index']} ({ph['policy']})"))
        # the modality a phase keeps (applied before composition): no slot of another one
        if ph.get("modality", "any") != "any" and codes_of("modality") is not None:
            codes, vals = codes_of("modality")
            other = [k for k, v in enumerate(vals) if v != ph["modality"]]
            n_other = int(np.isin(codes[rows], other).sum())
            if n_other > declared:
                rep.fail(f"phase {ph['index']} ({ph['policy']}): {n_other} slots deliver samples whose modality "
                         f"is not {ph['modality']!r} (`modality: {ph['modality']}`), {declared} changes declared")
        # a composite policy's parts, each against its own request over its own steps (parts cut by a
        # re-plan are not judged: their request was for the whole part)
        for k, part in enumerate(ph.get("parts") or []):
            if part["start_step"] < S or step_v is None:
                continue
            sel = rows_v[in_ph & (step_v >= part["start_step"]) & (step_v < part["end_step"])]
            if len(sel):
                worst = max(worst, _faithful(rep, codes_of, allowed_cols, sel, part.get("targets", {}), declared,
                                             tolerance_sigmas, f"phase {ph['index']} part {k} ({part['policy']})"))
    rep.numbers["worst_fidelity_sigmas"] = round(float(worst), 2)


def prop8_pass_order(t: _SlotTable, rep: CheckReport, max_buf: int) -> None:
    """8. *pass order* (see the module docstring), over the chain of indexes this one continues."""
    _check_pass_order(t.idx, rep, t.samples, t.rows_v, t.start + t.mb_v // t.W, t.scode_raw, t.svals, max_buf)


def _faithful(rep: CheckReport, codes_of, allowed_cols: list, rows: np.ndarray, targets: dict, declared: int,
              tolerance_sigmas: float, what: str) -> float:
    """Realized shares of each target column among ``rows`` within ``tolerance_sigmas`` sampling σ (+ 2
    slots, + the ``declared`` changed slots) of the requested ones; returns the worst error in σ."""
    n = len(rows)
    worst = 0.0
    allowed_dev = declared / n
    for col, target in targets.items():
        real = _realized(codes_of, col, allowed_cols, rows)
        if real is None:
            continue  # a column without values: reported by ``codes_of``
        for v, p in target.items():
            q = real.get(v, 0) / n
            sigma = np.sqrt(max(p * (1 - p), 1e-12) / n)
            err = abs(q - p)
            worst = max(worst, err / max(sigma, 1e-12) if err > 1.5 / n else 0.0)
            if err > tolerance_sigmas * sigma + 2.0 / n + allowed_dev:
                rep.fail(f"{what}: {col}={v!r} realized {q:.4f}, requested {p:.4f} (n={n})")
    return worst


def _cluster_codes(idx, samples, col: str) -> tuple[np.ndarray, list]:
    """A ``cluster:NAME`` column not in samples.parquet, from its assignments joined by sample id
    (:mod:`jadwal.shards.clusters`): codes per sample row and the values (a sample without an
    assignment: None).  Raises :class:`AssignmentError`."""
    a = read_assignments(idx.ws, cluster_name(col))
    at = a.row_codes(_plain(samples.column("id")))
    codes, vals = _encode_np(a.clusters)
    vals = list(vals) + [None]
    return np.where(at >= 0, codes[np.maximum(at, 0)] if len(codes) else len(vals) - 1, len(vals) - 1), vals


_LIM = 1 << 62  # combined integer keys below this: one sort of int64 (else the lexsort branch)
_DENSE = 1 << 22  # key spaces up to this (or _DENSE_PER_SLOT × the slots) are counted with bincount …
_DENSE_PER_SLOT = 4  # … else with np.unique


class _Samples:
    """The shard set's samples table (without ``members``), read column by column as needed."""

    def __init__(self, path):
        self.path = path
        self.column_names = [c for c in pq.read_schema(path).names if c != "members"]
        self.num_rows = pq.read_metadata(path).num_rows

    def column(self, c: str) -> pa.ChunkedArray:
        if c not in self.column_names:
            raise KeyError(c)
        return pq.read_table(self.path, columns=[c], memory_map=True).column(0)


def _plain(col):
    """One arrow array (chunks combined, dictionary columns decoded)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return col


def _encode(col) -> tuple[np.ndarray, list]:
    """Codes of a column's distinct values (nulls included), and those values as Python objects."""
    d = pc.dictionary_encode(_plain(col), null_encoding="encode")
    return np.asarray(d.indices.to_numpy(zero_copy_only=False), dtype=np.int64), d.dictionary.to_pylist()


def _encode_np(col) -> tuple[np.ndarray, list]:
    """Like :func:`_encode`, with the values as ``to_numpy`` gives them for the whole column (a null among
    the distinct values makes the conversion the one of a column with nulls)."""
    d = pc.dictionary_encode(_plain(col), null_encoding="encode")
    vals = d.dictionary.to_numpy(zero_copy_only=False)
    return np.asarray(d.indices.to_numpy(zero_copy_only=False), dtype=np.int64), list(vals)


def _str_codes(col, code_of: dict) -> np.ndarray:
    """Per row: ``code_of[value]`` of a column spelled as strings (``_as_str``), -1 for null, -2 for a
    value ``code_of`` does not know."""
    col = _plain(col)
    col = col.cast(pa.string()) if len(col) else pa.array([], pa.string())
    d = pc.dictionary_encode(col)
    codes = np.asarray(d.indices.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
    lut = np.array([code_of.get(v, -2) for v in d.dictionary.to_pylist()] + [-1], dtype=np.int32)
    return lut[codes]


def _slice_bounds(x: np.ndarray, n: int) -> np.ndarray:
    """Python slice bounds (step 1) of a sequence of length n."""
    x = np.asarray(x, dtype=np.int64)
    return np.clip(np.where(x < 0, x + n, x), 0, n)


def _check_twice(rep: CheckReport, seq: np.ndarray, pass_of: np.ndarray) -> None:
    """No (sample row, pass) delivered twice: every delivery after the first (in reader order) fails."""
    if len(seq) < 2:
        return
    pmin, pmax = int(pass_of.min()), int(pass_of.max())
    P = pmax - pmin + 1
    if (int(seq.max()) + 1) * P < _LIM:
        key = seq * P + (pass_of - pmin)
        s = np.sort(key)
        if not (s[1:] == s[:-1]).any():
            return
        o = np.argsort(key, kind="stable")
        same = key[o][1:] == key[o][:-1]
    else:
        o = np.lexsort((pass_of, seq))
        same = (seq[o][1:] == seq[o][:-1]) & (pass_of[o][1:] == pass_of[o][:-1])
    for j in np.sort(o[1:][same])[:50].tolist():
        rep.fail(f"sample row {int(seq[j])} delivered twice in pass {int(pass_of[j])} of its stream")


def _check_disjoint(rep: CheckReport, sh: np.ndarray, ps: np.ndarray, p: np.ndarray, rd: np.ndarray) -> int:
    """Within each (shard, pass), ordered by position, readers own disjoint ranges: a reader appears in
    one run only (reader changes ≤ distinct readers − 1).  Returns the shard opens, i.e. the distinct
    (reader, shard, pass)."""
    n = len(sh)
    if n == 0:
        return 0
    R = int(rd.max()) + 1
    shmin, pmin, posmin = int(sh.min()), int(ps.min()), int(p.min())
    P = int(ps.max()) - pmin + 1
    span = (int(p.max()) - posmin + 1) * R
    ng = (int(sh.max()) - shmin + 1) * P
    if ng * span < _LIM:
        full = np.sort(((sh - shmin) * P + (ps - pmin)) * span + (p - posmin) * R + rd)
        g0 = full // span
        sh_s, ps_s, r_s = g0 // P + shmin, g0 % P + pmin, full % R
        del full, g0
    else:
        o = np.lexsort((rd, p, ps, sh))
        sh_s, ps_s, r_s = sh[o], ps[o], rd[o]
        del o
    newg = np.r_[True, (sh_s[1:] != sh_s[:-1]) | (ps_s[1:] != ps_s[:-1])]
    gid = np.cumsum(newg) - 1
    runst = newg | np.r_[True, r_s[1:] != r_s[:-1]]
    rg, rr = gid[runst], r_s[runst]
    pairs = np.unique(rg * R + rr)
    n_groups = int(gid[-1]) + 1
    bad = np.flatnonzero(np.bincount(rg, minlength=n_groups) > np.bincount(pairs // R, minlength=n_groups))
    if len(bad):
        gst = np.flatnonzero(newg)[bad]
        bsh, bps = sh_s[gst], ps_s[gst]
        # report in the order the (shard, pass) first occurs in delivery order
        if ng < _LIM:
            key, bkey = (sh - shmin) * P + (ps - pmin), (bsh - shmin) * P + (bps - pmin)
        else:
            u, inv = np.unique(np.stack([sh, ps], axis=1), axis=0, return_inverse=True)
            key = inv.reshape(-1)
            bkey = np.array([int(np.flatnonzero((u[:, 0] == a) & (u[:, 1] == b))[0]) for a, b in zip(bsh, bps)])
        hit = np.flatnonzero(np.isin(key, bkey))
        ku, first = np.unique(key[hit], return_index=True)
        when = hit[first][np.searchsorted(ku, bkey)]
        for j in np.argsort(when, kind="stable").tolist():
            readers = sorted(set(rr[rg == bad[j]].tolist()))
            rep.fail(f"shard {int(bsh[j])} pass {int(bps[j])}: readers {readers} interleave (not disjoint ranges)")
    return len(pairs)


def _buffer(rd: np.ndarray, sh: np.ndarray, ps: np.ndarray, p: np.ndarray) -> int:
    """Max read-but-undelivered samples of a reader that reads each (shard, pass) front to back: the
    sample delivered at time j lies in the buffer from the first time the read cursor of its (shard,
    pass) passes its position until j.  All readers at once: slots in reader order, each reader's in
    delivery order (time = index)."""
    n = len(sh)
    if n == 0:
        return 0
    rstart = np.flatnonzero(np.r_[True, rd[1:] != rd[:-1]])
    seg = np.repeat(np.arange(len(rstart), dtype=np.int64), np.diff(np.r_[rstart, n]))
    # the (shard, pass) key of _reader_buffer, per reader
    key = sh * (np.maximum.reduceat(ps, rstart)[seg] + 1) + ps
    kmin = int(key.min())
    span = int(key.max()) - kmin + 1
    if len(rstart) * span * n < _LIM:
        c = np.sort((seg * span + (key - kmin)) * n + np.arange(n, dtype=np.int64))
        times = c % n
        gk = c // n
        del c
        newg = np.r_[True, gk[1:] != gk[:-1]]
        del gk
    else:
        times = np.lexsort((key, seg))
        ks, ss = key[times], seg[times]
        newg = np.r_[True, (ks[1:] != ks[:-1]) | (ss[1:] != ss[:-1])]
        del ks, ss
    del key, seg
    gid = np.cumsum(newg) - 1
    pp = p[times]
    pmn = int(pp.min())
    B = int(pp.max()) - pmn + 1
    if (int(gid[-1]) + 1) * B < _LIM:
        val = (pp - pmn) + gid * B
        cursor = np.maximum.accumulate(val)  # position read up to, per (reader, shard, pass)
        t0 = times[np.searchsorted(cursor, val)]  # first delivery at which the cursor reached it
        del val, cursor
    else:
        t0 = np.empty(n, dtype=np.int64)
        bounds = np.r_[np.flatnonzero(newg), n]
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            q = pp[a:b]
            t0[a:b] = times[a:b][np.searchsorted(np.maximum.accumulate(q), q)]
    wait = t0 < times
    events = np.bincount(t0[wait], minlength=n + 1) - np.bincount(times[wait], minlength=n + 1)
    return int(max(0, np.cumsum(events).max()))


def _realized(codes_of, col: str, allowed: list, rows: np.ndarray) -> dict | None:
    """Delivered slots per value of target column ``col``, values spelled as meta.json spells them
    (:class:`.targets.TargetColumns`); ``None`` when a column of it has no values (``codes_of``)."""
    tc = TargetColumns.parse(col, allowed)
    parts = [codes_of(c) for c in tc.columns]
    if any(p is None for p in parts):
        return None
    if not tc.composite:
        codes, vals = parts[0]
        cnt = np.bincount(codes[rows], minlength=len(vals))
        real: dict = {}
        for x, c in zip(vals, cnt.tolist()):
            if c:
                s = tc.encode((x,))
                real[s] = real.get(s, 0) + c
        return real
    ks = [len(v) for _, v in parts]
    total = 1
    for k in ks:
        total *= k
    if total < _LIM:
        key = np.zeros(len(rows), dtype=np.int64)
        for (codes, _), k in zip(parts, ks):
            key = key * k + codes[rows]
        if total <= max(_DENSE, _DENSE_PER_SLOT * len(rows)):
            cnt = np.bincount(key, minlength=total)
            u = np.flatnonzero(cnt)
            cnt = cnt[u]
        else:
            u, cnt = np.unique(key, return_counts=True)
        digits = []
        for k in reversed(ks):
            digits.append(u % k)
            u = u // k
        combos = np.stack(digits[::-1], axis=1) if digits else np.zeros((0, 0), np.int64)
    else:
        combos, cnt = np.unique(np.stack([c[rows] for c, _ in parts], axis=1), axis=0, return_counts=True)
    real = {}
    for combo, c in zip(combos.tolist(), cnt.tolist()):
        s = tc.encode(tuple(v[i] for (_, v), i in zip(parts, combo)))
        real[s] = real.get(s, 0) + c
    return real


def _as_str(col) -> np.ndarray:
    """A column as strings the way ``cells.parquet`` spells values (nulls → None)."""
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return col.cast(pa.string()).to_numpy(zero_copy_only=False)


def _arrays(idx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``plan.npy``, ``vpos.npy``, ``offsets.npy`` of an index (the documented format)."""
    return tuple(np.asarray(np.load(idx.dir / f, mmap_mode="r"), dtype=np.int64)
                 for f in (F.PLAN_FILE, F.VPOS_FILE, F.OFFSETS_FILE))


def _slots(idx, arrays=None):
    """Every slot of the index in plan order: rows, virtual positions, phase index."""
    rows, vpos, off = _arrays(idx) if arrays is None else arrays
    steps = idx.start_step + np.arange(len(off) - 1) // idx.world_size
    ends = np.array([p["end_step"] for p in idx.meta["phases"]], dtype=np.int64)
    ph_of_step = np.array([p["index"] for p in idx.meta["phases"]], dtype=np.int64)[
        np.minimum(np.searchsorted(ends, steps, side="right"), len(ends) - 1)]
    return rows, vpos, np.repeat(ph_of_step, np.diff(off))


def _eligible(meta: dict, samples, duration: np.ndarray) -> np.ndarray:
    """The planner's eligibility rule, re-derived from the spec: the split (explicit, or ``train`` when
    the column has it) and, in duration mode, samples no longer than the budget."""
    el = np.ones(samples.num_rows, dtype=bool)
    split = meta.get("split")
    if split and "split" in samples.column_names:
        col = _plain(samples.column("split"))
        if isinstance(split, str) and len(col):
            sv = np.asarray(pc.fill_null(pc.equal(col.cast(pa.string()), pa.scalar(split, pa.string())), False)
                            .to_numpy(zero_copy_only=False), dtype=bool)
        else:
            sv = np.zeros(len(col), dtype=bool)
        if "split" in meta["spec"] or sv.any():
            el &= sv
    if meta.get("max_duration"):
        el &= duration <= meta["max_duration"]
    return el


def _check_exact(idx, rep: CheckReport, samples, scode_raw: np.ndarray, svals: list, shard_id: np.ndarray,
                 pos: np.ndarray, duration: np.ndarray, arrays) -> None:
    meta = idx.meta
    rows, vpos, phase = _slots(idx, arrays)
    if len(vpos) != len(rows):
        rep.fail(f"{F.VPOS_FILE} has {len(vpos)} entries for {len(rows)} slots")
        return
    if len(rows) and (rows.min() < 0 or rows.max() >= samples.num_rows):
        return  # reported above
    # eligibility, and the per-stream counts the passes are measured in
    el = _eligible(meta, samples, duration)
    bad = ~el[rows]
    if bad.any():
        rep.fail(f"{int(bad.sum())} slots deliver samples that are not eligible (split {meta.get('split')!r}"
                 f"{', duration' if meta.get('max_duration') else ''}), e.g. row {int(rows[bad][0])}")
    # streams spelled as str (None → "None"), sorted; scode: per sample
    names, inv = np.unique(np.array(["None" if v is None else str(v) for v in svals], dtype=str),
                           return_inverse=True)
    scode = inv.reshape(-1)[scode_raw] if len(svals) else np.zeros(0, dtype=np.intp)
    n_el = np.bincount(scode[el], minlength=len(names))
    declared = meta["streams"]
    wrong = [n for n, c in zip(names.tolist(), n_el.tolist()) if declared.get(n, 0) != c]
    if wrong:
        rep.fail(f"eligible samples per stream differ from meta.json for {wrong[:3]}")
        return

    # requested cells
    req_path = idx.dir / F.REQUESTED_FILE
    req = np.load(req_path) if req_path.exists() else np.zeros(0, np.int32)
    if len(req) != len(rows):
        rep.fail(f"{F.REQUESTED_FILE} has {len(req)} entries for {len(rows)} slots")
    else:
        cells = pq.read_table(idx.dir / F.CELLS_FILE)
        comp_cols = [c for c in cells.column_names if c not in ("phase", "cell", "stream", "n", "target")]
        cphase = cells.column("phase").to_numpy()
        ccell = cells.column("cell").to_numpy()
        cvals = {c: _as_str(cells.column(c)) for c in ["stream"] + comp_cols}
        # a shared code space per column: a cell's string → its code, null → -1; a sample value no cell
        # spells → -2 (so equal codes ⇔ equal strings, or both null)
        code_of = {c: {v: i for i, v in enumerate(dict.fromkeys(x for x in v if x is not None))}
                   for c, v in cvals.items()}
        ccodes = {c: np.array([-1 if x is None else code_of[c][x] for x in v], dtype=np.int64)
                  for c, v in cvals.items()}
        scodes: dict = {"stream": np.array([code_of["stream"].get(x, -2) for x in names.tolist()],
                                           dtype=np.int64)[scode]}
        for ph in meta["phases"]:
            sel = np.flatnonzero(phase == ph["index"])
            if not len(sel):
                continue
            mine = np.flatnonzero(cphase == ph["index"])
            lut = np.full(int(ccell[mine].max()) + 1 if len(mine) else 0, -1, dtype=np.int64)
            lut[ccell[mine]] = mine
            r = req[sel]
            if len(lut) == 0 or r.min() < 0 or r.max() >= len(lut) or (lut[r] < 0).any():
                rep.fail(f"phase {ph['index']}: requested cells missing from {F.CELLS_FILE}")
                continue
            ci = lut[r]
            # a phase composes over the columns its cells spell (all-null: every eligible sample is null)
            used = ["stream"] + [c for c in comp_cols if any(v is not None for v in cvals[c][mine])]
            off = np.zeros(len(sel), dtype=bool)
            rs = rows[sel]
            for c in used:
                if c not in scodes:
                    try:
                        scodes[c] = _sample_codes(idx, samples, c, code_of[c])
                    except AssignmentError as e:
                        scodes[c] = None
                        rep.fail(f"composition column {c!r}: {e}")
                if scodes[c] is None:
                    continue
                off |= scodes[c][rs] != ccodes[c][ci]
            allowed = sum(ph.get("deviations", {}).values())
            if int(off.sum()) > allowed:
                rep.fail(f"phase {ph['index']} ({ph['policy']}): {int(off.sum())} slots deliver a sample outside "
                         f"their requested cell, {allowed} deviations declared")
        del scodes
    del phase, req

    # virtual positions: v = pass * n + i, a pass lists the stream's shards one after the other, each
    # front to back over its eligible samples
    if len(rows) == 0:
        return
    s = scode[rows]
    n = n_el[s]
    if (n == 0).any() or (vpos < 0).any():
        rep.fail("virtual positions of streams without eligible samples, or negative")
        return
    el_rows = np.flatnonzero(el)
    SH = int(shard_id.max()) + 1
    key_rs = scode[el_rows].astype(np.int64) * SH + shard_id[el_rows]
    pe = pos[el_rows].astype(np.int64)
    o = _lexorder([key_rs, pe], stable=True)  # by (stream, shard), then position
    rank = np.full(len(el), -1, dtype=np.int64)  # rank of a sample among its (stream, shard)'s eligible ones
    ks = key_rs[o]
    first = np.r_[0, np.flatnonzero(ks[1:] != ks[:-1]) + 1]
    rank[el_rows[o]] = np.arange(len(o)) - np.repeat(first, np.diff(np.r_[first, len(o)]))
    shard_len = dict(zip(ks[first].tolist(), np.diff(np.r_[first, len(o)]).tolist()))
    del el_rows, key_rs, pe, o, ks
    p, i = vpos // n, vpos % n
    del n
    start = i - rank[rows]
    del i, rank
    # distinct (stream, pass, shard, implied start), sorted lexicographically (for a stream, its
    # (stream, shard) key orders like the shard)
    s64, sh_r = np.asarray(s, dtype=np.int64), shard_id[rows].astype(np.int64)
    g = _unique_rows([s64, p, sh_r, start])
    del sh_r, start
    g[2] = g[0] * SH + g[2]
    dup = np.flatnonzero((g[0, 1:] == g[0, :-1]) & (g[1, 1:] == g[1, :-1]) & (g[2, 1:] == g[2, :-1]))
    if len(dup):
        rep.fail(f"{len(dup)} (stream, pass, shard) runs whose virtual positions do not follow the shard's "
                 f"order (e.g. stream {str(names[g[0, dup[0]]])!r}, pass {int(g[1, dup[0]])})")
        return
    g = g[:, np.lexsort((g[3], g[1], g[0]))]  # shard runs of each (stream, pass) in position order
    glen = np.array([shard_len[k] for k in g[2].tolist()], dtype=np.int64)
    gn = n_el[g[0]]
    same = (g[0, 1:] == g[0, :-1]) & (g[1, 1:] == g[1, :-1])
    if (g[3] < 0).any() or (g[3] + glen > gn).any() or (same & (g[3, 1:] < g[3, :-1] + glen[:-1])).any():
        rep.fail("virtual positions place shards of a pass on top of each other or outside the pass")
        return
    # no gap and nothing twice: a fresh count-mode index takes every stream's sequence from 0 on; a
    # re-plan takes exactly what the index it continues had left
    if meta.get("continues", {}).get("kind") == "amendment":
        _check_ledger(idx, rep)
    elif meta.get("continues"):
        c = meta["continues"]
        old = _parent(idx, rep, "continuation")
        if old is None:
            return
        o_rows, o_vpos, o_off = _arrays(old)
        lo = int(o_off[(c["at_step"] - old.start_step) * old.world_size])
        o_rows, o_vpos = o_rows[lo:], o_vpos[lo:]
        a = np.lexsort((vpos, scode[rows]))
        b = np.lexsort((o_vpos, scode[o_rows]))
        if len(a) != len(b) or not (np.array_equal(scode[rows][a], scode[o_rows][b])
                                    and np.array_equal(vpos[a], o_vpos[b])):
            rep.fail(f"the re-plan does not deliver exactly what index {c['index']!r} had left from step "
                     f"{c['at_step']} on")
    elif idx.start_step == 0 and not meta.get("max_duration"):
        ss, vv = _sorted_pairs(s.astype(np.int64), vpos)
        first = np.r_[True, ss[1:] != ss[:-1]]
        expect = np.arange(len(ss)) - np.repeat(np.flatnonzero(first), np.diff(np.r_[np.flatnonzero(first), len(ss)]))
        if not np.array_equal(vv, expect):
            bad_s = str(names[ss[np.argmax(vv != expect)]])
            rep.fail(f"stream {bad_s!r}: virtual positions are not 0, 1, 2, … (a sample lost or taken twice)")


def _spans(cols: list) -> tuple[list, list, int]:
    mins = [int(c.min()) for c in cols]
    spans = [int(c.max()) - m + 1 for c, m in zip(cols, mins)]
    total = 1
    for x in spans:
        total *= x
    return mins, spans, total


def _combined(cols: list, mins: list, spans: list) -> np.ndarray:
    key = np.zeros(len(cols[0]), dtype=np.int64)
    for c, m, sp in zip(cols, mins, spans):
        key *= sp
        key += c - m
    return key


def _lexorder(cols: list, stable: bool) -> np.ndarray:
    """Order sorting equal-length int arrays lexicographically (first array most significant)."""
    if len(cols[0]) == 0:
        return np.zeros(0, dtype=np.int64)
    mins, spans, total = _spans(cols)
    if total < _LIM:
        return np.argsort(_combined(cols, mins, spans), kind="stable" if stable else None)
    return np.lexsort(cols[::-1])


def _unique_rows(cols: list) -> np.ndarray:
    """The distinct tuples of equal-length int arrays, lexicographically sorted, as columns of a
    ``[len(cols), k]`` int64 array (``np.unique(np.stack(cols), axis=1)``)."""
    if len(cols[0]) == 0:
        return np.zeros((len(cols), 0), dtype=np.int64)
    mins, spans, total = _spans(cols)
    if total >= _LIM:
        return np.unique(np.stack(cols).astype(np.int64), axis=1)
    u = np.unique(_combined(cols, mins, spans))
    out = np.empty((len(cols), len(u)), dtype=np.int64)
    for j in range(len(cols) - 1, -1, -1):
        out[j] = u % spans[j] + mins[j]
        u //= spans[j]
    return out


def _sorted_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) pairs sorted lexicographically, as two arrays."""
    if len(a) == 0:
        return a, b
    mins, spans, total = _spans([a, b])
    if total >= _LIM:
        o = np.lexsort((b, a))
        return a[o], b[o]
    k = np.sort(_combined([a, b], mins, spans))
    return k // spans[1] + mins[0], k % spans[1] + mins[1]


def _sample_codes(idx, samples, col: str, code_of: dict):
    """A composition column of every sample as codes of ``code_of`` (its strings; null → -1, a string
    ``code_of`` lacks → -2): from samples.parquet or a cluster assignment (a sample without one → -2);
    ``None`` when the column is neither (raises :class:`AssignmentError` for a bad assignment file)."""
    if col in samples.column_names:
        return _str_codes(samples.column(col), code_of)
    if col.startswith(CLUSTER_PREFIX) and assignments_path(idx.ws, cluster_name(col)).exists():
        a = read_assignments(idx.ws, cluster_name(col))
        acodes = _str_codes(a.clusters, code_of)
        at = a.row_codes(_plain(samples.column("id")))
        return np.where(at >= 0, acodes[np.maximum(at, 0)] if len(acodes) else -2, -2)
    return None


def chain_deliveries(idx):
    """Deliveries of every index ``idx`` continues, before its start step: ``(ids or rows, steps)``.
    Rows are those of ``idx``'s shard set (samples matched by id when a parent used another set;
    samples no longer in the set are dropped).  ``None`` when a parent is missing or was re-planned
    since (its fingerprint differs)."""
    parts_r, parts_t = [], []
    cur, stop = idx, idx.start_step
    ids_here = None
    while cur.meta.get("continues"):
        c = cur.meta["continues"]
        try:
            par = open_index(cur.ws, c["index"], verify_shards=False)
        except FileNotFoundError:
            return None
        if par.fingerprint != c["fingerprint"]:
            return None
        at = int(c["at_step"])
        rows, _, off = _arrays(par)
        lo = int(off[0]) if len(off) else 0
        hi = int(off[(at - par.start_step) * par.world_size])
        r = np.asarray(rows[lo:hi], dtype=np.int64)
        t = par.start_step + np.repeat(np.arange((at - par.start_step) * par.world_size) // par.world_size,
                                       np.diff(np.asarray(off[:(at - par.start_step) * par.world_size + 1])))
        if par.shard_set != idx.shard_set:
            if ids_here is None:
                ids_here = id_column(idx.shard_dir)
            pid = _plain(id_column(par.shard_dir).take(pa.array(r))) if len(r) else pa.array([], pa.string())
            at_ = pc.index_in(pid, value_set=ids_here)
            r = np.asarray(at_.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
            keep = r >= 0
            r, t = r[keep], t[keep]
        parts_r.insert(0, r)
        parts_t.insert(0, t)
        cur, stop = par, at
    if not parts_r:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(parts_r), np.concatenate(parts_t)


def _check_pass_order(idx, rep: CheckReport, samples, rows_v, steps_v, scode_raw, svals, max_buf) -> None:
    from .passorder import pass_order

    meta = idx.meta
    n_code = np.array([meta["streams"].get("None" if v is None else str(v), 0) for v in svals], dtype=np.int64)
    rows, steps = rows_v, steps_v
    if meta.get("continues"):
        hist = chain_deliveries(idx)
        if hist is None:
            rep.numbers["pass_order"] = "a parent index is missing or was re-planned since: not measured"
            return
        rows, steps = np.concatenate([hist[0], rows]), np.concatenate([hist[1], steps])
    po = pass_order(rows, steps, scode_raw[rows], n_code, from_step=idx.start_step)
    R = F.ReaderLayout.of(idx).n_readers
    bound = R * max(max_buf, int(meta.get("max_buffer", 0)))
    rep.numbers["pass_order_slack"] = po.slack
    rep.numbers["same_step_repeats"] = po.same_step
    if meta.get("max_duration"):
        return  # duration mode: measured, bounded by the bucketing (see docs), not judged here
    if po.slack > bound:
        w = po.worst
        rep.fail(f"pass order: sample row {w['sample']} is delivered for the {w['pass'] + 1}th time at step "
                 f"{w['step']} while {w['lateness']} samples of its stream {str(svals[w['stream']])!r} still "
                 f"wait for their {w['pass']}th delivery (slack allowed: {bound})")
    declared = int(meta.get("stats", {}).get("same_step_repeats_left", 0))
    if po.same_step > declared:
        rep.fail(f"pass order: {po.same_step} samples delivered twice in one step of a stream that holds "
                 f"that step's requests ({declared} declared in meta.json)")


def _parent(idx, rep: CheckReport, what: str):
    """The index ``idx`` continues, as it was when ``idx`` was planned; ``None`` (noted under
    ``rep.numbers[what]``) when it is gone or was re-planned since, so nothing can be compared."""
    c = idx.meta["continues"]
    try:
        par = open_index(idx.ws, c["index"], verify_shards=False)
    except FileNotFoundError:
        rep.numbers[what] = f"index {c['index']!r} not found, not compared"
        return None
    if par.fingerprint != c["fingerprint"]:
        rep.numbers[what] = f"index {c['index']!r} was re-planned since, not compared"
        return None
    return par


def _check_ledger(idx, rep: CheckReport) -> None:
    """An amendment's ledger is its parent's ledger plus what the parent delivers before the amendment
    step, recomputed from the parent's public files."""
    c = idx.meta["continues"]
    par = _parent(idx, rep, "ledger")
    if par is None:
        return
    want = delivered_before(par, int(c["at_step"]))
    if Ledger.load(idx.dir) != want:
        rep.fail(f"the ledger differs from what index {c['index']!r} and its parents delivered before step "
                 f"{c['at_step']}")
    rep.numbers["ledger_samples"] = len(want)
