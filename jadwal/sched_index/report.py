"""``jadwal index inspect`` (composition per phase) and ``jadwal index report`` (fidelity tables and a
PNG of the realized mixture over steps)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ..shards.clusters import CLUSTER_PREFIX, cluster_name, read_assignments
from ..shards.schema import SAMPLES_FILE
from ..workspace import atomic_write
from .reader import open_index
from .targets import TargetColumns


def _attr(idx, column: str) -> np.ndarray:
    """Per sample row of the shard set, ``column``'s value as meta.json spells targets
    (:class:`.targets.TargetColumns`); a ``cluster:NAME`` column not in the shard index comes from its
    assignments (:mod:`jadwal.shards.clusters`, by sample id; no assignment → missing)."""
    names = pq.read_schema(idx.shard_dir / SAMPLES_FILE).names
    tc = TargetColumns.parse(column, names)
    return np.array(tc.encode_rows(*[_column(idx, c, names) for c in tc.columns]), dtype=object)


def _column(idx, c: str, names: list) -> np.ndarray:
    if c in names or not c.startswith(CLUSTER_PREFIX):
        return pq.read_table(idx.shard_dir / SAMPLES_FILE, columns=[c]).column(c).to_numpy(zero_copy_only=False)
    ids = pq.read_table(idx.shard_dir / SAMPLES_FILE, columns=["id"]).column("id")
    return np.array(read_assignments(idx.ws, cluster_name(c)).join(ids).to_pylist(), dtype=object)


def _steps_rows(idx, lo: int, hi: int) -> np.ndarray:
    parts = [idx.rows(t, r) for t in range(max(lo, idx.start_step), hi) for r in range(idx.world_size)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def units(idx) -> list[tuple[dict, str, dict, int, int]]:
    """What the reports judge: each phase, and each part of a composite phase (``hybrid``: its tpc and
    ads parts), as ``(phase, part label, targets, first step, end step)``; the part label is "" for a
    whole phase, ``"K:policy"`` for part K."""
    out = []
    for ph in idx.meta["phases"]:
        out.append((ph, "", ph.get("targets", {}), ph["start_step"], ph["end_step"]))
        for k, part in enumerate(ph.get("parts") or []):
            out.append((ph, f"{k}:{part['policy']}", part.get("targets", {}), part["start_step"], part["end_step"]))
    return out


def phase_rows(idx, phase: dict) -> np.ndarray:
    lo = max(phase["start_step"], idx.start_step)
    parts = [idx.rows(t, r) for t in range(lo, phase["end_step"]) for r in range(idx.world_size)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def fidelity(workspace, name: str) -> pd.DataFrame:
    """Per phase (and per part of a composite phase: ``part`` "K:policy", its own request over its own
    steps) and target column value: requested share, realized share, difference, sampling σ."""
    idx = open_index(workspace, name)
    out = []
    attrs: dict = {}
    for ph, part, targets, lo, hi in units(idx):
        rows = _steps_rows(idx, lo, hi)
        n = len(rows)
        for col, target in targets.items():
            if col not in attrs:
                attrs[col] = _attr(idx, col)
            vals = attrs[col][rows]
            uniq, counts = np.unique(vals, return_counts=True)
            real = dict(zip(uniq.tolist(), (counts / max(n, 1)).tolist()))
            for v in sorted(set(target) | set(real)):
                p, q = target.get(v, 0.0), real.get(v, 0.0)
                out.append({"phase": ph["index"], "policy": ph["policy"], "part": part, "start_step": lo,
                            "end_step": hi, "column": col, "value": v,
                            "requested": round(p, 5), "realized": round(q, 5), "diff": round(q - p, 5),
                            "sigma": round(float(np.sqrt(max(p * (1 - p), 0) / max(n, 1))), 5), "n": n})
    return pd.DataFrame(out)


def reuse(workspace, name: str) -> list[dict]:
    """Per phase and part: slots, distinct samples / slots (realized), the most times one sample is
    delivered, and the planner's expectation (``expected_reuse`` in meta.json, per phase)."""
    idx = open_index(workspace, name)
    out = []
    for ph, part, _targets, lo, hi in units(idx):
        rows = _steps_rows(idx, lo, hi)
        _, counts = np.unique(rows, return_counts=True)
        exp = ph.get("expected_reuse", {}) if not part else ph["parts"][int(part.split(":")[0])].get("expected_reuse", {})
        out.append({"phase": ph["index"], "policy": ph["policy"], "part": part, "start_step": lo, "end_step": hi,
                    "slots": int(len(rows)), "distinct_ratio": round(len(counts) / max(len(rows), 1), 5),
                    "max_reuse": int(counts.max()) if len(counts) else 0,
                    "expected_distinct_ratio": exp.get("distinct_ratio"), "expected_max_reuse": exp.get("max_reuse")})
    return out


