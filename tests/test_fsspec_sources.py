"""Audio sources on object storage: a manifest listing fsspec URLs (here `memory://` and `file://`, no
cloud mock) is probed and sharded through fsspec, with the same results as the same audio on disk."""
import json

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from jadwal.manifests import import_source
from jadwal.shards.write import write_shards


def _audio(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.3 * np.sin(np.arange(int(rng.integers(4000, 12000))) * (0.01 + 0.002 * i))).astype(np.float32)
            for i in range(n)]


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_audio_urls_are_probed_and_sharded_like_local_files(tmp_path, scheme):
    waves = _audio(6, 0)
    local_dir = tmp_path / "local"
    local_dir.mkdir()
    base = f"memory://bucket-{tmp_path.name}/audio" if scheme == "memory" else f"file://{tmp_path}/remote"
    fs, root = fsspec.core.url_to_fs(base)
    fs.makedirs(root, exist_ok=True)
    rows_local, rows_url = [], []
    for i, w in enumerate(waves):
        sf.write(local_dir / f"{i}.wav", w, 16000, subtype="PCM_16")
        with fs.open(f"{root}/{i}.wav", "wb") as f:
            f.write((local_dir / f"{i}.wav").read_bytes())
        common = {"id": f"u{i}", "text": f"جملة رقم {i}", "speaker": f"s{i % 2}"}
        rows_local.append({**common, "audio": str(local_dir / f"{i}.wav")})
        rows_url.append({**common, "audio": f"{base}/{i}.wav"})
    rows_url.append({"id": "gone", "text": "مفقود", "audio": f"{base}/missing.wav"})
    for name, rows in (("local", rows_local), ("url", rows_url)):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
        ws = tmp_path / f"ws_{name}"
        s = import_source(ws, tmp_path / f"{name}.jsonl", "jsonl", dataset="d", task="asr", workers=1)
        assert s.imported == 6
        write_shards(ws, by=["dataset"], max_samples=4, target_size=None, workers=1, progress=False)
    a = pq.read_table(tmp_path / "ws_local" / "manifests" / "d" / "manifest.parquet").to_pandas()
    b = pq.read_table(tmp_path / "ws_url" / "manifests" / "d" / "manifest.parquet").to_pandas()
    for col in ("id", "duration_s", "sample_rate", "channels", "audio_sha1", "text", "split"):
        assert a[col].tolist() == b[col].tolist(), col
    assert all(p.startswith(base) for p in b["audio_path"])
    rej = pq.read_table(tmp_path / "ws_url" / "manifests" / "d" / "rejects.parquet").to_pandas()
    assert rej["reason"].tolist() == ["missing_audio"]
    # the shards hold the same audio bytes and rows
    import tarfile

    def members(path):
        out = {}
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                data = tar.extractfile(m).read()
                if m.name.endswith(".json"):
                    row = json.loads(data)
                    row.pop("audio_path")  # where the audio came from
                    row.pop("recording_id")  # derived from the path (relative to the source folder)
                    data = row
                out[m.name] = data
        return out

    shards = sorted((tmp_path / "ws_local" / "shards" / "by-dataset").rglob("*.tar"))
    assert len(shards) == 2
    for shard in shards:
        rel = shard.relative_to(tmp_path / "ws_local")
        assert members(tmp_path / "ws_url" / rel) == members(shard), rel


def test_embed_reads_shards_from_a_url(tmp_path):
    from jadwal.cli import main

    waves = _audio(5, 1)
    ws = tmp_path / "ws"
    (tmp_path / "a").mkdir()
    rows = []
    for i, w in enumerate(waves):
        sf.write(tmp_path / "a" / f"{i}.wav", w, 16000, subtype="PCM_16")
        rows.append({"id": f"e{i}", "text": "نص", "audio": str(tmp_path / "a" / f"{i}.wav")})
    (tmp_path / "src.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    import_source(ws, tmp_path / "src.jsonl", "jsonl", dataset="d", task="asr", workers=1)
    url = f"file://{tmp_path}/bucket/shards"
    write_shards(ws, by=["dataset"], max_samples=2, target_size=None, workers=1, progress=False,
                 set_name="remote", output=url)
    paths = pq.read_table(ws / "shards" / "remote" / "shards.parquet").column("path").to_pylist()
    assert paths and all(p.startswith(url) for p in paths)
    assert main(["embed", "-w", str(ws), "--set", "remote", "--encoder", "tiny", "--device", "cpu",
                 "--name", "e", "--no-progress"]) == 0
    ids = pq.read_table(ws / "embeddings" / "e" / "ids.parquet").column("id").to_pylist()
    assert sorted(ids) == [f"d/e{i}" for i in range(5)]
