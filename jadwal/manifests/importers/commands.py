"""Run a source's audio command (a Kaldi ``wav.scp`` pipe) without a shell and read its WAV output.

Only called when the user passed ``--allow-commands`` (``Access.allow_commands``); the caller checks.

* :func:`parse_pipeline`: ``"flac -c -d -s a.flac"`` or ``"sph2pipe -f wav a.sph | sox -t wav - -t wav -"``
  → argument lists (POSIX ``shlex`` with ``punctuation_chars``, so an operator is a token even when
  glued to a word: ``a.wav;rm x``; ``|`` tokens separate stages).  Any other shell syntax is refused
  with the token named, since there is no shell to interpret it: control operators and redirections
  (``;`` ``&`` ``&&`` ``||`` ``|&`` ``>`` ``>>`` ``<`` ``>&`` ``(`` ``)``), substitutions and
  variables (``$``, backquotes), comments (a word starting with ``#``) and line breaks.  A quoted
  argument made only of those characters (``';'``) is refused too (shlex does not say it was
  quoted); globs and ``~`` are passed as they are (not expanded).
* :func:`run_pipeline`: the stages chained stdin→stdout with ``subprocess.Popen`` (argument lists,
  ``shell=False``), stdin from ``/dev/null``, stdout read until EOF, at most ``max_bytes``
  (:data:`DEFAULT_MAX_BYTES`, 2 GiB: the per-command output limit; a longer output kills the
  stages and is a ``CommandError`` naming the limit, so a reject) and ``timeout_s`` seconds; every
  stage must exit 0.  The output is spooled (kept in memory up to :data:`SPOOL_BYTES`, then in a
  temporary file) and read back once, so one command holds one copy of its output in memory.  On
  failure :class:`CommandError` carries the exit codes and the stages' stderr (last 2,000 characters).
* :func:`wav_bytes`: the output must be a WAV — plain, extensible (``WAVE_FORMAT_EXTENSIBLE``, which
  sox and ffmpeg write for 24-bit or more than 2 channels) or RF64 — that libsndfile opens, with
  samples.  A writer that cannot seek back on a pipe leaves placeholder sizes (0 or 0xFFFFFFFF, in
  the RIFF/data fields or RF64's ``ds64``): those size fields are set to the bytes present (whole
  frames), the samples' bytes are not touched.
"""
from __future__ import annotations

import io
import os
import selectors
import shlex
import struct
import subprocess
import tempfile
import time

from ...audio_decode import PcmLayout, pcm_layout

DEFAULT_TIMEOUT_S = 600.0  # per command
DEFAULT_MAX_BYTES = 2 << 30  # per-command output limit, bytes (a 16 kHz 16-bit mono hour is 115 MB)
SPOOL_BYTES = 64 << 20  # output kept in memory while a command runs; beyond, in a temporary file
_OPERATOR_CHARS = frozenset("();<>|&")  # shlex's punctuation_chars: a token made of these is an operator


class CommandError(Exception):
    """A command could not run or failed; the message is one reject detail."""


