"""``--format lhotse`` on manifests written by the stock ``lhotse`` library at test time.

Audio is written with soundfile; RecordingSet / SupervisionSet / CutSet are built and saved by lhotse
itself (JSON array, JSONL.gz, recordings + supervisions pairs, a Shar set), then imported through the
real ``jadwal manifest import`` entry point and checked row by row.
"""
from __future__ import annotations

import json
import shutil
import socket
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

lhotse = pytest.importorskip("lhotse", reason="lhotse is the optional extra jadwal[lhotse]")

from jadwal.access import Access  # noqa: E402
from jadwal.cli import main  # noqa: E402
from jadwal.manifests.importers import ImportContext  # noqa: E402
from jadwal.manifests.importers.lhotse import open_source  # noqa: E402

SR = 16000
# (recording id, seconds, channels, [(supervision id, start, duration, text, speaker)])
CORPUS = [
    ("rec_a", 4.0, 1, [("a1", 0.0, 1.5, "the first words", "spk1"), ("a2", 2.0, 1.75, "then more words", "spk2")]),
    ("rec_b", 3.0, 2, [("b1", 0.5, 2.0, "stereo talk", "spk3")]),
    ("rec_c", 2.5, 1, [("c1", 0.25, 2.25, "last one here", "spk1")]),
]
SUPS = {s[0]: s for _, _, _, sups in CORPUS for s in sups}


def _signal(seconds: float, freq: float, channels: int) -> np.ndarray:
    n = int(round(seconds * SR))
    x = (0.2 * np.sin(2 * np.pi * freq * np.arange(n) / SR)).astype("float32")
    return np.stack([x, -x], axis=1) if channels == 2 else x


@pytest.fixture
def corpus(tmp_path):
    """(RecordingSet, SupervisionSet, CutSet) over wav files written with soundfile (absolute paths)."""
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    wav = tmp_path / "wav"
    wav.mkdir()
    recs, sups = [], []
    for i, (rid, seconds, ch, segs) in enumerate(CORPUS):
        path = wav / f"{rid}.wav"
        sf.write(path, _signal(seconds, 220.0 * (i + 1), ch), SR)
        recs.append(Recording.from_file(path, recording_id=rid))
        for sid, start, dur, text, spk in segs:
            sups.append(SupervisionSegment(id=sid, recording_id=rid, start=start, duration=dur, text=text,
                                           speaker=spk, language="English", channel=0))
    recs, sups = RecordingSet.from_recordings(recs), SupervisionSet.from_segments(sups)
    return recs, sups, CutSet.from_manifests(recordings=recs, supervisions=sups)


def _import(tmp_path, src, name, *extra) -> tuple[dict, dict]:
    w = str(tmp_path / "ws")
    assert main(["manifest", "import", str(src), "--format", "lhotse", "-d", name, "-t", "asr", "-w", w,
                 "--workers", "1", "--no-progress", "--no-normalize", *extra]) == 0
    base = tmp_path / "ws" / "manifests" / name
    rows = {r["id"]: r for r in pq.read_table(base / "manifest.parquet").to_pylist()}
    rejects = {r["id"]: r for r in pq.read_table(base / "rejects.parquet").to_pylist()}
    return rows, rejects


def _check_rows(rows: dict, name: str, offsets_from_cut: bool = False) -> None:
    assert sorted(rows) == sorted(f"{name}/{sid}" for sid in SUPS)
    for sid, (_, start, dur, text, spk) in SUPS.items():
        r = rows[f"{name}/{sid}"]
        assert (r["text"], r["speaker"]) == (text, spk)
        assert r["duration_s"] == pytest.approx(dur, abs=1e-6)
        assert r["offset_s"] == pytest.approx(0.0 if offsets_from_cut else start, abs=1e-6)
        assert r["recording_id"] == (sid if offsets_from_cut else f"rec_{sid[0]}")
    # the supervision is on channel 0 of a stereo file: the row is that channel (as lhotse's load_audio)
    b1 = json.loads(rows[f"{name}/b1"]["extra"])
    assert rows[f"{name}/b1"]["channels"] == 1 and (b1["channel"], b1["channels"]) == (0, [0])


def test_cuts_json_array_and_jsonl_gz(tmp_path, corpus):
    _, _, cuts = corpus
    for sub, fname in (("as_json", "cuts.json"), ("as_jsonl", "cuts_train.jsonl.gz")):
        (tmp_path / sub).mkdir()
        cuts.to_file(tmp_path / sub / fname)
    assert (tmp_path / "as_json" / "cuts.json").read_text().lstrip().startswith("[")  # lhotse's JSON array
    rows_json, rej_json = _import(tmp_path, tmp_path / "as_json", "lj")
    rows_gz, rej_gz = _import(tmp_path, tmp_path / "as_jsonl" / "cuts_train.jsonl.gz", "lg")
    assert not rej_json and not rej_gz
    _check_rows(rows_json, "lj")
    _check_rows(rows_gz, "lg")
    assert {r["split"] for r in rows_gz.values()} == {"train"}  # from the file name
    assert json.loads(rows_gz["lg/a2"]["extra"])["cut_id"] == "rec_a-0"  # lhotse's cut id kept beside the row id


