"""Prompt formatting per task for the reference audio-LLM loop.

A training sequence is (token ids ``T``, audio frames ``A``)::

    <bos> INSTRUCTION <audio>  A A … A  </audio> <sep> TARGET <eos>        (modality audio)
    <bos> INSTRUCTION <text> TRANSCRIPT </text>  <sep> TARGET <eos>        (modality text: the transcript
                                                                            stands in for the audio)

The audio placeholder is a run of aligner frames spliced into the LM's input embeddings between the
``<audio>``/``</audio>`` marker tokens.  The loss covers the TARGET tokens and ``<eos>`` only.

Targets per task (:func:`target_of`): ``asr`` → the transcript; ``did``/``ser`` and other
classification tasks → ``label`` (else ``target``); ``ssum``/``aqa``/``slu``/others → ``target`` (else
``label``, else the transcript).  The instruction is the row's ``instruction`` when present, else
:data:`DEFAULT_INSTRUCTIONS` of the task (overridable in the config, ``prompts: {task: "…"}``).

Text forms (:mod:`jadwal.textforms`): targets and the transcript of a text-only prompt are rendered in
the task's form, ``train`` by default (orthography kept: hamza forms, ``ى``, digits, punctuation),
configurable per task with the training config's ``text_form: {asr: train, ssum: raw, "*": train}``
and ``text_form_options: {strip_diacritics: true}``.  The transcript comes from ``text_raw`` (the
``score`` form from ``text``); class labels are used as stored.  So the text that stands in for the
audio of a text-only twin is exactly what the ASR target of its speech row is.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..textforms import DEFAULT_FORM, TextForms, TrainOptions, to_form, transcript_in

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<sep>", "<audio>", "</audio>", "<text>", "</text>", "<unk>"]

DEFAULT_INSTRUCTIONS = {
    "asr": "فرغ الكلام التالي نصيا.",            # transcribe the following speech
    "did": "ما هي اللهجة المنطوقة؟",             # which dialect is spoken?
    "ser": "ما هي العاطفة في هذا الكلام؟",       # which emotion is in this speech?
    "ssum": "لخص الكلام التالي.",                # summarize the following speech
}
CLASSIFICATION_TASKS = {"did", "ser", "lid", "gender", "sid"}


def _s(v) -> str:
    return "" if v is None else str(v)


def target_of(task: str, text, target, label, *, text_raw=None, form: str = DEFAULT_FORM,
              train_options: TrainOptions = TrainOptions()) -> str:
    """The string the model learns to produce for a row of ``task``, in text ``form``."""
    def transcript() -> str:
        return transcript_in(form, text=_s(text) or None, text_raw=_s(text_raw) or None, opts=train_options)

    if task == "asr":
        return transcript() or to_form(_s(target), form, train_options)
    if task in CLASSIFICATION_TASKS:
        return _s(label) or to_form(_s(target), form, train_options)
    if _s(target):
        return to_form(_s(target), form, train_options)
    return _s(label) or transcript()


@dataclass
class PromptFormatter:
    """Builds the token pieces of one sample with a ``PreTrainedTokenizer``-like ``tokenizer``."""

    tokenizer: object
    instructions: dict = field(default_factory=dict)
    max_target_tokens: int = 64
    max_text_tokens: int = 128
    forms: TextForms = field(default_factory=TextForms)

    def __post_init__(self):
        tok = self.tokenizer
        self.ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        missing = [t for t, i in self.ids.items() if i is None or i == tok.unk_token_id and t != "<unk>"]
        if missing:
            raise ValueError(f"tokenizer lacks the special tokens {missing} (add them: tokenizer.add_special_tokens)")

    def encode(self, s: str) -> list[int]:
        return list(self.tokenizer(s, add_special_tokens=False)["input_ids"]) if s else []

    def instruction(self, task: str, row_instruction) -> str:
        return _s(row_instruction) or self.instructions.get(task) or DEFAULT_INSTRUCTIONS.get(task, f"{task}:")

    def target(self, task: str, *, text=None, target=None, label=None, text_raw=None) -> str:
        """The target string of a row of ``task`` in the task's text form."""
        return target_of(task, text, target, label, text_raw=text_raw, form=self.forms.form_of(task),
                         train_options=self.forms.train)

    def transcript(self, task: str, *, text=None, text_raw=None) -> str:
        """The transcript of a row in the task's text form (the stand-in for audio of text-only rows)."""
        return transcript_in(self.forms.form_of(task), text=_s(text) or None, text_raw=_s(text_raw) or None,
                             opts=self.forms.train)

    def pieces(self, task: str, *, instruction=None, text=None, target=None, label=None, text_raw=None,
               has_audio: bool) -> tuple[list[int], list[int], list[int]]:
        """(prefix ids before the audio, ids between the audio and the target, target ids incl. <eos>).

        For text-only rows the transcript (in the task's text form) is part of the middle piece."""
        i = self.ids
        pre = [i["<bos>"]] + self.encode(self.instruction(task, instruction))
        if has_audio:
            pre = pre + [i["<audio>"]]
            mid = [i["</audio>"], i["<sep>"]]
        else:
            mid = ([i["<text>"]] + self.encode(self.transcript(task, text=text, text_raw=text_raw))[: self.max_text_tokens]
                   + [i["</text>"], i["<sep>"]])
        tgt = (self.encode(self.target(task, text=text, target=target, label=label, text_raw=text_raw))
               [: self.max_target_tokens] + [i["<eos>"]])
        return pre, mid, tgt
