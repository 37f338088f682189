"""``jadwal embed`` and ``jadwal cluster`` (see ``docs/embeddings.md``)."""
from __future__ import annotations

import argparse
import json


def _embed(args) -> int:
    from ..access import Access, parse_schemes
    from ..workspace import Workspace
    from .embed import EmbedConfig, embed_shard_set

    cfg = EmbedConfig(
        encoder=args.encoder,
        checkpoint=args.checkpoint,
        aligner=args.aligner,
        aligner_kind=args.aligner_kind,
        aligner_dim=args.aligner_dim,
        aligner_k=args.aligner_k,
        tiny_config=args.tiny_config,
        pool=args.pool,
        pad_to_30s=args.pad_to_30s,
        batch_seconds=args.batch_seconds,
        max_batch=args.max_batch,
        sort_window=args.sort_window,
        bucket=not args.no_bucket,
        device=args.device,
        dtype=args.dtype,
        seed=args.seed,
        decode_workers=args.decode_workers,
    )
    summary = embed_shard_set(
        Workspace(args.workspace), cfg, shard_set=args.set, name=args.name, part=args.part, force=args.force,
        progress=not args.no_progress, sleep_per_shard=args.sleep_per_shard,
        executor=args.executor, ray_address=args.ray_address, actors=args.actors,
        access=Access(allow_remote=parse_schemes(args.allow_remote)),
    )
    summary.pop("meta", None)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cluster(args) -> int:
    from ..workspace import Workspace
    from .cluster import cluster_embeddings

    report = cluster_embeddings(
        Workspace(args.workspace), args.k, embeddings=args.embeddings, name=args.name, spherical=args.spherical,
        niter=args.niter, max_points_per_centroid=args.max_points_per_centroid, seed=args.seed, gpu=args.gpu,
        init=args.init, threads=args.threads,
    )
    short = {k: report[k] for k in ("name", "k_requested", "k", "n", "dim", "gpu", "objective", "sizes",
                                    "seconds_train", "seconds_assign")}
    short["purity"] = {a: {m: round(v, 4) for m, v in r.items() if m.startswith(("purity", "nmi"))}
                       for a, r in report.get("purity", {}).items()}
    print(json.dumps(short, indent=2))
    return 0


