"""Elastic re-planning: continue an index from step S on a different world size (or reader count).

The composition of every step does not depend on the world size, so the re-plan composes the same
schedule; what changes is who reads what.  The remaining supply of each stream is exactly the set of
virtual positions the old index would deliver from step S on (``vpos.npy``), so samples delivered
before S are never repeated and none planned after S is lost.  New readers take contiguous runs of
that (sorted) supply pass by pass (the pass-major layout), so each still reads its shards front to
back (skipping forward over what was delivered before S).  The new index holds steps [S, num_steps)
(``start_step = S``).  Any other change of the spec is an amendment (:mod:`.amend`).
"""
from __future__ import annotations

import numpy as np

from ..workspace import Workspace
from .planner import PlanError, Supply, phase_columns, pick_shard_set, plan_index, sample_columns, targets_of
from .policies import load_policy_modules
from .reader import open_index
from .samples import scan_samples
from .spec import load_spec

ELASTIC_KEYS = {"world_size", "readers_per_rank", "buffer"}
_targets_of = targets_of  # the name this module used to define


class Remaining:
    """What index ``prev`` delivers from ``at_step`` on, per stream (sorted virtual positions): the
    supply of an elastic re-plan (a :func:`.planner.plan_index` source)."""

    exhaust_before_cut = True  # the old index decided exhaustion over the whole run
    capacity = None

    def __init__(self, prev, at_step: int, st):
        self.prev, self.at_step, self.st = prev, at_step, st

    def supply(self, need: np.ndarray, seq):
        prev, at_step = self.prev, self.at_step
        lo = (at_step - prev.start_step) * prev.world_size
        rows = np.asarray(prev._plan[prev._offsets[lo]:])
        vpos = np.asarray(prev._vpos[prev._offsets[lo]:])
        s_of = self.st.stream_of_rows(rows)
        order = np.lexsort((vpos, s_of))
        S = len(seq.names)
        bounds = np.searchsorted(s_of[order], np.arange(S + 1))
        supply = Supply([vpos[order[bounds[s]:bounds[s + 1]]] for s in range(S)])
        if not np.array_equal(need, supply.n):
            bad = np.flatnonzero(need != supply.n)[:3]
            raise PlanError(f"re-plan: demand and remaining supply differ for streams {[seq.names[b] for b in bad]} "
                            "(the shards or the spec changed)")
        # pass order: the remaining supply of each stream, cut at its pass boundaries
        seg_len = []
        for s in range(S):
            u = supply.U[supply.off[s]:supply.off[s + 1]]
            c = np.bincount(u // max(1, int(seq.n[s]))) if len(u) else np.zeros(0, np.int64)
            seg_len.append(c[c > 0])
        return supply, seg_len

    def meta(self, kept, spec) -> dict:
        return {"continues": {"index": self.prev.name, "fingerprint": self.prev.fingerprint,
                              "at_step": self.at_step}}


def replan(workspace, spec_source, name: str, *, old: str, at_step: int, progress: bool = True) -> dict:
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    prev = open_index(ws, old)  # raises if the shards changed since it was planned
    spec = load_spec(spec_source)
    changed = {k for k in set(spec.raw) | set(prev.meta["spec"])
               if k not in ELASTIC_KEYS and spec.raw.get(k) != prev.meta["spec"].get(k)}
    if changed:
        raise PlanError(f"re-plan: only {sorted(ELASTIC_KEYS)} may change; the spec differs from index {old!r} in "
                        f"{sorted(changed)}")
    if spec.batch_size is None:
        raise PlanError("re-plan: a duration-budget index is continued by an amendment "
                        f"(`jadwal plan SPEC --continue-from {old} --at-step {at_step}`, or `amend`)")
    if not (prev.start_step <= at_step < prev.num_steps):
        raise PlanError(f"re-plan: --at-step {at_step} is outside index {old!r}'s steps [{prev.start_step}, {prev.num_steps})")
    load_policy_modules(spec.policy_modules)
    shard_set = pick_shard_set(ws, spec.shards)
    st = scan_samples(ws, shard_set, spec, phase_columns(spec, sample_columns(ws, shard_set)))
    return plan_index(ws, spec, st, shard_set, name, start_step=at_step, source=Remaining(prev, at_step, st),
                      progress=progress)
