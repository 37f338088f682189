"""An independent checker of a scheduling index.

It reads only what any consumer can read — :func:`open_index` (``plan``/``rows``, ``meta``) and the shard
set's ``samples.parquet``/``shards.parquet`` — never the planner's internals, and re-derives the
properties of ARCHITECTURE.md by simulating each reader:

0. *intact*     the index files are those meta.json records (sha256), phases tile the steps;
1. *exact*      every micro-batch names existing, eligible samples (split, duration) in existing shards,
                each of its requested cell (``requested.npy``/``cells.parquet``) unless meta declares
                the deviation; ``vpos`` addresses the delivered sample (within a pass of a stream,
                each shard is one run of consecutive positions, front to back), and a fresh count-mode
                index consumes every stream's sequence without a gap (a re-plan: exactly what the
                index it continues had left);
2. *sequential* a reader opens a shard once per pass and reads it front to back (a sample delivered
                after a later one of the same shard waits in the reader's buffer);
3. *bounded*    the simulated buffer of read-but-undelivered samples never exceeds ``buffer`` nor the
                planner's own (conservative) simulation ``max_buffer``;
6. *distributed* every rank has every step, micro-batches are equal (or within the duration budget),
                and within a pass no sample is delivered twice and readers own disjoint shard ranges;
7. *faithful*   per phase, realized shares of each target column are within sampling error of the
                requested ones (deviations counted separately).
Determinism (4) is checked by building twice and comparing bytes (see tests).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..shards.schema import SAMPLES_FILE, SHARDS_FILE
from ..workspace import sha256_file
from . import format as F
from .reader import open_index


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


def check_index(workspace, name: str, *, tolerance_sigmas: float = 4.0) -> CheckReport:
    idx = open_index(workspace, name)
    rep = CheckReport()
    sdir = idx.ws.path("shards", idx.shard_set)
    samples = pq.read_table(sdir / SAMPLES_FILE, columns=[c for c in pq.read_schema(sdir / SAMPLES_FILE).names if c != "members"])
    shards = pq.read_table(sdir / SHARDS_FILE)
    n_rows = samples.num_rows
    shard_id = samples.column("shard_id").to_numpy()
    pos = samples.column("pos").to_numpy()
    stream = samples.column("stream").to_numpy(zero_copy_only=False)
    duration = np.nan_to_num(samples.column("duration_s").to_numpy(zero_copy_only=False).astype(float))
    known_shards = set(shards.column("shard_id").to_pylist())
    meta = idx.meta
    W, nw = idx.world_size, idx.readers_per_rank

    # 0: the files are those planned, and the phases tile the steps
    for f, h in meta.get("outputs_sha256", {}).items():
        if not (idx.dir / f).exists() or sha256_file(idx.dir / f) != h:
            rep.fail(f"{f}: sha256 differs from meta.json (edited or damaged since planning)")
    phases = meta["phases"]
    # a re-plan lists the phase it cut at its start step as starting there
    S = idx.start_step
    if (not phases or phases[0]["start_step"] not in (0, S) or phases[-1]["end_step"] != idx.num_steps
            or any(b["start_step"] != a["end_step"] and not (b["start_step"] == S and a["end_step"] <= S)
                   for a, b in pairwise(phases))
            or any(p["end_step"] <= p["start_step"] for p in phases)):
        rep.fail(f"phases {[(p['start_step'], p['end_step']) for p in phases]} do not tile the run's "
                 f"{idx.num_steps} steps")
    for p in phases:
        if not meta.get("max_duration") and p["end_step"] > idx.start_step and p["micro_batch"] * W != p["slots_per_step"]:
            rep.fail(f"phase {p['index']}: micro-batch {p['micro_batch']} × world size {W} ≠ {p['slots_per_step']} slots per step")

    # 1 + 6: structure, exactness, equal micro-batches
    per_reader: dict[int, list[np.ndarray]] = defaultdict(list)
    delivered = np.zeros(n_rows, dtype=np.int64)
    phase_rows: dict[int, list[np.ndarray]] = defaultdict(list)
    for t in range(idx.start_step, idx.num_steps):
        ph = meta["phases"][idx.phase_of(t)]
        sizes = []
        for r in range(W):
            rows = idx.rows(t, r)
            if len(rows) and (rows.min() < 0 or rows.max() >= n_rows):
                rep.fail(f"step {t} rank {r}: sample rows out of range")
                continue
            bad = set(shard_id[rows].tolist()) - known_shards
            if bad:
                rep.fail(f"step {t} rank {r}: shards {sorted(bad)[:3]} not in shards.parquet")
            sizes.append(len(rows))
            if meta.get("max_duration"):
                if duration[rows].sum() > meta["max_duration"] + 1e-6:
                    rep.fail(f"step {t} rank {r}: {duration[rows].sum():.2f} s over the budget {meta['max_duration']} s")
            elif len(rows) != ph["micro_batch"]:
                rep.fail(f"step {t} rank {r}: {len(rows)} samples, phase micro-batch is {ph['micro_batch']}")
            per_reader[r * nw + t % nw].append((rows, idx.vpos(t, r)))
            phase_rows[ph["index"]].append(rows)
            np.add.at(delivered, rows, 1)
        if meta.get("max_duration") and len(set(sizes)) > 1 and meta.get("equal_counts", False):
            rep.fail(f"step {t}: unequal micro-batch sizes {sizes}")
        if any(s == 0 for s in sizes):
            rep.fail(f"step {t}: an empty micro-batch")

    # passes: the k-th delivery of a sample belongs to pass k of its stream
    stream_passes = defaultdict(int)
    for s, c in zip(stream, delivered):
        if c > stream_passes[s]:
            stream_passes[s] = int(c)
    exh = meta["spec"].get("on_exhaustion", "repeat")
    exh = {"default": exh} if isinstance(exh, str) else {"default": "repeat", **exh}
    for s, c in stream_passes.items():
        if exh.get(s, exh["default"]) != "repeat" and c > 1:
            rep.fail(f"stream {s!r}: a sample delivered {c} times but on_exhaustion is not repeat")

    # 2 + 3 + disjointness: simulate every reader.  The pass of a delivery is its virtual position
    # (vpos.npy, part of the index format) divided by the stream's eligible sample count.
    n_stream = meta["streams"]
    total_opens, max_buf = 0, 0
    seen_pass: set = set()
    ranges = defaultdict(list)  # (shard, pass) -> [(pos, reader)]
    for reader, parts in sorted(per_reader.items()):
        seq = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
        vp = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
        n_of = np.array([n_stream[x] for x in stream[seq]], dtype=np.int64)
        pass_of = vp // np.maximum(n_of, 1)
        sh_seq, p_seq = shard_id[seq].astype(np.int64), pos[seq].astype(np.int64)
        for row, ps, sh, p in zip(seq.tolist(), pass_of.tolist(), sh_seq.tolist(), p_seq.tolist()):
            if (row, ps) in seen_pass:
                rep.fail(f"sample row {row} delivered twice in pass {ps} of its stream")
            seen_pass.add((row, ps))
            ranges[(sh, ps)].append((p, reader))
        total_opens += len(set(zip(sh_seq.tolist(), pass_of.tolist())))
        max_buf = max(max_buf, _reader_buffer(sh_seq, pass_of, p_seq))
    for (sh, ps), items in ranges.items():
        readers = [r for _, r in sorted(items)]
        changes = sum(1 for x, y in zip(readers, readers[1:]) if x != y)
        if changes > len(set(readers)) - 1:
            rep.fail(f"shard {sh} pass {ps}: readers {sorted(set(readers))} interleave (not disjoint ranges)")
    rep.numbers["max_buffer"] = max_buf
    rep.numbers["shard_opens"] = total_opens
    rep.numbers["slots"] = int(delivered.sum())
    if max_buf > meta["buffer"]:
        rep.fail(f"simulated buffer reaches {max_buf} samples, over the bound {meta['buffer']}")
    if max_buf > meta.get("max_buffer", max_buf):
        rep.fail(f"simulated buffer reaches {max_buf} samples, over the planner's simulated maximum "
                 f"{meta['max_buffer']} (its simulation must be an upper bound)")

    # 1: eligible samples, requested cells, virtual positions
    _check_exact(idx, rep, samples, stream, shard_id, pos, duration)

    # 7: faithfulness per phase
    cols = {c: samples.column(c).to_numpy(zero_copy_only=False) for c in samples.column_names
            if c not in ("id", "shard_id", "pos", "offset", "size", "duration_s")}
    worst = 0.0
    for ph in meta["phases"]:
        rows = np.concatenate(phase_rows[ph["index"]]) if phase_rows[ph["index"]] else np.zeros(0, np.int64)
        n = len(rows)
        if not n:
            continue
        for col, target in ph.get("targets", {}).items():
            vals = _column_values(cols, col, rows)
            uniq, counts = np.unique(vals, return_counts=True)
            real = dict(zip(uniq.tolist(), (counts / n).tolist()))
            # substitutions (fallback) and slots moved off exhausted `stop` streams are declared changes
            allowed_dev = (sum(ph.get("deviations", {}).values()) + ph.get("reassigned", 0)) / n
            for v, p in target.items():
                q = real.get(v, 0.0)
                sigma = np.sqrt(max(p * (1 - p), 1e-12) / n)
                err = abs(q - p)
                worst = max(worst, err / max(sigma, 1e-12) if err > 1.5 / n else 0.0)
                if err > tolerance_sigmas * sigma + 2.0 / n + allowed_dev:
                    rep.fail(f"phase {ph['index']} ({ph['policy']}): {col}={v!r} realized {q:.4f}, "
                             f"requested {p:.4f} (n={n})")
    rep.numbers["worst_fidelity_sigmas"] = round(float(worst), 2)
    return rep


def _column_values(cols: dict, col: str, rows: np.ndarray) -> np.ndarray:
    if "/" in col and col not in cols:
        parts = [cols[c][rows] for c in col.split("/")]
        return np.array(["/".join("" if x is None else str(x) for x in xs) for xs in zip(*parts)], dtype=object)
    v = cols[col][rows]
    return np.array(["None" if x is None else str(x) for x in v], dtype=object)


def _reader_buffer(shard: np.ndarray, pass_of: np.ndarray, pos: np.ndarray) -> int:
    """Max read-but-undelivered samples of one reader that reads each (shard, pass) front to back:
    the sample delivered at time j lies in the buffer from the first time the read cursor of its
    (shard, pass) passes its position until j."""
    n = len(shard)
    if n == 0:
        return 0
    events = np.zeros(n + 1, dtype=np.int64)
    key = shard * (int(pass_of.max()) + 1) + pass_of
    order = np.argsort(key, kind="stable")
    bounds = np.r_[0, np.flatnonzero(np.diff(key[order])) + 1, n]
    for a, b in zip(bounds[:-1], bounds[1:]):
        times = order[a:b]  # ascending delivery times of this (shard, pass)
        p = pos[times]
        cursor = np.maximum.accumulate(p)  # position read up to, after each delivery
        first = np.searchsorted(cursor, p)  # first delivery at which the cursor reached p
        t0 = times[first]
        wait = t0 < times
        np.add.at(events, t0[wait], 1)
        np.add.at(events, times[wait], -1)
    return int(np.cumsum(events).max())


def _as_str(col) -> np.ndarray:
    """A column as strings the way ``cells.parquet`` spells values (nulls → None)."""
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return col.cast(pa.string()).to_numpy(zero_copy_only=False)


def _arrays(idx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``plan.npy``, ``vpos.npy``, ``offsets.npy`` of an index (the documented format)."""
    return tuple(np.asarray(np.load(idx.dir / f, mmap_mode="r"), dtype=np.int64)
                 for f in (F.PLAN_FILE, F.VPOS_FILE, F.OFFSETS_FILE))


