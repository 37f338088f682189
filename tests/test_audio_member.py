"""The audio-member contract (``jadwal.shards.schema.AUDIO_MEMBER_SUFFIXES`` / ``is_audio_member``),
used by the shard writer, ``jadwal embed``, the export reader and the loader: an ``.oga`` file kept in
its original format is embedded AND loaded (before the contract had one home, embed's own list lacked
``oga`` and ADS silently dropped the sample)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from jadwal.manifests.schema import conform
from jadwal.shards.audio import FORMAT_SUFFIXES
from jadwal.shards.schema import AUDIO_MEMBER_SUFFIXES, is_audio_member

SR = 16000


def test_rule():
    assert is_audio_member("abc.oga") and is_audio_member("x.FLAC") and is_audio_member("w64")
    assert not is_audio_member("abc.json") and not is_audio_member("abc.txt") and not is_audio_member("a.m4a")
    # exactly the suffixes the writer can produce (+ opus), nothing it never writes
    assert {s for names in FORMAT_SUFFIXES.values() for s in names} | {"opus"} == set(AUDIO_MEMBER_SUFFIXES)


@pytest.fixture(scope="module")
def oga_ws(tmp_path_factory):
    from jadwal.shards import write_shards

    ws = tmp_path_factory.mktemp("oga_ws")
    rng = np.random.default_rng(0)
    rows = []
    for i, ext in enumerate(["oga", "oga", "wav", "w64"]):
        p = ws / "audio" / f"s{i}.{ext}"
        p.parent.mkdir(parents=True, exist_ok=True)
        n = int(SR * (0.6 + 0.2 * i))
        x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / SR) + 0.01 * rng.standard_normal(n)).astype(np.float32)
        if ext == "oga":
            sf.write(p, x, SR, format="OGG", subtype="VORBIS")
        else:
            sf.write(p, x, SR, subtype="PCM_16", format=ext.upper())
        n = sf.info(p).frames
        rows.append(dict(id=f"s{i}", dataset="d", task="asr", lang="ar", split="train", modality="audio",
                         audio_path=p.relative_to(ws).as_posix(), duration_s=n / SR, sample_rate=SR, channels=1,
                         text="نص"))
    out = ws / "manifests" / "d" / "manifest.parquet"
    out.parent.mkdir(parents=True)
    pq.write_table(conform(pa.Table.from_pylist(rows)), out)
    write_shards(ws, by=["dataset"], set_name="by-dataset", audio_format="original", workers=1, progress=False)
    return ws


def test_oga_sample_is_written_embedded_and_loaded(oga_ws):
    from jadwal.pipelines.embed import EmbedConfig, embed_shard_set, open_embeddings
    from jadwal.sched_index.planner import build_index
    from jadwal.trainer import ScheduleDataset

    samples = pq.read_table(oga_ws / "shards/by-dataset/samples.parquet").to_pylist()
    suffixes = {r["id"]: [m["name"] for m in r["members"] if m["name"] != "json"] for r in samples}
    assert suffixes["s0"] == ["oga"] and suffixes["s1"] == ["oga"] and suffixes["s3"] == ["w64"], suffixes

    assert embed_shard_set(oga_ws, EmbedConfig(batch_seconds=8.0), name="e", progress=False)["status"] == "done"
    ids, vectors, meta = open_embeddings(oga_ws, "e")
    assert sorted(ids) == ["s0", "s1", "s2", "s3"] and meta["audio_samples"] == 4
    assert np.isfinite(vectors.astype(np.float32)).all()

    build_index(oga_ws, {"seed": 1, "shards": "by-dataset", "batch_size": 2, "epochs": 1, "world_size": 1,
                         "readers_per_rank": 1, "buffer": 0, "phases": [{"policy": "mix", "by": "dataset"}]},
                "m", progress=False)
    got = {}
    for b in ScheduleDataset(oga_ws, "m", rank=0, world_size=1, prefetch=0):
        for sid, a in zip(b["ids"], b["audio"]):
            got[sid] = a
    assert sorted(got) == ["s0", "s1", "s2", "s3"]
    for sid in ("s0", "s1", "s3"):
        want, sr = sf.read(oga_ws / "audio" / f"s{sid[1:]}.{'w64' if sid == 's3' else 'oga'}", dtype="float32")
        assert got[sid] is not None and got[sid].shape[-1] == len(want)
        np.testing.assert_allclose(got[sid].reshape(-1).numpy(), want, atol=1e-4)
