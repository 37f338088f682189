"""What jadwal may execute and fetch: the user's explicit grants, defined once.

Security model (see ``docs/security.md``): nothing read from a data file, a manifest source, a
workspace file or a spec ever runs a command or opens a network connection on its own.  Only the
user grants that, by an argument given in code or on the command line:

* ``allow_remote`` — URL schemes an audio value (or a shard path) may use to be *read*
  (``s3``, ``gs``, ``https``, …; CLI ``--allow-remote s3,gs,https``).  Local paths and ``file://``
  are always allowed; ``memory://`` (one process's in-memory fsspec store, used by tests and
  single-process runs) is allowed too because it cannot reach anything outside the process.
* ``allow_commands`` — source entries that hold commands (Kaldi ``wav.scp`` pipes, Lhotse
  ``command`` sources) may run (CLI ``--allow-commands``).  They run without a shell, with a
  timeout.

:class:`Access` travels as a plain frozen dataclass (picklable, hashable) to pool workers.
Reject reasons: :data:`REMOTE_NOT_ALLOWED`, :data:`COMMAND_NOT_ALLOWED`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

REMOTE_NOT_ALLOWED = "remote_audio_not_allowed"
COMMAND_NOT_ALLOWED = "command_not_allowed"

#: Schemes that never leave the machine / process.
LOCAL_SCHEMES = frozenset({"file", "memory"})

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)(::|://)")


def url_scheme(loc: str) -> str | None:
    """The scheme of ``loc`` (``"s3"`` for ``s3://b/k``; for fsspec chains like ``zip::s3://…`` the
    first link, ``"zip"``), or ``None`` for a local path."""
    if not isinstance(loc, str):
        return None
    m = _SCHEME.match(loc)
    return m.group(1).lower() if m else None


def chain_schemes(loc: str) -> list[str]:
    """Every scheme of an fsspec URL chain (``simplecache::zip::s3://b/k`` → simplecache, zip, s3)."""
    out = []
    rest = loc
    while True:
        m = _SCHEME.match(rest)
        if not m:
            break
        out.append(m.group(1).lower())
        if m.group(2) == "://":
            break
        rest = rest[m.end():]
    return out


def parse_schemes(text: str | None) -> frozenset[str]:
    """``"s3,gs, https"`` → ``{"s3", "gs", "https"}`` (CLI helper; empty/None → nothing)."""
    if not text:
        return frozenset()
    return frozenset(s.strip().lower().rstrip(":/") for s in text.split(",") if s.strip())


@dataclass(frozen=True)
class Access:
    """The user's grants.  Default: local files only, no commands."""

    allow_remote: frozenset[str] = field(default_factory=frozenset)
    allow_commands: bool = False

    def remote_refusal(self, loc: str) -> str | None:
        """``None`` when ``loc`` may be read; else a one-line detail naming the option to pass."""
        schemes = chain_schemes(loc) if isinstance(loc, str) else []
        denied = [s for s in schemes if s not in LOCAL_SCHEMES and s not in self.allow_remote]
        if not denied:
            return None
        return (
            f"{loc!r} uses scheme {denied[0]!r}; remote audio is read only when allowed "
            f"(pass --allow-remote {','.join(dict.fromkeys(denied))})"
        )

    def command_refusal(self, what: str) -> str | None:
        """``None`` when commands may run; else a detail naming ``--allow-commands``."""
        if self.allow_commands:
            return None
        return f"{what}: source entries that run commands need --allow-commands"


#: The default grant: local only.
LOCAL_ONLY = Access()
