"""``jadwal manifest import|stats``."""
from __future__ import annotations

import argparse
import sys

FORMATS = ("kaldi", "commonvoice", "audiofolder", "hf", "lhotse", "jsonl", "csv", "nemo")
# normalization rules that get a --[no-]flag (kept in sync with NormalizeOptions by a test)
NORMALIZE_RULES = (
    "strip_diacritics", "strip_tatweel", "unify_alef", "alef_maqsura", "ta_marbuta",
    "persian_letters", "ascii_digits", "strip_punctuation", "lowercase",
)


def _column(value: str) -> tuple[str, str]:
    field, sep, col = value.partition("=")
    if not sep or not field or not col:
        raise argparse.ArgumentTypeError(f"expected FIELD=COLUMN, got {value!r}")
    return field.strip(), col.strip()


def register(sub, common) -> None:
    p = sub.add_parser("manifest", help="import sources into normalized Parquet manifests; stats")
    msub = p.add_subparsers(dest="manifest_command", metavar="COMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    imp = msub.add_parser(
        "import", parents=[common],
        help="import sources (Kaldi, Common Voice, audiofolder, HF, Lhotse, JSONL, CSV, NeMo) into one dataset",
        description="Import SRC [SRC ...] into WORKSPACE/manifests/NAME/{manifest,rejects}.parquet + stats.json + "
                    "meta.json. Several sources (e.g. Kaldi data/train data/dev) become one dataset, each source's "
                    "split from its folder/file name; a dataset already imported from other sources is refused "
                    "unless --replace. "
                    "Rows that cannot be imported go to rejects.parquet with a reason; one bad row never stops "
                    "the import. Nothing in the source is fetched or executed unless you allow it "
                    "(--allow-remote, --allow-commands). See docs/manifests.md.",
    )
    imp.add_argument("src", nargs="+", help="source folder(s) or file(s), all of one --format")
    imp.add_argument("--format", "-f", required=True, choices=FORMATS)
    imp.add_argument("--dataset", "-d", required=True,
                     help="dataset name: letters, digits, '_', '.', '-' (no '/' or leading '.'); ids become NAME/<source id>")
    imp.add_argument("--task", "-t", required=True, help="task of every row: asr, did, ser, ssum, aqa, slu, …")
    imp.add_argument("--replace", action="store_true",
                     help="replace a dataset imported earlier from other sources (default: refuse; sources of one "
                          "dataset are imported together in one call)")
    imp.add_argument("--lang", default="ar", help="language code of the rows (default: ar)")
    imp.add_argument("--label-column", help="column holding the class label (default: label)")
    imp.add_argument("--text-column", help="column holding the transcript (default: text/sentence/transcript/…)")
    imp.add_argument("--audio-column", help="column holding the audio path (or HF Audio column)")
    imp.add_argument("--id-column", help="column holding the row id (default: id)")
    imp.add_argument("--speaker-column", help="column holding the speaker (default: speaker/speaker_id/client_id)")
    imp.add_argument("--column", action="append", type=_column, default=[], metavar="FIELD=COL",
                     help="map a manifest field (audio, text, label, id, speaker, offset, duration, target, "
                          "instruction, recording_id, split, lang) to a source column; repeatable")
    imp.add_argument("--min-duration", type=float, help="reject rows shorter than this many seconds (too_short)")
    imp.add_argument("--max-duration", type=float, help="reject rows longer than this many seconds (too_long)")
    imp.add_argument("--split-ratios", default="0.9,0.05,0.05",
                     help="train,dev,test ratios for rows whose source gives no split (default 0.9,0.05,0.05)")
    imp.add_argument("--split", choices=("train", "dev", "test"), help="put every row in this split")
    imp.add_argument("--seed", type=int, default=0, help="seed of the hash split (default 0)")
    imp.add_argument("--workers", type=int, help="audio probing processes (default: all cores)")
    imp.add_argument("--executor", choices=("local", "ray"), default="local",
                     help="where audio files are probed: local process pool (default) or Ray tasks (same manifest; "
                          "pip install 'jadwal[ray]')")
    imp.add_argument("--ray-address", metavar="ADDR",
                     help="Ray cluster to join (e.g. auto, ray://head:10001); default $RAY_ADDRESS, else a local Ray")
    imp.add_argument("--require", choices=("text", "label", "target", "none"),
                     help="field that must be non-empty (default by task: asr→text, did/ser/…→label, ssum/aqa/…→target)")
    imp.add_argument("--no-hash", dest="hash_audio", action="store_false",
                     help="skip the sha1 of audio files (no audio_sha1, no duplicate_audio check)")
    imp.add_argument("--cv-tsv", action="append", dest="cv_tsvs", metavar="NAME",
                     help="commonvoice: TSV to read (train, dev, test, validated, other…); repeatable")
    imp.add_argument("--delimiter", help="csv: field delimiter (default: tab for .tsv, else comma)")
    acc = imp.add_argument_group("what the source may make jadwal fetch or run (default: local files only, nothing runs)")
    acc.add_argument("--allow-remote", metavar="SCHEMES", default="",
                     help="comma-separated URL schemes audio values may be read from, e.g. s3,gs,https; rows with "
                          "other URLs are rejected (remote_audio_not_allowed) without any connection")
    acc.add_argument("--allow-commands", action="store_true",
                     help="run source entries that are commands (Kaldi wav.scp 'ID flac -c -d -s a.flac |'), "
                          "without a shell, with a timeout; without it they are rejected (command_not_allowed)")
    acc.add_argument("--command-timeout", type=float, metavar="S",
                     help="kaldi: seconds one wav.scp command may run (default 600)")
    imp.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="progress bar (default: when stderr is a terminal)")
    g = imp.add_argument_group("text normalization (see docs/manifests.md)")
    g.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=True,
                   help="normalize transcripts into `text` (text_raw keeps the original); --no-normalize only strips")
    g.add_argument("--unicode-form", choices=("NFKC", "NFC", "none"), help="Unicode normalization (default NFKC)")
    for rule in NORMALIZE_RULES:
        g.add_argument(f"--{rule.replace('_', '-')}", dest=f"norm_{rule}", action=argparse.BooleanOptionalAction,
                       default=None)
    imp.set_defaults(func=_import)

    st = msub.add_parser("stats", parents=[common], help="hours and counts per dataset/task/split/label; stats.png")
    st.add_argument("--dataset", "-d", nargs="+", help="only these datasets")
    st.add_argument("--by", default="dataset,task,split", help="group columns, comma separated (default dataset,task,split)")
    st.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    st.add_argument("--plot", default=None, help="where to write the PNG (default WORKSPACE/manifests/stats.png)")
    st.set_defaults(func=_stats)


