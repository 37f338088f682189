"""``jadwal embed``: mean-pooled aligner embeddings of every audio sample of a shard set.

Outputs in ``embeddings/<name>/``:

* ``vectors.f16`` — a raw float16 array ``(N, D)``, C order (``np.memmap(path, np.float16, 'r',
  shape=meta['shape'])``, or :func:`open_embeddings`);
* ``ids.parquet`` — ``id`` (string), ``row`` (int64): vector row ``row`` belongs to sample ``id``;
  rows follow the shard set's ``samples.parquet`` order, audio samples only (text-only samples have
  no audio and no vector; they are counted in ``meta.json``);
* ``meta.json`` — shape, dtype, model description, shard set, throughput.

How it runs: the shard set's tars are streamed front to back, one pass, in ``shard_id`` order (a
reader thread, with a small thread pool decoding audio); within a window of ``--sort-window``
samples of a shard the samples are sorted by duration and packed into batches of at most
``--batch-seconds`` of padded audio (bucketing, to limit padding); log-mel features are computed on
the model's device; the encoder + aligner run with padding masked; vectors are mean-pooled.

Resumable per shard: each finished shard's vectors are written atomically to
``.parts/shard-<id>.npz``; a rerun skips finished shards; the final merge writes ``vectors.f16`` and
``ids.parquet`` (temp name, then rename) and ``meta.json`` last.  ``--part i/n`` lets n processes
(e.g. one per GPU) share the shards; a final run without ``--part`` merges.
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass
from collections.abc import Iterator
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import storage
from ..access import LOCAL_ONLY, Access
from ..shards.schema import AUDIO_MEMBER_SUFFIXES
from ..shards.sets import pick_shard_set
from ..workspace import Workspace, atomic_path, check_name, sha256_file

log = logging.getLogger("jadwal.embed")

VECTORS = "vectors.f16"
IDS = "ids.parquet"
PARTS = ".parts"
FINGERPRINT = "fingerprint.json"
MODEL = "model.json"
WINDOW_SECONDS = 30.0


class EmbedError(ValueError):
    """A user-facing error of ``jadwal embed`` (bad arguments, inconsistent inputs)."""


@dataclass
class EmbedConfig:
    encoder: str = "tiny"
    checkpoint: str | None = None
    aligner: str | None = None  # path of an aligner checkpoint
    aligner_kind: str = "auto"  # auto | linear | conv | none
    aligner_dim: int | None = None  # output size of a random aligner (tiny)
    aligner_k: int = 2  # downsampling of a random conv aligner
    tiny_config: str = "tiny"  # preset of the random encoder (tiny | base | large-v3)
    pool: str = "mean"
    pad_to_30s: bool = False
    batch_seconds: float = 480.0
    max_batch: int = 256
    sort_window: int = 256
    bucket: bool = True
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    decode_workers: int = 2

    def fingerprint_fields(self) -> dict:
        """What determines the vectors (not how fast they are computed)."""
        d = asdict(self)
        for k in ("batch_seconds", "max_batch", "sort_window", "bucket", "device", "decode_workers"):
            d.pop(k)
        return d


# --------------------------------------------------------------------------------------------
# batching
# --------------------------------------------------------------------------------------------
def cost_seconds(duration: float, pad_to_30s: bool) -> float:
    """Seconds of audio a sample occupies in a padded batch row."""
    if pad_to_30s:
        return max(1, int(np.ceil(duration / WINDOW_SECONDS))) * WINDOW_SECONDS
    return max(float(duration), 0.01)


def plan_batches(
    durations: Sequence[float],
    batch_seconds: float,
    *,
    window: int = 256,
    bucket: bool = True,
    max_batch: int = 256,
    pad_to_30s: bool = False,
) -> list[list[int]]:
    """Split ``range(len(durations))`` into batches.

    Consecutive windows of ``window`` samples are sorted by duration (``bucket=True``; otherwise kept in
    stream order) and packed greedily while ``len(batch) × longest ≤ batch_seconds`` (padded seconds;
    a sample longer than ``batch_seconds`` gets a batch of its own) and ``len(batch) ≤ max_batch``.
    """
    d = np.asarray(durations, dtype=np.float64)
    batches: list[list[int]] = []
    for start in range(0, len(d), max(1, int(window))):
        idx = np.arange(start, min(start + int(window), len(d)))
        if bucket:
            idx = idx[np.argsort(d[idx], kind="stable")]
        cur: list[int] = []
        longest = 0.0
        for i in idx:
            c = cost_seconds(d[i], pad_to_30s)
            new_longest = max(longest, c)
            if cur and ((len(cur) + 1) * new_longest > batch_seconds or len(cur) >= max_batch):
                batches.append(cur)
                cur, new_longest = [], c
            cur.append(int(i))
            longest = new_longest
        if cur:
            batches.append(cur)
    return batches


def padding_fraction(durations: Sequence[float], batches: list[list[int]], pad_to_30s: bool = False) -> float:
    """Fraction of the padded batch seconds that are padding."""
    d = np.asarray(durations, dtype=np.float64)
    real = padded = 0.0
    for b in batches:
        c = [cost_seconds(d[i], pad_to_30s) for i in b]
        real += float(d[b].sum())
        padded += max(c) * len(b)
    return 0.0 if padded == 0 else 1.0 - real / padded


# --------------------------------------------------------------------------------------------
# the model side
# --------------------------------------------------------------------------------------------
class Embedder:
    """Encoder + aligner + features on one device: ``embedder(waves, rates) → float32 (B, D)``."""

    def __init__(self, cfg: EmbedConfig):
        import torch

        from ..models import encoders as E

        self.cfg = cfg
        self.device = E.resolve_device(cfg.device)
        self.dtype = E.resolve_dtype(cfg.dtype, self.device)
        if cfg.encoder != "tiny" and cfg.tiny_config != "tiny":
            raise EmbedError("--tiny-config applies to --encoder tiny only")
        self.encoder = E.build_encoder(
            cfg.encoder,
            checkpoint=cfg.checkpoint,
            tiny_config=cfg.tiny_config if cfg.encoder == "tiny" else None,
            seed=cfg.seed,
            pad_to_30s=cfg.pad_to_30s,
            device=self.device,
            dtype=self.dtype,
        )
        in_dim = self.encoder.out_dim
        if cfg.aligner:
            self.aligner = E.build_aligner(cfg.aligner_kind, in_dim, checkpoint=cfg.aligner,
                                           device=self.device, dtype=self.dtype)
        elif cfg.encoder == "qwen2-audio" and cfg.aligner_kind != "none":
            self.aligner = E.qwen2_audio_aligner(cfg.checkpoint, in_dim, device=self.device, dtype=self.dtype)
        elif cfg.encoder == "tiny" and cfg.aligner_kind != "none":
            out = cfg.aligner_dim or E.PRESET_ALIGNER_DIM.get(cfg.tiny_config, 32)
            kind = "linear" if cfg.aligner_kind == "auto" else cfg.aligner_kind
            self.aligner = E.build_aligner(kind, in_dim, out, k=cfg.aligner_k, seed=cfg.seed,
                                           device=self.device, dtype=self.dtype)
        else:
            if cfg.aligner_kind not in ("auto", "none"):
                raise EmbedError(f"--aligner-kind {cfg.aligner_kind} needs --aligner PATH (trained weights) "
                                 "for this encoder")
            if cfg.aligner_kind == "auto":
                log.warning("no --aligner given: embeddings are the encoder's own frames (aligner 'none')")
            self.aligner = E.build_aligner("none", in_dim, device=self.device, dtype=self.dtype)
        self.dim = int(getattr(self.aligner, "out_dim", in_dim))
        self.description = E.describe(self.encoder, self.aligner)
        self._torch = torch

    def __call__(self, waves: Sequence[np.ndarray], rates: Sequence[int]) -> np.ndarray:
        from ..models import encoders as E
        from ..models.features import whisper_log_mel

        feats, frames = whisper_log_mel(
            waves, rates, self.encoder.n_mels, self.device, pad_to_multiple=self.encoder.feature_pad_multiple
        )
        out = E.pooled_embeddings(self.encoder, self.aligner, feats, frames, pool=self.cfg.pool)
        return out.float().cpu().numpy()


# --------------------------------------------------------------------------------------------
# shard set access
# --------------------------------------------------------------------------------------------
def audio_members(members) -> np.ndarray:
    """Per row of a ``members`` column (list<struct<name, …>>, Arrow), the suffix of its audio member
    (e.g. ``"flac"``) or ``None`` for text-only samples; vectorized (no Python objects per member)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = members.combine_chunks() if isinstance(members, pa.ChunkedArray) else members
    out = np.full(len(col), None, dtype=object)
    if len(col) == 0:
        return out
    flat = pc.list_flatten(col)
    parents = pc.list_parent_indices(col).to_numpy()
    names = np.asarray(pc.utf8_lower(pc.struct_field(flat, "name")).to_numpy(zero_copy_only=False), dtype=object)
    is_audio = np.isin(names, list(AUDIO_MEMBER_SUFFIXES))  # the one audio-member rule (shards.schema)
    raw = np.asarray(pc.struct_field(flat, "name").to_numpy(zero_copy_only=False), dtype=object)
    out[parents[is_audio][::-1]] = raw[is_audio][::-1]  # the first audio member of a row wins
    return out


