"""``jadwal stream NAME``: print what one rank receives from the streaming loader (debugging aid)."""
from __future__ import annotations

import json
import sys
import time
from collections import Counter


def _stream(args) -> int:
    from torch.utils.data import DataLoader

    from ..access import parse_schemes
    from ..sched_index import open_index
    from .dataset import ScheduleDataset

    world = args.world_size
    if world is None:
        world = open_index(args.workspace, args.name, verify_shards=False).world_size
    ds = ScheduleDataset(args.workspace, args.name, rank=args.rank, world_size=world,
                         start_step=args.start, decode_audio=args.decode, shard_root=args.shard_root,
                         prefetch=args.prefetch, allow_remote=parse_schemes(args.allow_remote))
    workers = ds.readers_per_rank if args.workers is None else args.workers
    stop = ds.num_steps if args.steps is None else min(ds.num_steps, ds.step + args.steps)
    print(f"index {args.name}: rank {ds.rank}/{ds.world_size}, steps [{ds.step}, {stop}) of "
          f"[{ds.index_start_step}, {ds.num_steps}), {ds.readers_per_rank} reader(s) per rank, "
          f"{workers} DataLoader worker(s)", file=sys.stderr)
    t0 = time.perf_counter()
    n_samples = n_steps = 0
    for b in DataLoader(ds, batch_size=None, num_workers=workers):
        if b["step"] >= stop:
            break
        n_steps += 1
        n_samples += len(b["ids"])
        if args.json:
            rec = {k: b[k] for k in ("step", "rank", "phase", "ids") if k in b}
            for k in ("dataset", "task", "label", "modality"):
                if k in b:
                    rec[k] = b[k]
            if args.decode:
                rec["audio_samples"] = [None if a is None else int(a.numel()) for a in b["audio"]]
            print(json.dumps(rec, ensure_ascii=False))
        else:
            tasks = Counter(b.get("task") or [])
            ids = b["ids"] if args.all_ids or len(b["ids"]) <= 6 else b["ids"][:6] + [f"… (+{len(b['ids']) - 6})"]
            print(f"step {b['step']:>6} phase {b['phase']} n={len(b['ids']):<4} "
                  f"tasks={dict(sorted(tasks.items()))} ids={ids}")
    dt = time.perf_counter() - t0
    print(f"{n_steps} micro-batches, {n_samples} samples in {dt:.2f}s "
          f"({n_samples / dt if dt else 0:.1f} samples/s)", file=sys.stderr)
    return 0


def register(sub, common) -> None:
    p = sub.add_parser("stream", parents=[common], help="print the micro-batches one rank receives from the loader",
                       description="Stream index NAME through jadwal.trainer.ScheduleDataset (the training "
                       "loader: sequential shard reads, exact plan) and print what a rank receives per step.")
    p.add_argument("name", help="scheduling index name (index/NAME)")
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("--world-size", type=int, default=None, help="default: the index's world size")
    p.add_argument("--start", type=int, default=None, help="first step (default: the index's start step)")
    p.add_argument("--steps", type=int, default=None, help="number of steps to print (default: all)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the index's "
                   "readers_per_rank; 0 = main process)")
    p.add_argument("--decode", action="store_true", help="decode audio (default: read and check bytes only)")
    p.add_argument("--shard-root", default=None, help="where the shards live if not in the workspace "
                   "(prefix such as s3://bucket/ws, or a template with {path}, e.g. 'pipe:cat /mnt/ws/{path}')")
    p.add_argument("--prefetch", type=int, default=2, help="micro-batches read ahead per worker")
    p.add_argument("--allow-remote", metavar="SCHEMES", help="URL schemes shard paths stored in the shard index "
                   "may use (e.g. s3,gs,https); default: local only. pipe: paths there never run")
    p.add_argument("--all-ids", action="store_true", help="print every id (default: the first 6)")
    p.add_argument("--json", action="store_true", help="one JSON object per micro-batch")
    p.set_defaults(func=_stream)
    __import__("jadwal.trainer.train_cli", fromlist=["register"]).register(sub, common)  # `jadwal train` (issue 8)
    __import__("jadwal.trainer.compare", fromlist=["register"]).register(sub, common)  # `jadwal compare` (issue 16)
