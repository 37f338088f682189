"""One call that gives Hugging Face ``datasets`` a view of a shard set: :func:`load_shard_set`.

The shards are plain WebDataset tars, but ``datasets``' own webdataset loader needs torchcodec to type
their audio.  This view reads the set with jadwal's verified reader (:mod:`.shardread`, shard order)
and hands ``datasets`` one row per sample:

* ``audio``: an ``Audio`` column — ``Audio()`` (decoding) when torchcodec is installed, else
  ``Audio(decode=False)``: each value ``{"bytes": the stored member (FLAC …), "path": "<key>.<ext>"}``
  (decode with soundfile; ``ds.cast_column("audio", Audio())`` once torchcodec is there).  ``None`` for
  text-only samples.  Streaming without torchcodec: the same values in a plain
  ``{"bytes": binary, "path": string}`` column (``datasets`` encodes ``Audio`` values of an
  ``IterableDataset`` row by row, and that needs torchcodec even for bytes).
* the manifest fields of the sample's ``<key>.json``: ``id``, ``dataset``, ``task``, ``lang``,
  ``split``, ``modality``, ``text``, ``text_raw``, ``target``, ``instruction``, ``label``, ``speaker``,
  ``duration_s``, ``sample_rate``, ``channels``, ``extra`` (JSON text); and where it was: ``shard_id``,
  ``pos``.
* ``text`` is the transcript in ``text_form`` (:mod:`jadwal.textforms`): ``train`` by default (the
  orthography jadwal's trainer teaches: hamza forms, ``ى``, punctuation kept), ``raw`` (as found) or
  ``score`` (the manifest's ``text``, the WER normalization); ``text_raw`` is the transcript as found,
  whatever the form.  ``target``, ``instruction`` and ``label`` are as stored.

``streaming=False`` (default) builds an Arrow ``Dataset`` cached under ``WS/exports/hf/<set>/`` (or
``cache_dir``; rebuilt when ``shards.parquet`` changes); ``streaming=True`` returns an
``IterableDataset`` that reads the shards as it is iterated.
"""
from __future__ import annotations

import importlib.util
import json
import os

from ..textforms import DEFAULT_FORM, check_form
from .shardread import iter_samples, row_transcript, set_dir

STRING_FIELDS = ("dataset", "task", "lang", "split", "modality", "text", "text_raw", "target", "instruction",
                 "label", "speaker", "extra")


def features():
    """The ``datasets.Features`` of the view, before the audio column is typed ``Audio``."""
    import datasets

    f = {"id": datasets.Value("string"),
         "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}}
    f.update({k: datasets.Value("string") for k in STRING_FIELDS})
    f.update({"duration_s": datasets.Value("float64"), "sample_rate": datasets.Value("int32"),
              "channels": datasets.Value("int32"), "shard_id": datasets.Value("int32"), "pos": datasets.Value("int32")})
    return datasets.Features(f)


def _rows(root: str, set_name: str, allow_remote: tuple, fingerprint: str = "", text_form: str = DEFAULT_FORM):
    from ..shards.schema import member_key
    from ..workspace import Workspace

    for s in iter_samples(Workspace(root), set_name, frozenset(allow_remote)):
        r = dict(s.row)
        r["text"] = row_transcript(s.row, text_form)
        extra = r.get("extra")
        yield {
            "id": s.id,
            "audio": None if s.audio is None else {"bytes": s.audio, "path": f"{member_key(s.id)}.{s.audio_format}"},
            **{k: (json.dumps(extra, ensure_ascii=False) if k == "extra" and isinstance(extra, dict)
                   else (None if r.get(k) is None else str(r.get(k)))) for k in STRING_FIELDS},
            "duration_s": r.get("duration_s"), "sample_rate": r.get("sample_rate"), "channels": r.get("channels"),
            "shard_id": s.shard_id, "pos": s.pos,
        }


def has_torchcodec() -> bool:
    return importlib.util.find_spec("torchcodec") is not None


def load_shard_set(ws, set_name: str, *, streaming: bool = False, decode: bool | None = None,
                   cache_dir: str | os.PathLike | None = None, allow_remote=frozenset(),
                   text_form: str = DEFAULT_FORM):
    """A ``datasets.Dataset`` (``streaming=True``: ``IterableDataset``) over ``shards/<set_name>``.

    ``decode``: type the audio ``Audio()`` (decoded on access; needs torchcodec) or
    ``Audio(decode=False)`` (bytes); default: decode when torchcodec is installed.  ``allow_remote``:
    URL schemes shard paths may use.  ``text_form``: the form of the ``text`` column (``train`` |
    ``raw`` | ``score``; ``text_raw`` holds the transcript as found).  See the module doc for the columns."""
    import datasets

    from ..workspace import Workspace, sha256_file

    check_form(text_form)
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    d = set_dir(ws, set_name)
    decode = has_torchcodec() if decode is None else bool(decode)
    if decode and not has_torchcodec():
        raise ValueError("load_shard_set(decode=True) needs torchcodec (pip install torchcodec); "
                         "decode=False gives the audio bytes")
    kwargs = {"root": str(ws.root), "set_name": set_name, "allow_remote": tuple(sorted(allow_remote)),
              "fingerprint": sha256_file(d / "shards.parquet"), "text_form": text_form}
    if streaming:
        ds = datasets.IterableDataset.from_generator(_rows, features=features(), gen_kwargs=kwargs)
    else:
        cache = str(cache_dir) if cache_dir is not None else str(ws.path("exports", "hf", set_name))
        ds = datasets.Dataset.from_generator(_rows, features=features(), gen_kwargs=kwargs, cache_dir=cache)
    if streaming and not has_torchcodec():  # an IterableDataset encodes Audio values row by row: torchcodec
        return ds
    return ds.cast_column("audio", datasets.Audio(decode=decode))
