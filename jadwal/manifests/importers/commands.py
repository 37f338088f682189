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
  ``shell=False``), stdin from ``/dev/null``, stdout read until EOF, at most ``max_bytes`` and
  ``timeout_s`` seconds; every stage must exit 0.  On failure :class:`CommandError` carries the exit
  codes and the stages' stderr (last 2,000 characters).
* :func:`wav_bytes`: the output decoded with soundfile (must be a readable WAV with samples); a
  header whose sizes do not match the data (a writer that could not seek back) is rewritten with the
  same sample format, samples unchanged.
"""
from __future__ import annotations

import io
import os
import selectors
import shlex
import subprocess
import tempfile
import time

DEFAULT_TIMEOUT_S = 600.0  # per command
DEFAULT_MAX_BYTES = 4 << 30  # output of one command (a 16 kHz 16-bit mono hour is 115 MB)
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
                 timeout_s: float = DEFAULT_TIMEOUT_S, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Run ``stages`` chained (no shell) and return the last stage's stdout; see the module doc."""
    procs: list[subprocess.Popen] = []
    errs = []
    out = bytearray()
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
                out += chunk
                if len(out) > max_bytes:
                    failure = f"output larger than {max_bytes} bytes"
                    break
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
        return bytes(out)
    finally:
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
    """``data`` checked to be a WAV that decodes to at least one sample (``CommandError`` otherwise);
    returned as is, or with a corrected header when its sizes disagree with the data."""
    import soundfile as sf

    if not data:
        raise CommandError("command wrote nothing to stdout")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            fmt, subtype, sr, ch = f.format, f.subtype, f.samplerate, f.channels
            dtype = "int16" if subtype == "PCM_16" else "int32" if subtype in ("PCM_24", "PCM_32", "PCM_U8", "PCM_S8") \
                else "float64"
            samples = f.read(dtype=dtype, always_2d=True)
    except Exception as e:  # libsndfile's errors are RuntimeError/LibsndfileError
        raise CommandError(f"output is not readable audio: {type(e).__name__}: {e}") from None
    if fmt != "WAV":
        raise CommandError(f"output is {fmt}, expected WAV")
    if len(samples) == 0:
        raise CommandError("output has no samples")
    riff = int.from_bytes(data[4:8], "little") if data[:4] == b"RIFF" else None
    if riff == len(data) - 8:
        return data
    buf = io.BytesIO()  # the writer could not seek back to fix the sizes: same samples, right header
    sf.write(buf, samples, sr, subtype=subtype, format="WAV")
    return buf.getvalue()
