"""``jadwal affinity``: gradient affinity between datasets → GST groups (see :mod:`.affinity`)."""
from __future__ import annotations


def _trained_path(arg: str | None, ws_root) -> str | None:
    """``--model`` naming trained weights: a run folder (``runs/NAME``, also relative to the workspace), a
    checkpoint folder or its ``model.pt``; None for ``tiny`` or a YAML config."""
    from pathlib import Path

    if arg in (None, "tiny"):
        return None
    for p in (Path(arg), Path(ws_root) / arg):
        if p.is_dir() or p.name == "model.pt" and p.is_file():
            return str(p)
    return None


def _model_spec(arg: str | None) -> dict:
    """``--model``: a YAML file holding a ``model:`` section (a training config works), or ``tiny``."""
    if arg in (None, "tiny"):
        return {"kind": "composed", "encoder": {"kind": "tiny"}, "aligner": {"kind": "conv", "k": 2},
                "lora": {"r": 4, "init_b_std": 0.02}}
    from pathlib import Path

    import yaml

    doc = yaml.safe_load(Path(arg).read_text(encoding="utf-8")) or {}
    return dict(doc.get("model", doc))


def _affinity(args) -> int:
    """One writer of ``groups/NAME`` and ``index/affinity-NAME`` (names checked, locks held)."""
    from ..workspace import Workspace

    ws = Workspace(args.workspace)
    with ws.stage("groups", args.name, incomplete=True), ws.stage("index", f"affinity-{args.name}"):
        return _affinity_locked(args)


def _affinity_locked(args) -> int:
    import numpy as np
    import pyarrow.parquet as pq

    from ..access import parse_schemes
    from ..sched_index.planner import build_index, pick_shard_set
    from ..shards.schema import SAMPLES_FILE
    from ..workspace import Workspace
    from .affinity import dataset_gradients, group_datasets, sampling_spec, write_outputs

    ws = Workspace(args.workspace)
    shard_set = pick_shard_set(ws, args.set)
    samples = ws.path("shards", shard_set, SAMPLES_FILE)
    t = pq.read_table(samples, columns=["dataset", "split"])
    ds_col = np.asarray(t.column("dataset").to_pylist(), dtype=object)
    split = np.asarray(t.column("split").to_pylist(), dtype=object)
    present = sorted(set(ds_col[split == "train"]) if (split == "train").any() else set(ds_col))
    datasets = args.datasets.split(",") if args.datasets else present
    unknown = sorted(set(datasets) - set(present))
    if unknown:
        raise ValueError(f"--datasets: {unknown} not in shard set {shard_set!r} (train split); known: {present}")
    if len(datasets) < 2:
        raise ValueError("affinity needs at least two datasets")
    name = args.name
    index_name = f"affinity-{name}"
    spec = sampling_spec(datasets, args.samples_per_dataset, args.batch_size, args.seed, shard_set)
    build_index(ws, spec, index_name, progress=False)
    print(f"sampling {args.samples_per_dataset} samples × {len(datasets)} datasets from {shard_set} "
          f"(index/{index_name}, sequential reads)")
    import torch

    from ..trainer.model import build_model

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    trained = _trained_path(args.model, ws.root)
    if trained:  # a trained run (e.g. phase 1): gradient affinity is meaningful on trained weights only
        from ..trainer.model import load_trained

        model = load_trained(trained, workspace=str(ws.root), device=device)
        print(f"model: trained weights of {model.checkpoint}")
    else:
        model = build_model(_model_spec(args.model), workspace=str(ws.root), seed=args.seed).to(device)
        print("model: random weights (`--model runs/NAME` uses a trained run)")
    G = dataset_gradients(ws, model, index_name, datasets, args.params, projection_dim=args.projection_dim,
                          seed=args.seed, progress=not args.no_progress,
                          allow_remote=parse_schemes(args.allow_remote))
    order = [int(x) for x in args.order.split(",")] if args.order else None
    n_groups = "auto" if args.groups == "auto" else int(args.groups)
    grouping = group_datasets(datasets, G, n_groups=n_groups, seed=args.seed, sigma=args.sigma, order=order,
                              alike_distance=args.alike_distance)
    if grouping.warning:
        print(f"warning: {grouping.warning}")
    config = {k: v for k, v in vars(args).items() if k not in ("func", "workspace", "verbose")}
    doc = write_outputs(ws, name, grouping, G, config,
                        inputs=[samples, ws.path("index", index_name, "plan.npy")])
    print(f"{len(doc['groups'])} group(s) ({grouping.chosen_by}); training order:")
    for k, g in enumerate(grouping.order):
        print(f"  stage {k + 1}: {', '.join(doc['groups'][g])}")
    print(f"→ {ws.rel(ws.path('groups', name))}/groups.json, heatmap.png  (use `{{policy: gst, groups: {name}}}`)")
    return 0


def register(sub, common) -> None:
    p = sub.add_parser(
        "affinity", parents=[common], help="gradient affinity between datasets → groups for the gst policy",
        description="Mean loss gradient per dataset (N seeded samples, sequential shard reads) over LoRA, aligner "
        "or all trainable parameters; cosine distance → RBF affinity → spectral clustering (G given or by "
        "eigengap); writes groups/NAME/groups.json (read by `{policy: gst, groups: NAME}`), the matrix and a heatmap.")
    p.add_argument("--model", default="tiny", help="trained weights: a run folder (runs/NAME: its latest "
                   "checkpoint, with the run's model section and tokenizer) or a checkpoint folder; or a YAML with a "
                   "`model:` section (random weights); or `tiny` (random-weight tiny encoder + aligner + LM with "
                   "LoRA; default)")
    p.add_argument("--set", help="shard set (default: the only one)")
    p.add_argument("--datasets", help="comma-separated datasets (default: every dataset with train samples)")
    p.add_argument("--samples-per-dataset", type=int, default=64, help="samples drawn per dataset (default 64)")
    p.add_argument("--batch-size", type=int, default=8, help="samples per gradient batch (default 8)")
    p.add_argument("--params", choices=["lora", "aligner", "all"], default="lora",
                   help="parameters whose gradient defines affinity (default lora)")
    p.add_argument("--groups", default="auto", help="number of groups, or `auto` (eigengap; default)")
    p.add_argument("--order", help="override the group order, e.g. 2,0,1 (default: most aligned with the mixture first)")
    p.add_argument("--projection-dim", type=int, default=0, help="random projection of gradients to D dims (0: none)")
    p.add_argument("--sigma", type=float, help="RBF width on cosine distance (default: median distance)")
    p.add_argument("--alike-distance", type=float, default=0.02,
                   help="if every pairwise cosine distance of the mean gradients is below this, warn that the "
                   "datasets look alike and (with --groups auto) keep them in one group (default 0.02)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--name", default="affinity", help="output folder groups/NAME (default affinity)")
    p.add_argument("--allow-remote", metavar="SCHEMES", help="URL schemes shard paths stored in the shard index "
                   "may use (e.g. s3,gs,https); default: local only. pipe: paths there never run")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_affinity)
