"""``jadwal demo``: every stage, end to end, on the bundled example corpus (``examples/``).

Each step is the same command a user would type (run in-process through :func:`jadwal.cli.main`), so
the demo doubles as a walkthrough; it prints the command before running it.
"""
from __future__ import annotations

import shlex
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"

IMPORTS = [
    ("commonvoice", "asr_cv", "asr", "asr_cv", []),
    ("audiofolder", "did", "did", "did_audiofolder", []),
    ("jsonl", "ser", "ser", "ser_jsonl/data.jsonl", []),
    ("kaldi", "longform", "asr", "longform_kaldi", []),
    ("jsonl", "broken", "asr", "broken/data.jsonl", []),  # deliberately broken rows → rejects
]
SPECS = ["hybrid", "mix", "gst", "speech_curriculum", "duration", "pool"]


def steps(ws: str, examples: Path) -> list[list[str]]:
    w = ["-w", ws]
    out = [["manifest", "import", *w, "--format", fmt, "--dataset", ds, "--task", task, str(examples / src), *extra]
           for fmt, ds, task, src, extra in IMPORTS]
    out += [
        ["manifest", "stats", *w],
        ["build", "ssum", *w, "--source", "longform", "--min-seconds", "20", "--target-seconds", "45",
         "--max-seconds", "90"],
        ["build", "text-twins", *w, "--task", "asr", "--source", "asr_cv", "--fraction", "1.0", "--name", "asr_text"],
        ["shard", *w, "--by", "dataset", "--datasets", "asr_cv,did,ser,longform,longform_ssum", "--set", "by-dataset",
         "--max-samples", "48", "--no-progress"],
        ["shard", *w, "--by", "dataset", "--datasets", "asr_cv,asr_text", "--set", "curriculum", "--max-samples", "64",
         "--no-progress"],
        ["shard", "verify", *w, "--set", "by-dataset"],
        ["embed", *w, "--set", "by-dataset", "--encoder", "tiny", "--device", "cpu", "--name", "tiny"],
        ["cluster", *w, "-k", "8", "--embeddings", "tiny", "--name", "k8"],
        ["shard", "regroup", *w, "--by", "cluster:k8,task,label", "--from", "by-dataset", "--max-samples", "32",
         "--no-progress"],
        ["affinity", *w, "--set", "by-dataset", "--samples-per-dataset", "16", "--batch-size", "4",
         "--projection-dim", "1024", "--name", "affinity", "--no-progress"],
    ]
    for spec in SPECS:
        out += [["plan", *w, str(examples / "specs" / f"{spec}.yaml"), "--name", spec, "-q"],
                ["index", "check", *w, spec]]
    train = examples / "train"
    out += [["plan", *w, str(train / "asr_only.yaml"), "--name", "asr_only", "-q"],
            ["plan", *w, str(train / "dev.yaml"), "--name", "dev", "-q"],
            ["train", *w, str(train / "demo.yaml"), "--nproc", "2"],
            # the same phase 1, then phase 2 under `mix` for as many steps as `hybrid` had; compared on the
            # periodic dev evaluation at equal steps (12 + 16 micro-batches)
            ["train", *w, str(train / "demo_mix.yaml"), "--nproc", "2"],
            ["compare", *w, "demo", "demo-mix", "--until-step", "28"]]
    out += [["index", "inspect", *w, "hybrid"], ["index", "report", *w, "hybrid"],
            ["index", "report", *w, "speech_curriculum", "--column", "modality"],
            ["stream", *w, "hybrid", "--rank", "1", "--steps", "3"],
            ["status", *w]]
    return out


def run_demo(ws: str, examples: Path = EXAMPLES) -> int:
    from .cli import main

    Path(ws).mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for argv in steps(ws, examples):
        print(f"\n$ jadwal {shlex.join(argv)}", flush=True)
        rc = main(argv)
        if rc not in (0, None):
            print(f"demo: step failed with exit code {rc}: jadwal {shlex.join(argv)}")
            return rc
    root = Path(ws).resolve()
    print(f"""
demo finished in {time.time() - t0:.0f}s. Outputs in {root}:
  manifests/<dataset>/manifest.parquet, rejects.parquet   normalized manifests and rejects (see manifests/broken)
  manifests/stats.png                                     hours per dataset/task/split/label
  manifests/longform_ssum/card.md, card.png               the speech-summarization dataset card
  shards/by-dataset/, shards/by-cluster-k8-task-label/    WebDataset tars + samples.parquet/shards.parquet
  embeddings/tiny/, clusters/k8/                          aligner embeddings, k-means clusters and report PNGs
  groups/affinity/groups.json, heatmap.png                gradient-affinity groups (the gst index uses them)
  index/<name>/                                           scheduling indexes ({', '.join(SPECS)})
  index/hybrid/mixture.png, fidelity.csv                  realized mixture over steps, realized vs requested
  runs/demo/                                              two-phase training (2 CPU ranks): per-task loss CSV/PNG,
                                                          gradient conflict, PartitionSel statistics (with a
                                                          random same-budget baseline), periodic dev evaluation
                                                          (eval.csv, eval_curves.png)
  runs/demo-mix/                                          the same phase 1, then `mix` instead of `hybrid`
  compare/demo-vs-demo-mix/                               `jadwal compare`: compare.md (table per task) + a PNG per task
""")
    return 0


def _demo(args) -> int:
    return run_demo(args.workspace, Path(args.examples))


def register(sub, common) -> None:
    p = sub.add_parser("demo", parents=[common], help="run every stage on the bundled example corpus",
                       description="Import the example corpus, build summarization data and text twins, shard, "
                       "embed, cluster, regroup, plan every schedule, check and report the indexes, and stream "
                       "a few micro-batches. Rerunning is safe.")
    p.add_argument("--examples", default=str(EXAMPLES), help="example corpus folder (default: the bundled one)")
    p.set_defaults(func=_demo)