def cluster_table(df: pd.DataFrame) -> pd.DataFrame:
    """The ``cluster:*`` rows of a fidelity table, with requested and realized slots (share × n)."""
    c = df[df["column"].astype(str).str.startswith("cluster:")].copy() if len(df) else df
    if len(c):
        c["requested_slots"] = (c["requested"] * c["n"]).round(1)
        c["realized_slots"] = (c["realized"] * c["n"]).round().astype(int)
    return c


def inspect_text(workspace, name: str) -> str:
    idx = open_index(workspace, name)
    m = idx.meta
    lines = [f"index {name}: {m['num_steps']} steps (from {m['start_step']}), world size {m['world_size']} × "
             f"{m['readers_per_rank']} readers, shard set {m['shard_set']}, {m['eligible_samples']} eligible samples",
             f"  batch: {m['batch_size'] or str(m['max_duration']) + ' s/micro-batch'}; buffer bound {m['buffer']}, "
             f"simulated max {m['max_buffer']}; deviations {m['deviations']}"]
    for ph in m["phases"]:
        rows = phase_rows(idx, ph)
        lines.append(f"phase {ph['index']} {ph['policy']}: steps [{ph['start_step']}, {ph['end_step']}), "
                     f"micro-batch {ph['micro_batch']}, {len(rows)} samples")
        if ph.get("modality"):
            lines.append(f"    modality {ph['modality']} only")
        parts = ph.get("parts") or []
        if parts:
            lines.append("    parts: " + " | ".join(f"{p['policy']} [{p['start_step']}, {p['end_step']})" for p in parts)
                         + "".join(f"; switch at step {b['start_step']}" for b in parts[1:]))
        for col in ("dataset", "task"):
            vals = _attr(idx, col)[rows]
            uniq, counts = np.unique(vals, return_counts=True)
            comp = ", ".join(f"{u} {c / max(len(rows), 1):.1%}" for u, c in sorted(zip(uniq, counts), key=lambda x: -x[1]))
            lines.append(f"    {col:8s} {comp}")
        if ph.get("expected_reuse"):
            lines.append("    " + reuse_line(ph["expected_reuse"]))
    return "\n".join(lines)


def reuse_line(er: dict, worst: int = 3) -> str:
    """One line of a phase's expected reuse (meta ``expected_reuse``): overall, then the worst cells."""
    cells = sorted(er.get("cells", {}).items(), key=lambda kv: (kv[1]["distinct_ratio"], kv[0]))[:worst]
    tail = ", ".join(f"{k} {v['distinct_ratio']:.2f} (×{v['max_reuse']})" for k, v in cells)
    return (f"expected distinct samples / slots {er['distinct_ratio']:.2f}, max reuse ×{er['max_reuse']}"
            + (f"; lowest by {er['by']}: {tail}" if tail else ""))


