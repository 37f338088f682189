"""``jadwal export lhotse`` read back by stock lhotse, and the HF ``datasets`` view of a shard set.

The workspace is real: wav files written with soundfile, manifests per the schema, shards written by
``jadwal.shards.write.write_shards`` (16-bit FLAC members).
"""
from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from jadwal.cli import main
from jadwal.manifests.schema import conform

SR = 16000
SET = "by-dataset"


def _manifest_rows(root, name, n, stereo=False, text_only=False):
    rng = np.random.default_rng(len(name) + n)
    rows = []
    for i in range(n):
        row = {"id": f"{name}/{i:03d}", "dataset": name, "task": "asr", "lang": "ar", "split": "train",
               "modality": "text" if text_only else "audio", "text": f"جملة {name} {i}", "speaker": f"spk{i % 2}",
               "label": "egy" if i % 2 else None, "extra": json.dumps({"i": i})}
        if not text_only:
            frames = int(rng.integers(int(0.1 * SR), int(0.4 * SR)))
            x = (0.3 * np.sin(np.arange(frames) * (0.02 + 0.003 * i))).astype("float32")
            x = np.stack([x, -0.5 * x], axis=1) if stereo else x
            path = root / "audio" / name / f"{i:03d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, x, SR, subtype="PCM_16")
            row.update(audio_path=str(path.relative_to(root)), offset_s=0.0, duration_s=frames / SR,
                       sample_rate=SR, channels=2 if stereo else 1)
        rows.append(row)
    (root / "manifests" / name).mkdir(parents=True, exist_ok=True)
    pq.write_table(conform(pa.Table.from_pylist(rows)), root / "manifests" / name / "manifest.parquet")
    return rows


@pytest.fixture(scope="module")
def shard_ws(tmp_path_factory):
    from jadwal.shards.write import write_shards

    root = tmp_path_factory.mktemp("export") / "ws"
    rows = _manifest_rows(root, "asr_a", 7) + _manifest_rows(root, "st_b", 3, stereo=True) + \
        _manifest_rows(root, "txt_c", 2, text_only=True)
    write_shards(root, by=["dataset"], max_samples=3, target_size=None, workers=1, progress=False)
    return root, {r["id"]: r for r in rows}


def _stored_audio(root, sample_id):
    """The sample's audio as the shard stores it (decoded from its member)."""
    s = pq.read_table(root / "shards" / SET / "samples.parquet").to_pylist()
    paths = dict(zip(*pq.read_table(root / "shards" / SET / "shards.parquet", columns=["shard_id", "path"]).to_pydict().values()))
    row = next(r for r in s if r["id"] == sample_id)
    m = next(m for m in row["members"] if m["name"] == "flac")
    with open(root / paths[row["shard_id"]], "rb") as f:
        f.seek(m["offset"])
        return sf.read(io.BytesIO(f.read(m["size"])), dtype="float32", always_2d=True)[0]


READ_BACK = r"""
import json, sys
sys.modules["jadwal"] = None   # prove the export needs no jadwal code
from lhotse import CutSet
out = {}
for cut in CutSet.from_shar(in_dir=sys.argv[1]):
    audio = cut.load_audio()
    sup = cut.supervisions[0]
    out[cut.id] = {"duration": cut.duration, "text": sup.text, "speaker": sup.speaker, "lang": sup.language,
                   "label": (sup.custom or {}).get("label"), "custom": {k: v for k, v in cut.custom.items() if k not in ("shard_origin", "shar_epoch")}, "shape": list(audio.shape),
                   "type": type(cut).__name__, "sum": float(abs(audio).sum())}
print(json.dumps(out))
"""