def test_recordings_supervisions_pair(tmp_path, corpus):
    recs, sups, _ = corpus
    d = tmp_path / "pair"
    d.mkdir()
    recs.to_file(d / "corpus_recordings_dev.jsonl.gz")
    sups.to_file(d / "corpus_supervisions_dev.json")
    rows, rejects = _import(tmp_path, d, "lp")
    assert not rejects
    _check_rows(rows, "lp")
    assert {r["split"] for r in rows.values()} == {"dev"}
    # a recordings manifest alone: one row per recording, the whole file
    only = tmp_path / "only"
    only.mkdir()
    recs.to_file(only / "recordings.json")
    w = str(tmp_path / "ws")
    assert main(["manifest", "import", str(only), "-f", "lhotse", "-d", "lo", "-t", "audio", "-w", w, "--workers", "1"]) == 0
    got = pq.read_table(tmp_path / "ws" / "manifests" / "lo" / "manifest.parquet").to_pylist()
    assert [(r["id"], r["offset_s"], r["duration_s"]) for r in got] == [(f"lo/{rid}", 0.0, sec) for rid, sec, _, _ in CORPUS]


def test_shar_set_audio_from_the_tars(tmp_path, corpus):
    _, _, cuts = corpus
    shar = tmp_path / "train_shar"
    shar.mkdir()
    written = cuts.trim_to_supervisions(keep_overlapping=False).to_shar(shar, fields={"recording": "flac"}, shard_size=2)
    assert len(written["cuts"]) == 2 and all(p.endswith(".tar") for p in written["recording"])
    rows, rejects = _import(tmp_path, shar, "ls")
    assert not rejects
    # trimmed cuts carry their supervision at 0; the audio is the cut's span, stored in the tar
    for sid, (_, start, dur, text, spk) in SUPS.items():
        r = rows[f"ls/{sid}"]
        assert (r["offset_s"], r["text"], r["speaker"], r["split"]) == (0.0, text, spk, "train")
        assert r["duration_s"] == pytest.approx(dur, abs=1e-6)
        got, sr = sf.read(tmp_path / "ws" / r["audio_path"], dtype="float32")
        rid, seconds, ch, _ = next(c for c in CORPUS if c[0] == f"rec_{sid[0]}")
        want = _signal(seconds, 220.0 * (1 + [c[0] for c in CORPUS].index(rid)), ch)
        lo = int(round(start * SR))
        want = want[lo:lo + got.shape[0]]
        if ch == 2:  # the supervision is on channel 0: lhotse's trimmed cut (and its Shar audio) holds that channel
            want = want[:, 0]
        assert sr == SR and got.shape[0] == int(round(dur * SR))
        np.testing.assert_allclose(got, want, atol=1e-4)  # flac is lossless up to 16-bit rounding


def test_mixed_and_padded_cuts_are_rejects(tmp_path, corpus):
    _, _, cuts = corpus
    a, b, c = list(cuts)
    mixed = a.truncate(duration=2.0).mix(c.truncate(duration=2.0), offset_other_by=0.5)
    padded = c.pad(duration=5.0)
    d = tmp_path / "mix"
    d.mkdir()
    lhotse.CutSet.from_cuts([mixed, b, padded]).to_file(d / "cuts.jsonl.gz")
    rows, rejects = _import(tmp_path, d, "lm")
    assert sorted(rows) == ["lm/b1"]
    assert {k: v["reason"] for k, v in rejects.items()} == {f"lm/{mixed.id}": "bad_row", f"lm/{padded.id}": "bad_row"}
    assert all(v["detail"].startswith("MixedCut: Lhotse cannot resolve it to one audio span") for v in rejects.values())


def test_bad_line_is_one_reject(tmp_path, corpus):
    _, _, cuts = corpus
    d = tmp_path / "bad"
    d.mkdir()
    lines = [json.dumps(c.to_dict()) for c in cuts]
    lines.insert(1, '{"id": "broken", "type": "MonoCut", "start": ')  # truncated line
    lines.insert(2, json.dumps({"id": "nosource", "type": "MonoCut", "start": 0, "duration": 1, "channel": 0}))
    (d / "cuts.jsonl").write_text("\n".join(lines) + "\n")
    rows, rejects = _import(tmp_path, d, "lb")
    _check_rows(rows, "lb")
    reasons = sorted((v["source"], v["reason"]) for v in rejects.values())
    assert reasons == [("cuts.jsonl:2", "bad_row"), ("cuts.jsonl:3", "missing_audio")]


