"""Amendment: continue a running schedule from step S under any new spec (and any shard set).

``jadwal plan NEW.yaml --name NEW --continue-from OLD --at-step S`` (or :func:`amend`).  The new spec
may change weights, phases and their lengths, policies, total steps or epochs, world size and readers,
the batch size, and the shard set (samples are matched by id).  It describes the whole run; its steps
before S are composed (so a policy knows where it stands) but not delivered.

The guarantee.  The *ledger* (:mod:`.ledger`) counts, per sample id, the deliveries of the whole chain
of indexes before S.  For each stream of the new shard set, ``p0`` is the fewest deliveries of any of
its eligible samples: the stream is in pass ``p0``.  Its supply is cut into segments: segment ``j``
holds, in the order of pass ``p0 + j`` of the stream's sequence, the samples delivered at most
``p0 + j`` times — first what the old schedule left unread in the current pass, then the samples
that still need their next delivery, …, then whole passes.  The pass-major layout
(:class:`.layout.PassLayout`) consumes the segments in global step order, each reader reading its
range of each segment front to back.  So no sample delivered before S comes back before every sample
of its pass not yet delivered has been (unless the new spec stops asking for the stream), and none is
lost.  ``on_exhaustion: stop|fail`` streams can give what is left of their current pass only.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..workspace import Workspace
from . import format as F
from .layout import PassLayout
from .ledger import Ledger, delivered_before, id_hash64
from .planner import (
    PlanError, StreamSequences, Supply, apply_exhaustion, chunk_layout, compose, phase_columns, phase_demand,
    pick_shard_set, resolve_phase, write_index,
)
from .policies import load_policy_modules
from .reader import open_index
from .samples import scan_samples
from .spec import load_spec


def amend(workspace, spec_source, name: str, *, old: str, at_step: int, progress: bool = True) -> dict:
    """Plan ``spec_source`` from ``at_step`` on as the continuation of index ``old``; returns meta."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    prev = open_index(ws, old)
    if not (prev.start_step <= at_step <= prev.num_steps):
        raise PlanError(f"amend: --at-step {at_step} is outside index {old!r}'s steps "
                        f"[{prev.start_step}, {prev.num_steps}]")
    spec = load_spec(spec_source)
    if spec.batch_size is None:
        raise PlanError("amend: duration-budget specs (max_duration) cannot be amended yet; "
                        "plan a new index or keep batch_size")
    load_policy_modules(spec.policy_modules)
    shard_set = pick_shard_set(ws, spec.shards)
    st = scan_samples(ws, shard_set, spec, phase_columns(spec))
    seq = StreamSequences(st, spec.seed)
    S = len(seq.names)
    ledger = delivered_before(prev, at_step)

    plans = compose(spec, st, ws)
    if plans[-1].end <= at_step:
        raise PlanError(f"amend: the new spec ends at step {plans[-1].end}, not after --at-step {at_step}")
    kept = _from_step(plans, at_step)
    # deliveries so far of every eligible sample, by id
    rows_all = st.eligible_row(np.arange(st.n_eligible))
    ids = _ids(ws, shard_set)
    d_row = np.zeros(len(ids), dtype=np.int64)
    d_row[rows_all] = ledger.count(id_hash64(ids.take(pa.array(rows_all))))
    s_row = st.stream_of_rows(rows_all)
    p0 = np.full(S, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(p0, s_row, d_row[rows_all])
    p0[p0 == np.iinfo(np.int64).max] = 0
    pmax = np.zeros(S, dtype=np.int64)
    np.maximum.at(pmax, s_row, d_row[rows_all])
    # capacity before exhaustion (stop/fail streams): the rest of the current pass
    cur_left = np.bincount(s_row[d_row[rows_all] == p0[s_row]], minlength=S).astype(np.int64)
    stats: dict = {}
    apply_exhaustion(spec, kept, seq, stats, capacity=cur_left)
    demands = [phase_demand(spec, pp, S) for pp in kept]
    need = sum(demands).sum(axis=1)
    per_stream, seg_len = [], []
    for s in range(S):
        u, lens = _supply(seq, s, int(need[s]), int(p0[s]), int(pmax[s]), d_row)
        per_stream.append(u)
        seg_len.append(lens)
    supply = Supply(per_stream)
    starts = chunk_layout(demands)
    layout = PassLayout.build(spec, kept, S, seg_len=seg_len,
                              rows_of=lambda s_, y: seq.rows_many(s_, supply.virtual(s_, y)))
    results = []
    for pp, s0 in zip(kept, starts):
        res = resolve_phase(spec, pp, seq, s0, stats, supply=supply, layout=layout)
        if res.max_buffer > spec.buffer:
            raise PlanError(f"amend: phases[{pp.phase}] needs a buffer of {res.max_buffer} > {spec.buffer}; "
                            f"raise `buffer` to {res.max_buffer}")
        results.append(res)
    lineage = list(prev.meta.get("lineage", [])) + [{"index": old, "fingerprint": prev.fingerprint,
                                                     "at_step": at_step}]
    extra = {"continues": {"index": old, "fingerprint": prev.fingerprint, "at_step": at_step, "kind": "amendment"},
             "lineage": lineage,
             "ledger": {"samples": len(ledger), "deliveries": int(ledger.counts.sum()),
                        # streams the new spec asks for, by the pass they are in at the amendment step
                        "streams_in_pass": {str(k): int(c) for k, c in
                                            zip(*np.unique(p0[need > 0], return_counts=True))}}}
    files = {F.LEDGER_IDS_FILE: ledger.ids, F.LEDGER_COUNTS_FILE: ledger.counts}
    return write_index(ws, spec, st, shard_set, name, kept, results, stats, start_step=at_step, extra=extra,
                       all_phases=plans, files=files)


def _ids(ws, shard_set):
    import pyarrow.parquet as pq

    from ..shards.schema import SAMPLES_FILE

    col = pq.read_table(ws.path("shards", shard_set, SAMPLES_FILE), columns=["id"], memory_map=True).column(0)
    return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)


