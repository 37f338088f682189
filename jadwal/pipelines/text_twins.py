"""Text-only twins of speech rows (for text-first / speech-curriculum schedules, arXiv 2509.15389).

``build_text_twins(workspace, task, …)`` takes the speech rows (``modality="audio"``) of ``task`` from
the workspace's manifests (all datasets, or ``sources``), keeps a seeded fraction of them, and writes
a new dataset ``manifests/<name>/`` (default ``<task>_text``) whose rows are the same samples with
``modality="text"``: no audio fields (``audio_path``, ``offset_s``, ``duration_s``, ``sample_rate``,
``channels``, ``audio_sha1`` are null), the transcript stands in for the audio, and
``target``/``instruction``/``label`` are kept.  Ids are ``<source id>#text``; ``extra`` records the
source id and dataset (and the source row's own ``extra`` under ``source_extra``).

Text form: a twin keeps both transcript columns of its speech row (``text_raw`` as found, ``text`` the
scoring form); the trainer renders the transcript in the prompt *and* the target in the task's text
form (:mod:`jadwal.textforms`, ``train`` by default) from ``text_raw``, so the text that stands in for
the audio is exactly the ASR target of the speech row it twins (never the scoring normalization).

Selection is exact and order-independent: every candidate gets the key
``blake2b("<seed>:<id>")``, candidates are sorted by key, and the first ``round(fraction × n)`` are
kept — the same seed keeps the same rows whatever the input order, and a larger fraction keeps a
superset.  Speech rows with an empty transcript cannot have a twin: they go to ``rejects.parquet``
with reason ``empty_text``.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from ..workspace import Workspace

log = logging.getLogger(__name__)

AUDIO_FIELDS = ("audio_path", "offset_s", "duration_s", "sample_rate", "channels", "audio_sha1")


def _key(seed: int, rid: str) -> bytes:
    return hashlib.blake2b(f"{seed}:{rid}".encode("utf-8"), digest_size=8).digest()


def build_text_twins(
    workspace: str | Path | Workspace,
    task: str,
    *,
    sources: list[str] | None = None,
    fraction: float = 1.0,
    seed: int = 0,
    name: str | None = None,
) -> dict:
    """Write ``manifests/<name>/`` with text-only twins of ``task``'s speech rows; return stats."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ..manifests.schema import MANIFEST_SCHEMA, REJECTS_SCHEMA, conform, manifest_paths

    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"--fraction must be in (0, 1], got {fraction}")
    name = name or f"{task}_text"
    available = {p.parent.name: p for p in manifest_paths(ws)}
    if sources:
        missing = [s for s in sources if s not in available]
        if missing:
            raise FileNotFoundError(f"no manifest for dataset(s) {', '.join(missing)}; have: {', '.join(sorted(available))}")
        if name in sources:
            raise ValueError("--name must differ from the --source datasets")
        inputs = [available[s] for s in sources]
    else:
        inputs = [p for n, p in sorted(available.items()) if n != name]
    if not inputs:
        raise FileNotFoundError(f"no manifests in {ws.root / 'manifests'}")

    # one writer of manifests/<name>; meta.json deleted first, outputs through temp names, meta last
    with ws.stage_output("manifests", name, "build.text_twins") as so:
        # Arrow-native: only the columns needed for the decision go through Python
        cands: list = []  # per input: filtered table of candidate rows
        rejects: list[dict] = []
        for path in tqdm(inputs, desc="text-twins: read", unit="dataset", disable=None):
            t = conform(pq.read_table(path))
            mask = pc.and_(pc.equal(t["task"], task), pc.equal(pc.fill_null(t["modality"], "audio"), "audio"))
            t = t.filter(pc.fill_null(mask, False))
            has_text = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(t["text"])), 0), False)
            for r in t.filter(pc.invert(has_text)).to_pylist():
                rejects.append({"id": f"{r['id']}#text", "dataset": name, "source": f"{path.parent.name}:{r['id']}",
                                "reason": "empty_text", "detail": "speech row without a transcript: no text twin",
                                "row": json.dumps(r, ensure_ascii=False, default=str)})
            cands.append(t.filter(has_text))
        table = pa.concat_tables(cands) if cands else MANIFEST_SCHEMA.empty_table()
        ids = table["id"].to_pylist()
        if len(set(ids)) != len(ids):
            dup = [k for k, v in Counter(ids).items() if v > 1][:3]
            raise ValueError(f"source ids are not unique across the selected datasets (e.g. {dup})")

        n_keep = int(round(fraction * len(ids)))
        keep = sorted(sorted(range(len(ids)), key=lambda i: _key(seed, ids[i]))[:n_keep])  # source order
        chosen = table.take(pa.array(keep, type=pa.int64()))
        extras = []
        for rid, ds, mod, ex in zip(chosen["id"].to_pylist(), chosen["dataset"].to_pylist(),
                                    chosen["modality"].to_pylist(), chosen["extra"].to_pylist()):
            try:
                src_extra = json.loads(ex) if ex else None
            except json.JSONDecodeError:
                src_extra = ex
            extras.append(json.dumps({"builder": "text_twins", "source_id": rid, "source_dataset": ds,
                                      "source_modality": mod or "audio", "source_extra": src_extra},
                                     ensure_ascii=False, sort_keys=True))
        n = chosen.num_rows
        cols = {}
        for field in MANIFEST_SCHEMA:
            if field.name in AUDIO_FIELDS:
                cols[field.name] = pa.nulls(n, field.type)
            elif field.name == "id":
                cols["id"] = pc.binary_join_element_wise(chosen["id"], pa.scalar("#text"), "")
            elif field.name == "dataset":
                cols["dataset"] = pa.array([name] * n, pa.string())
            elif field.name == "modality":
                cols["modality"] = pa.array(["text"] * n, pa.string())
            elif field.name == "extra":
                cols["extra"] = pa.array(extras, pa.string())
            else:
                cols[field.name] = chosen[field.name]
        out = conform(pa.table(cols))

        so.parquet("manifest.parquet", out, compression="zstd")
        rtable = pa.Table.from_pylist(rejects, schema=REJECTS_SCHEMA) if rejects else REJECTS_SCHEMA.empty_table()
        so.parquet("rejects.parquet", rtable, compression="zstd")
        stats = {
            "task": task,
            "name": name,
            "sources": [p.parent.name for p in inputs],
            "candidates": len(ids),
            "candidates_per_dataset": dict(sorted(Counter(table["dataset"].to_pylist()).items())),
            "selected": n,
            "selected_per_dataset": dict(sorted(Counter(chosen["dataset"].to_pylist()).items())),
            "fraction": fraction,
            "seed": seed,
            "rejected": dict(Counter(r["reason"] for r in rejects)),
        }
        so.finish(config={"task": task, "sources": sources, "fraction": fraction, "seed": seed, "name": name},
                  inputs=inputs, extra={"stats": stats})
    log.info("text-twins %s: %d of %d %s speech rows → text rows", name, n, len(ids), task)
    return stats
