"""Kaldi data directory: ``wav.scp``, ``text``, optional ``segments``, ``utt2spk``.

* One row per line of ``segments`` (``utt reco start end``) when present, else one per line of
  ``wav.scp`` (utterance = recording = whole file).  Utterances that appear in ``text`` but in
  neither become ``bad_row`` rejects (so every line of ``text`` is accounted for).
* ``wav.scp`` entries: ``reco path``.  Pipe entries (``reco cmd args |``) are not executed: rows
  using them are rejected with ``unreadable_audio`` / "pipe entries not supported" (convert them
  to files first, e.g. with ``wav-copy``).  ``ark:offset`` entries are rejected the same way.
  Relative paths are tried against the data folder, then its parent and grandparent (a recipe's
  ``data/train`` usually refers to paths relative to the recipe root).
* ``text``: ``utt transcript``; ``utt2spk``: ``utt speaker``; ``spk2gender`` and ``utt2lang`` are
  copied into ``extra`` when present.
* Split: from the folder name when it names one (``train``, ``dev``, ``test_clean`` …).
"""
from __future__ import annotations

from pathlib import Path

from . import ImportContext, RawRow, Source, read_lines, resolve_audio, split_from_name

FORMAT = "kaldi"


def _entries(path: Path):
    """``(key, rest of line, line number)`` for each line of a Kaldi two-column file."""
    if not path.exists():
        return
    for n, line in read_lines(path):
        key, _, rest = line.strip().partition(" ")
        yield key, rest.strip(), n


def _table(path: Path, dups: list | None = None) -> dict[str, tuple[str, int]]:
    """``key → (rest of line, line number)`` (first occurrence wins; later ones go to ``dups``)."""
    out: dict[str, tuple[str, int]] = {}
    for key, rest, n in _entries(path):
        if key in out:
            if dups is not None:
                dups.append((key, rest, n))
        else:
            out[key] = (rest, n)
    return out


def open_source(ctx: ImportContext) -> Source:
    d = ctx.src
    if not (d / "wav.scp").is_file():
        raise FileNotFoundError(f"{d}: not a Kaldi data folder (no wav.scp)")
    inputs = [d / name for name in ("wav.scp", "text", "segments", "utt2spk", "spk2gender", "utt2lang") if (d / name).is_file()]
    return Source(inputs=inputs, rows=_rows(ctx))


def _rows(ctx: ImportContext):
    d = ctx.src
    bases = [d, d.parent, d.parent.parent]
    wavs = _table(d / "wav.scp")
    text_dups: list = []
    texts = _table(d / "text", text_dups)
    spk = _table(d / "utt2spk")
    gender = _table(d / "spk2gender")
    lang = _table(d / "utt2lang")
    split = split_from_name(d.name)
    used_text: set[str] = set()

    def make(utt: str, reco: str, source: str, raw: dict, offset=None, duration=None, reject=None) -> RawRow:
        row = RawRow(source_id=utt, source=source, raw=raw, offset=offset, duration=duration, recording_id=reco, split=split)
        if utt in texts:
            row.text = texts[utt][0]
            raw["text"] = row.text
            used_text.add(utt)
        if utt in spk:
            row.speaker = spk[utt][0]
            raw["speaker"] = row.speaker
            if row.speaker in gender:
                row.extra = {"gender": gender[row.speaker][0]}
        if utt in lang:
            row.extra = {**(row.extra or {}), "lang": lang[utt][0]}
        if reject:
            row.reject = reject
            return row
        entry = wavs.get(reco)
        if entry is None:
            row.reject = ("missing_audio", f"recording {reco!r} not in wav.scp")
            return row
        spec = entry[0]
        raw["wav"] = spec
        if spec.endswith("|"):
            row.reject = ("unreadable_audio", "pipe entries not supported")
        elif not spec:
            row.reject = ("bad_row", "empty wav.scp entry")
        elif ".ark:" in spec:
            row.reject = ("unreadable_audio", "ark entries not supported")
        else:
            row.audio = resolve_audio(spec, bases)
        return row

    seg_path = d / "segments"
    if seg_path.is_file():
        for n, line in read_lines(seg_path):
            parts = line.split()
            raw = {"segments": line}
            if len(parts) != 4:
                yield make(parts[0], None, f"segments:{n}", raw, reject=("bad_row", f"expected 4 fields, got {len(parts)}"))
                continue
            utt, reco, start, end = parts
            try:
                start_f, end_f = float(start), float(end)
            except ValueError:
                yield make(utt, reco, f"segments:{n}", raw, reject=("bad_row", f"bad start/end {start!r} {end!r}"))
                continue
            yield make(utt, reco, f"segments:{n}", raw, offset=start_f, duration=round(end_f - start_f, 6))
    else:
        for reco, _, n in _entries(d / "wav.scp"):
            yield make(reco, reco, f"wav.scp:{n}", {"id": reco})
    for utt, (text, n) in texts.items():
        if utt not in used_text:
            yield RawRow(
                source_id=utt, source=f"text:{n}", raw={"id": utt, "text": text}, text=text, split=split,
                reject=("bad_row", "utterance in text but not in " + ("segments" if seg_path.is_file() else "wav.scp")),
            )
    for utt, text, n in text_dups:
        yield RawRow(
            source_id=utt, source=f"text:{n}", raw={"id": utt, "text": text}, text=text, split=split,
            reject=("duplicate_id", f"second transcript for {utt!r} in text (first at line {texts[utt][1]})"),
        )
