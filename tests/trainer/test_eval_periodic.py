"""Periodic evaluation: dev loss every `eval_every` micro-batches (whole run), generation metrics every k-th
time and at stage ends, in runs/NAME/eval.csv (long format) and eval_curves.png; evaluating never changes
training."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from jadwal.sched_index.planner import build_index

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trainkit import TINY_MODEL as TINY, split_workspace  # noqa: E402


@pytest.fixture(scope="module")
def ews(tmp_path_factory, lh):
    """Train/dev rows (every 4th row dev), sharded by the real writer; a dev index and two train indexes."""
    root = split_workspace(lh, tmp_path_factory.mktemp("peval") / "ws")
    base = {"seed": 1, "shards": "splits", "world_size": 1, "buffer": 400, "batch_size": 2}
    build_index(root, {**base, "steps": 3, "split": "dev",
                       "phases": [{"policy": "mix", "by": "dataset", "weights": "uniform"}]}, "dev", progress=False)
    build_index(root, {**base, "steps": 5, "phases": [{"policy": "mix", "by": "dataset", "weights": "uniform"}]},
                "mix", progress=False)
    build_index(root, {**base, "steps": 4, "phases": [{"policy": "tpc", "stages": [["asr"], ["did"]]}]},
                "tpc", progress=False)
    return root


def _cfg(run, **kw):
    return {"run": run, "seed": 2, "model": TINY, "num_workers": 0,
            "eval": {"index": "dev", "max_new_tokens": 4},
            "stages": [{"name": "p1", "index": "mix", "train": ["encoder", "aligner", "lora"], "lr": 5e-3},
                       {"name": "p2", "index": "tpc", "train": ["lora"], "lr": 5e-3}], **kw}


def _rows(p):
    with open(p, newline="") as f:
        return list(csv.DictReader(f))


def test_periodic_eval_rows_schedule_and_values(ews):
    from jadwal.trainer.loop import Trainer
    from jadwal.trainer.periodic_eval import dev_loss

    tr = Trainer(_cfg("pe", eval_every=2, eval_generate_every=2), ews)
    res = tr.run()
    rows = _rows(ews / "runs" / "pe" / "eval.csv")
    assert set(rows[0]) >= {"stage", "step", "global_step", "wall_s", "task", "metric", "value", "n"}
    evals: dict[int, set] = {}
    for r in rows:
        evals.setdefault(int(r["global_step"]), set()).add((r["task"], r["metric"]))
    # p1 has 5 micro-batches, p2 4: periodic at 0, 2, 4 | stage end 5 | (5 is p2's first: covered) 6, 8 | end 9
    assert sorted(evals) == [0, 2, 4, 5, 6, 8, 9]
    generated = {g for g, m in evals.items() if ("asr", "wer") in m}
    assert generated == {0, 4, 5, 8, 9}  # every 2nd periodic evaluation + every stage end
    for g, m in evals.items():
        assert {("asr", "dev_loss"), ("did", "dev_loss"), ("all", "dev_loss")} <= m
        if g in generated:
            assert ("did", "macro_f1") in m and ("asr", "cer") in m
    stage_of = {int(r["global_step"]): (r["stage"], int(r["step"])) for r in rows}
    assert stage_of[5] == ("p1", 5) and stage_of[6] == ("p2", 1) and stage_of[9] == ("p2", 4)
    walls = [float(r["wall_s"]) for r in rows]
    assert walls == sorted(walls) and walls[0] >= 0
    # the last dev loss is the trained model's dev loss, recomputed independently
    last = {r["task"]: float(r["value"]) for r in rows if int(r["global_step"]) == 9 and r["metric"] == "dev_loss"}
    again = dev_loss(tr.model, ews, "dev")
    for t, (v, n) in again.items():
        assert last[t] == pytest.approx(v, rel=1e-5, abs=1e-6)
    assert again["all"][1] == sum(n for t, (_, n) in again.items() if t != "all") == 6  # 3 steps × 2
    png = ews / "runs" / "pe" / "eval_curves.png"
    assert res["eval_plot"] == str(png) and png.stat().st_size > 5000


def test_evaluating_does_not_change_training(ews):
    from jadwal.trainer.loop import Trainer

    Trainer(_cfg("with_eval", eval_every=1), ews).run()
    Trainer({**_cfg("no_eval"), "eval": None}, ews).run()
    a = _rows(ews / "runs" / "with_eval" / "train.csv")
    b = _rows(ews / "runs" / "no_eval" / "train.csv")
    assert [(r["stage"], r["step"], r["loss"], r["lr"]) for r in a] == [(r["stage"], r["step"], r["loss"], r["lr"])
                                                                        for r in b]
    assert not _rows(ews / "runs" / "no_eval" / "eval.csv")


def test_eval_config_errors():
    from jadwal.trainer.loop import load_config

    with pytest.raises(ValueError, match="eval_every needs an `eval"):
        load_config({**_cfg("x", eval_every=2), "eval": None})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['every'\]"):
        load_config({**_cfg("x"), "eval": {"index": "dev", "every": 2}})


def test_resumed_run_has_the_same_evaluations(ews):
    """Stopped after 3 micro-batches, then at the stage end (5), then finished: eval.csv equals the
    uninterrupted run's (the truncated rows redone, the stage-end evaluation kept once)."""
    from jadwal.trainer.loop import Trainer

    Trainer(_cfg("full", eval_every=2, eval_generate_every=2), ews).run()
    Trainer(_cfg("cut", eval_every=2, eval_generate_every=2, stop_after=3), ews).run()
    Trainer(_cfg("cut", eval_every=2, eval_generate_every=2, stop_after=2, resume="auto"), ews).run()
    Trainer(_cfg("cut", eval_every=2, eval_generate_every=2, resume="auto"), ews).run()
    key = lambda r: (r["stage"], r["step"], r["global_step"], r["task"], r["metric"])  # noqa: E731
    a = _rows(ews / "runs" / "full" / "eval.csv")
    b = _rows(ews / "runs" / "cut" / "eval.csv")
    assert [key(r) for r in a] == [key(r) for r in b]
    assert [float(r["value"]) for r in a] == pytest.approx([float(r["value"]) for r in b], rel=1e-5, abs=1e-6)
    walls = [float(r["wall_s"]) for r in b]
    assert walls == sorted(walls)  # training wall time carried over the resumes


