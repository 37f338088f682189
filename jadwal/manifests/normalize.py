"""Arabic transcript normalization: one small, table-driven function (``str.translate``).

The manifest keeps both forms: ``text_raw`` is the transcript exactly as found in the source,
``text`` is ``normalize_text(text_raw)``.  This is the *scoring* normalization (the ``score`` text form
of :mod:`jadwal.textforms`, right for WER, deduplication and matching); models learn the ``train`` form,
computed from ``text_raw`` (orthography kept), not ``text``.  Every rule is an option of :class:`NormalizeOptions`
(and a ``--[no-]<rule>`` flag of ``jadwal manifest import``).  Rules, in the order applied:

1. ``unicode_form`` (default ``"NFKC"``): Unicode normalization.  NFKC maps Arabic presentation
   forms (U+FB50–FDFF, U+FE70–FEFF, e.g. the ligature ``ﻻ`` → ``لا``) to plain letters and composes
   decomposed hamza/madda (``ا`` + U+0654 → ``أ``) so the tables below see one code point.
   ``"NFC"`` only composes; ``"none"`` skips the step.
2. ``strip_diacritics`` (default on): removes harakat (fatha, damma, kasra), tanween (fathatan,
   dammatan, kasratan), shadda, sukun, superscript (dagger) alef U+0670, the other combining marks
   U+0610–061A, U+0653–065F and the Quranic annotation marks U+06D6–06ED.
3. ``strip_tatweel`` (default on): removes tatweel/kashida ``ـ`` U+0640.
4. ``unify_alef`` (default on): ``أ إ آ ٱ ٲ ٳ`` → ``ا``.
5. ``alef_maqsura`` (default on): ``ى`` → ``ي`` (alef maqsura to ya, as in most Arabic ASR scoring).
6. ``ta_marbuta`` (default **off**): ``ة`` → ``ه``.  Off because it changes spelling (and hence
   the LM's targets) more than any other rule; turn it on to score like MGB-style WER tools.
7. ``persian_letters`` (default on): Persian/Urdu look-alikes typed on Persian keyboards,
   ``ک`` → ``ك``, ``ی`` → ``ي``, ``ە`` / ``ہ`` → ``ه``.
8. ``ascii_digits`` (default on): Arabic-Indic ``٠-٩`` and extended (Persian/Urdu) ``۰-۹`` → ``0-9``.
9. ``strip_punctuation`` (default on): Arabic ``، ؛ ؟ ٪ ٫ ٬ ۔ « »``, curly quotes, dashes,
   ellipsis, ornate parentheses ``﴾ ﴿`` and every ASCII punctuation character become a space
   (a space, not nothing, so ``كلمة،كلمة`` stays two words).
10. always: zero-width and bidi control characters (ZWSP, ZWNJ, ZWJ, LRM, RLM, ALM, BOM, …) are removed.
11. ``lowercase`` (default off): ``str.lower`` (for code-switched Latin words).
12. always: whitespace (any Unicode space, tabs, newlines) collapsed to single spaces and stripped.

Hamza on waw/ya (``ؤ ئ``) and standalone hamza ``ء`` are kept.  The function is pure and fast
(one ``unicodedata.normalize``, one ``str.translate``, one ``split``/``join``): ~1 µs per short
transcript.
"""
from __future__ import annotations

import dataclasses
import functools
import string
import unicodedata
from dataclasses import dataclass

UNICODE_FORMS = ("NFKC", "NFC", "none")

