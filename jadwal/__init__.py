"""jadwal: prepare multi-dataset audio data and realize data schedules exactly.

Stages (each a subpackage): ``manifests`` → ``shards`` → ``pipelines``/``export`` → ``sched_index`` →
``trainer`` → ``analyses``, over ``models``, ``metrics``, ``textforms``, ``workspace``, ``storage``,
``executors``, ``access``, ``audio_decode``; imports point down that order (``tests/test_layers.py``).
Contracts between stages live in one module each: :mod:`jadwal.manifests.schema`,
:mod:`jadwal.shards.schema`, :mod:`jadwal.sched_index.format`.
"""

__version__ = "0.1.0"
