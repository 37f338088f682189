"""jadwal.models: audio encoders, aligners and log-mel features (below every stage).

Used by ``jadwal embed`` (:mod:`jadwal.pipelines.embed`), the trainer (:mod:`jadwal.trainer.model`,
:mod:`jadwal.trainer.features`) and ``jadwal affinity`` (:mod:`jadwal.analyses.affinity`). Imports
nothing from jadwal's stage packages (the order: ``tests/test_layers.py`` ``LAYERS``).
"""