def test_relative_paths_resolve_like_lhotse(tmp_path, monkeypatch):
    """Recording.from_file on a relative path stores it relative to the current folder, as lhotse reads it."""
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    work = tmp_path / "recipe"
    (work / "data" / "wav").mkdir(parents=True)
    monkeypatch.chdir(work)
    sf.write("data/wav/r.wav", _signal(1.0, 300.0, 1), SR)
    rec = Recording.from_file("data/wav/r.wav")
    assert rec.sources[0].source == "data/wav/r.wav"
    cuts = CutSet.from_manifests(RecordingSet.from_recordings([rec]), SupervisionSet.from_segments(
        [SupervisionSegment(id="u", recording_id=rec.id, start=0.0, duration=1.0, text="hi", speaker="s")]))
    (work / "manifests").mkdir()
    cuts.to_file(work / "manifests" / "cuts.jsonl.gz")
    rows, rejects = _import(tmp_path, work / "manifests", "lr")
    assert not rejects and rows["lr/u"]["duration_s"] == 1.0
    assert rows["lr/u"]["audio_path"] == str(work / "data" / "wav" / "r.wav")


def _command_cuts(tmp_path, corpus):
    """The corpus's cuts with each recording read by a command (``flac -c -d -s`` when flac exists, else ``cat``)."""
    from lhotse import AudioSource, CutSet, Recording, RecordingSet

    recs, sups, _ = corpus
    out = []
    for rec in recs:
        path = rec.sources[0].source
        if shutil.which("flac"):
            data, sr = sf.read(path, dtype="float32")
            flac = path.replace(".wav", ".flac")
            sf.write(flac, data, sr)
            cmd = f"flac -c -d -s {flac}"
        else:
            cmd = f"cat {path}"
        out.append(Recording(id=rec.id, sources=[AudioSource(type="command", channels=rec.channel_ids, source=cmd)],
                             sampling_rate=rec.sampling_rate, num_samples=rec.num_samples, duration=rec.duration,
                             channel_ids=rec.channel_ids))
    d = tmp_path / "cmd"
    d.mkdir()
    CutSet.from_manifests(RecordingSet.from_recordings(out), sups).to_file(d / "cuts.jsonl.gz")
    return d


def test_command_source_needs_the_grant(tmp_path, corpus):
    d = _command_cuts(tmp_path, corpus)
    rows, rejects = _import(tmp_path, d, "lc")
    assert not rows and sorted(rejects) == sorted(f"lc/{sid}" for sid in SUPS)
    assert {v["reason"] for v in rejects.values()} == {"command_not_allowed"}
    assert all("--allow-commands" in v["detail"] for v in rejects.values())


def test_command_source_runs_without_a_shell_when_granted(tmp_path, corpus):
    d = _command_cuts(tmp_path, corpus)
    ctx = ImportContext(src=d, dataset="lc", access=Access(allow_commands=True))
    got = {r.source_id: r for r in open_source(ctx).rows}
    assert sorted(got) == sorted(SUPS) and all(r.reject is None for r in got.values())
    for sid, (_, start, dur, text, _) in SUPS.items():
        r = got[sid]
        assert (r.offset, r.duration, r.text, r.audio_ext) == (start, dur, text, ".wav")
        rid = f"rec_{sid[0]}"
        data, sr = sf.read(tmp_path / "wav" / f"{rid}.wav", dtype="int16")
        decoded, sr2 = sf.read(__import__("io").BytesIO(r.audio_bytes), dtype="int16")
        assert sr2 == sr and np.array_equal(decoded, data)  # the command's stdout is the audio, unchanged
    assert len({r.audio_key for r in got.values()}) == 3  # one extracted file per recording, not per row


def test_command_source_imported_with_allow_commands(tmp_path, corpus):
    d = _command_cuts(tmp_path, corpus)
    rows, rejects = _import(tmp_path, d, "lk", "--allow-commands")
    assert not rejects
    _check_rows(rows, "lk")
    audio = {r["audio_path"] for r in rows.values()}
    assert len(audio) == 3  # the command ran once per recording; its output extracted once
    for r in rows.values():
        data, _ = sf.read(tmp_path / "ws" / r["audio_path"], dtype="int16")
        src, _ = sf.read(tmp_path / "wav" / f"{r['recording_id']}.wav", dtype="int16")
        assert np.array_equal(data, src)


