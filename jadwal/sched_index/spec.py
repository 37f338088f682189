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
``num_buckets``/``bucket_window`` (duration mode), ``plan_memory`` (see below).  Every phase also
takes ``modality: audio | text | any`` (default per policy, see docs/sched_index.md); a sweep
(``jadwal plan --sweep KEY=V1,V2,…``) is a family of specs, one per value (:func:`sweep_specs`).

Bounds (checked while loading, before anything is planned or allocated): the spec text is at most
:data:`MAX_SPEC_BYTES`; its YAML at most :data:`MAX_SPEC_NODES` nodes with every alias use counted
as a full copy (an alias bomb fails at once), no recursive aliases; only plain YAML tags (a
``!!python/…`` tag is an error: a spec is data and never runs code); ``policy_modules`` entries are
``.py`` files (they *are* executed: see ``docs/security.md``).  A plan of ``steps × batch_size`` slots
needs about :data:`PLAN_BYTES_PER_SLOT` bytes per slot; over the budget (``plan_memory`` in the spec,
else the ``JADWAL_PLAN_MEMORY`` environment variable, else :data:`DEFAULT_PLAN_MEMORY`; sizes like
``64GiB``) the spec is refused with the numbers.
"""
from __future__ import annotations

import math
import os
import re
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
    "description", "plan_memory",
}
MAX_SPEC_BYTES = 1 << 20  # a spec file/text larger than 1 MiB is refused unread
MAX_SPEC_NODES = 200_000  # YAML nodes, aliases expanded
PLAN_BYTES_PER_SLOT = 48  # plan.npy 8 + vpos 8 + requested 4 + composition and planning temporaries
DEFAULT_PLAN_MEMORY = 16 << 30  # bytes; override: spec `plan_memory` or env JADWAL_PLAN_MEMORY
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*$", re.IGNORECASE)


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


def parse_size(v, what: str) -> int:
    """Bytes from an int or a size string (``"64GiB"``, ``"500MB"``, ``"2e9"`` not accepted)."""
    if isinstance(v, int) and not isinstance(v, bool) and v > 0:
        return v
    m = _SIZE.match(str(v)) if isinstance(v, str) else None
    if not m:
        raise SpecError(f"{what}: {v!r} is not a size (bytes, or e.g. 64GiB, 500MB)")
    unit = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * unit ** "_KMGT".index((m.group(2) or "_").upper()))


def _check_expansion(node, where: str) -> None:
    """Refuse a YAML node graph whose expanded size (aliases counted at every use) exceeds
    :data:`MAX_SPEC_NODES`, or that refers to itself."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(n) -> int:
        k = id(n)
        if k in sizes:
            return sizes[k]
        if k in active:
            raise SpecError(f"{where}: a YAML alias refers to its own anchor (a recursive structure)")
        active.add(k)
        total = 1
        if isinstance(n, yaml.SequenceNode):
            children = n.value
        elif isinstance(n, yaml.MappingNode):
            children = [c for kv in n.value for c in kv]
        else:
            children = []
        for c in children:
            total += size(c)
            if total > MAX_SPEC_NODES:
                raise SpecError(f"{where}: the YAML expands to more than {MAX_SPEC_NODES:,} nodes (aliases "
                                f"counted at every use; an alias bomb?); a spec is a small file")
        active.discard(k)
        sizes[k] = total
        return total

    size(node)


