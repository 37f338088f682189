"""``jadwal compare RUN [RUN ...]``: runs side by side on their periodic evaluation (``runs/NAME/eval.csv``).

Per task (``all`` included): one markdown table and one PNG.  A table row per run:

* ``evals``: evaluations with a dev loss; ``last step``: the last evaluated ``global_step`` (micro-batches);
* ``final dev loss`` / ``best dev loss (step)``;
* ``steps to ≤ thr`` / ``wall s to ≤ thr``: the first evaluation whose dev loss is at or below the
  threshold, in micro-batches and training wall seconds (``—`` when never reached).  Default threshold:
  the best dev loss of the slowest run (the largest per-run minimum), which every run reaches, so the
  column says how much sooner the others got there.  ``threshold=`` sets one for every task;
* ``final M`` / ``best M`` for every generation metric ``M`` of the task (lower is better for losses,
  WER and CER, higher for the rest); per-class entries (``f1:<label>``) and raw-text scores (``*_raw``)
  are left to ``compare.json`` to keep the table readable.

Numbers are printed with 4 decimals; ``compare.json`` holds the same values unrounded.  Outputs go to
``OUT/compare.md``, ``OUT/compare.json`` and ``OUT/<task>.png`` (default
``WS/compare/<run1>-vs-<run2>…``).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from .periodic_eval import LOSS_METRIC, read_eval


def lower_is_better(metric: str) -> bool:
    m = metric.lower()
    return "loss" in m or m.startswith(("wer", "cer"))


def run_dir(workspace, run: str) -> Path:
    """``run`` as a folder holding ``eval.csv``, or a run name under ``WS/runs/``."""
    p = Path(run)
    for cand in (p, Path(workspace) / "runs" / run):
        if (cand / "eval.csv").exists():
            return cand
    raise FileNotFoundError(f"run {run!r}: no eval.csv in {p} or {Path(workspace) / 'runs' / run} "
                            "(train with `eval: {index: DEV}` and `eval_every: N`)")


def _series(rows: list[dict], task: str, metric: str) -> list[tuple[int, float, float]]:
    """(global_step, wall_s, value) in step order; a step evaluated twice keeps its last row."""
    by = {}
    for r in rows:
        if r["task"] == task and r["metric"] == metric:
            by[r["global_step"]] = (r["global_step"], r["wall_s"], r["value"])
    return [by[k] for k in sorted(by)]


def summarize(runs: dict[str, list[dict]], threshold: float | None = None) -> dict:
    """Per task: threshold and one record per run (see the module docstring).  ``runs``: name → eval rows."""
    tasks = sorted({r["task"] for rows in runs.values() for r in rows}, key=lambda t: (t == "all", t))
    out: dict = {}
    for t in tasks:
        loss = {name: _series(rows, t, LOSS_METRIC) for name, rows in runs.items()}
        bests = [min(v for _, _, v in s) for s in loss.values() if s]
        thr = threshold if threshold is not None else (max(bests) if bests else None)
        metrics = sorted({r["metric"] for rows in runs.values() for r in rows if r["task"] == t} - {LOSS_METRIC})
        shown = [m for m in metrics if ":" not in m and not m.endswith("_raw")]
        recs = {}
        for name, rows in runs.items():
            s = loss[name]
            rec: dict = {"evals": len(s)}
            if s:
                b = min(s, key=lambda x: (x[2], x[0]))
                hit = next((x for x in s if thr is not None and x[2] <= thr), None)
                rec.update(last_step=s[-1][0], final_dev_loss=s[-1][2], best_dev_loss=b[2], best_step=b[0],
                           steps_to_threshold=hit[0] if hit else None, wall_s_to_threshold=hit[1] if hit else None)
            for m in metrics:  # every metric in compare.json; the table shows `shown`
                sm = _series(rows, t, m)
                if sm:
                    pick = min if lower_is_better(m) else max
                    rec[f"final_{m}"] = sm[-1][2]
                    rec[f"best_{m}"] = pick(v for _, _, v in sm)
            recs[name] = rec
        note = None
        if threshold is None and bests:
            slow = max((n for n in loss if loss[n]), key=lambda n: min(v for _, _, v in loss[n]))
            if recs[slow]["best_step"] == loss[slow][0][0]:
                note = (f"{slow} never improved on its first evaluation, so every run starts at or below the "
                        "threshold: the step columns say nothing for this task")
        out[t] = {"threshold": thr, "metrics": shown, "all_metrics": metrics, "runs": recs, "note": note}
    return out


def _fmt(v, nd: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{nd}f}"


def markdown(summary: dict) -> str:
    """One table per task (what a team pastes into its decision)."""
    parts = []
    for t, s in summary.items():
        thr = s["threshold"]
        head = ["run", "evals", "last step", "final dev loss", "best dev loss (step)", "steps to ≤ thr",
                "wall s to ≤ thr"]
        for m in s["metrics"]:
            head += [f"final {m}", f"best {m}"]
        lines = [f"### task `{t}` — threshold: dev loss ≤ {_fmt(thr)}", "", "| " + " | ".join(head) + " |",
                 "|" + "---|" * len(head)]
        for name, r in s["runs"].items():
            best = f"{_fmt(r.get('best_dev_loss'))} ({_fmt(r.get('best_step'))})" if r.get("evals") else "—"
            row = [name, str(r["evals"]), _fmt(r.get("last_step")), _fmt(r.get("final_dev_loss")), best,
                   _fmt(r.get("steps_to_threshold")), _fmt(r.get("wall_s_to_threshold"), 1)]
            for m in s["metrics"]:
                row += [_fmt(r.get(f"final_{m}")), _fmt(r.get(f"best_{m}"))]
            lines.append("| " + " | ".join(row) + " |")
        if s.get("note"):
            lines += ["", f"Note: {s['note']}."]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def plot_task(task: str, runs: dict[str, list[dict]], summary: dict, path: Path) -> Path:
    """Dev loss over steps per run (threshold dashed) and, below, each generation metric per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summary[task]
    n = 1 + (1 if s["metrics"] else 0)
    fig, axes = plt.subplots(n, 1, figsize=(7.5, 3.0 * n), squeeze=False)
    ax = axes[0, 0]
    colors = {}
    for name, rows in runs.items():
        pts = _series(rows, task, LOSS_METRIC)
        if pts:
            line, = ax.plot([p[0] for p in pts], [p[2] for p in pts], "o-", ms=3, label=name)
            colors[name] = line.get_color()
    if s["threshold"] is not None:
        ax.axhline(s["threshold"], color="grey", ls="--", lw=0.8, label=f"threshold {s['threshold']:.4f}")
    ax.set_ylabel("dev loss")
    ax.set_title(f"task {task}: dev loss over training", fontsize=9)
    ax.legend(fontsize=7)
    if s["metrics"]:
        ax2 = axes[1, 0]
        styles = ["s--", "^:", "d-.", "v--"]
        for name, rows in runs.items():
            for k, m in enumerate(s["metrics"]):
                pts = _series(rows, task, m)
                if pts:
                    ax2.plot([p[0] for p in pts], [p[2] for p in pts], styles[k % len(styles)], ms=3,
                             color=colors.get(name), label=f"{name}: {m}")
        ax2.set_ylabel("generation metric")
        ax2.legend(fontsize=7, ncol=2)
    axes[-1, 0].set_xlabel("micro-batches trained (whole run)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def compare(workspace, runs: list[str], *, out=None, threshold: float | None = None,
            until_step: int | None = None) -> dict:
    """Write ``compare.md``, ``compare.json`` and one PNG per task; returns paths and the summary.
    ``until_step``: only evaluations at ``global_step ≤ until_step`` (runs compared at equal steps)."""
    if len(runs) < 1:
        raise ValueError("compare needs at least one run")
    dirs = {Path(r).name if Path(r).is_dir() else r: run_dir(workspace, r) for r in runs}
    if len(dirs) != len(runs):
        raise ValueError(f"runs must have distinct names: {runs}")
    data = {name: [r for r in read_eval(d / "eval.csv") if until_step is None or r["global_step"] <= until_step]
            for name, d in dirs.items()}
    empty = [n for n, rows in data.items() if not rows]
    if empty:
        raise ValueError(f"runs {empty} have an empty eval.csv (no evaluation ran)")
    summary = summarize(data, threshold)
    out = Path(out) if out else Path(workspace) / "compare" / _safe("-vs-".join(dirs))
    out.mkdir(parents=True, exist_ok=True)
    upto = f" (evaluations up to step {until_step})" if until_step is not None else ""
    md = (f"## jadwal compare: {', '.join(dirs)}{upto}\n\nsteps = micro-batches trained since the start of each run; "
          "wall s = training wall time (evaluation excluded).\n\n" + markdown(summary))
    (out / "compare.md").write_text(md, encoding="utf-8")
    (out / "compare.json").write_text(json.dumps({"runs": {n: str(d) for n, d in dirs.items()}, "tasks": summary},
                                                 indent=2), encoding="utf-8")
    pngs = {t: str(plot_task(t, data, summary, out / f"{_safe(t)}.png")) for t in summary}
    return {"out": str(out), "markdown": md, "summary": summary, "png": pngs}


def _compare(args) -> int:
    res = compare(args.workspace, args.runs, out=args.out, threshold=args.threshold, until_step=args.until_step)
    print(res["markdown"])
    print(f"→ {res['out']}/compare.md, compare.json, " + ", ".join(Path(p).name for p in res["png"].values()),
          file=sys.stderr)
    return 0


def register(sub, common) -> None:
    p = sub.add_parser("compare", parents=[common], help="compare training runs on their periodic evaluation",
                       description="Read runs/RUN/eval.csv of each run (written by `jadwal train` with `eval_every`) "
                       "and write, per task, a markdown table (final and best dev loss and metrics, steps and wall "
                       "time to reach a dev-loss threshold) and a PNG of dev loss and metrics over steps.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run names (runs/RUN under the workspace) or run folders")
    p.add_argument("--threshold", type=float, default=None,
                   help="dev-loss threshold for every task (default: per task, the best dev loss of the slowest run)")
    p.add_argument("--until-step", type=int, default=None,
                   help="only evaluations at or before this step (micro-batches), to compare runs at equal steps")
    p.add_argument("--out", default=None, help="output folder (default WS/compare/RUN1-vs-RUN2…)")
    p.set_defaults(func=_compare)