def register(sub, common) -> None:
    p = sub.add_parser(
        "embed", parents=[common],
        help="mean-pooled aligner embeddings of a shard set's audio (input of `jadwal cluster`)",
        description="Stream a shard set's tars once, front to back, and store one float16 vector per audio "
        "sample (encoder → aligner → mean over valid frames) in embeddings/NAME/ (vectors.f16 + ids.parquet). "
        "Resumable per shard.  Every sample read is verified as the loader verifies it (shard size, member names, "
        "per-sample sha1); a damaged shard stops the run with a one-line error naming it.",
    )
    p.add_argument("--set", help="shard set under shards/ (default: the only one)")
    p.add_argument("--encoder", choices=["whisper", "qwen2-audio", "qwen2.5-omni", "tiny"], default="tiny",
                   help="whisper: local Whisper checkpoint; qwen2-audio: audio_tower (+ multi_modal_projector) of a "
                   "local Qwen2-Audio folder; tiny: random seeded weights for tests/demo (default)")
    p.add_argument("--checkpoint", help="local model folder or weights file (never downloaded)")
    p.add_argument("--aligner", metavar="PATH", help="aligner weights: a state dict saved by the trainer (.pt/.bin/"
                   ".safetensors) or a Qwen2-Audio folder (its multi_modal_projector)")
    p.add_argument("--aligner-kind", choices=["auto", "linear", "conv", "none"], default="auto",
                   help="auto: from --aligner's keys; none: pool the encoder's frames (default for whisper "
                   "without --aligner)")
    p.add_argument("--aligner-dim", type=int, help="output size of the random aligner of --encoder tiny")
    p.add_argument("--aligner-k", type=int, default=2, help="downsampling factor of a random conv aligner (tiny)")
    p.add_argument("--tiny-config", choices=["tiny", "base", "large-v3"], default="tiny",
                   help="size preset of the random --encoder tiny (default tiny)")
    p.add_argument("--pool", choices=["mean"], default="mean")
    p.add_argument("--pad-to-30s", action="store_true",
                   help="feed Whisper's native 30-s padded windows instead of the actual length (slower; see docs)")
    p.add_argument("--batch-seconds", type=float, default=480.0,
                   help="padded seconds of audio per batch (batch rows × longest sample; default 480)")
    p.add_argument("--max-batch", type=int, default=256, help="at most this many samples per batch")
    p.add_argument("--sort-window", type=int, default=256,
                   help="samples sorted by duration together before batching (within a shard; default 256)")
    p.add_argument("--no-bucket", action="store_true", help="batch in stream order (no duration sort)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cuda, cuda:N, cpu")
    p.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                   help="model dtype (auto: bf16 on CUDA, fp32 on CPU); features and pooling are fp32")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights (--encoder tiny)")
    p.add_argument("--decode-workers", type=int, default=2, help="audio decoding threads (default 2)")
    p.add_argument("--name", help="output folder embeddings/NAME (default: the encoder name); one plain folder name "
                   "(no '/', '..')")
    p.add_argument("--allow-remote", metavar="SCHEMES",
                   help="URL schemes shards listed in the shard index may be read from, comma-separated (e.g. "
                   "s3,gs,https; default none: local paths, file:// and memory:// only)")
    p.add_argument("--part", metavar="I/N", help="process only shards with shard_id %% N == I (one process per "
                   "GPU); a final run without --part merges")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: this process (default); ray: shards streamed to Ray actors, one per GPU "
                   "(num_gpus=1), or one per CPU on a CPU-only cluster (pip install 'jadwal[ray]')")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="Ray cluster to join (e.g. auto, ray://head:10001); default $RAY_ADDRESS, else a local Ray")
    p.add_argument("--actors", type=int, metavar="N", help="--executor ray: number of actors (default: one per GPU, "
                   "else one per CPU)")
    p.add_argument("--force", action="store_true", help="discard existing outputs/partial results and recompute")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--sleep-per-shard", type=float, default=0.0, help=argparse.SUPPRESS)  # tests: slow runs down
    p.set_defaults(func=_embed)

    c = sub.add_parser(
        "cluster", parents=[common],
        help="faiss k-means over `jadwal embed` vectors → clusters/NAME/assignments.parquet (for ADS)",
        description="k-means (faiss; GPU when available) on a seeded sample of max_points_per_centroid × k "
        "vectors, then every sample assigned; writes assignments.parquet (id, cluster, distance), centroids.npy, "
        "report.json, sizes.png, projection.png.",
    )
    c.add_argument("-k", type=int, default=500, help="number of clusters (default 500; clamped to the number of "
                   "vectors with a warning)")
    c.add_argument("--embeddings", help="embeddings/NAME to cluster (default: the only one)")
    c.add_argument("--name", help="output folder clusters/NAME (default k<K>); the shard key is cluster:NAME")
    c.add_argument("--spherical", action="store_true", help="cosine k-means (vectors and centroids L2-normalized)")
    c.add_argument("--niter", type=int, default=20)
    c.add_argument("--max-points-per-centroid", type=int, default=256,
                   help="train on a seeded sample of at most this × k vectors (default 256)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--init", choices=["random", "kmeans++", "afkmc2"], default="random",
                   help="centroid initialization (faiss; default random)")
    c.add_argument("--gpu", default="auto", help="auto (GPU when faiss-gpu sees one), yes, no")
    c.add_argument("--threads", type=int, help="faiss OpenMP threads (default: all)")
    c.set_defaults(func=_cluster)
