"""Helpers for the shard tests: small real workspaces (wav files written with soundfile, manifests conforming to
MANIFEST_SCHEMA under ``manifests/<ds>/manifest.parquet``), built without the manifests importers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from jadwal.manifests.schema import MANIFEST_SCHEMA, conform


def write_wav(path: Path, seconds: float, sr: int, channels: int = 1, seed: int = 0, subtype="PCM_16") -> None:
    rng = np.random.default_rng(seed)
    n = round(seconds * sr)
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed % 400) * t) + 0.02 * rng.standard_normal(n)
    x = np.stack([x * (1 - 0.3 * c) for c in range(channels)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), sr, subtype=subtype)


def write_manifest(ws: Path, dataset: str, rows: list[dict]) -> Path:
    p = ws / "manifests" / dataset / "manifest.parquet"
    p.parent.mkdir(parents=True, exist_ok=True)
    table = conform(pa.Table.from_pylist(rows))
    assert table.schema == MANIFEST_SCHEMA
    pq.write_table(table, p)
    return p


def audio_row(ws: Path, dataset: str, sid: str, *, task="asr", seconds=0.5, sr=16000, channels=1, seed=0,
              label=None, rel=True, offset_s=None, duration_s=None, file_seconds=None, path=None, **kw) -> dict:
    if path is None:
        path = ws / "audio" / dataset / f"{abs(hash(sid)) % 10**12}_{seed}.wav"
        write_wav(path, file_seconds or seconds, sr, channels, seed)
    return {
        "id": sid,
        "dataset": dataset,
        "task": task,
        "lang": "ar",
        "split": "train",
        "modality": "audio",
        "audio_path": path.relative_to(ws).as_posix() if rel and path.is_relative_to(ws) else str(path),
        "offset_s": offset_s,
        "duration_s": duration_s if duration_s is not None else seconds,
        "sample_rate": sr,
        "channels": channels,
        "text": f"نص {sid}",
        "text_raw": f"نص {sid}",
        "label": label,
        "speaker": f"spk{seed % 3}",
        "extra": json.dumps({"seed": seed}),
        **kw,
    }


def text_row(dataset: str, sid: str, task="asr") -> dict:
    return {"id": sid, "dataset": dataset, "task": task, "lang": "ar", "split": "train", "modality": "text",
            "text": f"نص فقط {sid}"}


# -- index checks shared by the tests -------------------------------------------------------------
def read_set(ws: Path, name: str):
    d = ws / "shards" / name
    return pq.read_table(d / "samples.parquet"), pq.read_table(d / "shards.parquet")


def check_index(ws: Path, name: str) -> pa.Table:
    """Check samples.parquet/shards.parquet against the bytes of every shard (offsets read directly)."""
    import hashlib
    import io
    import tarfile

    from jadwal.shards.schema import SAMPLES_SCHEMA, SHARDS_SCHEMA, member_key

    samples, shards = read_set(ws, name)
    assert samples.schema.names[: len(SAMPLES_SCHEMA)] == SAMPLES_SCHEMA.names
    for f in SAMPLES_SCHEMA:
        assert samples.schema.field(f.name).type == f.type, f.name
    assert shards.schema.names == SHARDS_SCHEMA.names
    key = [(s, p) for s, p in zip(samples.column("shard_id").to_pylist(), samples.column("pos").to_pylist())]
    assert key == sorted(key) and len(set(key)) == len(key)
    rows = samples.to_pylist()
    by_shard = {}
    for r in rows:
        by_shard.setdefault(r["shard_id"], []).append(r)
    assert sorted(by_shard) == sorted(s for s in shards.column("shard_id").to_pylist() if s in by_shard)
    for sh in shards.to_pylist():
        path = ws / sh["path"]
        assert sh["path"].startswith(f"shards/{name}/") and not Path(sh["path"]).is_absolute()
        data = path.read_bytes()
        assert len(data) == sh["bytes"]
        assert hashlib.sha256(data).hexdigest() == sh["sha256"]
        srows = by_shard.get(sh["shard_id"], [])
        assert sh["num_samples"] == len(srows)
        expect = 0
        for i, r in enumerate(srows):
            assert r["pos"] == i and r["stream"] == sh["stream"]
            assert r["offset"] == expect, "samples are contiguous from the start of the tar"
            seg = data[r["offset"] : r["offset"] + r["size"]]
            with tarfile.open(fileobj=io.BytesIO(seg + b"\0" * 1024), mode="r:") as tf:
                infos = tf.getmembers()
            assert [ti.name for ti in infos] == [f"{member_key(r['id'])}.{m['name']}" for m in r["members"]]
            for ti, m in zip(infos, r["members"]):
                assert r["offset"] + ti.offset_data == m["offset"] and ti.size == m["size"]
            js = next(m for m in r["members"] if m["name"] == "json")
            obj = json.loads(data[js["offset"] : js["offset"] + js["size"]].decode("utf-8"))
            assert obj["id"] == r["id"]
            expect = r["offset"] + r["size"]
        assert set(data[expect:]) <= {0}, "only the end-of-archive zeros follow the last sample"
    return samples
