"""Arabic normalization rules, table-driven: (input, options, expected)."""
from __future__ import annotations

import pytest

from jadwal.manifests.normalize import NormalizeOptions, Normalizer, normalize_text

D = NormalizeOptions()

CASES = [
    # diacritics: harakat, tanween, shadda, sukun, superscript alef
    ("كَتَبَ", D, "كتب"),
    ("كتابٌ جميلٌ", D, "كتاب جميل"),
    ("شُكْرًا", D, "شكرا"),
    ("مُحَمَّد", D, "محمد"),
    ("هٰذا", D, "هذا"),
    ("رَحْمٰنِ", D, "رحمن"),
    ("كَتَبَ", NormalizeOptions(strip_diacritics=False), "كَتَبَ"),
    # tatweel
    ("جمـــيل", D, "جميل"),
    ("جمـيل", NormalizeOptions(strip_tatweel=False), "جمـيل"),
    # alef variants
    ("أحمد إبراهيم آمن ٱلله", D, "احمد ابراهيم امن الله"),
    ("أحمد", NormalizeOptions(unify_alef=False), "أحمد"),
    # decomposed hamza (alef + combining hamza above) composes under NFKC, then unifies
    ("\u0627\u0654حمد", D, "احمد"),
    # alef maqsura (default on) and ta marbuta (default off)
    ("على مستشفى", D, "علي مستشفي"),
    ("على", NormalizeOptions(alef_maqsura=False), "على"),
    ("مدرسة جميلة", D, "مدرسة جميلة"),
    ("مدرسة جميلة", NormalizeOptions(ta_marbuta=True), "مدرسه جميله"),
    # hamza on waw/ya and lone hamza are kept
    ("مسؤول قائد سماء", D, "مسؤول قائد سماء"),
    # digits: Arabic-Indic and Persian → ASCII
    ("عام ٢٠٢٤", D, "عام 2024"),
    ("۱۲۳۴۵۶۷۸۹۰", D, "1234567890"),
    ("٢٠٢٤", NormalizeOptions(ascii_digits=False), "٢٠٢٤"),
    # punctuation → space, then whitespace collapse
    ("نعم، لا؛ ربما؟", D, "نعم لا ربما"),
    ("كلمة،كلمة", D, "كلمة كلمة"),
    ("«اقتباس» - (قوس) ...!", D, "اقتباس قوس"),
    ("﴿ الحمد ﴾", D, "الحمد"),
    ("نعم، لا", NormalizeOptions(strip_punctuation=False), "نعم، لا"),
    # Persian look-alike letters
    ("کتاب یوم", D, "كتاب يوم"),
    # presentation forms (NFKC)
    ("ﻻ ﺑﺄﺱ", D, "لا باس"),
    ("ﻻ", NormalizeOptions(unicode_form="NFC"), "ﻻ"),
    # invisible controls and odd spaces
    ("كلمة\u200cكلمة\u200f  \t\n اخرى\u00a0هنا", D, "كلمةكلمة اخري هنا"),
    ("  ", D, ""),
    ("", D, ""),
    # latin / code-switching
    ("Hello, World! ok", D, "Hello World ok"),
    ("Hello World", NormalizeOptions(lowercase=True), "hello world"),
    # everything at once
    ("إِنَّ ٱلْمُسْلِمِينَ، فِى ٱلْـــمَدِينَةِ ١٢!", D, "ان المسلمين في المدينة 12"),
]


@pytest.mark.parametrize("text,opts,expected", CASES)
def test_rules(text, opts, expected):
    assert normalize_text(text, opts) == expected
    assert Normalizer(opts)(text) == expected


def test_no_normalizer_only_strips():
    assert Normalizer(None)("  كَتَبَ، ") == "كَتَبَ،"


def test_idempotent_on_cases():
    for text, opts, _ in CASES:
        once = normalize_text(text, opts)
        assert normalize_text(once, opts) == once


def test_bad_unicode_form():
    with pytest.raises(ValueError, match="unicode_form"):
        NormalizeOptions(unicode_form="NFD")


def test_cli_flags_cover_every_rule():
    from jadwal.manifests.cli import NORMALIZE_RULES

    assert set(NORMALIZE_RULES) == set(NormalizeOptions.rule_names())


# -- properties over random Arabic-block text (hypothesis) ------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from jadwal.manifests.normalize import ALEF_VARIANTS, DIACRITICS, TATWEEL  # noqa: E402

ARABIC_TEXT = st.text(
    alphabet=st.one_of(st.characters(min_codepoint=0x0600, max_codepoint=0x06FF),
                       st.characters(min_codepoint=0xFB50, max_codepoint=0xFDFF),
                       st.sampled_from(" \t\u200c.,!؟")),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ARABIC_TEXT)
def test_default_normalization_properties(s):
    out = normalize_text(s)
    assert normalize_text(out) == out  # idempotent
    assert not set(out) & set(DIACRITICS + [TATWEEL] + list(ALEF_VARIANTS) + list("٠١٢٣٤٥٦٧٨٩،؛؟"))
    assert out == out.strip() and "  " not in out


# -- the train form (jadwal.textforms): orthography kept, only invisible/decorative changes -------------
TRAIN_CASES = [
    ("أحمد إبراهيم آمن على مستشفى", False, "أحمد إبراهيم آمن على مستشفى"),  # hamza forms, ى kept
    ("كَتَبَ الطالبُ ٣ دروسٍ، ثمّ نام.", False, "كَتَبَ الطالبُ ٣ دروسٍ، ثمّ نام."),  # diacritics, digits, punctuation kept
    ("كَتَبَ الطالبُ ٣ دروسٍ، ثمّ نام.", True, "كتب الطالب ٣ دروس، ثم نام."),  # strip_diacritics option
    ("جمـــيل", False, "جميل"),  # tatweel removed
    ("\u200fمرحبا\u200c بكم\u200b\ufeff", False, "مرحبا بكم"),  # bidi / zero-width controls removed
    ("\ufefb \ufe8d\ufedf\ufe92\ufef4\ufe96", False, "لا البيت"),  # presentation forms → letters (NFKC)
    ("\u0627\u0654حمد", False, "أحمد"),  # decomposed hamza composed (NFC), not unified
    ("ﷲ", False, "الله"),
    ("  سطر\tو\nسطر  ", False, "سطر و سطر"),
    ("Hello, World! ½", False, "Hello, World! ½"),  # NFKC only for Arabic presentation forms
]


@pytest.mark.parametrize("text,strip,want", TRAIN_CASES)
def test_train_form(text, strip, want):
    from jadwal.textforms import TrainOptions, score_text, train_text

    got = train_text(text, TrainOptions(strip_diacritics=strip))
    assert got == want
    assert train_text(got, TrainOptions(strip_diacritics=strip)) == got
    assert score_text(got) == normalize_text(text) == score_text(text)
