"""jadwal.metrics: text scores shared by the builders and the trainer's evaluation (ROUGE, the
comparison normalization). Sits above :mod:`jadwal.manifests` (it reuses its normalizer) and below
shards, pipelines and the trainer (the order: ``tests/test_layers.py`` ``LAYERS``)."""