def test_shell_syntax_in_a_command_is_not_run(tmp_path):
    from lhotse import AudioSource, CutSet, MonoCut, Recording

    victim = tmp_path / "victim"
    victim.write_text("x")
    cuts = []
    for i, cmd in enumerate((f"cat a.wav; rm {victim}", f"rm {victim} && cat a.wav", f"cat $(rm {victim})")):
        rec = Recording(id=f"r{i}", sources=[AudioSource(type="command", channels=[0], source=cmd)],
                        sampling_rate=SR, num_samples=SR, duration=1.0)
        cuts.append(MonoCut(id=f"x{i}", start=0, duration=1.0, channel=0, recording=rec))
    d = tmp_path / "shell"
    d.mkdir()
    CutSet.from_cuts(cuts).to_file(d / "cuts.jsonl")
    rows = list(open_source(ImportContext(src=d, dataset="s", access=Access(allow_commands=True))).rows)
    assert len(rows) == 3 and all(r.reject is not None and r.audio_bytes is None for r in rows)
    assert victim.exists()  # no shell ever saw the `;`, `&&` or `$(…)`
    assert [r.reject[0] for r in rows[1:]] == ["bad_row"] * 2 and all("without a shell" in r.reject[1] for r in rows[1:])


def test_failing_command_reports_stderr(tmp_path):
    from lhotse import AudioSource, CutSet, MonoCut, Recording

    rec = Recording(id="r", sources=[AudioSource(type="command", channels=[0], source="flac -c -d -s /nonexistent.flac")],
                    sampling_rate=SR, num_samples=SR, duration=1.0)
    d = tmp_path / "fail"
    d.mkdir()
    CutSet.from_cuts([MonoCut(id="x", start=0, duration=1.0, channel=0, recording=rec)]).to_file(d / "cuts.jsonl")
    rows = list(open_source(ImportContext(src=d, dataset="f", access=Access(allow_commands=True))).rows)
    assert len(rows) == 1 and rows[0].reject[0] == "unreadable_audio"
    if shutil.which("flac"):
        assert "exit status flac=1" in rows[0].reject[1] and "nonexistent" in rows[0].reject[1]
    else:
        assert "cannot run 'flac'" in rows[0].reject[1]


def test_url_source_refused_without_connecting(tmp_path):
    """A url source is a reject naming --allow-remote, and nothing connects to the listener."""
    from lhotse import AudioSource, CutSet, MonoCut, Recording

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []

    def accept():
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    rec = Recording(id="r", sources=[AudioSource(type="url", channels=[0], source=f"http://127.0.0.1:{port}/a.wav")],
                    sampling_rate=SR, num_samples=SR, duration=1.0)
    d = tmp_path / "url"
    d.mkdir()
    CutSet.from_cuts([MonoCut(id="x", start=0, duration=1.0, channel=0, recording=rec)]).to_file(d / "cuts.json")
    rows, rejects = _import(tmp_path, d, "lu")
    t.join()
    server.close()
    assert not rows and not accepted
    assert rejects["lu/x"]["reason"] == "remote_audio_not_allowed" and "--allow-remote http" in rejects["lu/x"]["detail"]


def test_channel_sources_and_transforms(tmp_path, corpus):
    """A recording with one file per channel is read per channel; transformed recordings are rejects."""
    from lhotse import AudioSource, CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    recs, _, _ = corpus
    a, c = recs["rec_a"], recs["rec_c"]
    two = Recording(id="two", sources=[AudioSource(type="file", channels=[0], source=a.sources[0].source),
                                       AudioSource(type="file", channels=[1], source=c.sources[0].source)],
                    sampling_rate=SR, num_samples=c.num_samples, duration=c.duration, channel_ids=[0, 1])
    fast = a.perturb_speed(1.1)
    sups = [SupervisionSegment(id="left", recording_id="two", start=0.0, duration=1.0, channel=0, text="l"),
            SupervisionSegment(id="right", recording_id="two", start=0.5, duration=1.0, channel=1, text="r"),
            SupervisionSegment(id="both", recording_id="two", start=0.0, duration=1.0, channel=[0, 1], text="b"),
            SupervisionSegment(id="sped", recording_id=fast.id, start=0.0, duration=1.0, channel=0, text="s")]
    d = tmp_path / "chan"
    d.mkdir()
    CutSet.from_manifests(RecordingSet.from_recordings([two, fast]), SupervisionSet.from_segments(sups)).to_file(
        d / "cuts.jsonl.gz")
    rows, rejects = _import(tmp_path, d, "ch")
    assert rows["ch/left"]["audio_path"].endswith("rec_a.wav") and rows["ch/right"]["audio_path"].endswith("rec_c.wav")
    assert rows["ch/right"]["offset_s"] == 0.5
    assert {k: v["reason"] for k, v in rejects.items()} == {"ch/both": "bad_row", "ch/sped": "bad_row"}
    assert "span 2 of its 2 sources" in rejects["ch/both"]["detail"]
    assert "has transforms (Speed)" in rejects["ch/sped"]["detail"]