def _slots(idx):
    """Every slot of the index in plan order: rows, virtual positions, phase index."""
    rows, vpos, off = _arrays(idx)
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
        sv = _as_str(samples.column("split"))
        if "split" in meta["spec"] or (sv == split).any():
            el &= sv == split
    if meta.get("max_duration"):
        el &= duration <= meta["max_duration"]
    return el


def _check_exact(idx, rep: CheckReport, samples, stream: np.ndarray, shard_id: np.ndarray, pos: np.ndarray,
                 duration: np.ndarray) -> None:
    meta = idx.meta
    rows, vpos, phase = _slots(idx)
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
    names, scode = np.unique(stream.astype(str), return_inverse=True)
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
        svals: dict = {"stream": stream.astype(str).astype(object)}
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
            for c in used:
                if c not in svals:
                    svals[c] = _sample_strings(idx, samples, c)
                if svals[c] is None:
                    continue
                a, b = svals[c][rows[sel]], cvals[c][ci]
                off |= ~((a == b) | (_isnull(a) & _isnull(b)))
            allowed = sum(ph.get("deviations", {}).values())
            if int(off.sum()) > allowed:
                rep.fail(f"phase {ph['index']} ({ph['policy']}): {int(off.sum())} slots deliver a sample outside "
                         f"their requested cell, {allowed} deviations declared")

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
    key_rs = scode[el_rows].astype(np.int64) * (int(shard_id.max()) + 1) + shard_id[el_rows]
    o = np.lexsort((pos[el_rows], key_rs))
    rank = np.full(len(el), -1, dtype=np.int64)  # rank of a sample among its (stream, shard)'s eligible ones
    ks = key_rs[o]
    first = np.r_[0, np.flatnonzero(ks[1:] != ks[:-1]) + 1]
    rank[el_rows[o]] = np.arange(len(o)) - np.repeat(first, np.diff(np.r_[first, len(o)]))
    shard_len = dict(zip(ks[first].tolist(), np.diff(np.r_[first, len(o)]).tolist()))
    p, i = vpos // n, vpos % n
    start = i - rank[rows]
    ks_slot = s.astype(np.int64) * (int(shard_id.max()) + 1) + shard_id[rows]
    g = np.unique(np.stack([s, p, ks_slot, start]), axis=1)  # (stream, pass, shard, implied start)
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
    if meta.get("continues"):
        c = meta["continues"]
        try:
            old = open_index(idx.ws, c["index"], verify_shards=False)
        except FileNotFoundError:
            rep.numbers["continuation"] = f"index {c['index']!r} not found, not compared"
            return
        if old.fingerprint != c["fingerprint"]:
            rep.numbers["continuation"] = f"index {c['index']!r} was re-planned since, not compared"
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
        o = np.lexsort((vpos, s))
        ss, vv = s[o], vpos[o]
        first = np.r_[True, ss[1:] != ss[:-1]]
        expect = np.arange(len(o)) - np.repeat(np.flatnonzero(first), np.diff(np.r_[np.flatnonzero(first), len(o)]))
        if not np.array_equal(vv, expect):
            bad_s = str(names[ss[np.argmax(vv != expect)]])
            rep.fail(f"stream {bad_s!r}: virtual positions are not 0, 1, 2, … (a sample lost or taken twice)")


def _isnull(a: np.ndarray) -> np.ndarray:
    return np.array([x is None for x in a], dtype=bool)


def _sample_strings(idx, samples, col: str):
    """A composition column of every sample as strings: from samples.parquet or a cluster assignment."""
    if col in samples.column_names:
        return _as_str(samples.column(col))
    if col.startswith("cluster:"):
        p = idx.ws.path("clusters", col.split(":", 1)[1], "assignments.parquet")
        if p.exists():
            import pandas as pd

            a = pq.read_table(p, columns=["id", "cluster"])
            lut = pd.Series(_as_str(a.column("cluster")), index=a.column("id").to_numpy(zero_copy_only=False))
            return lut.reindex(samples.column("id").to_numpy(zero_copy_only=False)).to_numpy(dtype=object)
    return None
