"""jadwal.trainer stage: the streaming loader that realizes a scheduling index.

``ScheduleDataset`` (a PyTorch ``IterableDataset`` yielding whole micro-batches, resumable by step),
``pad_batch``/``collate`` (padding, lengths, attention masks), and the errors it raises.
"""
from .dataset import ScheduleDataset
from .features import collate, pad_batch
from .shardio import LoaderError, ShardError

__all__ = ["LoaderError", "ScheduleDataset", "ShardError", "collate", "pad_batch"]
