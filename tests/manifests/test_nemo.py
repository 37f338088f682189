"""``--format nemo``: a NeMo-style manifest (JSONL with audio_filepath/duration/offset/text/…)."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import soundfile as sf

from jadwal.cli import main
from jadwal.manifests import import_source

SR = 16000


def _wav(path, seconds, freq):
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * SR))
    sf.write(path, (0.2 * np.sin(2 * np.pi * freq * np.arange(n) / SR)).astype("float32"), SR, subtype="PCM_16")
    return path


def _manifest(tmp_path):
    d = tmp_path / "nemo"
    long = _wav(d / "wavs" / "long.wav", 4.0, 300)
    _wav(d / "wavs" / "short.wav", 1.5, 400)
    rows = [
        # NeMo ASR: whole file (duration = the file), relative path (to the manifest's folder)
        {"audio_filepath": "wavs/short.wav", "duration": 1.5, "text": "مرحبا بكم"},
        # segments of one long file: offset + duration, absolute path, per-row language
        {"audio_filepath": str(long), "offset": 0.5, "duration": 1.0, "text": "hello there", "lang": "en"},
        {"audio_filepath": str(long), "offset": 2.0, "duration": 1.25, "text": "الجزء الثاني", "lang": "ar"},
        # SpeechLLM / AQA style: context (→ instruction) + answer (→ target), and a label
        {"audio_filepath": "wavs/short.wav", "offset": 0.0, "duration": 1.0, "context": "ما لون السماء؟",
         "answer": "زرقاء", "label": "question", "text": "السماء"},
        # a duration beyond the file's end: rejected, never cut silently
        {"audio_filepath": "wavs/short.wav", "offset": 1.0, "duration": 2.0, "text": "طويل"},
        {"audio_filepath": "wavs/none.wav", "duration": 1.0, "text": "مفقود"},
    ]
    p = d / "train_manifest.json"
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return p


def test_nemo_manifest(ws, tmp_path):
    p = _manifest(tmp_path)
    s = import_source(ws, p, "nemo", dataset="nemo", task="asr", workers=1)
    m = pq.read_table(ws.path("manifests", "nemo", "manifest.parquet")).to_pylist()
    r = pq.read_table(ws.path("manifests", "nemo", "rejects.parquet")).to_pylist()
    got = sorted((x["audio_path"].rsplit("/", 1)[-1], x["offset_s"], x["duration_s"], x["text_raw"], x["lang"],
                  x["instruction"], x["target"], x["label"], x["split"]) for x in m)
    assert got == [
        ("long.wav", 0.5, 1.0, "hello there", "en", None, None, None, "train"),
        ("long.wav", 2.0, 1.25, "الجزء الثاني", "ar", None, None, None, "train"),
        ("short.wav", 0.0, 1.0, "السماء", "ar", "ما لون السماء؟", "زرقاء", "question", "train"),
        ("short.wav", 0.0, 1.5, "مرحبا بكم", "ar", None, None, None, "train"),
    ]
    assert sorted(x["reason"] for x in r) == ["missing_audio", "segment_out_of_range"]
    assert (s.rows_seen, s.imported, s.rejected) == (6, 4, 2)


def test_nemo_cli(ws, tmp_path, capsys):
    p = _manifest(tmp_path)
    rc = main(["manifest", "import", str(p), "--format", "nemo", "-d", "nm", "-t", "asr", "-w", str(ws.root),
               "--workers", "1", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "6 rows seen, 4 imported" in out
