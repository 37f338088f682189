"""``jadwal index inspect`` (composition per phase) and ``jadwal index report`` (fidelity tables and a
PNG of the realized mixture over steps)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ..shards.schema import SAMPLES_FILE
from ..workspace import atomic_write
from .reader import open_index


def _attr(idx, column: str) -> np.ndarray:
    names = pq.read_schema(idx.shard_dir / SAMPLES_FILE).names
    cols = column.split("/") if column not in names else [column]
    vals = [pq.read_table(idx.shard_dir / SAMPLES_FILE, columns=[c]).column(c).to_numpy(zero_copy_only=False) for c in cols]
    if len(vals) == 1:
        return np.array(["None" if x is None else str(x) for x in vals[0]], dtype=object)
    return np.array(["/".join("" if x is None else str(x) for x in xs) for xs in zip(*vals)], dtype=object)


def phase_rows(idx, phase: dict) -> np.ndarray:
    lo = max(phase["start_step"], idx.start_step)
    parts = [idx.rows(t, r) for t in range(lo, phase["end_step"]) for r in range(idx.world_size)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def fidelity(workspace, name: str) -> pd.DataFrame:
    """Per phase and target column value: requested share, realized share, difference, sampling σ."""
    idx = open_index(workspace, name)
    out = []
    for ph in idx.meta["phases"]:
        rows = phase_rows(idx, ph)
        n = len(rows)
        for col, target in ph.get("targets", {}).items():
            vals = _attr(idx, col)[rows]
            uniq, counts = np.unique(vals, return_counts=True)
            real = dict(zip(uniq.tolist(), (counts / max(n, 1)).tolist()))
            for v in sorted(set(target) | set(real)):
                p, q = target.get(v, 0.0), real.get(v, 0.0)
                out.append({"phase": ph["index"], "policy": ph["policy"], "column": col, "value": v,
                            "requested": round(p, 5), "realized": round(q, 5), "diff": round(q - p, 5),
                            "sigma": round(float(np.sqrt(max(p * (1 - p), 0) / max(n, 1))), 5), "n": n})
    return pd.DataFrame(out)


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
        for col in ("dataset", "task"):
            vals = _attr(idx, col)[rows]
            uniq, counts = np.unique(vals, return_counts=True)
            comp = ", ".join(f"{u} {c / max(len(rows), 1):.1%}" for u, c in sorted(zip(uniq, counts), key=lambda x: -x[1]))
            lines.append(f"    {col:8s} {comp}")
    return "\n".join(lines)


def write_report(workspace, name: str, column: str = "task", bins: int = 50) -> dict:
    """Write ``index/<name>/fidelity.csv``, ``fidelity.json`` and ``mixture.png`` (stacked shares of
    ``column`` over steps).  Returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = open_index(workspace, name)
    df = fidelity(workspace, name)
    csv = idx.dir / "fidelity.csv"
    atomic_write(csv, df.to_csv(index=False))
    changes = declared_changes(idx)
    atomic_write(idx.dir / "fidelity.json", json.dumps({"fidelity": df.to_dict(orient="records"), "changes": changes},
                                                       indent=1, ensure_ascii=False))
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
    return {"csv": str(csv), "png": str(png), "max_abs_diff": float(df["diff"].abs().max()) if len(df) else 0.0,
            "changes": changes}


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
