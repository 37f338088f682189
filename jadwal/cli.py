"""The ``jadwal`` command line.  Each stage registers its subcommands from ``<stage>/cli.py``.

Errors a user can act on (bad input or arguments, YAML errors, disk full, permissions, a dead pool
worker, out of memory) end as one line ``jadwal STAGE: error: …`` naming the file when known, with exit
code 2 (input) or 1 (the machine), and no traceback unless ``-v`` (:func:`describe_error`); so do such
errors raised in a DataLoader worker or a spawned rank, described as the original error.

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
    "jadwal.analyses.affinity_cli",  # jadwal affinity (needs the model and the loader)
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


_TB_HEAD = "Traceback (most recent call last):\n"


def _exception_class(name: str) -> type[BaseException] | None:
    """The exception class a formatted traceback names (``ValueError``, ``jadwal.shards.shardio.ShardError``):
    a builtin, a class of jadwal (its module imported if needed), or one of a module already imported."""
    import builtins

    mod, _, attr = name.rpartition(".")
    owner = sys.modules.get(mod) if mod else builtins
    if owner is None and (mod == "jadwal" or mod.startswith("jadwal.")):  # a rank's process imported it, not we
        try:
            owner = importlib.import_module(mod)
        except ImportError:
            owner = None
    cls = getattr(owner, attr, None) if owner is not None else None
    return cls if isinstance(cls, type) and issubclass(cls, BaseException) else None


def unwrap_worker_error(e: BaseException) -> BaseException | None:
    """The original error a child process raised, rebuilt from the formatted traceback that carries it;
    ``None`` when ``e`` is not such a wrapper.

    Two wrappers carry a child's error as traceback text: a DataLoader worker's, re-raised by torch as
    the same type (or ``RuntimeError``) with the message ``"Caught ShardError in DataLoader worker
    process 0.\nOriginal Traceback (most recent call last): …"``, and ``torch.multiprocessing.spawn``'s
    ``ProcessRaisedException`` (``jadwal train --nproc N``), possibly one inside the other.  The last
    exception line of the innermost traceback is the original ``Type: message``; the type is resolved
    to a builtin, a jadwal class or an already imported class (else ``None``: a bug keeps its traceback)."""
    text = str(e)
    wrapped = text.startswith("Caught ") and "\nOriginal " + _TB_HEAD in text
    spawn = type(e).__name__ == "ProcessRaisedException" and _TB_HEAD in text
    if not (wrapped or spawn):
        return None
    block = text.rsplit(_TB_HEAD, 1)[1].split("\n")
    i = 0
    while i < len(block) and (not block[i].strip() or block[i][:1].isspace()):  # frames, source lines, carets
        i += 1
    last = "\n".join(block[i:]).strip()
    name, _, message = last.partition(": ")
    cls = _exception_class(name.strip())
    if cls is None:
        return None
    try:
        return cls(message.strip())
    except Exception:  # noqa: BLE001 - a class that cannot be built from its message: keep the traceback
        return None


def describe_error(e: BaseException) -> tuple[str, int] | None:
    """``(one-line message, exit code)`` for errors a user can act on (exit 2: bad input or arguments;
    1: the machine: disk full, permissions, a dead worker, memory); ``None`` for anything else (a bug).
    An error raised in a DataLoader worker or a spawned rank is described as the original error
    (:func:`unwrap_worker_error`), without the worker's traceback."""
    import errno
    import os
    from concurrent.futures.process import BrokenProcessPool

    def one_line(text: str) -> str:
        return " ".join(str(text).split())

    original = unwrap_worker_error(e)
    if original is not None:
        known = describe_error(original)
        return None if known is None else (one_line(known[0]), known[1])

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
