"""jadwal build text-twins: seeded fraction of a task's speech rows as modality=text rows."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jadwal.manifests.schema import MANIFEST_SCHEMA, conform
from jadwal.pipelines.text_twins import AUDIO_FIELDS, build_text_twins
from jadwal.workspace import Workspace

INTENTS = ["حجز_رحلة", "الطقس", "تشغيل_موسيقى", "إلغاء_حجز"]


def write_manifest(ws: Path, name: str, rows: list[dict]) -> None:
    d = ws / "manifests" / name
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(conform(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)), d / "manifest.parquet")


def rows_of(name: str, task: str, n: int, *, empty_every: int = 0) -> list[dict]:
    out = []
    for i in range(n):
        text = "" if empty_every and i % empty_every == 0 else f"أريد {INTENTS[i % 4]} رقم {i}"
        out.append(dict(
            id=f"{name}/{i:04d}", dataset=name, task=task, lang="ar", split="train", modality="audio",
            audio_path=f"audio/{name}/{i}.wav", offset_s=0.0, duration_s=2.5, sample_rate=16000, channels=1,
            text=text, text_raw=text, target=INTENTS[i % 4] if task == "slu" else None,
            instruction="ما هو قصد المتكلم؟" if task == "slu" else None, label=INTENTS[i % 4] if task == "slu" else None,
            speaker=f"s{i % 3}", recording_id=f"r{i}", audio_sha1=f"{i:040x}", extra=json.dumps({"k": i}),
        ))
    return out


@pytest.fixture()
def ws(tmp_path):
    write_manifest(tmp_path, "slu_a", rows_of("slu_a", "slu", 60, empty_every=20))
    write_manifest(tmp_path, "slu_b", rows_of("slu_b", "slu", 40))
    write_manifest(tmp_path, "asr_x", rows_of("asr_x", "asr", 30))
    return tmp_path


def read(ws: Path, name: str, what: str = "manifest") -> list[dict]:
    return pq.read_table(ws / "manifests" / name / f"{what}.parquet").to_pylist()


def test_text_twins_rows(ws):
    stats = build_text_twins(ws, "slu", fraction=0.5, seed=3)
    rows = read(ws, "slu_text")
    src = {r["id"]: r for n in ("slu_a", "slu_b") for r in read(ws, n)}
    assert stats["candidates"] == 97 and len(rows) == stats["selected"] == round(0.5 * 97)
    assert {json.loads(r["extra"])["source_dataset"] for r in rows} == {"slu_a", "slu_b"}
    for r in rows:
        s = src[r["id"].removesuffix("#text")]
        assert r["id"] == s["id"] + "#text" and r["dataset"] == "slu_text" and r["modality"] == "text"
        assert r["task"] == "slu" and all(r[f] is None for f in AUDIO_FIELDS)
        for f in ("text", "text_raw", "target", "instruction", "label", "lang", "split", "speaker"):
            assert r[f] == s[f]
        ex = json.loads(r["extra"])
        assert ex["source_id"] == s["id"] and ex["source_extra"] == json.loads(s["extra"])
    rejects = read(ws, "slu_text", "rejects")
    assert [r["reason"] for r in rejects] == ["empty_text"] * 3 and stats["rejected"] == {"empty_text": 3}
    meta = json.loads((ws / "manifests" / "slu_text" / "meta.json").read_text())
    assert meta["stage"] == "build.text_twins" and set(meta["inputs"]) == {
        f"manifests/{n}/manifest.parquet" for n in ("asr_x", "slu_a", "slu_b")}
    assert {r["path"]: r["status"] for r in Workspace(ws).stages()}["manifests/slu_text"] == "ok"


def test_seeded_fraction_deterministic_and_nested(ws):
    build_text_twins(ws, "slu", fraction=0.3, seed=1, name="t1")
    build_text_twins(ws, "slu", fraction=0.3, seed=1, name="t1b")
    build_text_twins(ws, "slu", fraction=0.3, seed=2, name="t2")
    build_text_twins(ws, "slu", fraction=0.6, seed=1, name="t3")
    ids = {n: [r["id"] for r in read(ws, n)] for n in ("t1", "t1b", "t2", "t3")}
    assert ids["t1"] == ids["t1b"]
    assert set(ids["t1"]) != set(ids["t2"])
    assert set(ids["t1"]) < set(ids["t3"])  # a larger fraction keeps a superset
    # rerun into the same name: byte-identical
    first = (ws / "manifests/t1/manifest.parquet").read_bytes()
    build_text_twins(ws, "slu", fraction=0.3, seed=1, name="t1")
    assert (ws / "manifests/t1/manifest.parquet").read_bytes() == first


def test_sources_and_other_task(ws):
    stats = build_text_twins(ws, "slu", sources=["slu_b"], fraction=1.0)
    assert stats["selected"] == 40 and stats["sources"] == ["slu_b"]
    stats = build_text_twins(ws, "asr", fraction=1.0)
    rows = read(ws, "asr_text")
    assert len(rows) == 30 and all(r["id"].endswith("#text") and r["task"] == "asr" for r in rows)
    # a text dataset is never twinned again (modality=text rows are skipped)
    stats = build_text_twins(ws, "asr", name="asr_text2")
    assert stats["candidates"] == 30
    with pytest.raises(FileNotFoundError):
        build_text_twins(ws, "slu", sources=["nope"])
    with pytest.raises(ValueError):
        build_text_twins(ws, "slu", fraction=0.0)


def test_cli(ws):
    from jadwal.cli import main

    assert main(["build", "text-twins", "-w", str(ws), "--task", "slu", "--source", "slu_a", "slu_b",
                 "--fraction", "0.25", "--seed", "7", "--name", "slu_t"]) == 0
    assert len(read(ws, "slu_t")) == round(0.25 * 97)
    assert main(["build", "text-twins", "-w", str(ws), "--task", "slu", "--source", "missing"]) == 2