DIACRITICS = (
    [chr(c) for c in range(0x0610, 0x061B)]  # Quranic honorific / small marks
    + [chr(c) for c in range(0x064B, 0x0660)]  # tanween, harakat, shadda, sukun, maddah/hamza marks, …
    + ["\u0670"]  # superscript (dagger) alef
    + [chr(c) for c in range(0x06D6, 0x06DD)]  # Quranic annotation marks
    + [chr(c) for c in range(0x06DF, 0x06E5)]
    + ["\u06E7", "\u06E8"]
    + [chr(c) for c in range(0x06EA, 0x06EE)]
)
TATWEEL = "\u0640"
ALEF_VARIANTS = "\u0623\u0625\u0622\u0671\u0672\u0673"  # أ إ آ ٱ ٲ ٳ
ALEF = "\u0627"
ALEF_MAQSURA, YA = "\u0649", "\u064A"
TA_MARBUTA, HA = "\u0629", "\u0647"
PERSIAN_LETTERS = {"\u06A9": "\u0643", "\u06CC": YA, "\u06D5": HA, "\u06C1": HA}  # ک ی ە ہ
DIGITS = {chr(0x0660 + i): str(i) for i in range(10)} | {chr(0x06F0 + i): str(i) for i in range(10)}
ARABIC_PUNCTUATION = (
    "\u060C\u061B\u061F\u066A\u066B\u066C\u06D4\u060D"  # ، ؛ ؟ ٪ ٫ ٬ ۔ ؍
    "\u00AB\u00BB\u2018\u2019\u201A\u201C\u201D\u201E\u2039\u203A"  # « » ‘ ’ ‚ “ ” „ ‹ ›
    "\u2010\u2011\u2012\u2013\u2014\u2015\u2026\u00B7\u2022"  # dashes, … · •
    "\uFD3E\uFD3F\u00A1\u00BF"  # ﴾ ﴿ ¡ ¿
)
ASCII_PUNCTUATION = string.punctuation
INVISIBLE = "\u200B\u200C\u200D\u200E\u200F\u061C\uFEFF\u202A\u202B\u202C\u202D\u202E\u2066\u2067\u2068\u2069\u00AD"


@dataclass(frozen=True)
class NormalizeOptions:
    """Which normalization rules to apply (see the module docstring for each rule)."""

    unicode_form: str = "NFKC"
    strip_diacritics: bool = True
    strip_tatweel: bool = True
    unify_alef: bool = True
    alef_maqsura: bool = True
    ta_marbuta: bool = False
    persian_letters: bool = True
    ascii_digits: bool = True
    strip_punctuation: bool = True
    lowercase: bool = False

    def __post_init__(self):
        if self.unicode_form not in UNICODE_FORMS:
            raise ValueError(f"unicode_form must be one of {UNICODE_FORMS}, got {self.unicode_form!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def rule_names(cls) -> list[str]:
        """The boolean rules (each becomes a ``--[no-]rule`` CLI flag)."""
        return [f.name for f in dataclasses.fields(cls) if f.type in (bool, "bool")]


@functools.lru_cache(maxsize=64)
def _table(opts: NormalizeOptions) -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    if opts.strip_punctuation:
        for ch in ARABIC_PUNCTUATION + ASCII_PUNCTUATION:
            table[ord(ch)] = " "
    if opts.ascii_digits:
        table.update({ord(k): v for k, v in DIGITS.items()})
    if opts.persian_letters:
        table.update({ord(k): v for k, v in PERSIAN_LETTERS.items()})
    if opts.ta_marbuta:
        table[ord(TA_MARBUTA)] = HA
    if opts.alef_maqsura:
        table[ord(ALEF_MAQSURA)] = YA
    if opts.unify_alef:
        table.update({ord(ch): ALEF for ch in ALEF_VARIANTS})
    if opts.strip_tatweel:
        table[ord(TATWEEL)] = None
    if opts.strip_diacritics:
        table.update({ord(ch): None for ch in DIACRITICS})
    for ch in INVISIBLE:
        table[ord(ch)] = None
    return table


DEFAULT = NormalizeOptions()


def normalize_text(text: str, opts: NormalizeOptions = DEFAULT) -> str:
    """Normalize one transcript with ``opts`` (defaults: see the module docstring)."""
    if opts.unicode_form != "none" and not text.isascii():
        text = unicodedata.normalize(opts.unicode_form, text)
    text = text.translate(_table(opts))
    if opts.lowercase:
        text = text.lower()
    return " ".join(text.split())


class Normalizer:
    """``normalize_text`` bound to fixed options (``None`` options = whitespace strip only)."""

    def __init__(self, opts: NormalizeOptions | None = DEFAULT):
        self.opts = opts
        self.table = _table(opts) if opts is not None else None

    def __call__(self, text: str) -> str:
        opts = self.opts
        if opts is None:
            return text.strip()
        if opts.unicode_form != "none" and not text.isascii():
            text = unicodedata.normalize(opts.unicode_form, text)
        text = text.translate(self.table)
        if opts.lowercase:
            text = text.lower()
        return " ".join(text.split())