def _import(args) -> int:
    from ..access import Access, parse_schemes
    from ..workspace import Workspace
    from .core import import_source
    from .normalize import NormalizeOptions

    normalize = False
    if args.normalize:
        kw = {rule: getattr(args, f"norm_{rule}") for rule in NORMALIZE_RULES if getattr(args, f"norm_{rule}") is not None}
        if args.unicode_form:
            kw["unicode_form"] = args.unicode_form
        normalize = NormalizeOptions(**kw)
    options = {}
    if args.cv_tsvs:
        options["tsvs"] = args.cv_tsvs
    if args.delimiter:
        options["delimiter"] = args.delimiter.encode().decode("unicode_escape")
    if args.command_timeout:
        options["command_timeout"] = args.command_timeout
    access = Access(allow_remote=parse_schemes(args.allow_remote), allow_commands=args.allow_commands)
    summary = import_source(
        Workspace(args.workspace), args.src, args.format, dataset=args.dataset, task=args.task, lang=args.lang,
        columns=dict(args.column), label_column=args.label_column, text_column=args.text_column,
        audio_column=args.audio_column, id_column=args.id_column, speaker_column=args.speaker_column,
        min_duration=args.min_duration, max_duration=args.max_duration, split_ratios=args.split_ratios,
        seed=args.seed, split=args.split, workers=args.workers, normalize=normalize, require=args.require,
        hash_audio=args.hash_audio, format_options=options,
        progress=sys.stderr.isatty() if args.progress is None else args.progress,
        executor=args.executor, ray_address=args.ray_address, access=access, replace=args.replace,
    )
    print(summary)
    return 0


def _stats(args) -> int:
    import json

    from ..workspace import Workspace
    from .stats import format_table, manifest_stats, parse_by, plot_stats

    ws = Workspace(args.workspace)
    by = parse_by(args.by)
    t = manifest_stats(ws, args.dataset, by)
    if args.json:
        print(json.dumps(t.to_pylist(), ensure_ascii=False, indent=1))
    else:
        print(format_table(t))
    png = plot_stats(t, by, args.plot or ws.path("manifests", "stats.png"))
    print(f"plot: {ws.rel(png)}", file=sys.stderr)
    return 0