def _decode(data: bytes) -> tuple[np.ndarray, int]:
    """An audio member → (mono float32 wave, rate), with the probe's and the writer's decoder
    (:func:`jadwal.audio_decode.decode_bytes`: libsndfile, PyAV for other containers; finite samples)."""
    from ..audio_decode import decode_bytes

    wave, sr = decode_bytes(data, "<audio member>")
    return (wave[:, 0] if wave.shape[1] == 1 else wave.mean(axis=1)), int(sr)


@dataclass
class _ShardJob:
    shard_id: int
    path: Path | str  # local path or URL
    ids: list[str]  # audio samples of the shard, in pos order
    keys: list[str]
    exts: list[str]
    durations: np.ndarray
    rel: str = ""  # the shard's path as stored in shards.parquet (for messages)
    bytes: int | None = None  # the shard's size in shards.parquet
    offsets: list[int] | None = None  # per audio sample: [offset, offset + size) in the tar
    sizes: list[int] | None = None
    sha1s: list[str | None] | None = None  # per-sample sha1 of those bytes (samples.parquet), when recorded
    members: list[list[str]] | None = None  # per audio sample: its member names in the index, in order


@dataclass
class _Item:
    shard_id: int
    index: int  # position among the shard's audio samples
    wave: np.ndarray | None = None
    rate: int = 0
    end: bool = False  # marks the end of a shard
    error: BaseException | None = None


