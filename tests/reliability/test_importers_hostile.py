"""Hostile and malformed sources, generated at test time, against every importer (issues 14 and 15).

For each bad input: the row is a reject with its reason, every good row of the same source is
imported unchanged (decoded samples compared with what was written), nothing reaches the user as a
traceback, and no URL row opens a connection unless its scheme was allowed.
"""
from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from jadwal.access import Access
from jadwal.cli import main
from jadwal.manifests import core, import_source
from jadwal.manifests.importers import tabular
from jadwal.workspace import Workspace

SR = 16000
BIG = 200_000  # characters: over csv's default field limit (131,072)


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path / "ws")


class Listener:
    """A TCP listener on 127.0.0.1 that counts the connections it accepts (and closes them)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.close()


def tone(seconds: float, freq: float) -> np.ndarray:
    n = int(round(seconds * SR))
    return np.round(8000 * np.sin(2 * np.pi * freq * np.arange(n) / SR)).astype(np.int16)


class Corpus:
    """Good audio files written at test time; remembers their samples for the unchanged-rows check."""

    def __init__(self, root: Path):
        self.root = root
        self.samples: dict[str, np.ndarray] = {}

    def wav(self, rel: str, seconds: float = 1.0, freq: float = 300.0) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        x = tone(seconds, freq)
        sf.write(p, x, SR, subtype="PCM_16")
        self.samples[str(p.resolve())] = x
        return p


@pytest.fixture
def corpus(tmp_path):
    return Corpus(tmp_path / "src")


def load(ws, name):
    m = {r["id"]: r for r in pq.read_table(ws.path("manifests", name, "manifest.parquet")).to_pylist()}
    r = pq.read_table(ws.path("manifests", name, "rejects.parquet")).to_pylist()
    return m, r


def assert_unchanged(ws, corpus: Corpus, rows: dict, texts: dict[str, str] | None = None):
    """Every accepted row decodes to exactly the samples written for its file (whole file rows)."""
    for rid, row in rows.items():
        path = str(Path(ws.resolve(row["audio_path"])).resolve())
        want = corpus.samples[path]
        got, sr = sf.read(path, dtype="int16")
        assert sr == row["sample_rate"] == SR, rid
        start = round(row["offset_s"] * SR)
        assert np.array_equal(got[start:start + round(row["duration_s"] * SR)], want[start:start + round(row["duration_s"] * SR)]), rid
        if texts and rid in texts:
            assert row["text_raw"] == texts[rid], rid


def reasons(rejects) -> dict[str, str]:
    return {r["source"]: r["reason"] for r in rejects}


def cli_import(ws, src, fmt, name, *extra, capsys=None):
    rc = main(["manifest", "import", str(src), "-f", fmt, "-d", name, "-t", "asr", "-w", str(ws.root),
               "--workers", "1", "--no-progress", *extra])
    if capsys is not None:
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
    return rc


# -- CSV / TSV --------------------------------------------------------------------------------------
def test_csv_row_isolation(ws, corpus, capsys):
    for i in range(4):
        corpus.wav(f"g{i}.wav", 1.0 + 0.25 * i, 300 + 40 * i)
    big = "ب" * BIG
    lines = [
        "id,audio,text",
        "g0,g0.wav,أول",
        f"g1,g1.wav,{big}",  # a field over csv's default 131,072-character limit: read, not an abort
        'bad1,g2.wav,"never closed',  # unterminated quote: this row only
        "g2,g2.wav,الصف التالي",  # ... must not be swallowed into bad1's text
        'bad2,g3.wav,"x"y',  # stray quote
        "bad3,g3.wav,نص,زائد",  # one field too many
        "bad4,g3.wav",  # one field short
        "g3,g3.wav,\"مقتبس, بفاصلة\"",
    ]
    src = corpus.root / "rows.csv"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert cli_import(ws, src, "csv", "c", capsys=capsys) == 0
    m, r = load(ws, "c")
    assert sorted(m) == ["c/g0", "c/g1", "c/g2", "c/g3"]
    assert reasons(r) == {"rows.csv:4": "bad_row", "rows.csv:6": "bad_row", "rows.csv:7": "bad_row",
                          "rows.csv:8": "bad_row"}
    assert "unterminated" in r[0]["detail"] and "never closed" in r[0]["row"]
    assert_unchanged(ws, corpus, m, {"c/g0": "أول", "c/g1": big, "c/g2": "الصف التالي", "c/g3": "مقتبس, بفاصلة"})


def test_tsv_big_field_and_bad_header(ws, corpus):
    corpus.wav("a.wav", 1.0, 300)
    corpus.wav("b.wav", 1.5, 350)
    d = corpus.root / "tsv"
    d.mkdir()
    (d / "train.tsv").write_text(f"audio\ttext\n../a.wav\t{'x' * BIG}\n../b.wav\tقصير\n", encoding="utf-8")
    (d / "dev.tsv").write_text("audio\ttext\taudio\n../a.wav\tمكرر\t../b.wav\n", encoding="utf-8")  # a column twice
    s = import_source(ws, d, "csv", dataset="t", task="asr", workers=1)
    m, r = load(ws, "t")
    assert len(m) == 2 and {len(x["text_raw"]) for x in m.values()} == {BIG, 4}
    assert reasons(r) == {"dev.tsv:1": "bad_row", "dev.tsv:2": "bad_row"}
    assert "twice" in r[0]["detail"] and "unusable file" in r[1]["detail"]
    assert (s.rows_seen, s.imported, s.rejected) == (4, 2, 2)
    assert_unchanged(ws, corpus, m)


# -- JSONL --------------------------------------------------------------------------------------------
def test_jsonl_bom_nesting_and_limits(ws, corpus, monkeypatch, capsys):
    for i in range(3):
        corpus.wav(f"g{i}.wav", 1.0, 300 + 50 * i)
    good = [{"id": f"g{i}", "audio": f"g{i}.wav", "text": f"نص {i}"} for i in range(3)]
    lines = [
        json.dumps(good[0], ensure_ascii=False),  # first row, after a BOM
        "[" * 100_000 + "]" * 100_000,  # 100k nested arrays: no RecursionError
        '{"id": "deep", "audio": "g1.wav", "text": "x", "n": ' + "[" * 100 + "]" * 100 + "}",  # over MAX_JSON_DEPTH
        '{"id": "bigint", "audio": "g1.wav", "text": "x", "offset": ' + "9" * 5000 + "}",  # over Python's digit limit
        '["not", "an", "object"]',
        '{"id": "cut", "audio": "g1.wav", "te',  # truncated line
        json.dumps(good[1], ensure_ascii=False),
        '{"id": "long", "audio": "g1.wav", "text": "' + "y" * 300_000 + '"}',  # over the (lowered) line limit
        json.dumps(good[2], ensure_ascii=False),
    ]
    src = corpus.root / "rows.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n")
    monkeypatch.setattr(tabular, "MAX_LINE_BYTES", 250_000)
    assert cli_import(ws, src, "jsonl", "j", capsys=capsys) == 0
    m, r = load(ws, "j")
    assert sorted(m) == ["j/g0", "j/g1", "j/g2"]  # the BOM row is kept
    assert reasons(r) == {f"rows.jsonl:{n}": "bad_row" for n in (2, 3, 4, 5, 6, 8)}
    details = {x["source"]: x["detail"] for x in r}
    assert "nested deeper" in details["rows.jsonl:2"] and "nested deeper" in details["rows.jsonl:3"]
    assert "longer than 250000 bytes" in details["rows.jsonl:8"]
    assert_unchanged(ws, corpus, m, {f"j/g{i}": f"نص {i}" for i in range(3)})


# -- Kaldi --------------------------------------------------------------------------------------------
def test_kaldi_tabs_and_duplicate_keys(ws, corpus, capsys):
    r1, r2 = corpus.wav("audio/r1.wav", 3.0, 300), corpus.wav("audio/r2.wav", 2.0, 400)
    r3 = corpus.wav("audio/r3.wav", 2.0, 500)
    d = corpus.root / "data" / "train"
    d.mkdir(parents=True)
    (d / "wav.scp").write_text(f"r1\t{r1}\nr2 \t {r2}\nr1\t{r3}\n")  # tabs; r1 twice (second differs)
    (d / "segments").write_text("u1\tr1\t0.0\t1.0\nu2 r1 1.0 2.0\nu3\tr2\t0.5\t2.0\nu2 r2 0 1\n")  # u2 twice
    (d / "text").write_text("u1\tواحد\nu2\tاثنان\nu3\tثلاثة\nu3\tمكرر\n")  # u3 twice
    (d / "utt2spk").write_text("u1\ts1\nu2\ts2\nu3\ts3\nu1\ts9\n")  # u1 twice
    assert cli_import(ws, d, "kaldi", "k", capsys=capsys) == 0
    m, r = load(ws, "k")
    assert sorted(m) == ["k/u1", "k/u2", "k/u3"]  # tab-separated lines all read
    assert {k: (v["text_raw"], v["speaker"], v["offset_s"], v["duration_s"]) for k, v in m.items()} == {
        "k/u1": ("واحد", "s1", 0.0, 1.0), "k/u2": ("اثنان", "s2", 1.0, 1.0), "k/u3": ("ثلاثة", "s3", 0.5, 1.5)}
    assert reasons(r) == {"segments:4": "duplicate_id", "wav.scp:3": "duplicate_id", "text:4": "duplicate_id",
                          "utt2spk:4": "duplicate_id"}
    assert all("first at line" in x["detail"] for x in r)
    assert_unchanged(ws, corpus, m)


# -- Common Voice -------------------------------------------------------------------------------------
def test_commonvoice_big_field_and_bad_rows(ws, corpus):
    d = corpus.root / "cv"
    corpus.wav("cv/clips/a.wav", 1.0, 300)
    corpus.wav("cv/clips/b.wav", 1.25, 350)
    header = "client_id\tpath\tsentence\tup_votes\n"
    (d / "train.tsv").write_text(header + f"c1\ta.wav\t{'س' * BIG}\t2\n" + "c2\tb.wav\tبلا\tحقول\tزائدة\n"
                                 + "c3\tb.wav\tجيد\t1\n", encoding="utf-8")
    (d / "dev.tsv").write_text("client_id\tsentence\nc4\tلا مسار\n", encoding="utf-8")  # header without path
    s = import_source(ws, d, "commonvoice", dataset="cv", task="asr", workers=1)
    m, r = load(ws, "cv")
    assert sorted(m) == ["cv/a", "cv/b"] and len(m["cv/a"]["text_raw"]) == BIG
    assert reasons(r) == {"train.tsv:3": "bad_row", "dev.tsv:1": "bad_row", "dev.tsv:2": "bad_row"}
    assert (s.rows_seen, s.imported, s.rejected) == (5, 2, 3)
    assert_unchanged(ws, corpus, m)


# -- audio headers ----------------------------------------------------------------------------------
def test_wav_with_65535_channels_is_a_reject(ws, corpus):
    corpus.wav("good.wav", 1.0, 300)
    bad = corpus.wav("bad.wav", 1.0, 310)
    data = bytearray(bad.read_bytes())
    assert data[12:16] == b"fmt "
    data[22:24] = (65535).to_bytes(2, "little")  # the channel count field
    bad.write_bytes(bytes(data))
    del corpus.samples[str(bad.resolve())]
    src = corpus.root / "rows.jsonl"
    src.write_text('{"id": "good", "audio": "good.wav", "text": "جيد"}\n{"id": "bad", "audio": "bad.wav", "text": "سيء"}\n')
    import_source(ws, src, "jsonl", dataset="h", task="asr", workers=1)
    m, r = load(ws, "h")
    assert sorted(m) == ["h/good"]
    assert r[0]["reason"] in ("bad_channels", "unreadable_audio") and "bad.wav" in r[0]["detail"] + r[0]["row"]
    assert_unchanged(ws, corpus, m)


# -- URLs: network only when asked ----------------------------------------------------------------------
def _url_sources(corpus: Corpus, urls: list[str]) -> dict[str, Path]:
    """One source per importer, each with one good row and one row per URL."""
    good = corpus.wav("good.wav", 1.0, 300)
    out = {}
    rows = [{"id": "good", "audio": str(good), "text": "جيد"}] + [
        {"id": f"url{i}", "audio": u, "text": "بعيد"} for i, u in enumerate(urls)]
    p = corpus.root / "jsonl" / "rows.jsonl"
    p.parent.mkdir(parents=True)
    p.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows))
    out["jsonl"] = p
    p = corpus.root / "csv" / "rows.csv"
    p.parent.mkdir(parents=True)
    p.write_text("id,audio,text\n" + "".join(f"{x['id']},{x['audio']},{x['text']}\n" for x in rows))
    out["csv"] = p
    p = corpus.root / "nemo" / "manifest.json"
    p.parent.mkdir(parents=True)
    p.write_text("".join(json.dumps({"audio_filepath": x["audio"], "text": x["text"]}, ensure_ascii=False) + "\n"
                         for x in rows))
    out["nemo"] = p
    d = corpus.root / "kaldi" / "train"
    d.mkdir(parents=True)
    (d / "wav.scp").write_text("".join(f"{x['id']} {x['audio']}\n" for x in rows))
    (d / "text").write_text("".join(f"{x['id']} {x['text']}\n" for x in rows))
    out["kaldi"] = d
    d = corpus.root / "cv"
    corpus.wav("cv/clips/good.wav", 1.0, 320)
    (d / "train.tsv").write_text("client_id\tpath\tsentence\n" + "c\tgood.wav\tجيد\n"
                                 + "".join(f"c\t{u}\tبعيد\n" for u in urls))
    out["commonvoice"] = d
    d = corpus.root / "af"
    corpus.wav("af/good.wav", 1.0, 330)
    (d / "metadata.jsonl").write_text(json.dumps({"file_name": "good.wav", "transcription": "جيد"}) + "\n" + "".join(
        json.dumps({"file_name": u, "transcription": "بعيد"}) + "\n" for u in urls))
    out["audiofolder"] = d
    d = corpus.root / "hf" / "data"
    d.mkdir(parents=True)
    buf = good.read_bytes()
    corpus.samples["hf"] = corpus.samples[str(good.resolve())]
    t = pa.table({"audio": pa.array([{"bytes": buf, "path": "good.wav"}] + [{"bytes": None, "path": u} for u in urls],
                                    pa.struct({"bytes": pa.binary(), "path": pa.string()})),
                  "sentence": ["جيد"] + ["بعيد"] * len(urls)})
    pq.write_table(t, d / "train-00000-of-00001.parquet")
    out["hf"] = d.parent
    return out


def test_url_rows_make_no_connection(ws, corpus, listener, capsys):
    urls = [f"ftp://127.0.0.1:{listener.port}/a.wav", f"http://127.0.0.1:{listener.port}/b.wav",
            f"zip::ftp://127.0.0.1:{listener.port}/c.zip", "weird+scheme://host/x.wav"]
    for fmt, src in _url_sources(corpus, urls).items():
        assert cli_import(ws, src, fmt, fmt, capsys=capsys) == 0, fmt
        m, r = load(ws, fmt)
        assert len(m) == 1, fmt  # the good row
        row = next(iter(m.values()))
        got, _ = sf.read(ws.resolve(row["audio_path"]), dtype="int16")
        assert np.array_equal(got, tone(1.0, 330 if fmt == "audiofolder" else 320 if fmt == "commonvoice" else 300)), fmt
        assert [x["reason"] for x in r] == ["remote_audio_not_allowed"] * len(urls), fmt
        details = [x["detail"] for x in r]
        for detail, want in zip(details, ("--allow-remote ftp", "--allow-remote http", "--allow-remote zip,ftp",
                                          "--allow-remote weird+scheme")):
            assert want in detail, (fmt, detail)
    assert listener.connections == 0


def test_allowed_scheme_is_read_and_failures_are_rejects(ws, corpus, listener, capsys):
    """The control: with --allow-remote ftp the same row does connect (the listener works), and the
    failed read is a reject, not a traceback; an allowed scheme fsspec does not know is a reject."""
    src = corpus.root / "rows.jsonl"
    good = corpus.wav("good.wav", 1.0, 300)
    src.write_text(json.dumps({"id": "good", "audio": str(good), "text": "جيد"}) + "\n"
                   + json.dumps({"id": "ftp", "audio": f"ftp://127.0.0.1:{listener.port}/a.wav", "text": "بعيد"}) + "\n"
                   + json.dumps({"id": "odd", "audio": "nosuchproto://h/x.wav", "text": "غريب"}) + "\n")
    assert cli_import(ws, src, "jsonl", "r", "--allow-remote", "ftp,nosuchproto", capsys=capsys) == 0
    m, r = load(ws, "r")
    assert sorted(m) == ["r/good"]
    got = {x["id"]: x["reason"] for x in r}
    assert got["r/ftp"] in ("unreadable_audio", "missing_audio") and got["r/odd"] == "unreadable_audio"
    assert "nosuchproto" in next(x["detail"] for x in r if x["id"] == "r/odd")
    assert listener.connections >= 1
    assert_unchanged(ws, corpus, m)


def test_file_urls_stay_allowed(ws, corpus):
    good = corpus.wav("good.wav", 1.0, 300)
    src = corpus.root / "rows.jsonl"
    src.write_text(json.dumps({"id": "f", "audio": good.resolve().as_uri(), "text": "محلي"}) + "\n")
    s = import_source(ws, src, "jsonl", dataset="f", task="asr", workers=1, access=Access())
    assert (s.imported, s.rejected) == (1, 0)


# -- the stage: lock and names ------------------------------------------------------------------------
def test_dataset_lock_and_name(ws, corpus, capsys):
    corpus.wav("a.wav", 1.0, 300)
    src = corpus.root / "rows.jsonl"
    src.write_text('{"id": "a", "audio": "a.wav", "text": "نص"}\n')
    with core._locked_dataset(ws, "held"):
        rc = cli_import(ws, src, "jsonl", "held")
    err = capsys.readouterr().err
    assert rc != 0 and "lock held" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    for bad in ("../outside", "a/b", ".hidden"):
        rc = cli_import(ws, src, "jsonl", bad)
        err = capsys.readouterr().err
        assert rc != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1, bad
    assert not (ws.root.parent / "outside").exists()
    assert cli_import(ws, src, "jsonl", "held", capsys=capsys) == 0  # released


def test_every_reason_is_documented():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "manifests.md").read_text(encoding="utf-8")
    missing = [code for code in core.REASONS if f"`{code}`" not in doc]
    assert not missing, f"reject codes not in docs/manifests.md: {missing}"