def _from_step(plans, at_step: int):
    """The phases' compositions from ``at_step`` on (a phase cut there starts there)."""
    from .elastic import _targets_of

    kept = []
    for pp in plans:
        if pp.end <= at_step:
            continue
        if pp.start < at_step:
            pp.comp = pp.comp[at_step - pp.start:]
            pp.start = at_step
            pp.targets = _targets_of(pp)
        kept.append(pp)
    return kept


def _supply(seq: StreamSequences, s: int, need: int, p0: int, pmax: int, d_row: np.ndarray):
    """Virtual positions (sorted) stream ``s`` gives to an amendment, and their segment lengths: segment
    ``j`` lists, in pass ``p0 + j``'s order, the samples delivered at most ``p0 + j`` times; from pass
    ``pmax`` on, whole passes.  Only the first ``need`` positions are listed."""
    n = int(seq.n[s])
    if need <= 0 or n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    parts, lens, got, p = [], [], 0, p0
    while got < need and p < pmax:  # partial passes: only the samples still owed a delivery in them
        v = p * n + np.arange(n, dtype=np.int64)
        rows = seq.rows_many(np.full(n, s, dtype=np.int64), v)
        v = v[d_row[rows] <= p][: need - got]
        if len(v):
            parts.append(v)
            lens.append(len(v))
            got += len(v)
        p += 1
    if got < need:  # whole passes from p on: consecutive virtual positions
        rest = need - got
        parts.append(p * n + np.arange(rest, dtype=np.int64))
        lens.extend([n] * (rest // n) + ([rest % n] if rest % n else []))
    return np.concatenate(parts), np.asarray(lens, dtype=np.int64)


def continue_index(workspace, spec_source, name: str, *, old: str, at_step: int, progress: bool = True) -> dict:
    """``jadwal plan SPEC --continue-from OLD --at-step S``: an elastic re-plan (the same schedule on
    another world size, readers or buffer: :func:`.elastic.replan`) when only those changed, else an
    amendment (:func:`amend`)."""
    from .elastic import ELASTIC_KEYS, replan

    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    prev = open_index(ws, old)
    spec = load_spec(spec_source)
    same = all(spec.raw.get(k) == prev.meta["spec"].get(k)
               for k in set(spec.raw) | set(prev.meta["spec"]) if k not in ELASTIC_KEYS)
    if same and spec.batch_size is not None and at_step < prev.num_steps \
            and prev.meta.get("continues", {}).get("kind") != "amendment":
        return replan(ws, spec_source, name, old=old, at_step=at_step, progress=progress)
    return amend(ws, spec_source, name, old=old, at_step=at_step, progress=progress)
