"""Out to the ecosystem: a shard set as a Lhotse Shar CutSet (``jadwal export lhotse``), as a Hugging
Face ``datasets`` view (:func:`jadwal.export.hf.load_shard_set`); the Lhotse bridge for trainers lives
in :mod:`jadwal.trainer.lhotse_bridge`.  See docs/export.md."""