def _safe_yaml(text: str, where: str):
    """``yaml.safe_load`` with the bounds of the module docstring; YAML errors → one-line SpecError."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        raise SpecError(f"{where}: {len(text):,} characters, over the {MAX_SPEC_BYTES:,}-byte limit of a spec")
    loader = yaml.SafeLoader(text)
    loader.name = where
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, where)
        return loader.construct_document(node)
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        tag = re.search(r"tag '([^']*)'", str(e.problem or ""))
        if tag:
            name = tag.group(1).replace("tag:yaml.org,2002:", "!!")
            raise SpecError(f"{where}{at}: YAML tag {name!r} is not allowed; a spec is plain data "
                            f"(mappings, lists, strings, numbers) and never constructs objects") from None
        raise SpecError(f"{where}{at}: {' '.join(str(e.problem or e).split())}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        what = " ".join(x for x in (e.context, e.problem) if x) or str(e)
        raise SpecError(f"{where}{at}: invalid YAML: {' '.join(what.split())}") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{where}: invalid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise SpecError(f"{where}: the YAML is nested too deeply") from None
    finally:
        loader.dispose()


def check_plan_memory(raw: dict, steps: int, batch_size: int, what: str = "batch_size") -> None:
    """Refuse a plan of ``steps × batch_size`` slots whose estimated memory
    (:data:`PLAN_BYTES_PER_SLOT` per slot) exceeds the budget, with the numbers (``what`` names the
    per-step count in the message)."""
    if "plan_memory" in raw:
        budget, src = parse_size(raw["plan_memory"], "spec: `plan_memory`"), "`plan_memory` in the spec"
    elif os.environ.get("JADWAL_PLAN_MEMORY"):
        budget, src = parse_size(os.environ["JADWAL_PLAN_MEMORY"], "JADWAL_PLAN_MEMORY"), "JADWAL_PLAN_MEMORY"
    else:
        budget, src = DEFAULT_PLAN_MEMORY, "the default"
    slots = steps * batch_size
    need = slots * PLAN_BYTES_PER_SLOT
    if need > budget:
        raise SpecError(
            f"spec: {steps:,} steps × {what} {batch_size:,} = {slots:,} slots need about {need / 2**30:,.1f} GiB "
            f"to plan ({PLAN_BYTES_PER_SLOT} bytes per slot), over the budget of {budget / 2**30:,.1f} GiB "
            f"({src}); plan fewer steps (several indexes, `--continue-from`), or raise `plan_memory` "
            f"(spec) / JADWAL_PLAN_MEMORY")


def load_spec(source: str | Path | dict, base_dir: str | Path | None = None) -> Spec:
    """Parse and validate a spec from a YAML file path, YAML text, or a dict (bounds: module docstring)."""
    if isinstance(source, dict):
        raw = source
    else:
        text = str(source)
        p = Path(source) if "\n" not in text and len(text) < 4096 else None
        if p is not None and p.is_file():
            base_dir = base_dir or p.parent
            if p.stat().st_size > MAX_SPEC_BYTES:
                raise SpecError(f"spec {p}: {p.stat().st_size:,} bytes, over the {MAX_SPEC_BYTES:,}-byte limit "
                                f"of a spec")
            try:
                text = p.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise SpecError(f"spec {p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            raw = _safe_yaml(text, f"spec {p}")
        else:
            raw = _safe_yaml(text, "spec")
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
    if not isinstance(modules, list):
        raise SpecError("spec: `policy_modules` must be a list of .py files")
    for m in modules:
        if not isinstance(m, str) or not m.endswith(".py") or "\0" in m:
            raise SpecError(f"spec: `policy_modules` entry {m!r} is not a .py file (policy modules are Python "
                            f"files that jadwal runs to register policies; see docs/security.md)")
    if batch is not None:
        plan_steps = steps
        if plan_steps is None and all(isinstance(ph.length, int) for ph in phases):
            plan_steps = sum(ph.length for ph in phases)
        if plan_steps is not None:
            check_plan_memory(raw, plan_steps, batch)
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
    # the run's length is known now (epochs resolved): bound it before the planner allocates
    check_plan_memory(spec.raw, total, max(1, math.ceil(samples_per_step)),
                      "batch_size" if spec.batch_size is not None else "expected samples per step")
    start = 0
    for ph, n in zip(spec.phases, lengths):
        if n < 1:
            raise SpecError(f"phases[{ph.index}]: resolves to {n} steps; every phase needs at least one step")
        ph.start, ph.end = start, start + n
        start += n
    return total


_SWEEP_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[\d+\])*(\.[A-Za-z_][A-Za-z0-9_]*(\[\d+\])*)*$")


def parse_sweep(text: str) -> tuple[list, list, str]:
    """``KEY=V1,V2,…`` → (path of keys and list indexes, values, leaf name).  KEY is dotted with list
    indexes (``phases[0].switch``, ``phases[1].ads.cluster_weights``, ``seed``); each value is a YAML
    scalar (``0.25`` → float, ``100`` → int, ``size`` → str)."""
    key, sep, vals = str(text).partition("=")
    key = key.strip()
    if not sep or not _SWEEP_KEY.match(key) or not vals.strip():
        raise SpecError(f"--sweep {text!r}: expected KEY=V1,V2,… with KEY like phases[0].switch")
    path: list = []
    for tok in key.split("."):
        name, *idx = re.split(r"\[", tok)
        path.append(name)
        path.extend(int(i.rstrip("]")) for i in idx)
    values = []
    for v in vals.split(","):
        x = _safe_yaml(v.strip(), f"--sweep value {v.strip()!r}")
        if not isinstance(x, (int, float, str)) or isinstance(x, bool) or x == "":
            raise SpecError(f"--sweep {key}: value {v!r} is not a number or a word")
        values.append(x)
    if len(set(map(str, values))) != len(values):
        raise SpecError(f"--sweep {key}: values repeat")
    return path, values, str(path[-1]) if isinstance(path[-1], str) else key


def sweep_specs(source, text: str) -> list[tuple[str, dict]]:
    """The specs of a sweep: ``source`` (path, YAML text or dict) with KEY set to each value of
    ``KEY=V1,V2,…`` (:func:`parse_sweep`), each validated by :func:`load_spec`; returned as
    ``(name suffix, raw spec)`` with suffix ``<leaf><number>`` (``switch0.25``) or ``<leaf>-<word>``
    (``cluster_weights-size``)."""
    import copy

    base = load_spec(source)
    path, values, leaf = parse_sweep(text)
    where = "--sweep " + text.partition("=")[0].strip()
    out = []
    for v in values:
        raw = copy.deepcopy(base.raw)
        node = raw
        for k, nxt in zip(path[:-1], path[1:]):
            ok = (isinstance(node, dict) and isinstance(k, str) and k in node) or \
                 (isinstance(node, list) and isinstance(k, int) and 0 <= k < len(node))
            if not ok:
                raise SpecError(f"{where}: the spec has no {k!r} on that path")
            node = node[k]
        last = path[-1]
        if isinstance(last, int) and not (isinstance(node, list) and 0 <= last < len(node)):
            raise SpecError(f"{where}: the spec has no item {last} on that path")
        if isinstance(last, str) and not isinstance(node, dict):
            raise SpecError(f"{where}: the spec has no mapping holding {last!r}")
        node[last] = v
        base_dir = None
        text_src = str(source) if not isinstance(source, dict) else ""
        if text_src and "\n" not in text_src and Path(text_src).is_file():
            base_dir = Path(text_src).parent
        if base_dir is not None and raw.get("policy_modules"):  # relative to the spec file, as load_spec does
            mods = raw["policy_modules"]
            raw["policy_modules"] = [str((base_dir / m).resolve()) if not Path(m).is_absolute() else m
                                     for m in ([mods] if isinstance(mods, str) else mods)]
        load_spec(raw, base_dir=base_dir)  # the swept spec is valid on its own
        out.append((f"{leaf}{v}" if not isinstance(v, str) else f"{leaf}-{v}", raw))
    return out
