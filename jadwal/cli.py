"""The ``jadwal`` command line.  Each stage registers its subcommands from ``<stage>/cli.py``.

Errors a user can act on (bad input or arguments, YAML errors, disk full, permissions, a dead pool
worker, out of memory) end as one line ``jadwal STAGE: error: …`` naming the file when known, with exit
code 2 (input) or 1 (the machine), and no traceback unless ``-v`` (:func:`describe_error`).

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
    "jadwal.export.cli",
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
    except KeyboardInterrupt:
        if getattr(args, "verbose", False):
            raise
        print(f"jadwal {_stage_of(args)}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - known kinds become one line; anything else is a bug: traceback
        if getattr(args, "verbose", False):
            raise
        known = describe_error(e)
        if known is None:
            raise
        message, code = known
        print(f"jadwal {_stage_of(args)}: error: {message}", file=sys.stderr)
        return code


def _stage_of(args) -> str:
    """``plan``, ``build ssum``, ``index check`` …: the command and its subcommand, for messages."""
    parts = [str(args.command)]
    parts += [str(v) for k, v in sorted(vars(args).items()) if k.endswith("_command") and isinstance(v, str)]
    return " ".join(parts)


def _file_in_traceback(e: BaseException) -> str | None:
    """The file an OS error without ``filename`` was about (ENOSPC in ``write``): the innermost frame
    holding an open file object or a path named ``path``/``tmp``/``dst``."""
    import io
    import os

    tb, frames = e.__traceback__, []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for fr in reversed(frames):
        for v in fr.f_locals.values():
            if isinstance(v, io.IOBase) and isinstance(getattr(v, "name", None), str):
                return v.name
        for k in ("tmp", "path", "dst", "out", "target"):
            v = fr.f_locals.get(k)
            if isinstance(v, (str, os.PathLike)) and str(v):
                return os.fspath(v)
    return None


def describe_error(e: BaseException) -> tuple[str, int] | None:
    """``(one-line message, exit code)`` for errors a user can act on (exit 2: bad input or arguments;
    1: the machine: disk full, permissions, a dead worker, memory); ``None`` for anything else (a bug)."""
    import errno
    import os
    from concurrent.futures.process import BrokenProcessPool

    def one_line(text: str) -> str:
        return " ".join(str(text).split())

    yaml = sys.modules.get("yaml")
    if yaml is not None and isinstance(e, yaml.YAMLError):
        mark = getattr(e, "problem_mark", None)
        where = ""
        if mark is not None:
            src = mark.name if mark.name and not mark.name.startswith("<") else "YAML text"
            where = f" in {src} at line {mark.line + 1}, column {mark.column + 1}"
        what = " ".join(x for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or str(e)
        return f"invalid YAML{where}: {one_line(what)}", 2
    if isinstance(e, BrokenProcessPool):
        return ("a worker process died (killed, or out of memory?); outputs already finished are kept, "
                "rerun the same command to continue"), 1
    if isinstance(e, MemoryError):
        return f"out of memory{': ' + one_line(e) if str(e) else ''} (lower the batch/parallelism or use a bigger machine)", 1
    if isinstance(e, RecursionError):
        return f"input nested too deeply ({one_line(e)})", 2
    if isinstance(e, FileNotFoundError) and e.filename is None:
        return one_line(e), 2
    if isinstance(e, OSError):
        f = e.filename or _file_in_traceback(e)
        name = errno.errorcode.get(e.errno or 0, "")
        text = e.strerror or one_line(e)
        hint = {errno.ENOSPC: " (free disk space, then rerun: finished outputs are kept)",
                errno.EDQUOT: " (disk quota exceeded)",
                errno.EACCES: " (check the folder's permissions)", errno.EPERM: " (check the folder's permissions)",
                errno.EROFS: " (the file system is read-only)"}.get(e.errno, "")
        on = f" {os.fspath(f)}" if f is not None else ""
        if e.filename2:
            on += f" -> {os.fspath(e.filename2)}"
        code = 2 if isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError)) else 1
        return f"{text}{' [' + name + ']' if name else ''}:{on or ' (file unknown)'}{hint}", code
    if isinstance(e, (ValueError, KeyError)):  # user errors: clear message, no traceback
        return str(e), 2
    return None


if __name__ == "__main__":
    sys.exit(main())