def write_report(workspace, name: str, column: str = "task", bins: int = 50, top: int = 10) -> dict:
    """Write ``index/<name>/fidelity.csv``, ``fidelity.json`` (fidelity per phase and part, declared
    changes, reuse, clusters), ``mixture.png`` (stacked shares of ``column`` over steps, parts marked),
    ``fidelity.png`` (per phase and part, requested vs realized shares of each target column) and,
    when a phase requests clusters, ``clusters.png`` (per phase/part: requested vs realized slots
    of the ``top`` clusters, and a histogram of realized slots per cluster).  Returns the paths and
    the tables."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = open_index(workspace, name)
    df = fidelity(workspace, name)
    csv = idx.dir / "fidelity.csv"
    atomic_write(csv, df.to_csv(index=False))
    changes = declared_changes(idx)
    ru = reuse(workspace, name)
    cl = cluster_table(df)
    atomic_write(idx.dir / "fidelity.json", json.dumps(
        {"fidelity": df.to_dict(orient="records"), "changes": changes, "reuse": ru,
         "clusters": cl.to_dict(orient="records") if len(cl) else []}, indent=1, ensure_ascii=False))
    vals = _attr(idx, column)
    steps = np.arange(idx.start_step, idx.num_steps)
    edges = np.linspace(idx.start_step, idx.num_steps, min(bins, len(steps)) + 1).astype(int)
    cats = sorted(set(vals[np.concatenate([idx.rows(t, r) for t in steps for r in range(idx.world_size)])]))
    shares = np.zeros((len(edges) - 1, len(cats)))
    for b in range(len(edges) - 1):
        rows = np.concatenate([idx.rows(t, r) for t in range(edges[b], max(edges[b + 1], edges[b] + 1))
                               for r in range(idx.world_size)])
        u, c = np.unique(vals[rows], return_counts=True)
        for x, y in zip(u, c):
            shares[b, cats.index(x)] = y / len(rows)
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.stackplot(edges, np.vstack([shares, shares[-1:]]).T, labels=cats, step="post")
    for ph in idx.meta["phases"][1:]:
        ax.axvline(ph["start_step"], color="k", lw=0.8, ls="--")
    for ph in idx.meta["phases"]:
        for part in (ph.get("parts") or [])[1:]:
            ax.axvline(part["start_step"], color="r", lw=0.8, ls=":")
            ax.text(part["start_step"], 1.01, f"switch → {part['policy']}", fontsize=7, color="r")
    ax.set_xlabel("step")
    ax.set_ylabel(f"share of samples by {column}")
    ax.set_title(f"index {name}: realized mixture over steps")
    ax.legend(loc="center left", bbox_to_anchor=(1, 0.5), fontsize=7)
    ax.set_xlim(idx.start_step, idx.num_steps)
    ax.set_ylim(0, 1)
    fig.tight_layout()
    png = idx.dir / "mixture.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    out = {"csv": str(csv), "png": str(png), "max_abs_diff": float(df["diff"].abs().max()) if len(df) else 0.0,
           "changes": changes, "reuse": ru, "fidelity": df, "clusters": cl}
    if len(df):
        out["fidelity_png"] = str(_fidelity_plot(idx, df, top, plt))
    if len(cl):
        out["clusters_png"] = str(_cluster_plot(idx, cl, top, plt))
    return out


def _fidelity_plot(idx, df: pd.DataFrame, top: int, plt):
    """``fidelity.png``: one row per phase and part, one panel per target column: requested vs realized
    shares of its ``top`` values (largest request first)."""
    units_ = list(df.groupby(["phase", "part"], sort=True))
    ncol = max(g["column"].nunique() for _, g in units_)
    fig, axes = plt.subplots(len(units_), ncol, figsize=(4.2 * ncol, 3.0 * len(units_)), squeeze=False)
    for row, ((phase, part), g) in zip(axes, units_):
        for ax in row:
            ax.axis("off")
        for ax, (col, h) in zip(row, g.groupby("column", sort=True)):
            ax.axis("on")
            h = h.sort_values(["requested", "value"], ascending=[False, True]).head(top)
            x = np.arange(len(h))
            ax.bar(x - 0.2, h["requested"], width=0.4, label="requested")
            ax.bar(x + 0.2, h["realized"], width=0.4, label="realized")
            ax.set_xticks(x, [str(v) for v in h["value"]], rotation=90, fontsize=6)
            lo, hi = int(h["start_step"].iloc[0]), int(h["end_step"].iloc[0])
            ax.set_title(f"phase {phase}{' part ' + part if part else ''} [{lo}, {hi}): {col}", fontsize=8)
            ax.set_ylabel("share of slots", fontsize=7)
            ax.legend(fontsize=6)
    fig.tight_layout()
    png = idx.dir / "fidelity.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def _cluster_plot(idx, cl: pd.DataFrame, top: int, plt):
    """Per (phase, part) with cluster targets: the ``top`` clusters by requested slots (requested vs
    realized bars) and a histogram of realized slots per cluster."""
    groups = list(cl.groupby(["phase", "part"], sort=True))
    fig, axes = plt.subplots(len(groups), 2, figsize=(10, 3.2 * len(groups)), squeeze=False)
    for (ax1, ax2), ((phase, part), g) in zip(axes, groups):
        g = g.sort_values(["requested_slots", "value"], ascending=[False, True])
        t = g.head(top)
        x = np.arange(len(t))
        ax1.bar(x - 0.2, t["requested_slots"], width=0.4, label="requested")
        ax1.bar(x + 0.2, t["realized_slots"], width=0.4, label="realized")
        ax1.set_xticks(x, [str(v) for v in t["value"]], rotation=90, fontsize=6)
        ax1.set_title(f"phase {phase}{' part ' + part if part else ''}: top {len(t)} clusters", fontsize=8)
        ax1.set_ylabel("slots")
        ax1.legend(fontsize=7)
        ax2.hist(g["realized_slots"], bins=min(30, max(5, len(g) // 3)))
        ax2.set_title(f"realized slots per cluster ({len(g)} clusters)", fontsize=8)
        ax2.set_xlabel("slots")
        ax2.set_ylabel("clusters")
    fig.tight_layout()
    png = idx.dir / "clusters.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def declared_changes(idx) -> list[dict]:
    """Per phase, the slots that do not carry what the policy requested, as the planner declared them:
    ``substituted`` (``fallback: substitute``, per stream) and ``reassigned`` (moved off exhausted
    ``stop`` streams)."""
    out = []
    for ph in idx.meta["phases"]:
        for stream, n in sorted(ph.get("deviations", {}).items()):
            out.append({"phase": ph["index"], "policy": ph["policy"], "kind": "substituted", "stream": stream, "slots": n})
        if ph.get("reassigned"):
            out.append({"phase": ph["index"], "policy": ph["policy"], "kind": "reassigned", "stream": None,
                        "slots": ph["reassigned"]})
    return out
