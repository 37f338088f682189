"""jadwal.trainer stage: the streaming loader that realizes a scheduling index.

``ScheduleDataset`` (a PyTorch ``IterableDataset`` yielding whole micro-batches, resumable by step),
``pad_batch``/``collate`` (padding, lengths, attention masks), and the errors it raises.  Imported
lazily (PEP 562) so that ``jadwal --help`` and other stages do not pay for importing torch.
"""
from importlib import import_module

_EXPORTS = {
    "ScheduleDataset": ".dataset",
    "collate": ".features",
    "pad_batch": ".features",
    "LoaderError": "..shards.shardio",
    "ShardError": "..shards.shardio",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
