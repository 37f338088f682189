"""Schedule spec: YAML → validated, normalized :class:`Spec`.  Errors name the key and what is allowed.

Example::

    seed: 1
    batch_size: 16          # global samples per step   (or  max_duration: 240  seconds per micro-batch)
    steps: 200              # or  epochs: 2  (one epoch = one pass over the samples the index draws from)
    world_size: 2
    readers_per_rank: 2     # DataLoader workers per rank
    buffer: 256             # max read-but-undelivered samples per reader
    phases:
      - {policy: tpc, length: 0.5, stages: [[asr], [did, ser], [ssum]], replay: 0.1}
      - {policy: ads, length: 0.5, clusters: k500}

Phase ``length``: an int (steps), a float in (0, 1] (fraction of the run), or ``{epochs: E}``; the last
phase may omit it (the rest of the run).  Other top-level keys: ``shards`` (shard set name; optional when
the workspace has one), ``split`` (only samples of this split, default ``train`` when the column has it),
``on_exhaustion`` (``repeat`` | ``stop`` | ``fail``, or a mapping ``{default: …, <stream>: …}``),
``fallback`` (``none`` | ``substitute``), ``policy_modules`` (Python files that register policies),
``num_buckets``/``bucket_window`` (duration mode).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

EXHAUSTION = ("repeat", "stop", "fail")
FALLBACKS = ("none", "substitute")
TOP_KEYS = {
    "seed", "batch_size", "max_duration", "steps", "epochs", "world_size", "readers_per_rank", "buffer",
    "on_exhaustion", "fallback", "phases", "shards", "split", "policy_modules", "bucket_window", "name",
    "description",
}


class SpecError(ValueError):
    """A schedule spec is invalid; the message names the offending key."""


@dataclass
class Phase:
    index: int
    policy: str
    length: Any  # int steps | float fraction | {"epochs": e} | None (rest)
    params: dict
    start: int = 0  # resolved global steps [start, end)
    end: int = 0


@dataclass
class Spec:
    seed: int
    world_size: int
    readers_per_rank: int
    buffer: int
    phases: list[Phase]
    batch_size: int | None = None
    max_duration: float | None = None
    steps: int | None = None
    epochs: float | None = None
    on_exhaustion: dict = field(default_factory=lambda: {"default": "repeat"})
    fallback: str = "none"
    shards: str | None = None
    split: str | None = "train"
    policy_modules: list[str] = field(default_factory=list)
    bucket_window: int = 0
    raw: dict = field(default_factory=dict)

    @property
    def micro_batch(self) -> int | None:
        return None if self.batch_size is None else self.batch_size // self.world_size

    def exhaustion_of(self, stream: str) -> str:
        return self.on_exhaustion.get(stream, self.on_exhaustion["default"])


def _int(d: dict, key: str, *, minimum: int = 0, where: str = "spec") -> int:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise SpecError(f"{where}: `{key}` must be an integer ≥ {minimum}, got {v!r}")
    return v


def load_spec(source: str | Path | dict, base_dir: str | Path | None = None) -> Spec:
    """Parse and validate a spec from a YAML file path, YAML text, or a dict."""
    if isinstance(source, dict):
        raw = source
    else:
        p = Path(source)
        if "\n" not in str(source) and p.exists():
            base_dir = base_dir or p.parent
            raw = yaml.safe_load(p.read_text(encoding="utf-8"))
        else:
            raw = yaml.safe_load(str(source))
    if not isinstance(raw, dict):
        raise SpecError("spec: expected a mapping at the top level")
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise SpecError(f"spec: unknown key(s) {sorted(unknown)}; allowed: {sorted(TOP_KEYS)}")
    for key in ("seed", "world_size", "phases"):
        if key not in raw:
            raise SpecError(f"spec: missing required key `{key}`")
    seed = _int(raw, "seed")
    world = _int(raw, "world_size", minimum=1)
    readers = _int(raw, "readers_per_rank", minimum=1) if "readers_per_rank" in raw else 1
    buffer = _int(raw, "buffer") if "buffer" in raw else 0
    if ("batch_size" in raw) == ("max_duration" in raw):
        raise SpecError("spec: give exactly one of `batch_size` (global samples per step) or "
                        "`max_duration` (seconds of audio per micro-batch)")
    batch = max_dur = None
    if "batch_size" in raw:
        batch = _int(raw, "batch_size", minimum=1)
        if batch % world:
            raise SpecError(f"spec: `batch_size` {batch} must be divisible by `world_size` {world} "
                            "(every rank gets an equal micro-batch)")
    else:
        max_dur = raw["max_duration"]
        if not isinstance(max_dur, (int, float)) or isinstance(max_dur, bool) or max_dur <= 0:
            raise SpecError(f"spec: `max_duration` must be a positive number of seconds, got {max_dur!r}")
        max_dur = float(max_dur)
    steps = epochs = None
    if "steps" in raw and "epochs" in raw:
        raise SpecError("spec: give `steps` or `epochs`, not both")
    if "steps" in raw:
        steps = _int(raw, "steps", minimum=1)
    if "epochs" in raw:
        epochs = raw["epochs"]
        if not isinstance(epochs, (int, float)) or isinstance(epochs, bool) or epochs <= 0:
            raise SpecError(f"spec: `epochs` must be a positive number, got {epochs!r}")
    exh = raw.get("on_exhaustion", "repeat")
    if isinstance(exh, str):
        exh = {"default": exh}
    if not isinstance(exh, dict):
        raise SpecError("spec: `on_exhaustion` must be one of repeat|stop|fail or a mapping stream → behaviour")
    exh = {"default": "repeat", **{str(k): v for k, v in exh.items()}}
    for k, v in exh.items():
        if v not in EXHAUSTION:
            raise SpecError(f"spec: `on_exhaustion.{k}` is {v!r}; allowed: {', '.join(EXHAUSTION)}")
    fallback = raw.get("fallback", "none")
    if fallback not in FALLBACKS:
        raise SpecError(f"spec: `fallback` is {fallback!r}; allowed: {', '.join(FALLBACKS)}")
    phases_raw = raw["phases"]
    if not isinstance(phases_raw, list) or not phases_raw:
        raise SpecError("spec: `phases` must be a non-empty list of {policy: …, length: …, …}")
    phases = []
    for i, ph in enumerate(phases_raw):
        where = f"phases[{i}]"
        if not isinstance(ph, dict) or "policy" not in ph:
            raise SpecError(f"{where}: must be a mapping with a `policy` key")
        params = {k: v for k, v in ph.items() if k not in ("policy", "length")}
        length = ph.get("length")
        if length is None and i != len(phases_raw) - 1:
            raise SpecError(f"{where}: `length` is required (only the last phase may omit it)")
        if length is not None:
            if isinstance(length, bool):
                raise SpecError(f"{where}: `length` must be steps (int), a fraction in (0, 1] or {{epochs: E}}")
            if isinstance(length, dict):
                if set(length) != {"epochs"} or not isinstance(length["epochs"], (int, float)) or length["epochs"] <= 0:
                    raise SpecError(f"{where}: `length` mapping must be {{epochs: E}} with E > 0, got {length!r}")
            elif isinstance(length, float):
                if not 0 < length <= 1:
                    raise SpecError(f"{where}: fractional `length` must be in (0, 1], got {length}")
            elif not isinstance(length, int) or length < 1:
                raise SpecError(f"{where}: `length` must be steps ≥ 1, a fraction in (0, 1] or {{epochs: E}}, got {length!r}")
        phases.append(Phase(index=i, policy=str(ph["policy"]), length=length, params=params))
    modules = raw.get("policy_modules", []) or []
    if isinstance(modules, str):
        modules = [modules]
    if base_dir is not None:
        modules = [str((Path(base_dir) / m).resolve()) if not Path(m).is_absolute() else m for m in modules]
    return Spec(
        seed=seed, world_size=world, readers_per_rank=readers, buffer=buffer, phases=phases,
        batch_size=batch, max_duration=max_dur, steps=steps, epochs=epochs, on_exhaustion=exh,
        fallback=fallback, shards=raw.get("shards"), split=raw.get("split", "train"),
        policy_modules=list(modules), bucket_window=int(raw.get("bucket_window", 0) or 0), raw=raw,
    )


def resolve_phase_steps(spec: Spec, n_samples: int, samples_per_step: float) -> int:
    """Fill in each phase's [start, end) steps and return the run's total steps.

    ``samples_per_step`` is the global batch (or its expectation in duration mode); an epoch is
    ``n_samples / samples_per_step`` steps.
    """
    def epoch_steps(e) -> int:
        # exact for the decimal the spec wrote: 0.9 × 100 / 3 is 30 steps, not ceil(30.000000000000004)
        return max(1, math.ceil(Fraction(str(e)) * n_samples / Fraction(samples_per_step)))

    fixed = []  # steps of phases given in steps or epochs
    for ph in spec.phases:
        if isinstance(ph.length, dict):
            fixed.append(epoch_steps(ph.length["epochs"]))
        elif isinstance(ph.length, int):
            fixed.append(ph.length)
        else:
            fixed.append(None)
    if spec.steps is not None:
        total = spec.steps
    elif spec.epochs is not None:
        total = epoch_steps(spec.epochs)
    elif all(f is not None for f in fixed):
        total = sum(fixed)
    else:
        raise SpecError("spec: give `steps` or `epochs` when a phase length is a fraction or omitted")
    lengths = list(fixed)
    # fractions of the run: round their cumulative boundaries (half up), so that fractions adding up
    # to 1 fill the run exactly (two halves of 7 steps: 4 + 3, not 4 + 4)
    cum, prev = 0.0, 0
    for i, ph in enumerate(spec.phases):
        if isinstance(ph.length, float):
            cum += ph.length
            b = math.floor(cum * total + 0.5 + 1e-9)
            lengths[i], prev = b - prev, b
    known = sum(x for x in lengths if x is not None)
    if known > total:
        raise SpecError(f"spec: phases add up to {known} steps, longer than the run ({total} steps)")
    rest = [i for i, x in enumerate(lengths) if x is None]
    if rest:
        lengths[rest[0]] = total - known
    elif known < total:
        raise SpecError(f"spec: phases add up to {known} steps but the run has {total}; make the lengths add "
                        "up (fractions summing to 1) or omit the last phase's length")
    start = 0
    for ph, n in zip(spec.phases, lengths):
        if n < 1:
            raise SpecError(f"phases[{ph.index}]: resolves to {n} steps; every phase needs at least one step")
        ph.start, ph.end = start, start + n
        start += n
    return total
