"""Manifest import throughput (``jadwal manifest import``), against a plain probing loop.

Two sources, both of real audio written with soundfile (16 kHz mono PCM-16 WAV):

* ``segments``: ``--files`` recordings of 2–40 s, referenced by ``--rows`` JSONL rows as random
  segments (offset/duration) or whole files — the long-form/ASR-corpus case, where each file must be
  probed and hashed once, not once per row.
* ``files``: ``--unique-files`` short clips (1–4 s), one row each — the Common-Voice-like case,
  where probing + hashing every file dominates and workers matter.

For each: the baseline (a plain loop calling ``soundfile.info`` on every row, what a naive importer
does; it neither validates, nor hashes, nor writes anything), the same loop plus a sha1 of the file
(the work jadwal does per file), and ``import_source`` with workers=1 and workers=2, each in a
fresh workspace.  Prints a Markdown table; speed-ups are against the first baseline.

    .venv/bin/python benchmarks/bench_import.py                 # 100k rows over 300 files + 3000 clips
    .venv/bin/python benchmarks/bench_import.py --rows 20000 --files 100 --unique-files 500   # quick
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SR = 16000


def write_files(d: Path, n: int, lo: float, hi: float, rng: np.random.Generator, prefix: str) -> list[tuple[str, float]]:
    import soundfile as sf

    d.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        dur = round(float(rng.uniform(lo, hi)), 3)
        x = (rng.standard_normal(int(dur * SR)) * 3000).astype(np.int16)
        name = f"{prefix}{i:05d}.wav"
        sf.write(d / name, x, SR, subtype="PCM_16")
        out.append((name, int(dur * SR) / SR))
    return out


def make_segments_source(root: Path, rows: int, files: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    recs = write_files(root / "audio", files, 2.0, 40.0, rng, "rec")
    with open(root / "rows.jsonl", "w", encoding="utf-8") as f:
        for i in range(rows):
            name, dur = recs[i] if i < files else recs[int(rng.integers(files))]
            row = {"id": f"u{i:07d}", "audio": f"audio/{name}", "text": "هذا نص تجريبي للاختبار رقم %d" % i,
                   "speaker": f"spk{i % 500}"}
            if i >= files:  # the first row of each file covers it whole, the others are segments
                seg = float(rng.uniform(0.5, min(15.0, dur)))
                row["offset"] = round(float(rng.uniform(0, dur - seg)), 3)
                row["duration"] = round(seg, 3)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return root / "rows.jsonl"


def make_files_source(root: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    clips = write_files(root / "clips", n, 1.0, 4.0, rng, "clip")
    with open(root / "rows.jsonl", "w", encoding="utf-8") as f:
        for i, (name, _) in enumerate(clips):
            f.write(json.dumps({"id": f"c{i:06d}", "audio": f"clips/{name}", "text": "جملة قصيرة",
                                "speaker": f"s{i % 300}"}, ensure_ascii=False) + "\n")
    return root / "rows.jsonl"


def baseline(src: Path, hash_files: bool = False) -> tuple[float, int, float]:
    """A plain loop: parse each row, ``soundfile.info`` its file (and sha1 it when ``hash_files``).
    Returns (seconds, rows, hours)."""
    import hashlib

    import soundfile as sf

    t = time.perf_counter()
    n, secs = 0, 0.0
    with open(src, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            path = str(src.parent / row["audio"])
            info = sf.info(path)
            if hash_files:
                with open(path, "rb") as fh:
                    hashlib.sha1(fh.read()).hexdigest()
            secs += row.get("duration", info.duration)
            n += 1
    return time.perf_counter() - t, n, secs / 3600


def run_import(src: Path, workers: int) -> tuple[float, object]:
    from jadwal.manifests import import_source

    ws = Path(tempfile.mkdtemp(prefix="bench_import_ws_"))
    try:
        t = time.perf_counter()
        s = import_source(ws, src, "jsonl", dataset="bench", task="asr", workers=workers, progress=False)
        return time.perf_counter() - t, s
    finally:
        shutil.rmtree(ws, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--unique-files", type=int, default=3000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", help="build the sources in this folder and keep them")
    args = ap.parse_args(argv)

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_import_"))
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}", flush=True)
    print(f"# command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    try:
        t = time.perf_counter()
        sources = [("segments", make_segments_source(tmp / "segments", args.rows, args.files, args.seed),
                    f"{args.rows:,} rows → {args.files} files")]
        if args.unique_files:
            sources.append(("files", make_files_source(tmp / "files", args.unique_files, args.seed + 1),
                            f"{args.unique_files:,} rows → {args.unique_files:,} files"))
        print(f"# sources written in {time.perf_counter() - t:.1f} s", flush=True)
        warm = tmp / "warmup"  # pay one-time imports (pyarrow.parquet, pandas, tqdm) outside the timings
        make_files_source(warm, 3, args.seed)
        run_import(warm / "rows.jsonl", 1)
        lines = ["| source | method | seconds | rows/s | row audio h/s | files/s | speed-up vs baseline |",
                 "|---|---|---:|---:|---:|---:|---:|"]
        for name, src, desc in sources:
            b_s, n, hours = baseline(src)
            nfiles = len(list((src.parent / ("audio" if name == "segments" else "clips")).iterdir()))
            lines.append(f"| {name} ({desc}) | baseline: `soundfile.info` per row | {b_s:.2f} | {n / b_s:,.0f} | "
                         f"{hours / b_s:,.1f} | — | 1.0× |")
            print(lines[-1], flush=True)
            if name == "segments":  # hashing the file per row would re-read ~70 GB; jadwal hashes it once
                h_s = None
            else:
                h_s, _, _ = baseline(src, hash_files=True)
            if h_s is not None:
                lines.append(f"| {name} ({desc}) | baseline: `soundfile.info` + sha1 per row | {h_s:.2f} | {n / h_s:,.0f} | "
                             f"{hours / h_s:,.1f} | — | {b_s / h_s:.1f}× |")
                print(lines[-1], flush=True)
            for w in args.workers:
                secs, s = run_import(src, w)
                assert s.rows_seen == n and s.imported + s.rejected == n
                lines.append(f"| {name} ({desc}) | `import_source` workers={w} | {secs:.2f} | {n / secs:,.0f} | "
                             f"{s.hours / secs:,.1f} | {s.audio_files / secs:,.0f} | {b_s / secs:.1f}× |")
                print(lines[-1], flush=True)
                if s.rejected:
                    print(f"#   rejects: {s.rejects}", flush=True)
            print(f"#   {name}: {hours:.1f} h of row audio, {nfiles} files", flush=True)
        print("\n".join(lines))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
