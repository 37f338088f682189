"""Named text forms of a transcript or target, defined once for every stage.

Three forms (:data:`FORMS`); the manifest records what produces each, nothing is stored twice:

* ``raw`` — as found in the source: the manifest's ``text_raw`` (transcripts) or the stored
  ``target`` (summaries, answers).
* ``train`` — :func:`train_text`, a light cleanup that keeps the orthography a model should learn to
  write: Unicode NFC; NFKC only for Arabic presentation forms (U+FB50–FDFF, U+FE70–FEFE, e.g. the
  ligature ``ﻻ`` → ``لا``); bidi/zero-width controls and tatweel ``ـ`` removed; whitespace collapsed.
  Hamza forms ``أ إ آ``, ``ى``, ``ة``, Arabic-Indic digits and punctuation are kept; diacritics are kept
  unless :class:`TrainOptions` ``strip_diacritics`` is on.  Computed from ``text_raw`` when needed
  (by the trainer, the summarization builder), never stored.
* ``score`` — :func:`score_text`: the scoring normalization of :mod:`jadwal.manifests.normalize` with
  its default options (diacritics stripped, ``أ إ آ`` → ``ا``, ``ى`` → ``ي``, Arabic-Indic digits →
  ASCII, punctuation removed).  For transcripts it is the manifest's ``text`` column (imported with
  the options recorded in the dataset's ``meta.json``); metrics apply :func:`score_text` to both
  prediction and reference.

``score_text(train_text(x)) == score_text(x)``: cleaning for training never changes what is scored.
Class labels (``label``) are identifiers, not text: no form applies to them.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

from .manifests.normalize import DEFAULT, DIACRITICS, INVISIBLE, TATWEEL, normalize_text

FORMS = ("raw", "train", "score")
DEFAULT_FORM = "train"

_PRESENTATION = re.compile("[\uFB50-\uFDFF\uFE70-\uFEFE]+")


@dataclass(frozen=True)
class TrainOptions:
    """Options of the ``train`` form (``strip_diacritics``: remove harakat, tanween, shadda, sukun, …)."""

    strip_diacritics: bool = False


@functools.lru_cache(maxsize=4)
def _train_table(strip_diacritics: bool) -> dict[int, None]:
    drop = set(INVISIBLE) | {TATWEEL} | (set(DIACRITICS) if strip_diacritics else set())
    return {ord(c): None for c in drop}


def train_text(text: str | None, opts: TrainOptions = TrainOptions()) -> str:
    """The ``train`` form of ``text`` (``None`` → ``""``); idempotent."""
    if not text:
        return ""
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
        if _PRESENTATION.search(text):
            text = unicodedata.normalize(
                "NFC", _PRESENTATION.sub(lambda m: unicodedata.normalize("NFKC", m.group(0)), text))
        text = text.translate(_train_table(opts.strip_diacritics))
    return " ".join(text.split())


def score_text(text: str | None) -> str:
    """The ``score`` form of ``text`` (``None`` → ``""``): ``normalize_text`` with default options."""
    return normalize_text(text, DEFAULT) if text else ""


def check_form(form: str) -> str:
    if form not in FORMS:
        raise ValueError(f"unknown text form {form!r}; choose one of {', '.join(FORMS)}")
    return form


def to_form(text: str | None, form: str, opts: TrainOptions = TrainOptions()) -> str:
    """``text`` (taken as found) in ``form``."""
    check_form(form)
    if form == "raw":
        return "" if text is None else str(text)
    return train_text(text, opts) if form == "train" else score_text(text)


def transcript_in(form: str, *, text: str | None, text_raw: str | None,
                  opts: TrainOptions = TrainOptions()) -> str:
    """A manifest row's transcript in ``form``: ``raw`` → ``text_raw``; ``train`` → ``train_text(text_raw)``;
    ``score`` → the row's ``text`` column.  Rows without ``text_raw`` fall back to ``text`` (and back)."""
    check_form(form)
    raw = text_raw if text_raw else text
    if form == "score":
        return str(text) if text else score_text(raw)
    return to_form(raw, form, opts)


@dataclass(frozen=True)
class TextForms:
    """Which form each task's texts (targets, transcripts in text-only prompts) take in training.

    ``per_task`` pairs override ``default``; build from a training config with :meth:`from_config`."""

    default: str = DEFAULT_FORM
    per_task: tuple[tuple[str, str], ...] = ()
    train: TrainOptions = TrainOptions()

    def __post_init__(self):
        check_form(self.default)
        for _, f in self.per_task:
            check_form(f)

    @classmethod
    def from_config(cls, value=None, options: dict | None = None) -> "TextForms":
        """``value``: ``None`` (train everywhere), a form name, or ``{task: form, "*": form}``;
        ``options``: :class:`TrainOptions` fields (e.g. ``{strip_diacritics: true}``)."""
        opts = dict(options or {})
        unknown = sorted(set(opts) - set(TrainOptions.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown text_form_options {unknown}; allowed: {sorted(TrainOptions.__dataclass_fields__)}")
        train = TrainOptions(**{k: bool(v) for k, v in opts.items()})
        if value is None:
            return cls(train=train)
        if isinstance(value, str):
            return cls(default=value, train=train)
        if not isinstance(value, dict):
            raise ValueError(f"text_form must be a form name or a mapping task → form, got {value!r}")
        d = {str(k): str(v) for k, v in value.items()}
        default = d.pop("*", d.pop("default", DEFAULT_FORM))
        return cls(default=default, per_task=tuple(sorted(d.items())), train=train)

    def form_of(self, task: str) -> str:
        return dict(self.per_task).get(task, self.default)

    def to_dict(self) -> dict:
        return {"default": self.default, **dict(self.per_task), "strip_diacritics": self.train.strip_diacritics}
