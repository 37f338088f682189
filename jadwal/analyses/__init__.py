"""jadwal.analyses: studies that need a model and the loader (``jadwal affinity``); the top layer,
above :mod:`jadwal.trainer` (the order: ``tests/test_layers.py`` ``LAYERS``)."""
