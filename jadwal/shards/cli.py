"""``jadwal shard [verify|regroup]``.

One command with an optional action word (so ``-w`` works before or after it)::

    jadwal shard   -w WS [--by dataset] [--set NAME] [--target-size 256MB] [--max-samples N]
                         [--sample-rate 16000] [--audio-format flac|original] [--mono]
                         [--workers N] [--seed S] [--datasets a,b] [--executor local|ray] [--ray-address A]
                         [--output URL] [--allow-remote s3,gs,https]
    jadwal shard verify  -w WS [--set NAME] [--workers N] [--allow-remote s3,gs,https]
    jadwal shard regroup -w WS --by cluster:k500,task,label [--from SET] [--set NAME]
                         [--target-size 256MB] [--max-samples N] [--seed S] [--memory 1GiB] [--output URL]
                         [--allow-remote s3,gs,https]
"""
from __future__ import annotations

import argparse
import json
import sys

WRITE_ONLY = ("sample_rate", "audio_format", "mono", "datasets", "executor", "ray_address")
REGROUP_ONLY = ("source", "memory")


def register(sub, common) -> None:
    p = sub.add_parser(
        "shard",
        parents=[common],
        help="write WebDataset shards grouped into streams (+ shard index); verify; regroup",
        description="Write the workspace's manifests into WebDataset tars under shards/<set>/<stream>/ with a "
        "shard index (samples.parquet, shards.parquet, rejects.parquet, meta.json).  Every audio row is decoded "
        "and verified before it is written (regular file, sha1 as at import, rate/channel bounds, finite samples, "
        "duration as in the manifest; see docs/shards.md); a row that fails is a reject with its reason.  `verify` re-hashes "
        "shards and checks every member against the index (exit 1 on problems).  `regroup` rewrites a set "
        "into new streams in one sequential pass, copying member bytes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  jadwal shard -w ws --by dataset\n"
        "  jadwal shard -w ws --by task,label --max-samples 1000 --workers 8\n"
        "  jadwal shard verify -w ws --set by-dataset\n"
        "  jadwal shard regroup -w ws --by cluster:k500,task,label --from by-dataset\n",
    )
    p.add_argument("action", nargs="?", choices=["verify", "regroup"], help="default: write shards")
    p.add_argument("--by", default=None, metavar="KEY[,KEY…]",
                   help="grouping keys, comma-separated: manifest columns (dataset, task, label, …) or "
                        "cluster:NAME (default: dataset; required for regroup)")
    p.add_argument("--set", dest="set_name", default=None, metavar="NAME", help="shard set name (default: by-<keys>)")
    p.add_argument("--from", dest="source", default=None, metavar="SET",
                   help="regroup: source set (default: the only set, else by-dataset)")
    p.add_argument("--target-size", default="256MB", metavar="SIZE", help="shard size target, e.g. 256MB, 1GiB (default 256MB)")
    p.add_argument("--max-samples", type=int, default=None, metavar="N", help="at most N samples per shard")
    p.add_argument("--sample-rate", type=int, default=None, metavar="HZ",
                   help="resample audio to this rate in Hz (default 16000; 0 keeps the source rate)")
    p.add_argument("--audio-format", choices=["flac", "original"], default=None,
                   help="flac (16-bit, default) or original (whole-file rows keep their bytes)")
    p.add_argument("--mono", action="store_true", default=None, help="downmix to one channel")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="processes (default: all cores)")
    p.add_argument("--executor", choices=["local", "ray"], default=None,
                   help="where shards are written: local process pool (default) or Ray tasks (same bytes; "
                        "pip install 'jadwal[ray]')")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster to join (e.g. auto, ray://head:10001); default $RAY_ADDRESS, else a local Ray "
                        "instance of --workers CPUs")
    p.add_argument("--output", default=None, metavar="URL",
                   help="write the tars and sidecars under URL/<set>/ (fsspec: s3://…, gs://…, file://…, or a "
                        "folder) instead of the workspace; the shard index stays in shards/<set>/ and records the URLs")
    p.add_argument("--allow-remote", default=None, metavar="SCHEMES",
                   help="URL schemes audio (and the shards regroup and verify read) may be read from, comma-separated, e.g. "
                        "s3,gs,https (default: none; local paths, file:// and memory:// are always allowed). Rows "
                        "whose audio URL uses another scheme are rejected as remote_audio_not_allowed")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="shuffle seed (default 0)")
    p.add_argument("--datasets", default=None, metavar="A,B", help="only these datasets, comma-separated")
    p.add_argument("--memory", default=None, metavar="SIZE", help="regroup: buffer bound before spilling to disk (default 1GiB)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _check(args, where: str, names) -> None:
    for n in names:
        if getattr(args, n) is not None:
            flag = "--" + {"set_name": "set", "source": "from"}.get(n, n).replace("_", "-")
            raise ValueError(f"{flag} applies only to {where}")


def _plan_line(s: dict) -> None:
    est = s.get("estimated_bytes")
    print(
        f"plan: {s['planned_samples']} samples in {s['streams']} streams → {s['planned_shards']} shards"
        + (f" (~{est / 1e6:.1f} MB estimated)" if est else "")
        + f" into {s.get('output', s['path'])}/",
        file=sys.stderr,
        flush=True,
    )
    for k, v in (s.get("missing_key_values") or {}).items():
        print(f"warning: {v} samples have no value for {k} (stream value 'null')", file=sys.stderr)


def _run(args) -> int:
    from ..access import Access, parse_schemes
    from ..workspace import Workspace

    ws = Workspace(args.workspace)
    access = Access(allow_remote=parse_schemes(args.allow_remote))
    progress = not args.no_progress
    if args.action == "verify":
        from .verify import verify_shards

        _check(args, "writing or regrouping", WRITE_ONLY + REGROUP_ONLY + ("by", "max_samples", "output"))
        rep = verify_shards(ws, args.set_name, workers=args.workers, progress=progress, access=access)
        if args.json:
            print(json.dumps(rep, indent=2, ensure_ascii=False))
        else:
            for name, r in rep["sets"].items():
                status = "ok" if not (r["bad_shards"] or r["index_problems"]) else "PROBLEMS"
                print(f"{name}: {r['shards']} shards, {r['samples']} samples, {r['bytes_read'] / 1e6:.1f} MB read: {status}")
                for msg in r["index_problems"]:
                    print(f"  index: {msg}")
                for b in r["bad_shards"]:
                    print(f"  shard {b['shard_id']} {b['path']}: {'; '.join(b['problems']) or 'damaged samples'}")
                    for s in b["samples"][:20]:
                        print(f"    sample {s['id']}: {s['problem']}")
                    if len(b["samples"]) > 20:
                        print(f"    … and {len(b['samples']) - 20} more samples")
        return 0 if rep["ok"] else 1

    if args.action == "regroup":
        from .regrouping import regroup

        _check(args, "writing shards (`jadwal shard` without an action)", WRITE_ONLY)
        if not args.by:
            raise ValueError("regroup needs --by (e.g. --by cluster:k500,task,label)")
        s = regroup(
            ws, args.by, source=args.source, set_name=args.set_name, target_size=args.target_size,
            max_samples=args.max_samples, seed=args.seed, memory=args.memory or "1GiB", progress=progress,
            on_plan=_plan_line, output=args.output, access=access,
        )
    else:
        from .write import write_shards

        _check(args, "`jadwal shard regroup`", REGROUP_ONLY)
        s = write_shards(
            ws, args.by or "dataset", set_name=args.set_name, target_size=args.target_size,
            max_samples=args.max_samples,
            sample_rate=16000 if args.sample_rate is None else args.sample_rate,
            audio_format=args.audio_format or "flac", mono=bool(args.mono), workers=args.workers,
            seed=args.seed, datasets=args.datasets.split(",") if args.datasets else None, progress=progress,
            on_plan=_plan_line, executor=args.executor or "local", ray_address=args.ray_address,
            output=args.output, access=access,
        )
    if args.json:
        print(json.dumps(s, indent=2, ensure_ascii=False))
    else:
        if "output" in s:
            print(f"shards at {s['output']}/, index in {s['path']}/")
        print(
            f"{s['path']}: {s['samples']} samples ({s['duration_h']:.2f} h) in {s['shards']} shards, "
            f"{s['bytes'] / 1e6:.1f} MB; {s['shards_written']} written, {s['shards_skipped']} already complete; "
            f"{s['seconds']:.1f} s"
        )
        if s["rejects"]:
            reasons = ", ".join(f"{k}: {v}" for k, v in s["rejects_by_reason"].items())
            print(f"rejects: {s['rejects']} ({reasons}) → {s['path']}/rejects.parquet")
        if "source_shards_read" in s:
            print(f"read {s['source_shards_read']} source shards ({s['source_bytes_read'] / 1e6:.1f} MB) once, "
                  f"sequentially; peak buffer {s['peak_buffer_bytes'] / 1e6:.1f} MB, {s['spills']} spills")
    return 0