def parse_pipeline(spec: str) -> list[list[str]]:
    """Stages of a pipe entry (without its trailing ``|``) as argument lists; ``CommandError`` naming
    the problem when it is not a plain ``a | b`` pipeline (see the module doc)."""
    if any(c in spec for c in "\n\r\0"):
        raise CommandError(f"command {spec!r} holds a line break or NUL (shell syntax); jadwal runs commands "
                           "without a shell (only `a | b` pipelines)")
    lexer = shlex.shlex(spec, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""  # a '#' is refused below, not silently dropped with the rest of the line
    try:
        tokens = list(lexer)
    except ValueError as e:  # unbalanced quotes, a trailing backslash
        raise CommandError(f"cannot parse command {spec!r}: {e}") from None
    stages: list[list[str]] = [[]]
    for t in tokens:
        if t == "|":
            stages.append([])
            continue
        what = None
        if t and set(t) <= _OPERATOR_CHARS:
            what = "a control operator or redirection"
        elif "$" in t or "`" in t:
            what = "a substitution or variable"
        elif t.startswith("#"):
            what = "a comment"
        if what:
            raise CommandError(f"command {spec!r} uses shell syntax {t!r} ({what}); jadwal runs commands without "
                               "a shell (only `a | b` pipelines)")
        stages[-1].append(t)
    if any(not s for s in stages):
        raise CommandError(f"command {spec!r} has an empty pipeline stage")
    return stages


def run_pipeline(stages: list[list[str]], cwd: str | os.PathLike | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, max_bytes: int | None = None) -> bytes:
    """Run ``stages`` chained (no shell) and return the last stage's stdout, at most ``max_bytes``
    (default :data:`DEFAULT_MAX_BYTES`, read at call time); see the module doc."""
    if max_bytes is None:
        max_bytes = DEFAULT_MAX_BYTES
    procs: list[subprocess.Popen] = []
    errs = []
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    got = 0
    failure = None
    try:
        prev = subprocess.DEVNULL
        for argv in stages:
            err = tempfile.TemporaryFile()
            errs.append(err)
            try:
                p = subprocess.Popen(argv, stdin=prev, stdout=subprocess.PIPE, stderr=err, cwd=cwd, shell=False,
                                     close_fds=True)
            except OSError as e:  # program not found, not executable
                raise CommandError(f"cannot run {argv[0]!r}: {e.strerror or e}") from None
            if procs:
                procs[-1].stdout.close()  # the next stage owns the pipe now (SIGPIPE reaches the writer)
            procs.append(p)
            prev = p.stdout
        deadline = time.monotonic() + timeout_s
        last = procs[-1].stdout
        with selectors.DefaultSelector() as sel:
            sel.register(last, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    failure = f"timed out after {timeout_s:g} s"
                    break
                if not sel.select(left):
                    continue
                chunk = os.read(last.fileno(), 1 << 20)
                if not chunk:
                    break
                got += len(chunk)
                if got > max_bytes:
                    failure = (f"output larger than the per-command limit of {max_bytes} bytes "
                               f"({max_bytes / 2**30:.3g} GiB); write such recordings to files first")
                    break
                out.write(chunk)
        if failure is not None:
            for p in procs:
                p.kill()
        codes = []
        for p in procs:
            try:
                codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait())
                failure = failure or f"timed out after {timeout_s:g} s"
        if failure is None and any(codes):
            failure = "exit status " + ", ".join(f"{s[0]}={c}" for s, c in zip(stages, codes))
        if failure is not None:
            raise CommandError(f"{failure}{_stderr(errs)}")
        out.seek(0)
        return out.read()
    finally:
        out.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            if p.stdout:
                p.stdout.close()
        for e in errs:
            e.close()


def _stderr(errs) -> str:
    text = []
    for e in errs:
        e.seek(0)
        t = e.read().decode("utf-8", "backslashreplace").strip()
        if t:
            text.append(t)
    joined = " | ".join(text)
    return f"; stderr: {joined[-2000:]}" if joined else ""


def wav_bytes(data: bytes) -> bytes:
    """``data`` checked to be a WAV/WAVEX/RF64 that libsndfile opens, with at least one sample
    (``CommandError`` otherwise); returned as is, or with its size fields set to the bytes present
    when a streaming writer left placeholders (see the module doc)."""
    import soundfile as sf

    if not data:
        raise CommandError("command wrote nothing to stdout")
    layout = pcm_layout(io.BytesIO(data))
    if layout is None or layout.kind not in ("RIFF", "RF64"):
        try:
            kind = sf.info(io.BytesIO(data)).format
        except Exception as e:  # noqa: BLE001 - libsndfile's errors are RuntimeError/LibsndfileError
            raise CommandError(f"output is not readable audio: {type(e).__name__}: {e}") from None
        raise CommandError(f"output is {kind}, expected WAV (RIFF, WAVEX or RF64)")
    data = _fix_sizes(data, layout)
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            fmt, frames = f.format, f.frames
            first = f.read(min(frames, 4096), dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - libsndfile's errors are RuntimeError/LibsndfileError
        raise CommandError(f"output is not readable audio: {type(e).__name__}: {e}") from None
    if fmt not in ("WAV", "WAVEX", "RF64"):
        raise CommandError(f"output is {fmt}, expected WAV (RIFF, WAVEX or RF64)")
    if frames <= 0 or len(first) == 0:
        raise CommandError("output has no samples")
    return data


def _fix_sizes(data: bytes, layout: PcmLayout) -> bytes:
    """``data`` with its RIFF/RF64 size fields equal to what it holds (``data`` itself when they are).

    The data chunk is taken to run to the end when its size is a placeholder or larger than the bytes
    present (a writer that could not seek back); it then holds the whole frames present (a partial
    last frame is not a sample and is left out), padded to an even length as RIFF requires.  Only the
    header (the bytes before the samples) is rebuilt: one new copy of the output at most."""
    present = len(data) - layout.data_at
    size, end, pad = layout.declared, len(data), b""
    if size is None or size > present:
        size = present - (present % layout.block_align if layout.block_align else 0)
        end = layout.data_at + size
        pad = b"\0" if size & 1 else b""
    total = end + len(pad)  # bytes of the result
    head = bytearray(data[:layout.data_at])
    if layout.kind == "RF64":
        if layout.ds64_at < 0:
            raise CommandError("output is RF64 without a ds64 chunk")
        head[layout.ds64_at:layout.ds64_at + 16] = struct.pack("<QQ", total - 8, size)
        head[4:8] = head[layout.size_at:layout.size_at + 4] = b"\xff\xff\xff\xff"
    else:
        if total - 8 > 0xFFFFFFFF:
            raise CommandError(f"output holds {size} bytes of samples, more than a RIFF WAV can state")
        head[4:8] = struct.pack("<I", total - 8)
        head[layout.size_at:layout.size_at + 4] = struct.pack("<I", size)
    if end == len(data) and not pad and head == data[:layout.data_at]:
        return data
    return b"".join((head, memoryview(data)[layout.data_at:end], pad))
