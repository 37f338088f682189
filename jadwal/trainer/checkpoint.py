"""Checkpoint file I/O without pickle code execution.

Everything a checkpoint holds (weights, optimizer and LR-scheduler state, selector state, RNG states)
is stored as tensors and plain containers (dict, list, tuple, str, int, float, bool, None), and read
back with ``torch.load(..., weights_only=True)``: a crafted ``optim.pt`` or ``rng-rank*.pt`` cannot
run code, it is refused with a one-line :class:`CheckpointError` naming the file.

RNG states in plain form (:func:`rng_state`): torch's CPU/CUDA states are uint8 tensors already; numpy's
legacy ``get_state()`` tuple carries a uint32 array, stored as an int64 tensor; Python's
``random.getstate()`` is a tuple of ints (and a float or None) as it is.
"""
from __future__ import annotations

import os
import pickle  # only for pickle.UnpicklingError, raised by torch.load(weights_only=True) on refused objects
import random
from pathlib import Path

import numpy as np
import torch


class CheckpointError(ValueError):
    """A checkpoint file cannot be loaded safely (unsupported objects, damaged, missing)."""


def rng_state() -> dict:
    """This process's torch / numpy / python (and CUDA) RNG states as tensors and plain containers."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    st = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    """Restore the states :func:`rng_state` returned."""
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), int(n["pos"]), int(n["has_gauss"]),
                         float(n["cached_gaussian"])))
    version, internal, gauss_next = st["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss_next))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def load(path: str | os.PathLike, map_location=None):
    """``torch.load(path, weights_only=True)``: tensors and plain containers only, never code.
    Anything else (a pickled object, a damaged or missing file) → :class:`CheckpointError`."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path}: refused, it holds objects other than tensors and plain "
                              f"containers (loaded with weights_only=True; {first})") from None
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path}: missing") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: cannot be read ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
