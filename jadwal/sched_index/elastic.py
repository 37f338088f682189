"""Elastic re-planning: continue an index from step S on a different world size (or reader count).

The composition of every step does not depend on the world size, so the re-plan composes the same
schedule; what changes is who reads what.  The remaining supply of each stream is exactly the set of
virtual positions the old index would deliver from step S on (``vpos.npy``), so samples delivered
before S are never repeated and none planned after S is lost.  New readers take contiguous runs of
that (sorted) supply, so each still reads its shards front to back (skipping forward over what was
delivered before S).  The new index holds steps [S, num_steps) (``start_step = S``).
"""
from __future__ import annotations

import numpy as np

from .planner import (
    PlanError, StreamSequences, Supply, apply_exhaustion, chunk_layout, compose, phase_columns,
    phase_demand, pick_shard_set, resolve_phase, write_index,
)
from .layout import PassLayout
from .policies import load_policy_modules
from .reader import open_index
from .samples import scan_samples
from .spec import load_spec

ELASTIC_KEYS = {"world_size", "readers_per_rank", "buffer"}


def replan(workspace, spec_source, name: str, *, old: str, at_step: int, progress: bool = True) -> dict:
    from ..workspace import Workspace

    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    prev = open_index(ws, old)  # raises if the shards changed since it was planned
    spec = load_spec(spec_source)
    changed = {k for k in set(spec.raw) | set(prev.meta["spec"])
               if k not in ELASTIC_KEYS and spec.raw.get(k) != prev.meta["spec"].get(k)}
    if changed:
        raise PlanError(f"re-plan: only {sorted(ELASTIC_KEYS)} may change; the spec differs from index {old!r} in "
                        f"{sorted(changed)}")
    if spec.batch_size is None:
        raise PlanError("re-plan: duration-budget indexes cannot be re-planned yet (plan a new index instead)")
    if not (prev.start_step <= at_step < prev.num_steps):
        raise PlanError(f"re-plan: --at-step {at_step} is outside index {old!r}'s steps [{prev.start_step}, {prev.num_steps})")
    load_policy_modules(spec.policy_modules)
    shard_set = pick_shard_set(ws, spec.shards)
    st = scan_samples(ws, shard_set, spec, phase_columns(spec))
    seq = StreamSequences(st, spec.seed)
    stats: dict = {}
    plans = compose(spec, st, ws)
    apply_exhaustion(spec, plans, seq, stats)
    # keep only steps ≥ at_step
    kept = []
    for pp in plans:
        if pp.end <= at_step:
            continue
        if pp.start < at_step:
            pp.comp = pp.comp[at_step - pp.start:]
            pp.start = at_step
            pp.targets = _targets_of(pp)
        kept.append(pp)
    # remaining supply per stream: what the old index delivers from at_step on
    lo = (at_step - prev.start_step) * prev.world_size
    rows = np.asarray(prev._plan[prev._offsets[lo]:])
    vpos = np.asarray(prev._vpos[prev._offsets[lo]:])
    s_of = st.stream_of_rows(rows)
    order = np.lexsort((vpos, s_of))
    bounds = np.searchsorted(s_of[order], np.arange(len(seq.names) + 1))
    supply = Supply([vpos[order[bounds[s]:bounds[s + 1]]] for s in range(len(seq.names))])
    demands = [phase_demand(spec, pp, len(seq.names)) for pp in kept]
    need = sum(demands).sum(axis=1)
    if not np.array_equal(need, supply.n):
        bad = np.flatnonzero(need != supply.n)[:3]
        raise PlanError(f"re-plan: demand and remaining supply differ for streams {[seq.names[b] for b in bad]} "
                        "(the shards or the spec changed)")
    starts = chunk_layout(demands)
    # pass order: the remaining supply of each stream, cut at its pass boundaries
    seg_len = [np.bincount(u // max(1, int(seq.n[k])))[np.bincount(u // max(1, int(seq.n[k]))) > 0]
               if len(u) else np.zeros(0, np.int64)
               for k, u in enumerate(supply.U[supply.off[i]:supply.off[i + 1]] for i in range(len(seq.names)))]
    layout = PassLayout.build(spec, kept, len(seq.names), seg_len=seg_len,
                              rows_of=lambda s, y: seq.rows_many(s, supply.virtual(s, y)))
    results = []
    for pp, s0 in zip(kept, starts):
        res = resolve_phase(spec, pp, seq, s0, stats, supply=supply, layout=layout)
        if res.max_buffer > spec.buffer:
            raise PlanError(f"re-plan: phases[{pp.phase}] needs a buffer of {res.max_buffer} > {spec.buffer}")
        results.append(res)
    meta = write_index(ws, spec, st, shard_set, name, kept, results, stats, start_step=at_step,
                       extra={"continues": {"index": old, "fingerprint": prev.fingerprint, "at_step": at_step}},
                       all_phases=plans)
    return meta


def _targets_of(pp) -> dict:
    """Requested shares of a truncated phase, from the cells its remaining steps request (as slot
    counts, the unit :class:`PolicyContext.add_target` uses)."""
    counts = np.bincount(pp.comp.reshape(-1), minlength=len(pp.cells))
    out = {}
    for col in pp.targets:
        parts = col.split("/") if col not in pp.cells.columns else [col]
        if len(parts) == 1:  # the checker's and add_target's spelling: str(value), None → "None"
            vals = ["None" if v is None or v != v else str(v) for v in pp.cells[col].tolist()]
        else:
            vals = ["/".join("" if v is None or v != v else str(v) for v in xs)
                    for xs in zip(*[pp.cells[c].tolist() for c in parts])]
        d: dict = {}
        for v, c in zip(vals, counts.tolist()):
            if c:
                d[v] = d.get(v, 0.0) + float(c)
        out[col] = d
    return out
