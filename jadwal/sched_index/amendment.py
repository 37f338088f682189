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
from .ledger import Ledger, delivered_before, id_column, id_hash64
from .planner import PlanError, StreamSequences, Supply, phase_columns, pick_shard_set, plan_index, sample_columns
from .policies import load_policy_modules
from .reader import open_index
from .samples import scan_samples
from .spec import load_spec

BLOCK = 1 << 20  # positions resolved at once when listing the partial passes (no effect on the result)


def amend(workspace, spec_source, name: str, *, old: str, at_step: int, progress: bool = True) -> dict:
    """Plan ``spec_source`` from ``at_step`` on as the continuation of index ``old``; returns meta."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    prev = open_index(ws, old)
    if not (prev.start_step <= at_step <= prev.num_steps):
        raise PlanError(f"amend: --at-step {at_step} is outside index {old!r}'s steps "
                        f"[{prev.start_step}, {prev.num_steps}]")
    spec = load_spec(spec_source)
    load_policy_modules(spec.policy_modules)
    shard_set = pick_shard_set(ws, spec.shards)
    st = scan_samples(ws, shard_set, spec, phase_columns(spec, sample_columns(ws, shard_set)))
    ledger = delivered_before(prev, at_step)
    cont = Continuation(st, id_column(ws.path("shards", shard_set)), ledger)
    lineage = list(prev.meta.get("lineage", [])) + [{"index": old, "fingerprint": prev.fingerprint,
                                                     "at_step": at_step}]
    extra = {"continues": {"index": old, "fingerprint": prev.fingerprint, "at_step": at_step, "kind": "amendment"},
             "lineage": lineage}
    files = {F.LEDGER_IDS_FILE: ledger.ids, F.LEDGER_COUNTS_FILE: ledger.counts}
    try:
        return plan_index(ws, spec, st, shard_set, name, start_step=at_step, source=cont, progress=progress,
                          extra=extra, files=files)
    except PlanError as e:
        raise PlanError(f"amend: {e}") from None


class Continuation:
    """Where every stream of the new shard set stands after the ledger: deliveries per eligible row
    (``d_row``), the pass each stream is in (``p0``: its samples' fewest deliveries), the most
    deliveries (``pmax``), and what is left of the current pass (``capacity``)."""

    exhaust_before_cut = False  # exhaustion is decided from the amendment step, on what is left

    def __init__(self, st, ids, ledger: Ledger):
        S = len(st.stream_names)
        self.ledger = ledger
        self.need = np.zeros(S, np.int64)
        rows = st.eligible_row(np.arange(st.n_eligible))
        self.d_row = np.zeros(len(ids), dtype=np.int64)
        every = len(rows) == len(ids)  # all rows eligible: no need to gather their ids
        self.d_row[rows] = ledger.count(id_hash64(ids if every else ids.take(pa.array(rows))))
        s_row = st.stream_of_rows(rows)
        d = self.d_row[rows]
        big = np.iinfo(np.int64).max
        self.p0 = np.full(S, big, dtype=np.int64)
        np.minimum.at(self.p0, s_row, d)
        self.p0[self.p0 == big] = 0
        self.pmax = np.zeros(S, dtype=np.int64)
        np.maximum.at(self.pmax, s_row, d)
        self.capacity = np.bincount(s_row[d == self.p0[s_row]], minlength=S).astype(np.int64)

    def supply(self, need: np.ndarray, seq: StreamSequences):
        """(:class:`Supply`, segment lengths per stream) covering ``need[s]`` requests of each stream:
        segment ``j`` lists, in pass ``p0 + j``'s order, the samples delivered at most ``p0 + j`` times;
        from pass ``pmax`` on, whole passes.  Vectorized over streams (the partial passes resolved in
        blocks of about ``BLOCK`` positions)."""
        S = len(seq.names)
        n = seq.n.astype(np.int64)
        need = self.need = np.asarray(need, dtype=np.int64)
        live = (need > 0) & (n > 0)
        k = np.where(live, self.pmax - self.p0, 0)  # partial passes per stream
        # partial passes: every (stream, pass, position), rows, kept where still owed — in blocks of
        # about 2^20 positions (whole passes), so temporaries stay bounded
        ps = np.repeat(np.arange(S), k)
        pp = np.repeat(self.p0, k) + _within(k)
        ln = n[ps]
        csum = np.cumsum(ln)
        parts, a = [], 0
        while a < len(ps):
            b = max(a + 1, int(np.searchsorted(csum, (csum[a - 1] if a else 0) + BLOCK, side="right")))
            s_b = np.repeat(ps[a:b], ln[a:b])
            p_b = np.repeat(pp[a:b], ln[a:b])
            v_b = p_b * n[s_b] + _within(ln[a:b])
            keep = self.d_row[seq.rows_many(s_b, v_b)] <= p_b
            parts.append((s_b[keep], p_b[keep], v_b[keep]))
            a = b
        cat = (lambda i: np.concatenate([x[i] for x in parts]) if parts else np.zeros(0, np.int64))
        s_all, p_all, v_all = cat(0), cat(1), cat(2)
        # at most need[s] of them, in order
        _, kth = _rank_in_group(s_all)
        ok = kth < need[s_all]
        s_all, p_all, v_all = s_all[ok], p_all[ok], v_all[ok]
        got = np.bincount(s_all, minlength=S)
        rest = np.where(live, need - got, 0)
        per_stream, seg_len = [], []
        bounds = np.searchsorted(s_all, np.arange(S + 1))
        for s_ in range(S):
            v = v_all[bounds[s_]:bounds[s_ + 1]]
            pv = p_all[bounds[s_]:bounds[s_ + 1]]
            lens = np.bincount(pv - self.p0[s_])[np.unique(pv - self.p0[s_])] if len(pv) else np.zeros(0, np.int64)
            r = int(rest[s_])
            if r > 0:  # whole passes from pmax on: consecutive virtual positions
                nn = int(n[s_])
                v = np.r_[v, self.pmax[s_] * nn + np.arange(r, dtype=np.int64)]
                lens = np.r_[lens, [nn] * (r // nn) + ([r % nn] if r % nn else [])]
            per_stream.append(v.astype(np.int64))
            seg_len.append(np.asarray(lens, dtype=np.int64))
        return Supply(per_stream), seg_len

    def meta(self, kept, spec) -> dict:
        """The ledger's summary, with the streams the new spec asks for by the pass they are in."""
        u, c = np.unique(self.p0[self.need > 0], return_counts=True)
        return {"ledger": {"samples": len(self.ledger), "deliveries": int(self.ledger.counts.sum()),
                           "streams_in_pass": {str(k): int(x) for k, x in zip(u.tolist(), c.tolist())}}}


def _within(n: np.ndarray) -> np.ndarray:
    """``concatenate([arange(x) for x in n])``."""
    n = np.asarray(n, dtype=np.int64)
    return np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)


def _rank_in_group(keys: np.ndarray):
    """For sorted ``keys``: group starts and each element's rank within its group."""
    first = np.r_[0, np.flatnonzero(keys[1:] != keys[:-1]) + 1] if len(keys) else np.zeros(0, np.int64)
    return first, np.arange(len(keys)) - np.repeat(first, np.diff(np.r_[first, len(keys)]))


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
