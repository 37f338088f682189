"""Hours and counts of a workspace's manifests, grouped by any of dataset/task/split/label/…;
a readable text table and ``manifests/stats.png``."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from .schema import MANIFEST_COLUMNS, read_manifests

GROUP_COLUMNS = ("dataset", "task", "split", "label", "lang", "speaker", "modality")


def parse_by(value: str | list[str] | tuple[str, ...]) -> list[str]:
    by = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    by = [b for b in by if b]
    bad = [b for b in by if b not in MANIFEST_COLUMNS]
    if bad or not by:
        raise ValueError(f"--by takes manifest columns such as {','.join(GROUP_COLUMNS)}; got {value!r}")
    return by


def manifest_stats(ws, datasets: list[str] | None = None, by: list[str] | str = ("dataset", "task", "split")) -> pa.Table:
    """One row per group: the ``by`` columns, ``rows``, ``hours``, ``speakers``; sorted by the group."""
    by = parse_by(by)
    t = read_manifests(ws, datasets)
    if datasets:
        missing = sorted(set(datasets) - set(t["dataset"].unique().to_pylist()))
        if missing:
            raise FileNotFoundError(f"no manifest for dataset(s) {', '.join(missing)} in {ws.root / 'manifests'}")
    if t.num_rows == 0:
        return pa.table({**{b: pa.array([], pa.string()) for b in by}, "rows": pa.array([], pa.int64()),
                         "hours": pa.array([], pa.float64()), "speakers": pa.array([], pa.int64())})
    t = t.select(list(dict.fromkeys(by + ["id", "duration_s", "speaker"])))
    t = t.set_column(t.schema.get_field_index("duration_s"), "duration_s", t["duration_s"].fill_null(0.0))
    g = t.group_by(by).aggregate([("id", "count"), ("duration_s", "sum"), ("speaker", "count_distinct")])
    g = g.sort_by([(b, "ascending") for b in by])
    cols = {b: g[b].cast(pa.string()) for b in by}
    return pa.table({
        **cols,
        "rows": g["id_count"],
        "hours": pa.array([round(x / 3600, 4) for x in g["duration_s_sum"].to_pylist()], pa.float64()),
        "speakers": g["speaker_count_distinct"],
    })


def format_table(t: pa.Table) -> str:
    """Aligned text table with a total line."""
    names = t.column_names
    rows = [["" if v is None else (f"{v:,.3f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v))
             for v in r.values()] for r in t.to_pylist()]
    total_rows = sum(t["rows"].to_pylist()) if t.num_rows else 0
    total_hours = sum(t["hours"].to_pylist()) if t.num_rows else 0.0
    footer = ["TOTAL"] + [""] * (len(names) - 4) + [f"{total_rows:,}", f"{total_hours:,.3f}", ""]
    numeric = {"rows", "hours", "speakers"}
    widths = [max(len(n), *(len(r[i]) for r in rows + [footer])) for i, n in enumerate(names)]

    def fmt(cells):
        return "  ".join(c.rjust(w) if names[i] in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(names), sep, *(fmt(r) for r in rows), sep, fmt(footer)])


def plot_stats(t: pa.Table, by: list[str], path: str | Path) -> Path:
    """Horizontal bars of hours and rows per group, written atomically as PNG (Agg canvas, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..workspace import atomic_path

    labels = [" / ".join("∅" if r[b] is None else str(r[b]) for b in by) for r in t.to_pylist()] or ["(no rows)"]
    hours = t["hours"].to_pylist() or [0.0]
    rows = t["rows"].to_pylist() or [0]
    height = max(2.5, 0.3 * len(labels) + 1.2)
    fig = Figure(figsize=(11, height))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    y = list(range(len(labels)))
    ax1.barh(y, hours, color="#3b7dd8")
    ax1.set_yticks(y, labels)
    ax1.invert_yaxis()
    ax1.set_xlabel("hours")
    ax2.barh(y, rows, color="#d8863b")
    ax2.set_xlabel("rows")
    for ax in (ax1, ax2):
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"manifests by {', '.join(by)}")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
