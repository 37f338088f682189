"""The Lhotse bridge: a jadwal schedule as Lhotse ``CutSet`` micro-batches, for Lhotse-based trainers
(NeMo, icefall, k2).

:class:`LhotseBridge` wraps a :class:`~jadwal.trainer.ScheduleDataset` built with
``decode_audio=False`` and turns each micro-batch it delivers into a ``CutSet`` of in-memory cuts, in
the planned order: cut id = sample id, the recording holds the sample's encoded audio bytes exactly as
stored in the shard (Lhotse decodes them), one supervision over the cut (``text`` = the transcript in
the chosen text form, ``speaker``, ``language`` = ``lang``; ``custom``: ``text_raw``, ``label``,
``target``, ``instruction``), and the cut's ``custom``:
``dataset``, ``task``, ``split``, ``extra`` plus ``jadwal_step``, ``jadwal_rank``, ``jadwal_phase``
(the cut is built by :func:`jadwal.export.lhotse.sample_cut`, the same as ``jadwal export lhotse``).

With ``lhotse_dataset`` (any map-style Lhotse dataset: ``CutSet → batch``, e.g.
``K2SpeechRecognitionDataset(input_strategy=AudioSamples())``) each item is that dataset's batch for
the micro-batch's CutSet instead; a dict batch gets ``batch["jadwal"] = {"step", "rank", "phase",
"ids"}`` (the Lhotse dataset may reorder cuts inside the batch, e.g. by duration; ``ids`` is the plan's
order).  Lhotse samplers are not used: the schedule *is* the sampler.

Order, workers and resume are the wrapped dataset's: ``DataLoader(bridge, batch_size=None,
num_workers=ds.readers_per_rank)``; ``bridge.state_dict()`` / ``load_state_dict()`` are the dataset's
(so torchdata's ``StatefulDataLoader`` resumes exactly); with a plain DataLoader and workers save
``ds.state_dict(step=batch["jadwal"]["step"] + 1)``.

Text form (:mod:`jadwal.textforms`): ``text_form="train"`` (default) gives the supervisions the
orthography jadwal's own trainer teaches (hamza forms, ``ى``, punctuation kept); ``"raw"`` the
transcript as found; ``"score"`` the WER normalization (the manifest's ``text``).  A mapping ``{task:
form, "*": form}`` (as the training config's ``text_form``) or a :class:`~jadwal.textforms.TextForms`
chooses per task.  ``text_raw`` is always in the supervision's ``custom``.

Text-only samples have no audio: ``text_only="error"`` (default) raises :class:`LoaderError` naming the
sample; ``"keep"`` yields them as cuts without a recording (duration 0, ``custom["modality"] ==
"text"``), which audio datasets such as K2SpeechRecognitionDataset cannot take.
"""
from __future__ import annotations

from typing import Any, Iterator

from torch.utils.data import IterableDataset

from ..textforms import DEFAULT_FORM, TextForms
from .dataset import ScheduleDataset
from ..shards.shardio import LoaderError

#: Batch keys that are not per-sample manifest fields.
BATCH_KEYS = {"step", "rank", "phase", "ids", "audio", "audio_bytes", "audio_format", "sample_rate"}


def text_forms(text_form=DEFAULT_FORM) -> TextForms:
    """``text_form`` (a form name, a mapping ``{task: form, "*": form}`` or a :class:`TextForms`) as
    :class:`TextForms`; :class:`LoaderError` for an unknown form."""
    if isinstance(text_form, TextForms):
        return text_form
    try:
        return TextForms.from_config(text_form)
    except ValueError as e:
        raise LoaderError(f"LhotseBridge: text_form: {e}") from None


def batch_cuts(batch: dict, text_only: str = "error", text_form=DEFAULT_FORM):
    """The ``CutSet`` of one ``ScheduleDataset`` micro-batch (``decode_audio=False``), in plan order;
    supervision texts in ``text_form`` (see :func:`text_forms`)."""
    from lhotse import CutSet

    from ..export.lhotse import sample_cut

    forms = text_forms(text_form)
    ids = batch["ids"]
    fields = [k for k, v in batch.items() if k not in BATCH_KEYS and isinstance(v, list) and len(v) == len(ids)]
    tag = {"jadwal_step": batch["step"], "jadwal_rank": batch["rank"], "jadwal_phase": batch["phase"]}
    cuts = []
    for i, sid in enumerate(ids):
        row = {k: batch[k][i] for k in fields}
        audio = batch["audio_bytes"][i]
        extra = dict(tag)
        if audio is None:
            if text_only != "keep":
                raise LoaderError(f"LhotseBridge: sample {sid!r} (step {batch['step']}) is text-only; Lhotse cuts "
                                  f"need audio (pass text_only='keep' for cuts without a recording)")
            extra["modality"] = "text"
        cuts.append(sample_cut(sid, audio, row, extra, text_form=forms.form_of(str(row.get("task"))),
                               train_options=forms.train))
    return CutSet.from_cuts(cuts)


class LhotseBridge(IterableDataset):
    """Yields one ``CutSet`` (or ``lhotse_dataset[CutSet]``) per micro-batch of ``dataset``; see the module doc."""

    def __init__(self, dataset: ScheduleDataset, lhotse_dataset: Any = None, *, text_only: str = "error",
                 text_form=DEFAULT_FORM):
        super().__init__()
        if dataset.decode_audio:
            raise LoaderError("LhotseBridge: build the ScheduleDataset with decode_audio=False (the cuts hold the "
                              "encoded shard bytes; Lhotse decodes them)")
        if text_only not in ("error", "keep"):
            raise LoaderError(f"LhotseBridge: text_only must be 'error' or 'keep', got {text_only!r}")
        self.dataset = dataset
        self.lhotse_dataset = lhotse_dataset
        self.text_only = text_only
        self.text_form = text_forms(text_form)

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.dataset:
            cuts = batch_cuts(batch, self.text_only, self.text_form)
            if self.lhotse_dataset is None:
                yield cuts
                continue
            out = self.lhotse_dataset[cuts]
            if isinstance(out, dict):
                out["jadwal"] = {"step": batch["step"], "rank": batch["rank"], "phase": batch["phase"],
                                 "ids": list(batch["ids"])}
            yield out

    # -- state: the wrapped dataset's ---------------------------------------------------------------
    def state_dict(self, step: int | None = None) -> dict:
        return self.dataset.state_dict(step)

    def load_state_dict(self, state: dict) -> None:
        self.dataset.load_state_dict(state)


def lhotse_bridge(workspace, index_name: str, lhotse_dataset: Any = None, *, text_only: str = "error",
                  text_form=DEFAULT_FORM, **dataset_kwargs) -> LhotseBridge:
    """``LhotseBridge(ScheduleDataset(workspace, index_name, decode_audio=False, **dataset_kwargs), lhotse_dataset,
    text_only=text_only, text_form=text_form)``."""
    ds = ScheduleDataset(workspace, index_name, decode_audio=False, **dataset_kwargs)
    return LhotseBridge(ds, lhotse_dataset, text_only=text_only, text_form=text_form)
