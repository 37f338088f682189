"""Registers the pipeline builders' commands; each builder family has its own ``*_cli`` module."""
from __future__ import annotations

import importlib

MODULES = [
    "jadwal.pipelines.build_cli",  # jadwal build ssum | text-twins
    "jadwal.pipelines.embed_cli",  # jadwal embed, jadwal cluster
]


def register(sub, common) -> None:
    for name in MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        mod.register(sub, common)