def _shard_samples(job: _ShardJob, access: Access) -> Iterator[tuple[int, bytes]]:
    """``(i, audio member bytes)`` for each audio sample of ``job``, read forward only and verified
    as the loader verifies (:mod:`jadwal.shards.shardio`): the URL's scheme is granted, the file has
    the indexed size, each sample's byte range has the indexed sha1 (when recorded) and exactly the
    indexed member names.  Any failure is an :class:`EmbedError` naming the shard and the sample."""
    from ..shards.tario import check_member_name
    from ..shards.shardio import ShardHandle, TarFormatError, parse_members

    where = f"shard {job.rel or str(job.path)!r} (shard_id {job.shard_id})"
    hint = "check it with `jadwal shard verify` and restore it (re-run `jadwal shard`)"
    loc = str(job.path)
    if storage.is_url(loc) and (refusal := access.remote_refusal(loc)):
        raise EmbedError(f"{where}: {refusal}")
    have = storage.size(job.path)
    if have is None:
        raise EmbedError(f"{where} is missing ({hint})")
    if job.bytes is not None and have != job.bytes:
        kind = "truncated" if have < job.bytes else "longer than indexed"
        raise EmbedError(f"{where} is {kind}: it has {have} bytes, the shard index says {job.bytes} ({hint})")
    with storage.open_read(job.path) as fh:
        h = ShardHandle(fh, seek_gap=1 << 20)
        for i, sid in enumerate(job.ids):
            off, size = int(job.offsets[i]), int(job.sizes[i])
            what = f"{where}: sample {sid!r} (bytes {off}..{off + size})"
            try:
                h.advance_to(off, first=i == 0)
                data = h.read_exact(size)
                if len(data) != size:
                    raise EmbedError(f"{what}: the file ends at byte {h.pos}, inside the sample ({hint})")
                if job.sha1s is not None and job.sha1s[i] and hashlib.sha1(data).hexdigest() != job.sha1s[i]:
                    raise EmbedError(f"{what}: bytes differ from the shard index (sha1) ({hint})")
                members = parse_members(data, off)
            except TarFormatError as e:
                raise EmbedError(f"{what}: {e} ({hint})") from None
            except OSError as e:
                raise EmbedError(f"{what}: cannot be read: {type(e).__name__}: {e}") from None
            names = [n for n, _ in members]
            want = [f"{job.keys[i]}.{m}" for m in job.members[i]]
            if names != want:
                raise EmbedError(f"{what}: members {names} where the shard index has {want} ({hint})")
            for n in names:
                check_member_name(n)
            yield i, dict(members)[f"{job.keys[i]}.{job.exts[i]}"]


