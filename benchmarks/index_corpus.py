"""Byte-identity oracle for planner refactors: builds 31 indexes (every built-in policy at 3 lengths,
duration mode, an elastic re-plan, an amendment chain with a regrouped shard set and a duration
amendment) and writes the sha256 (16 hex) of every index file as JSON.  Run it before and after a
change and compare the two files:

    .venv/bin/python benchmarks/index_corpus.py /tmp/before before.json   # old code
    .venv/bin/python benchmarks/index_corpus.py /tmp/after after.json     # new code
    diff before.json after.json
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "sched_index"))

from conftest import CORPUS  # noqa: E402
from test_properties import POLICY_PHASES  # noqa: E402

from jadwal.sched_index import build_index, continue_index  # noqa: E402
from jadwal.sched_index.elastic import replan  # noqa: E402
from jadwal.sched_index.synthetic import write_synthetic_shard_set  # noqa: E402


def main(root: Path, out_path: str) -> None:
    out: dict = {}
    syn = write_synthetic_shard_set(root / "syn", datasets=CORPUS, n_clusters=6, cluster_name="k6",
                                    stream_by=("cluster", "task", "label"), shard_size=40, seed=3)
    write_synthetic_shard_set(root / "syn", datasets=CORPUS, n_clusters=6, cluster_name="k6",
                              stream_by=("cluster", "dataset", "label"), shard_size=17, seed=3, set_name="re")
    ds = write_synthetic_shard_set(root / "ds", datasets=CORPUS, n_clusters=6, cluster_name="k6",
                                   stream_by=("dataset",), shard_size=50, seed=4, text_fraction={"asr_a": 0.5})

    def record(ws, name):
        d = Path(ws.root) / "index" / name
        out[name] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16]
                     for p in sorted(d.iterdir()) if p.suffix in (".npy", ".parquet", ".json")}

    for name, phases in POLICY_PHASES.items():
        if name == "speech_curriculum":
            continue
        ws = ds if name in ("mix", "gst", "pool") else syn
        for steps in (20, 60, 400):
            spec = {"seed": 7, "shards": "syn", "batch_size": 12, "steps": steps, "world_size": 2,
                    "readers_per_rank": 2, "buffer": 0, "phases": phases}
            build_index(ws, spec, f"{name}_{steps}", progress=False)
            record(ws, f"{name}_{steps}")
    for name in ("mix", "ads", "two_phase"):
        ws = ds if name == "mix" else syn
        spec = {"seed": 5, "shards": "syn", "max_duration": 50.0, "steps": 80, "world_size": 2,
                "readers_per_rank": 2, "buffer": 128, "phases": POLICY_PHASES[name]}
        if name == "ads":
            spec["fallback"] = "substitute"
        build_index(ws, spec, f"dur_{name}", progress=False)
        record(ws, f"dur_{name}")
    spec = {"seed": 7, "shards": "syn", "batch_size": 12, "steps": 400, "world_size": 2, "readers_per_rank": 2,
            "buffer": 0, "phases": POLICY_PHASES["hybrid"]}
    replan(syn, {**spec, "world_size": 3}, "el", old="hybrid_400", at_step=123, progress=False)
    record(syn, "el")
    continue_index(syn, {**spec, "steps": 480, "phases": POLICY_PHASES["tpc"]}, "am1", old="hybrid_400",
                   at_step=150, progress=False)
    record(syn, "am1")
    continue_index(syn, {**spec, "shards": "re", "steps": 500, "world_size": 1, "batch_size": 9}, "am2",
                   old="am1", at_step=300, progress=False)
    record(syn, "am2")
    duration = {k: v for k, v in spec.items() if k != "batch_size"}
    continue_index(syn, {**duration, "max_duration": 50.0, "buffer": 128, "phases": POLICY_PHASES["two_phase"]},
                   "am3", old="am2", at_step=350, progress=False)
    record(syn, "am3")
    Path(out_path).write_text(json.dumps(out, indent=1))
    print(f"{len(out)} indexes → {out_path}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
