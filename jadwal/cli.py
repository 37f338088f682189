"""The ``jadwal`` command line.  Each stage registers its subcommands from ``<stage>/cli.py``.

A stage's ``register(subparsers, common)`` adds its commands; ``common`` is a parent parser carrying
``-w/--workspace``.  Each command sets ``func(args) -> int``.  Heavy imports happen inside ``func``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__

# (module, attribute) of every registrar; a stage that is not importable is skipped with a warning.
REGISTRARS = [
    "jadwal.manifests.cli",
    "jadwal.pipelines.cli",
    "jadwal.shards.cli",
    "jadwal.sched_index.cli",
    "jadwal.trainer.cli",
    "jadwal.demo",
]


def _status(args) -> int:
    from .workspace import Workspace

    ws = Workspace(args.workspace)
    rows = ws.stages()
    if not rows:
        print(f"{ws.root}: no stage outputs yet")
        return 0
    width = max(len(r["path"]) for r in rows)
    for r in rows:
        print(f"{r['stage']:<10} {r['path']:<{width}}  {r['status']:<10} {r.get('detail', '')}")
    return 1 if any(r["status"] != "ok" for r in rows) and args.strict else 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-w", "--workspace", default=".", help="workspace folder (default: current folder)")
    common.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser = argparse.ArgumentParser(
        prog="jadwal",
        description="Prepare multi-dataset audio data and realize data schedules exactly "
        "(manifests → shards → scheduling index → training).",
    )
    parser.add_argument("--version", action="version", version=f"jadwal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    st = sub.add_parser("status", parents=[common], help="list stage outputs and whether they are stale")
    st.add_argument("--strict", action="store_true", help="exit 1 when anything is stale or incomplete")
    st.set_defaults(func=_status)
    for modname in REGISTRARS:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:  # a stage not built yet
            if e.name and e.name.startswith("jadwal"):
                continue
            raise
        mod.register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `jadwal … | head`: the reader went away; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, FileNotFoundError, KeyError) as e:  # user errors: clear message, no traceback
        if getattr(args, "verbose", False):
            raise
        print(f"jadwal {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
