"""Training logs of the reference loop: CSV files (always), TensorBoard (when ``tensorboard`` is
installed), and a per-task loss-curve PNG.

Files under ``runs/NAME/``:

* ``train.csv``: one row per step (``stage, step, update, loss, lr, samples_per_s, audio_s_per_s,
  n_samples, pool_conflicts, selected_conflicts, utility, random_conflicts, wall_s``);
* ``task_loss.csv``: one row per step and task (``stage, step, task, loss, n``), over all ranks;
* ``grad_conflict.csv``: every ``conflict_every`` steps, the pairwise cosine of per-task gradients
  (``stage, step, task_a, task_b, cosine``);
* ``eval.csv``: ``stage, step, task, metric, value, n, global_step, wall_s`` (:mod:`.periodic_eval`);
* ``loss_curves.png``: per-task loss over steps.

On resume, rows at or after the resume point are dropped first, so the files read as one run.
"""
from __future__ import annotations

import csv
from pathlib import Path

FILES = {
    "train": ["stage", "step", "update", "loss", "lr", "samples_per_s", "audio_s_per_s", "n_samples",
              "pool_conflicts", "selected_conflicts", "utility", "random_conflicts", "wall_s"],
    "task_loss": ["stage", "step", "task", "loss", "n"],
    "grad_conflict": ["stage", "step", "task_a", "task_b", "cosine"],
    "eval": ["stage", "step", "task", "metric", "value", "n", "global_step", "wall_s"],
}


class RunLogger:
    def __init__(self, run_dir: Path, *, enabled: bool = True, tensorboard: bool = True):
        self.dir = Path(run_dir)
        self.enabled = enabled
        self.tb = None
        self.stage_order: dict[str, int] = {}
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        for name, cols in FILES.items():
            p = self.dir / f"{name}.csv"
            if not p.exists():
                with p.open("w", newline="") as f:
                    csv.writer(f).writerow(cols)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.dir / "tb"))
            except Exception:  # noqa: BLE001 - tensorboard not installed: CSV + PNG only
                self.tb = None

    def truncate(self, stage_index: int, step: int, stages: list[str]) -> None:
        """Drop rows at or after (stage_index, step) (resume)."""
        if not self.enabled:
            return
        pos = {s: i for i, s in enumerate(stages)}
        for name, cols in FILES.items():
            p = self.dir / f"{name}.csv"
            with p.open(newline="") as f:
                rows = list(csv.DictReader(f))
            keep = [r for r in rows if (pos.get(r["stage"], -1), int(r["step"])) < (stage_index, step)]
            with p.open("w", newline="") as f:
                w = csv.DictWriter(f, cols)
                w.writeheader()
                w.writerows(keep)

    def write(self, name: str, rows: list[dict]) -> None:
        if not self.enabled or not rows:
            return
        with (self.dir / f"{name}.csv").open("a", newline="") as f:
            w = csv.DictWriter(f, FILES[name], extrasaction="ignore")
            w.writerows(rows)

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.tb is not None:
            self.tb.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_csv(path: Path) -> list[dict]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def plot_loss_curves(run_dir: Path, out: Path | None = None) -> Path | None:
    """Per-task loss (and its running mean) over the global step, stages marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_csv(Path(run_dir) / "task_loss.csv")
    if not rows:
        return None
    stages: list[str] = []
    for r in rows:
        if r["stage"] not in stages:
            stages.append(r["stage"])
    # a global x: stages one after the other
    offset, x0, last = {}, 0, {}
    for s in stages:
        steps = [int(r["step"]) for r in rows if r["stage"] == s]
        offset[s] = x0 - min(steps)
        x0 += max(steps) - min(steps) + 1
        last[s] = x0
    by_task: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append((int(r["step"]) + offset[r["stage"]], float(r["loss"])))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for t, pts in sorted(by_task.items()):
        pts.sort()
        xs, ys = zip(*pts)
        ax.plot(xs, ys, ".", alpha=0.25, ms=3)
        k = max(1, len(ys) // 20)
        sm = [sum(ys[max(0, i - k + 1): i + 1]) / len(ys[max(0, i - k + 1): i + 1]) for i in range(len(ys))]
        ax.plot(xs, sm, "-", label=f"{t} (n={len(ys)})", color=ax.lines[-1].get_color())
    for s in stages[:-1]:
        ax.axvline(last[s] - 0.5, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("step (stages concatenated: " + " → ".join(stages) + ")")
    ax.set_ylabel("loss (token-mean CE on targets)")
    ax.set_title("per-task training loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out or Path(run_dir) / "loss_curves.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