def _read_shards(jobs: list[_ShardJob], out: queue.Queue, decode_workers: int, stop: threading.Event,
                 access: Access = LOCAL_ONLY) -> None:
    """Reader thread: read each shard's audio samples front to back (verified, :func:`_shard_samples`),
    decode them on a small thread pool, feed ``out``."""
    pool = cf.ThreadPoolExecutor(max_workers=max(1, decode_workers), thread_name_prefix="jadwal-decode")
    try:
        for job in jobs:
            pending: list[tuple[int, cf.Future]] = []
            for i, data in _shard_samples(job, access):
                if stop.is_set():
                    return
                pending.append((i, pool.submit(_decode, data)))
                while len(pending) > 4 * decode_workers or (pending and pending[0][1].done()):
                    _emit(job, pending.pop(0), out, stop)
            for p in pending:
                _emit(job, p, out, stop)
            _put(out, _Item(job.shard_id, -1, end=True), stop)
    except BaseException as e:  # hand the error to the consumer
        _put(out, _Item(-1, -1, error=e), stop)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        _put(out, None, stop)


def _emit(job: _ShardJob, pending: tuple[int, cf.Future], out: queue.Queue, stop: threading.Event) -> None:
    i, fut = pending
    try:
        wave, sr = fut.result()
    except Exception as e:
        raise EmbedError(f"{job.path}: cannot decode audio of sample {job.ids[i]!r}: {e}") from e
    _put(out, _Item(job.shard_id, i, wave, sr), stop)


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.2)
            return
        except queue.Full:
            continue


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
def _checkpoint_identity(path: str | None) -> dict | None:
    """Cheap identity of a (possibly huge) checkpoint: file names, sizes and mtimes."""
    if not path:
        return None
    p = Path(path).resolve()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(p.parent if p.is_file() else p)}:{st.st_size}:{int(st.st_mtime)}\n".encode())
    return {"path": str(p), "files": len(files), "bytes": sum(f.stat().st_size for f in files), "id": h.hexdigest()[:16]}


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _part_path(parts: Path, shard_id: int) -> Path:
    return parts / f"shard-{shard_id:06d}.npz"


def _write_part(path: Path, ids: list[str], vectors: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, ids=np.asarray(ids, dtype=str), vectors=vectors.astype(np.float16))
            f.flush()
            os.fsync(f.fileno())


