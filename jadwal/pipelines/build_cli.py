"""``jadwal build ssum | text-twins``: builders that derive new datasets from imported manifests."""
from __future__ import annotations

import json


def _print_stats(stats: dict) -> None:
    print(json.dumps(stats, indent=2, ensure_ascii=False, default=str))


def _ssum(args) -> int:
    from ..access import Access, parse_schemes
    from .ssum import SsumConfig, build_ssum

    cfg = SsumConfig(
        min_seconds=args.min_seconds,
        max_seconds=args.max_seconds,
        target_seconds=args.target_seconds,
        max_gap_s=args.max_gap,
        summarizer=args.summarizer,
        target_ratio=args.target_ratio,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        min_words=args.min_words,
        near_dup_threshold=args.near_dup,
        min_arabic_ratio=args.min_arabic_ratio,
        min_summary_ratio=args.min_summary_ratio,
        max_summary_ratio=args.max_summary_ratio,
        min_novelty=args.min_novelty,
        max_novelty=args.max_novelty,
        silence_top_db=args.silence_top_db,
        text_form=args.text_form,
    )
    cfg.validate()
    name = args.name or f"{args.source}_ssum"
    print(
        f"build ssum: {args.source} → manifests/{name}  windows {cfg.min_seconds:g}–{cfg.max_seconds:g} s "
        f"(target {cfg.target_seconds:g} s), summarizer {cfg.summarizer}, target ratio {cfg.target_ratio:g}"
    )
    # build_ssum writes through Workspace.stage_output: name check, one writer, meta.json last
    stats = build_ssum(args.workspace, args.source, name=name, config=cfg, executor=args.executor,
                       ray_address=args.ray_address, actors=args.actors,
                       access=Access(allow_remote=parse_schemes(args.allow_remote)))
    _print_stats(stats)
    return 0


def _text_twins(args) -> int:
    from .text_twins import build_text_twins

    name = args.name or f"{args.task}_text"
    # build_text_twins writes through Workspace.stage_output: name check, one writer, meta.json last
    stats = build_text_twins(
        args.workspace, args.task, sources=args.source or None, fraction=args.fraction, seed=args.seed, name=name
    )
    _print_stats(stats)
    return 0


def register(sub, common) -> None:
    p = sub.add_parser("build", help="derive datasets: speech summarization (ssum), text-only twins")
    bsub = p.add_subparsers(dest="build_command", metavar="BUILDER")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    s = bsub.add_parser(
        "ssum",
        parents=[common],
        help="AraMega-SSum-style summarization rows from long-form audio + transcripts",
        description="Cut long-form recordings (segment rows sharing recording_id, or long files with one "
        "transcript, cut at silences) into windows at segment/sentence boundaries, summarize each "
        "window's transcript, filter, and write manifests/<name>/ with a card.",
    )
    s.add_argument("--source", required=True, help="dataset name of an imported manifest")
    s.add_argument("--name", help="output dataset name (default <source>_ssum)")
    s.add_argument("--min-seconds", type=float, default=30.0, help="shortest window (default 30)")
    s.add_argument("--max-seconds", type=float, default=600.0, help="longest window (default 600)")
    s.add_argument("--target-seconds", type=float, default=120.0, help="window length aimed at (default 120)")
    s.add_argument("--max-gap", type=float, default=10.0, help="a pause longer than this (s) ends a window run (default 10)")
    s.add_argument("--summarizer", default="extractive",
                   help="extractive (default, offline TextRank) | hf:PATH (local transformers model)")
    s.add_argument("--target-ratio", type=float, default=0.3, help="summary length / transcript length (default 0.3)")
    s.add_argument("--text-form", choices=("train", "raw"), default="train",
                   help="text form of the summarizer's input and of the stored summaries: train (orthography kept, "
                        "tatweel/controls removed; the trainer's default target form) or raw (as found). Default train")
    s.add_argument("--seed", type=int, default=0, help="seed of the instruction draw (default 0)")
    s.add_argument("--batch-size", type=int, default=8, help="windows per summarizer call (default 8)")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] for hf summarizers (default auto)")
    s.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="hf summarizers: weights/compute dtype (auto = bf16 on GPU, fp32 on CPU)")
    s.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where summarizer batches run: this process (default) or Ray actors (same output)")
    s.add_argument("--ray-address", help="join this Ray cluster (default: a local Ray instance)")
    s.add_argument("--actors", type=int, help="Ray actors for the summarizer (default: one per GPU, else per CPU)")
    s.add_argument("--allow-remote", default=None, metavar="SCHEMES",
                   help="URL schemes long files may be read from, e.g. s3,gs,https (default: none; local paths, "
                        "file:// and memory:// always)")
    f = s.add_argument_group("filters")
    f.add_argument("--min-words", type=int, default=20, help="skip windows with fewer transcript words (default 20)")
    f.add_argument("--near-dup", type=float, default=0.8, help="MinHash Jaccard for near-duplicate windows (default 0.8)")
    f.add_argument("--min-arabic-ratio", type=float, default=0.7, help="min share of Arabic letters in a summary")
    f.add_argument("--min-summary-ratio", type=float, default=None, help="default target-ratio/5")
    f.add_argument("--max-summary-ratio", type=float, default=None, help="default min(0.9, 2×target-ratio)")
    f.add_argument("--min-novelty", type=float, default=0.0, help="min share of novel summary bigrams (default 0)")
    f.add_argument("--max-novelty", type=float, default=0.9, help="max share of novel summary bigrams (default 0.9)")
    f.add_argument("--silence-top-db", type=float, default=35.0,
                   help="long files: frames this many dB under the peak are silence (default 35)")
    s.set_defaults(func=_ssum)

    t = bsub.add_parser(
        "text-twins",
        parents=[common],
        help="text-only copies (transcript in place of audio) of a task's speech rows",
        description="Write manifests/<name>/ with modality=text rows derived from a seeded fraction of "
        "the speech rows of TASK; ids are '<source id>#text'.",
    )
    t.add_argument("--task", required=True, help="task of the speech rows (e.g. slu, asr)")
    t.add_argument("--source", nargs="+", metavar="DATASET", help="datasets to draw from (default: all)")
    t.add_argument("--fraction", type=float, default=1.0, help="share of the speech rows to twin (default 1)")
    t.add_argument("--seed", type=int, default=0, help="selection seed (default 0)")
    t.add_argument("--name", help="output dataset name (default <task>_text)")
    t.set_defaults(func=_text_twins)
