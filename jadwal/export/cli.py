"""``jadwal export lhotse``."""
from __future__ import annotations

import argparse
import sys

from ..textforms import DEFAULT_FORM, FORMS


def register(sub, common) -> None:
    p = sub.add_parser("export", help="write a shard set in another toolkit's format (Lhotse Shar)",
                       description="Export a shard set for other toolkits; see docs/export.md. The HF datasets "
                                   "view is one Python call: jadwal.export.hf.load_shard_set(ws, set).")
    esub = p.add_subparsers(dest="export_command", metavar="FORMAT")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    lh = esub.add_parser(
        "lhotse", parents=[common], help="a Lhotse Shar CutSet (cuts.*.jsonl.gz + recording.*.tar) stock lhotse loads",
        description="Write shards/SET as Lhotse Shar under WS/exports/lhotse/SET/shar (or OUTPUT/shar; meta.json "
                    "beside it): one cut per audio "
                    "sample (id, text in --text-form, text_raw, speaker, lang, label/target/instruction, "
                    "dataset/task/split), audio as FLAC. "
                    "Load it with lhotse.CutSet.from_shar(in_dir=...), no jadwal needed. Text-only samples are "
                    "skipped (counted).")
    lh.add_argument("--set", required=True, dest="set_name", metavar="SET", help="shard set (shards/SET)")
    lh.add_argument("--output", "-o", help="output folder (default: WS/exports/lhotse/SET); replaced atomically")
    lh.add_argument("--shard-size", type=int, default=1000, help="cuts per Shar shard (default 1000)")
    lh.add_argument("--text-form", choices=FORMS, default=DEFAULT_FORM,
                    help="form of the supervisions' transcript: train (default; orthography kept: hamza, ى, "
                    "punctuation, as jadwal's trainer learns it), raw (as found in the source) or score (the WER "
                    "normalization, the manifest's `text`); the raw transcript is always in the supervision's "
                    "custom `text_raw`")
    lh.add_argument("--allow-remote", metavar="SCHEMES",
                    help="URL schemes shard paths may use (s3,gs,https); local paths always")
    lh.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bar (default: when stderr is a terminal)")
    lh.set_defaults(func=_lhotse)


def _lhotse(args) -> int:
    from ..access import parse_schemes
    from ..workspace import Workspace

    try:
        import lhotse  # noqa: F401
    except ImportError:
        raise ValueError("needs the lhotse library: pip install 'jadwal[lhotse]'") from None
    from .lhotse import export_lhotse

    # ExportError is a ValueError: main() prints it as one line (traceback with -v)
    s = export_lhotse(Workspace(args.workspace), args.set_name, args.output, shard_size=args.shard_size,
                      text_form=args.text_form, allow_remote=parse_schemes(args.allow_remote),
                      progress=sys.stderr.isatty() if args.progress is None else args.progress)
    print(f"{s['output']}: {s['cuts']} cuts, text form {args.text_form} ({s['skipped_text_only']} text-only "
          f"samples skipped), "
          f"{len(s['files'])} files; load with lhotse.CutSet.from_shar(in_dir={s['output']!r})")
    return 0
