"""Every reject reason, row accounting, idempotent re-import, parallel == serial, readability
without jadwal, meta.json."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from jadwal.manifests import core, import_source
from jadwal.manifests.schema import REJECT_REASONS


@pytest.fixture
def sink(tmp_path, write_wav):
    """A JSONL source that produces every reject reason once, plus accepted rows."""
    d = tmp_path / "sink"
    write_wav(d / "a.wav", 2.0, 300)
    write_wav(d / "b.wav", 5.0, 310)
    write_wav(d / "c.flac", 1.0, 320)
    write_wav(d / "empty.wav", 0.0, 330)
    (d / "garbage.wav").write_bytes(b"this is not audio at all" * 10)
    lines = [
        {"id": "ok1", "audio": "a.wav", "text": "نص صحيح"},
        {"id": "ok2", "audio": "c.flac", "text": "نص آخر"},
        {"id": "ok3", "audio": "b.wav", "offset": 1.0, "duration": 2.0, "text": "مقطع"},
        {"id": "ok4", "audio": "b.wav", "offset": 3.0, "duration": 2.005, "text": "حتى النهاية تقريبا"},  # clipped
        {"id": "missing", "audio": "nope.wav", "text": "س"},
        {"id": "unreadable", "audio": "garbage.wav", "text": "س"},
        {"id": "zero", "audio": "empty.wav", "text": "س"},
        {"id": "short", "audio": "b.wav", "offset": 0.0, "duration": 0.2, "text": "س"},
        {"id": "long", "audio": "b.wav", "text": "س"},
        {"id": "beyond", "audio": "a.wav", "offset": 1.5, "duration": 1.0, "text": "س"},
        {"id": "empty", "audio": "a.wav", "offset": 0.5, "duration": 1.0, "text": "؟ ، !"},
        {"id": "ok1", "audio": "c.flac", "offset": 0.1, "duration": 0.5, "text": "نفس المعرف"},
        {"id": "dupaudio", "audio": "b.wav", "offset": 1.0, "duration": 2.0, "text": "نفس الصوت"},
        {"id": "badrow", "audio": "a.wav", "offset": "abc", "text": "س"},
    ]
    p = d / "rows.jsonl"
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines).encode()
    data += b'{"id": "badenc", "audio": "a.wav", "text": "\xd9\x85\xff\xfe"}\n'
    p.write_bytes(data)
    return p


EXPECTED = {
    "sink/missing": "missing_audio",
    "sink/unreadable": "unreadable_audio",
    "sink/zero": "zero_length",
    "sink/short": "too_short",
    "sink/long": "too_long",
    "sink/beyond": "segment_out_of_range",
    "sink/badenc": "bad_encoding",
    "sink/empty": "empty_text",
    "sink/ok1": "duplicate_id",
    "sink/dupaudio": "duplicate_audio",
    "sink/badrow": "bad_row",
}


def run(ws, src, **kw):
    kw = {"dataset": "sink", "task": "asr", "min_duration": 0.5, "max_duration": 4.0, "workers": 1, **kw}
    return import_source(ws, src, "jsonl", **kw)


def test_every_reject_reason(ws, sink):
    s = run(ws, sink)
    rej = pq.read_table(ws.path("manifests", "sink", "rejects.parquet")).to_pylist()
    got = {r["id"]: r["reason"] for r in rej}
    assert got == EXPECTED
    # every classic reason code is exercised here (URL, command and audio-integrity codes in
    # tests/reliability/test_importers_hostile.py and the audio tests)
    assert set(got.values()) == set(EXPECTED.values()) and set(EXPECTED.values()) <= set(REJECT_REASONS)
    assert [r["source"] for r in rej] == [f"rows.jsonl:{n}" for n in range(5, 16)]  # source order
    detail = {r["id"]: r["detail"] for r in rej}
    assert detail["sink/beyond"] == "segment ends at 2.500s, file is 2.000s long"
    assert detail["sink/short"] == "0.200s < min 0.5s"
    assert detail["sink/long"] == "5.000s > max 4.0s"
    assert detail["sink/dupaudio"] == "same audio as 'sink/ok3'"
    assert detail["sink/badrow"] == "offset must be a number, got 'abc'"
    assert detail["sink/empty"] == "transcript empty after normalization (raw '؟ ، !')"
    badenc = next(r for r in rej if r["id"] == "sink/badenc")
    assert "\\xff\\xfe" in badenc["row"] and "م" in badenc["row"]
    # accounting: nothing dropped silently
    assert (s.rows_seen, s.imported, s.rejected) == (15, 4, 11)
    stats = json.loads(ws.path("manifests", "sink", "stats.json").read_text())
    assert stats["rows_seen"] == stats["imported"] + stats["rejected"] == 15
    assert sum(stats["rejects"].values()) == 11 and stats["rejects"]["duplicate_id"] == 1
    m = {r["id"]: r for r in pq.read_table(ws.path("manifests", "sink", "manifest.parquet")).to_pylist()}
    assert sorted(m) == ["sink/ok1", "sink/ok2", "sink/ok3", "sink/ok4"]
    assert m["sink/ok4"]["duration_s"] == 2.0  # overshoot within tolerance clipped to the end
    assert m["sink/ok1"]["audio_path"].endswith("sink/a.wav")


def test_idempotent_reimport_is_byte_identical(ws, sink, tmp_path):
    run(ws, sink)
    base = ws.path("manifests", "sink")
    first = {n: (base / n).read_bytes() for n in ("manifest.parquet", "rejects.parquet", "stats.json")}
    run(ws, sink)
    for n, data in first.items():
        assert (base / n).read_bytes() == data, n
    # another workspace, same source: same ids and the same manifest bytes except absolute paths
    from jadwal.workspace import Workspace

    ws2 = Workspace(tmp_path / "ws2")
    run(ws2, sink)
    t1 = pq.read_table(base / "manifest.parquet")
    t2 = pq.read_table(ws2.path("manifests", "sink", "manifest.parquet"))
    assert t1.equals(t2)


def test_parallel_probing_matches_serial(ws, sink, monkeypatch, tmp_path):
    from jadwal.workspace import Workspace

    monkeypatch.setattr(core, "INLINE_PROBE_FILES", 0)  # force the process pool even for 6 files
    monkeypatch.setattr(core, "PROBE_BATCH", 1)
    monkeypatch.setattr(core, "CHUNK_ROWS", 3)  # many chunks in flight
    run(ws, sink, workers=2)
    ws1 = Workspace(tmp_path / "serial")
    monkeypatch.setattr(core, "CHUNK_ROWS", 2048)
    run(ws1, sink, workers=1)
    for n in ("manifest.parquet", "rejects.parquet"):
        assert ws.path("manifests", "sink", n).read_bytes() == ws1.path("manifests", "sink", n).read_bytes()


def test_readable_without_jadwal(ws, sink):
    import pandas as pd
    import pyarrow.parquet as pq2
    from datasets import Dataset

    run(ws, sink)
    path = str(ws.path("manifests", "sink", "manifest.parquet"))
    df = pd.read_parquet(path)
    assert list(df["id"]) == ["sink/ok1", "sink/ok2", "sink/ok3", "sink/ok4"]
    assert df["duration_s"].sum() == pytest.approx(2.0 + 1.0 + 2.0 + 2.0)
    assert pq2.read_table(path).num_rows == 4
    ds = Dataset.from_parquet(path, cache_dir=str(ws.root / ".hf_cache"))
    assert ds.num_rows == 4 and ds[2]["text"] == "مقطع" and ds[2]["offset_s"] == 1.0
    rej = pd.read_parquet(str(ws.path("manifests", "sink", "rejects.parquet")))
    assert len(rej) == 11 and set(rej["reason"]) == set(EXPECTED.values())


def test_meta_json_and_status(ws, sink):
    run(ws, sink)
    meta = ws.read_meta("manifests/sink")
    assert meta["stage"] == "manifests"
    assert list(meta["inputs"]) == [str(sink)]  # outside the workspace → absolute
    assert sorted(meta["outputs"]) == ["manifests/sink/manifest.parquet", "manifests/sink/rejects.parquet",
                                       "manifests/sink/stats.json"]
    assert meta["config"]["min_duration"] == 0.5 and meta["config"]["normalize"]["unify_alef"] is True
    assert meta["counts"] == {"rows_seen": 15, "imported": 4, "rejected": 11}
    assert [r["status"] for r in ws.stages() if r["name"] == "sink"] == ["ok"]
    sink.write_text(sink.read_text(errors="ignore") + '{"id": "new", "audio": "a.wav", "text": "جديد"}\n')
    assert [r["status"] for r in ws.stages() if r["name"] == "sink"] == ["stale"]


def test_no_hash_skips_duplicate_audio(ws, sink):
    s = run(ws, sink, hash_audio=False)
    assert "duplicate_audio" not in s.rejects and s.imported == 5
    t = pq.read_table(ws.path("manifests", "sink", "manifest.parquet"))
    assert t["audio_sha1"].null_count == 5


def test_require_and_no_normalize(ws, sink):
    # without normalization the punctuation-only transcript is not empty
    s = run(ws, sink, normalize=False)
    assert "empty_text" not in s.rejects
    t = {r["id"]: r for r in pq.read_table(ws.path("manifests", "sink", "manifest.parquet")).to_pylist()}
    assert t["sink/empty"]["text"] == "؟ ، !" and t["sink/ok2"]["text"] == "نص آخر"
    # a classification task needs labels: every row that passes encoding/number checks lacks one
    s = run(ws, sink, task="ser")
    assert s.imported == 0 and s.rejects == {"bad_encoding": 1, "empty_text": 13, "bad_row": 1}


def test_bad_arguments(ws, sink):
    with pytest.raises(ValueError, match="unknown format"):
        import_source(ws, sink, "wav", dataset="x", task="asr")
    with pytest.raises(ValueError, match="dataset name"):
        import_source(ws, sink, "jsonl", dataset="a b", task="asr")
    with pytest.raises(FileNotFoundError):
        import_source(ws, sink.parent / "nope", "jsonl", dataset="x", task="asr")
    with pytest.raises(ValueError, match="split ratios"):
        import_source(ws, sink, "jsonl", dataset="x", task="asr", split_ratios="a,b")
    with pytest.raises(ValueError, match="unknown column field"):
        import_source(ws, sink, "jsonl", dataset="x", task="asr", columns={"transcript": "text"})
    with pytest.raises(FileNotFoundError, match="wav.scp"):
        import_source(ws, sink.parent, "kaldi", dataset="x", task="asr")


def test_hf_reimport_removes_stale_extracted_audio(ws, hf_hub):
    import_source(ws, hf_hub, "hf", dataset="hub", task="asr", workers=1)
    audio = ws.path("manifests", "hub", "audio")
    stale = audio / "zz" / "old.wav"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")
    before = ws.path("manifests", "hub", "manifest.parquet").read_bytes()
    import_source(ws, hf_hub, "hf", dataset="hub", task="asr", workers=1)
    assert not stale.exists() and not stale.parent.exists()
    assert ws.path("manifests", "hub", "manifest.parquet").read_bytes() == before
    assert len([p for p in audio.rglob("*") if p.is_file()]) == 5


def test_api_from_unguarded_script_with_workers(tmp_path, sink):
    """A user script without `if __name__ == "__main__"` can use workers > 1 (no re-import of __main__)."""
    import subprocess
    import sys

    script = tmp_path / "user_script.py"
    script.write_text(
        "from jadwal.manifests import core, import_source\n"
        "core.INLINE_PROBE_FILES = 0\n"
        f"s = import_source({str(tmp_path / 'ws_script')!r}, {str(sink)!r}, 'jsonl', dataset='sink', task='asr',"
        " workers=2, min_duration=0.5, max_duration=4.0)\n"
        "print('RESULT', s.imported, s.rejected)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("RESULT") == 1 and "RESULT 4 11" in out.stdout
