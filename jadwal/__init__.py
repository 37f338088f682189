"""jadwal: prepare multi-dataset audio data and realize data schedules exactly.

Stages (each a subpackage): ``manifests`` → ``shards`` → ``pipelines``/``export`` → ``sched_index`` →
``trainer`` → ``analyses``, over ``models``, ``metrics``, ``textforms``, ``workspace``, ``storage``,
``executors``, ``access``, ``audio_decode``; imports point down that order (``tests/test_layers.py``).
Each contract between stages lives in one module; ``docs/architecture.md`` lists the layers and where
each contract is defined.
"""

__version__ = "0.1.0"
