"""jadwal: prepare multi-dataset audio data and realize data schedules exactly.

Stages (each a subpackage): ``manifests`` → ``pipelines`` → ``shards`` → ``sched_index`` → ``trainer``.
Contracts between stages live in one module each: :mod:`jadwal.manifests.schema`,
:mod:`jadwal.shards.schema`, :mod:`jadwal.sched_index.format`.
"""

__version__ = "0.1.0"