def test_export_lhotse_read_by_stock_lhotse(shard_ws, tmp_path):
    pytest.importorskip("lhotse")
    root, rows = shard_ws
    assert main(["export", "lhotse", "--set", SET, "-w", str(root), "--shard-size", "4"]) == 0
    out = root / "exports" / "lhotse" / SET / "shar"
    assert sorted(p.name for p in out.glob("*.jsonl.gz")) == ["cuts.000000.jsonl.gz", "cuts.000001.jsonl.gz",
                                                              "cuts.000002.jsonl.gz"]
    got = json.loads(subprocess.run([sys.executable, "-c", READ_BACK, str(out)], check=True, capture_output=True,
                                    text=True).stdout)
    audio_ids = sorted(k for k, r in rows.items() if r["modality"] == "audio")
    assert sorted(got) == audio_ids  # every audio sample; the 2 text-only ones are skipped
    for sid in audio_ids:
        r, g = rows[sid], got[sid]
        assert g["duration"] == pytest.approx(r["duration_s"], abs=1 / SR)
        assert (g["text"], g["speaker"], g["lang"], g["label"]) == (r["text"], r["speaker"], "ar", r["label"])
        assert g["custom"] == {"dataset": r["dataset"], "task": "asr", "split": "train", "extra": json.loads(r["extra"])}
        stereo = r["channels"] == 2
        assert g["type"] == ("MultiCut" if stereo else "MonoCut")
        assert g["shape"] == ([2, round(r["duration_s"] * SR)] if stereo else [1, round(r["duration_s"] * SR)])
    # the audio equals what the shard stores
    from lhotse import CutSet

    cuts = {c.id: c for c in CutSet.from_shar(in_dir=out)}
    for sid in ("asr_a/004", "st_b/001"):
        np.testing.assert_array_equal(cuts[sid].load_audio().T, _stored_audio(root, sid))
    meta = json.loads((out.parent / "meta.json").read_text())
    assert meta["stage"] == "export" and meta["counts"] == {"cuts": 10, "skipped_text_only": 2}
    # same inputs → same bytes
    again = tmp_path / "again"
    assert main(["export", "lhotse", "--set", SET, "-w", str(root), "--shard-size", "4", "-o", str(again)]) == 0
    for p in sorted(out.glob("*.*.*")):
        assert (again / "shar" / p.name).read_bytes() == p.read_bytes(), p.name
    # and jadwal's own lhotse importer reads the export back: same ids, texts and durations
    assert main(["manifest", "import", str(out), "--format", "lhotse", "-d", "back", "-t", "asr", "-w",
                 str(tmp_path / "ws2"), "--workers", "1", "--no-normalize"]) == 0
    back = {r["id"]: r for r in pq.read_table(tmp_path / "ws2" / "manifests" / "back" / "manifest.parquet").to_pylist()}
    assert sorted(back) == [f"back/{sid}" for sid in audio_ids]
    for sid in audio_ids:
        assert back[f"back/{sid}"]["text"] == rows[sid]["text"]
        assert back[f"back/{sid}"]["duration_s"] == pytest.approx(rows[sid]["duration_s"], abs=1 / SR)


def test_export_refuses_a_damaged_shard(shard_ws, tmp_path, capsys):
    pytest.importorskip("lhotse")
    import shutil

    root, _ = shard_ws
    ws = tmp_path / "ws"
    shutil.copytree(root, ws, ignore=shutil.ignore_patterns("exports", "audio"))
    sample = pq.read_table(ws / "shards" / SET / "samples.parquet").to_pylist()[1]
    shard = next(r["path"] for r in pq.read_table(ws / "shards" / SET / "shards.parquet").to_pylist()
                 if r["shard_id"] == sample["shard_id"])
    m = next(m for m in sample["members"] if m["name"] == "flac")
    with open(ws / shard, "r+b") as f:
        f.seek(m["offset"] + m["size"] // 2)
        b = f.read(1)
        f.seek(m["offset"] + m["size"] // 2)
        f.write(bytes([b[0] ^ 0xFF]))
    assert main(["export", "lhotse", "--set", SET, "-w", str(ws)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and sample["id"] in err and "sha1" in err
    assert not (ws / "exports" / "lhotse" / SET).exists()  # nothing half-written
    assert main(["export", "lhotse", "--set", "nope", "-w", str(ws)]) == 2
    assert "no shard set 'nope'" in capsys.readouterr().err


def test_hf_view_with_stock_datasets(shard_ws, tmp_path):
    import datasets

    from jadwal.export.hf import has_torchcodec, load_shard_set

    root, rows = shard_ws
    order = pq.read_table(root / "shards" / SET / "samples.parquet", columns=["id"])["id"].to_pylist()
    ds = load_shard_set(root, SET, decode=False, cache_dir=tmp_path / "cache")
    assert isinstance(ds, datasets.Dataset) and ds["id"] == order  # shard order
    assert isinstance(ds.features["audio"], datasets.Audio) and not ds.features["audio"].decode
    for rec in ds:
        r = rows[rec["id"]]
        assert (rec["text"], rec["speaker"], rec["dataset"], rec["label"]) == (r["text"], r["speaker"], r["dataset"], r["label"])
        if r["modality"] == "text":
            assert rec["audio"] is None
            continue
        x, sr = sf.read(io.BytesIO(rec["audio"]["bytes"]), dtype="float32", always_2d=True)
        assert rec["audio"]["path"].endswith(".flac") and sr == SR == rec["sample_rate"]
        assert x.shape == (round(r["duration_s"] * SR), r["channels"])
        assert rec["duration_s"] == pytest.approx(r["duration_s"], abs=1 / SR)
    stream = load_shard_set(root, SET, streaming=True, decode=False)
    assert isinstance(stream, datasets.IterableDataset) and [r["id"] for r in stream] == order
    first = next(r for r in stream if r["audio"] is not None)
    assert sf.read(io.BytesIO(first["audio"]["bytes"]))[0].shape[0] == round(rows[first["id"]]["duration_s"] * SR)
    if not has_torchcodec():
        with pytest.raises(ValueError, match="torchcodec"):
            load_shard_set(root, SET, decode=True)