def test_init_from_and_set_overrides(ews):
    """`init_from: runs/NAME` starts from that run's trained weights; `jadwal train --set` overrides values."""
    import torch

    from jadwal.trainer.loop import Trainer
    from jadwal.trainer.model import load_trained
    from jadwal.trainer.train_cli import apply_overrides

    if not (ews / "runs" / "pe" / "checkpoints").exists():
        Trainer(_cfg("pe", eval_every=2), ews).run()
    src = load_trained(ews / "runs" / "pe")
    tr = Trainer({**_cfg("from_pe"), "init_from": "runs/pe"}, ews)
    own = tr.model.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in src.state_dict().items())
    fresh = Trainer(_cfg("fresh"), ews).model.state_dict()
    assert not all(torch.equal(fresh[k], own[k]) for k in own if "lora_A" in k)

    cfg = apply_overrides(_cfg("x"), ["stages.1.index=mix", "eval_every=3", "stages.0.train=[lora]", "stages.0.lr=1e-4"])
    assert cfg["stages"][1]["index"] == "mix" and cfg["eval_every"] == 3
    assert cfg["stages"][0]["train"] == ["lora"] and cfg["stages"][0]["lr"] == 1e-4
    assert _cfg("x")["stages"][1]["index"] == "tpc"  # a copy
    for bad in ("stages.5.index=mix", "nokey.x=1", "eval_every"):
        with pytest.raises(ValueError, match="--set"):
            apply_overrides(_cfg("x"), [bad])