def _read_part(path: Path) -> tuple[list[str], np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return [str(x) for x in z["ids"]], z["vectors"]


def parse_part(part: str | None) -> tuple[int, int] | None:
    if not part:
        return None
    try:
        i, n = (int(x) for x in part.split("/"))
    except ValueError:
        raise EmbedError(f"--part must look like I/N (e.g. 0/8), got {part!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise EmbedError(f"--part {part}: need 0 <= I < N")
    return i, n


def embed_shard_set(
    ws: Workspace | str | os.PathLike,
    cfg: EmbedConfig,
    *,
    shard_set: str | None = None,
    name: str | None = None,
    part: str | None = None,
    force: bool = False,
    progress: bool = True,
    sleep_per_shard: float = 0.0,
    executor: str = "local",
    ray_address: str | None = None,
    actors: int | None = None,
    access: Access = LOCAL_ONLY,
) -> dict:
    """Embed every audio sample of a shard set; returns a summary dict (see module doc).

    Runs inside :meth:`Workspace.stage` (``--name`` checked, ``embeddings/.<name>.lock`` held, killed
    runs' temp files removed): a run without ``part`` (the merge, ``force``) is the only writer of
    ``embeddings/<name>``; ``--part I/N`` runs hold the lock shared, so the parts of one output run
    together (one per GPU) while a merge or a ``--force`` run (with or without ``--part``: it discards
    every part) is refused until they end, and refuses them while it runs.
    See :func:`_embed_shard_set` for the rest of the contract.
    """
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    name = check_name(name or cfg.encoder, "--name")
    the_part = parse_part(part)
    # parts share the output; --force discards every part's results, so it runs alone even with --part
    with ws.stage("embeddings", name, shared=the_part is not None and not force):
        return _embed_shard_set(ws, cfg, shard_set=shard_set, name=name, part=part, force=force, progress=progress,
                                sleep_per_shard=sleep_per_shard, executor=executor, ray_address=ray_address,
                                actors=actors, access=access)


def _embed_shard_set(
    ws: Workspace,
    cfg: EmbedConfig,
    *,
    shard_set: str | None,
    name: str,
    part: str | None,
    force: bool,
    progress: bool,
    sleep_per_shard: float,
    executor: str,
    ray_address: str | None,
    actors: int | None,
    access: Access,
) -> dict:
    """Embed every audio sample of a shard set; returns a summary dict (see module doc).

    ``executor="ray"``: shards are streamed to Ray actors (one per GPU of the cluster at ``ray_address``
    with ``num_gpus=1``; on a CPU-only cluster ``actors`` actors of one CPU each, default one per CPU),
    each running the same per-shard loop and writing the same per-shard parts; the merge is local.
    ``access``: shards stored at remote URLs are read only when their scheme is granted (``file://`` and
    ``memory://`` always).  Every sample read is verified as the loader verifies it (shard size, member
    names, per-sample sha1): a damaged shard is an :class:`EmbedError` naming it.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from ..shards.schema import SAMPLES_FILE, SHARDS_FILE, member_key

    if cfg.pool != "mean":
        raise EmbedError(f"--pool {cfg.pool!r}: only 'mean' is supported")
    if cfg.batch_seconds <= 0:
        raise EmbedError("--batch-seconds must be > 0")
    if shard_set:
        check_name(shard_set, "--set")
    sdir = ws.path("shards", pick_shard_set(ws, shard_set, error=EmbedError))
    out_dir = ws.path("embeddings", name)
    parts = out_dir / PARTS
    the_part = parse_part(part)

    cols = ["id", "shard_id", "pos", "members", "duration_s", "modality", "offset", "size"]
    has_sha1 = "sha1" in pq.read_schema(sdir / SAMPLES_FILE).names
    samples = pq.read_table(sdir / SAMPLES_FILE, columns=cols + (["sha1"] if has_sha1 else []))
    shards = pq.read_table(sdir / SHARDS_FILE, columns=["shard_id", "path", "num_samples", "bytes"]).to_pylist()
    offsets_all = samples.column("offset").to_numpy()
    sizes_all = samples.column("size").to_numpy()
    sha1_all = samples.column("sha1").to_pylist() if has_sha1 else None
    member_names = samples.column("members").to_pylist()
    ids_all = samples.column("id").to_pylist()
    shard_of = samples.column("shard_id").to_numpy()
    dur_all = np.nan_to_num(samples.column("duration_s").to_numpy(zero_copy_only=False).astype(np.float64))
    exts = audio_members(samples.column("members"))
    is_audio = np.array([e is not None for e in exts], dtype=bool)
    n_text = int((~is_audio).sum())
    if not is_audio.any():
        raise EmbedError(f"shard set {sdir.name!r} has no audio samples")

    fp = {
        "config": cfg.fingerprint_fields(),
        "checkpoint": _checkpoint_identity(cfg.checkpoint),
        "aligner": _checkpoint_identity(cfg.aligner),
        "shard_set": sdir.name,
        "samples_sha256": sha256_file(sdir / SAMPLES_FILE),
    }
    fp_text = json.dumps(fp, sort_keys=True)
    meta = ws.read_meta(out_dir)
    if meta is not None and not force:
        if meta.get("fingerprint") == fp and (out_dir / VECTORS).exists():
            log.info("embeddings/%s is up to date (%d vectors); use --force to recompute", name, meta["shape"][0])
            return {"name": name, "status": "up-to-date", "shape": meta["shape"], "dir": str(out_dir)}
        raise EmbedError(f"embeddings/{name} exists and was computed with other inputs or settings; "
                         "use --force to recompute it or --name to write elsewhere")
    if force and out_dir.exists():
        import shutil

        for p in (out_dir / "meta.json", out_dir / VECTORS, out_dir / IDS):
            p.unlink(missing_ok=True)
        shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True, exist_ok=True)
    fp_file = parts / FINGERPRINT
    if fp_file.exists():
        if json.loads(fp_file.read_text()) != fp:
            raise EmbedError(f"embeddings/{name}/{PARTS} holds partial results computed with other inputs or "
                             "settings; use --force to discard them or --name to write elsewhere")
    else:
        from ..workspace import atomic_write

        atomic_write(fp_file, fp_text)
    if the_part is None:  # the only writer: every temp file is a killed run's (with --part, other parts'
        for stale in parts.glob(".*.tmp-*"):  # live temps stay; Workspace.stage removed the dead PIDs' ones)
            stale.unlink(missing_ok=True)

    # -- plan ---------------------------------------------------------------------------------------
    jobs: list[_ShardJob] = []
    done: list[int] = []
    order = np.argsort(shard_of, kind="stable")  # samples.parquet is sorted by (shard_id, pos) already
    bounds = np.searchsorted(shard_of[order], [s["shard_id"] for s in shards] + [np.iinfo(np.int64).max])
    for j, s in enumerate(sorted(shards, key=lambda r: r["shard_id"])):
        rows = order[bounds[j]: bounds[j + 1]]
        rows = rows[is_audio[rows]]
        if len(rows) == 0:
            continue
        sid = int(s["shard_id"])
        if the_part and sid % the_part[1] != the_part[0]:
            continue
        if _part_path(parts, sid).exists():
            done.append(sid)
            continue
        jobs.append(_ShardJob(
            sid, ws.resolve(s["path"]), [ids_all[r] for r in rows], [member_key(ids_all[r]) for r in rows],
            [exts[r] for r in rows], dur_all[rows], rel=s["path"], bytes=int(s["bytes"]),
            offsets=offsets_all[rows].tolist(), sizes=sizes_all[rows].tolist(),
            sha1s=[sha1_all[r] for r in rows] if sha1_all is not None else None,
            members=[[m["name"] for m in member_names[r]] for r in rows],
        ))
    todo_hours = sum(float(j.durations.sum()) for j in jobs) / 3600
    total_hours = float(dur_all[is_audio].sum()) / 3600
    log.info(
        "embed %s → embeddings/%s: %d audio samples (%.2f h) in %d shards%s; %d shards to do (%.2f h), "
        "%d already done; %d text-only samples have no audio and are skipped",
        sdir.name, name, int(is_audio.sum()), total_hours, len(jobs) + len(done),
        f" (part {part})" if part else "", len(jobs), todo_hours, len(done), n_text,
    )

    t0 = time.time()
    n_done_samples = 0
    if jobs and (executor != "local" or ray_address):
        n_done_samples = _run_jobs_ray(jobs, parts, cfg, sleep_per_shard, executor, ray_address, actors, progress,
                                       todo_hours, tqdm, access)
    elif jobs:
        emb = Embedder(cfg)
        _write_model(parts, emb.description)
        log.info("model: %s on %s (%s)", json.dumps(emb.description), emb.device, str(emb.dtype).replace("torch.", ""))
        n_done_samples = _run_jobs(emb, jobs, parts, cfg, progress, sleep_per_shard, todo_hours, tqdm, access)
    elapsed = time.time() - t0
    summary = {
        "name": name, "shard_set": sdir.name, "shards_done_now": len(jobs), "shards_skipped": len(done),
        "samples_embedded_now": n_done_samples, "hours_embedded_now": todo_hours, "seconds": elapsed,
        "dir": str(out_dir),
    }
    if the_part:
        summary["status"] = "part-done"
        log.info("part %s done; run `jadwal embed` without --part to merge", part)
        return summary

    # -- merge ----------------------------------------------------------------------------------------
    audio_rows = np.flatnonzero(is_audio)
    want_ids = [ids_all[r] for r in audio_rows]
    first = _read_part(_part_path(parts, int(shard_of[audio_rows[0]])))[1]
    dim = int(first.shape[1])
    n = len(want_ids)
    with atomic_path(out_dir / VECTORS) as tmp:
        # raw memmap (no header): the shape lives in meta.json
        mm = np.memmap(tmp, dtype=np.float16, mode="w+", shape=(n, dim))
        row = 0
        for s in sorted({int(shard_of[r]) for r in audio_rows}):
            pids, vec = _read_part(_part_path(parts, s))
            if pids != want_ids[row: row + len(pids)] or vec.shape[1] != dim:
                raise EmbedError(f"{_part_path(parts, s)} does not match the shard set (rerun with --force)")
            mm[row: row + len(pids)] = vec
            row += len(pids)
        if row != n:
            raise EmbedError(f"merged {row} vectors, expected {n}")
        mm.flush()
        del mm
    ids_tbl = pa.table({"id": pa.array(want_ids, pa.string()), "row": pa.array(np.arange(n), pa.int64())})
    with atomic_path(out_dir / IDS) as tmp:
        pq.write_table(ids_tbl, tmp)
    rate_h = todo_hours / elapsed if elapsed > 0 and jobs else None
    meta = ws.write_meta(
        out_dir, "embed",
        config={**asdict(cfg), "shard_set": sdir.name, "name": name},
        inputs=[sdir / SAMPLES_FILE, sdir / SHARDS_FILE] + ([cfg.aligner] if cfg.aligner and Path(cfg.aligner).is_file() else []),
        outputs=[out_dir / VECTORS, out_dir / IDS],
        extra={
            "shape": [n, dim], "dtype": "float16", "order": "C", "pool": cfg.pool,
            "shard_set": sdir.name, "samples": len(ids_all), "audio_samples": n, "text_only_skipped": n_text,
            "hours": total_hours, "model": _read_json(parts / MODEL),
            "fingerprint": fp,
            "throughput": {"hours_per_s": rate_h, "samples_per_s": (n_done_samples / elapsed) if jobs and elapsed > 0 else None,
                           "seconds": elapsed},
        },
    )
    import shutil

    shutil.rmtree(parts, ignore_errors=True)
    summary.update(status="done", shape=[n, dim], meta=meta)
    log.info("wrote embeddings/%s: %d × %d float16 (%.1f s)", name, n, dim, elapsed)
    return summary


def _write_model(parts: Path, description: dict) -> None:
    if not (parts / MODEL).exists():
        from ..workspace import atomic_write

        atomic_write(parts / MODEL, json.dumps(description))


class _EmbedActor:
    """A Ray actor: one :class:`Embedder` (one GPU, or one CPU) running :func:`_run_jobs` per shard."""

    def __init__(self, cfg: EmbedConfig, parts: str, sleep_per_shard: float, access: Access = LOCAL_ONLY):
        import torch

        if str(cfg.device).startswith("cpu") or not torch.cuda.is_available():
            torch.set_num_threads(1)  # one CPU per actor
        self.cfg, self.parts, self.sleep, self.access = cfg, Path(parts), sleep_per_shard, access
        self.emb = Embedder(cfg)

    def describe(self) -> dict:
        return {"description": self.emb.description, "device": str(self.emb.device)}

    def run(self, job: _ShardJob) -> tuple[int, int, float]:
        from tqdm import tqdm

        n = _run_jobs(self.emb, [job], self.parts, self.cfg, False, self.sleep, 0.0, tqdm, self.access)
        return job.shard_id, n, float(job.durations.sum()) / 3600


def _run_jobs_ray(jobs, parts: Path, cfg: EmbedConfig, sleep_per_shard: float, executor: str,
                  ray_address: str | None, actors: int | None, progress: bool, todo_hours: float, tqdm,
                  access: Access = LOCAL_ONLY) -> int:
    from ..executors import get_executor

    bar = tqdm(total=round(todo_hours, 4), unit="h", disable=not progress, dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} h audio [{elapsed}<{remaining}{postfix}]")
    n_samples = [0]

    def done(r):
        n_samples[0] += r[1]
        bar.update(r[2])

    try:
        with get_executor(executor, ray_address) as ex:
            if not hasattr(ex, "map_on_actors"):
                raise EmbedError(f"--executor {executor} has no actors")
            info = ex.map_on_actors(_EmbedActor, (cfg, str(parts), sleep_per_shard, access), "run", jobs, done,
                                    n_actors=actors, describe="describe")
    finally:
        bar.close()
    _write_model(parts, info["description"])
    log.info("model: %s on Ray actors (%s)", json.dumps(info["description"]), info["device"])
    return n_samples[0]


def _run_jobs(emb: Embedder, jobs, parts: Path, cfg: EmbedConfig, progress: bool, sleep_per_shard: float,
              todo_hours: float, tqdm, access: Access = LOCAL_ONLY) -> int:
    q: queue.Queue = queue.Queue(maxsize=max(2 * cfg.sort_window, 64))
    stop = threading.Event()
    reader = threading.Thread(target=_read_shards, args=(jobs, q, cfg.decode_workers, stop, access), daemon=True,
                              name="jadwal-embed-reader")
    reader.start()
    by_id = {j.shard_id: j for j in jobs}
    bar = tqdm(total=round(todo_hours, 4), unit="h", disable=not progress, dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} h audio [{elapsed}<{remaining}{postfix}]")
    n_samples = 0
    hours = [0.0]
    t0 = time.time()
    cur: _ShardJob | None = None
    vecs: np.ndarray | None = None
    filled: np.ndarray | None = None
    window: list[_Item] = []

    def flush_window():
        nonlocal n_samples
        if not window:
            return
        durs = [len(it.wave) / it.rate for it in window]
        for b in plan_batches(durs, cfg.batch_seconds, window=len(window), bucket=cfg.bucket,
                              max_batch=cfg.max_batch, pad_to_30s=cfg.pad_to_30s):
            out = emb([window[i].wave for i in b], [window[i].rate for i in b])
            for i, v in zip(b, out):
                vecs[window[i].index] = v
                filled[window[i].index] = True
            n_samples += len(b)
            hours[0] += sum(durs[i] for i in b) / 3600
            bar.update(sum(durs[i] for i in b) / 3600)
            el = time.time() - t0
            if el > 0:
                bar.set_postfix_str(f"{hours[0] / el:.4g} audio h/s ({hours[0] * 3600 / el:.0f}× real time), "
                                    f"{n_samples / el:.1f} samples/s", refresh=False)
        window.clear()

    try:
        while True:
            item = q.get()
            if item is None:
                break
            if item.error is not None:
                raise item.error
            job = by_id[item.shard_id]
            if cur is None or cur.shard_id != job.shard_id:
                cur = job
                vecs = np.zeros((len(job.ids), emb.dim), dtype=np.float32)
                filled = np.zeros(len(job.ids), dtype=bool)
            if item.end:
                flush_window()
                if not filled.all():
                    raise EmbedError(f"{job.path}: {int((~filled).sum())} samples were not embedded")
                if not np.isfinite(vecs).all():
                    bad = [job.ids[i] for i in np.flatnonzero(~np.isfinite(vecs).all(axis=1))[:3]]
                    raise EmbedError(f"{job.path}: non-finite embeddings for {bad} (try --dtype fp32 or bf16)")
                _write_part(_part_path(parts, job.shard_id), job.ids, vecs)
                cur = None
                if sleep_per_shard:
                    time.sleep(sleep_per_shard)
                continue
            window.append(item)
            if len(window) >= cfg.sort_window:
                flush_window()
    finally:
        stop.set()
        bar.close()
        reader.join(timeout=5)
    return n_samples


def open_embeddings(ws: Workspace | str | os.PathLike, name: str | None = None):
    """``(ids, vectors, meta)`` of ``embeddings/<name>``: ids a list of strings, vectors a read-only
    float16 memmap ``(N, D)``.  Without ``name``, the only embeddings folder of the workspace."""
    import pyarrow.parquet as pq

    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    base = ws.path("embeddings")
    if name is None:
        have = sorted(p.parent.name for p in base.glob("*/meta.json")) if base.is_dir() else []
        if len(have) != 1:
            raise EmbedError(
                "no embeddings in the workspace (run `jadwal embed` first)" if not have
                else f"several embeddings ({', '.join(have)}); choose one with --embeddings"
            )
        name = have[0]
    d = base / check_name(name, "--embeddings")
    meta = ws.read_meta(d)
    if meta is None:
        raise EmbedError(f"embeddings/{name} is not complete (no meta.json); run `jadwal embed --name {name}`")
    shape = tuple(meta["shape"])
    vectors = np.memmap(d / VECTORS, dtype=np.float16, mode="r", shape=shape)
    t = pq.read_table(d / IDS)
    rows = t.column("row").to_numpy()
    if not np.array_equal(rows, np.arange(len(rows))):
        raise EmbedError(f"{d / IDS}: rows are not 0..N-1")
    return t.column("id").to_pylist(), vectors, meta
