"""`jadwal compare` on two small runs: one markdown table and one PNG per task, numbers equal to eval.csv."""
from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import pytest

from jadwal.sched_index.planner import build_index

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trainkit import TINY_MODEL as TINY, split_workspace  # noqa: E402


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, lh):
    """Dev rows (every 4th) sharded by the real writer; runs `mix` and `tpc` (same steps, eval every 2)."""
    from jadwal.trainer.loop import Trainer

    root = split_workspace(lh, tmp_path_factory.mktemp("cmp") / "ws")
    base = {"seed": 1, "shards": "splits", "world_size": 1, "buffer": 400, "batch_size": 2}
    build_index(root, {**base, "steps": 2, "split": "dev",
                       "phases": [{"policy": "mix", "by": "dataset", "weights": "uniform"}]}, "dev", progress=False)
    build_index(root, {**base, "steps": 6, "phases": [{"policy": "mix", "by": "dataset", "weights": "uniform"}]},
                "mix", progress=False)
    build_index(root, {**base, "steps": 6, "phases": [{"policy": "tpc", "stages": [["asr"], ["did"]]}]},
                "tpc", progress=False)
    for name in ("mix", "tpc"):
        Trainer({"run": name, "seed": 2, "model": TINY, "num_workers": 0, "plot": False,
                 "eval": {"index": "dev", "max_new_tokens": 3}, "eval_every": 2, "eval_generate_every": 0,
                 "stages": [{"name": f"p2-{name}", "index": name, "train": ["aligner", "lora"], "lr": 2e-2}]},
                root).run()
    return root


def _eval(ws, run):
    with open(ws / "runs" / run / "eval.csv", newline="") as f:
        return list(csv.DictReader(f))


def _table(md: str, task: str) -> tuple[str, list[dict]]:
    """The threshold line and the rows of the table of ``task`` (header → cell dicts)."""
    sec = md.split(f"### task `{task}`")[1].split("### task")[0]
    lines = [ln for ln in sec.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return sec.splitlines()[0], [dict(zip(head, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]


def test_compare_writes_table_and_png_per_task(two_runs, capsys):
    from jadwal.cli import main

    ws = two_runs
    out = ws / "cmp"
    assert main(["compare", "-w", str(ws), "mix", "tpc", "--out", str(out)]) == 0
    md = (out / "compare.md").read_text()
    assert md.strip() in capsys.readouterr().out  # the same markdown on stdout, to paste
    tasks = {"asr", "did", "all"}
    data = {run: _eval(ws, run) for run in ("mix", "tpc")}
    for task in tasks:
        png = out / f"{task}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        thr_line, rows = _table(md, task)
        assert [r["run"] for r in rows] == ["mix", "tpc"]  # one row per run
        loss = {run: [(int(r["global_step"]), float(r["wall_s"]), float(r["value"])) for r in data[run]
                      if r["task"] == task and r["metric"] == "dev_loss"] for run in data}
        thr = max(min(v for _, _, v in s) for s in loss.values())  # the best dev loss of the slowest run
        assert f"dev loss ≤ {thr:.4f}" in thr_line
        for r in rows:
            s = sorted(loss[r["run"]])
            assert int(r["evals"]) == len(s) == 4  # global steps 0, 2, 4 and the stage end 6
            assert int(r["last step"]) == s[-1][0] == 6
            assert r["final dev loss"] == f"{s[-1][2]:.4f}"
            best = min(s, key=lambda x: (x[2], x[0]))
            assert r["best dev loss (step)"] == f"{best[2]:.4f} ({best[0]})"
            hit = next(x for x in s if x[2] <= thr)
            assert r["steps to ≤ thr"] == str(hit[0]) and r["wall s to ≤ thr"] == f"{hit[1]:.1f}"
            gen = {m: [(int(x["global_step"]), float(x["value"])) for x in data[r["run"]]
                       if x["task"] == task and x["metric"] == m] for m in ("wer", "macro_f1")}
            if task == "asr":  # generation only at the stage end (eval_generate_every: 0)
                assert [g for g, _ in gen["wer"]] == [6]
                assert r["final wer"] == r["best wer"] == f"{gen['wer'][0][1]:.4f}"
            if task == "did":
                assert r["final macro_f1"] == f"{gen['macro_f1'][-1][1]:.4f}"
    js = json.loads((out / "compare.json").read_text())
    assert set(js["tasks"]) == tasks
    assert js["tasks"]["all"]["runs"]["tpc"]["final_dev_loss"] == pytest.approx(
        [float(r["value"]) for r in data["tpc"] if r["task"] == "all" and r["metric"] == "dev_loss"][-1])


def test_compare_threshold_option_and_errors(two_runs, tmp_path):
    from jadwal.trainer.compare import compare

    res = compare(two_runs, ["mix", str(two_runs / "runs" / "tpc")], out=tmp_path / "o", threshold=-1.0)
    for task, s in res["summary"].items():
        assert s["threshold"] == -1.0
        assert all(r["steps_to_threshold"] is None for r in s["runs"].values())  # never reached: "—"
    assert re.search(r"\| mix \| 4 \| 6 \| [0-9.]+ \| [0-9.]+ \(\d\) \| — \| — \|", res["markdown"])
    with pytest.raises(FileNotFoundError, match="no eval.csv"):
        compare(two_runs, ["mix", "nope"])


def test_demo_trains_with_periodic_eval_and_ends_with_compare():
    """The demo's configs load (selector options, eval keys validated) with periodic evaluation, and its
    steps train two schedules with the same phase 1 and compare them at equal steps."""
    from pathlib import Path

    from jadwal.demo import EXAMPLES, steps
    from jadwal.trainer.loop import load_config

    runs = {}
    for name in ("demo.yaml", "demo_mix.yaml", "experiment/train.yaml"):
        cfg = load_config(EXAMPLES / "train" / name)
        assert cfg["eval"]["index"] and cfg["eval_every"] > 0
        runs[cfg["run"]] = cfg
    assert runs["demo"]["stages"][0] == runs["demo-mix"]["stages"][0]  # the same phase 1
    psel = runs["demo"]["stages"][-1]["selector"]
    assert psel["kind"] == "partitionsel" and psel["anchor_index"] == "dev"
    phase2 = lambda c: sum(s["max_steps"] for s in c["stages"][:2])  # noqa: E731
    argv = steps("ws", Path(EXAMPLES))
    trains = [a for a in argv if a[0] == "train"]
    assert [Path(a[3]).name for a in trains] == ["demo.yaml", "demo_mix.yaml"]
    cmp = next(a for a in argv if a[0] == "compare")
    assert argv.index(cmp) > argv.index(trains[-1])
    assert cmp[3:5] == ["demo", "demo-mix"] and cmp[cmp.index("--until-step") + 1] == str(phase2(runs["demo"]))
    assert phase2(runs["demo"]) == phase2(runs["demo-mix"])
