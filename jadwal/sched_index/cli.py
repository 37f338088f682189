"""``jadwal plan`` and ``jadwal index inspect|report|check``."""
from __future__ import annotations


def _plan(args) -> int:
    from ..access import parse_schemes
    from ..workspace import Workspace
    from .planner import build_index

    kw = {}
    ws = Workspace(args.workspace)
    with ws.stage("index", args.name):  # name check, one writer, killed runs' index/.NAME.tmp-PID removed
        _check_shard_paths(ws, args.spec, parse_schemes(args.allow_remote))
        if args.continue_from:
            from .amend import continue_index

            meta = continue_index(ws, args.spec, args.name, old=args.continue_from, at_step=args.at_step,
                                  progress=not args.quiet)
        else:
            meta = build_index(ws, args.spec, args.name, progress=not args.quiet, **kw)
    print(f"index {args.name}: {meta['num_steps'] - meta['start_step']} steps × {meta['world_size']} ranks, "
          f"{meta['eligible_samples']} eligible samples, max buffer {meta['max_buffer']} (bound {meta['buffer']}), "
          f"{meta['deviations']} deviations → {args.workspace}/index/{args.name}/")
    return 0


def _check_shard_paths(ws, spec_source, allow_remote) -> None:
    """Plan-time check of the shard set's ``shards.parquet`` paths (no ``pipe:``, only allowed schemes;
    see ``shards.shardio.shard_path_refusal``): an index is never planned over paths the loader refuses."""
    import pyarrow.parquet as pq

    from ..shards.schema import SHARDS_FILE
    from ..shards.shardio import check_shard_paths
    from .planner import pick_shard_set
    from .spec import load_spec

    f = ws.path("shards", pick_shard_set(ws, load_spec(spec_source).shards), SHARDS_FILE)
    if f.exists():
        check_shard_paths(pq.read_table(f, columns=["path"]).column("path").to_pylist(), allow_remote,
                          where=f"plan: {ws.rel(f)}")


def _inspect(args) -> int:
    from .report import inspect_text

    print(inspect_text(args.workspace, args.name))
    return 0


def _report(args) -> int:
    from .report import write_report

    out = write_report(args.workspace, args.name, column=args.column)
    print(f"fidelity table: {out['csv']}\nmixture plot:   {out['png']}\nmax |realized − requested| share: {out['max_abs_diff']:.4f}")
    if out["changes"]:
        print("declared changes (slots not carrying the requested cell):")
        for c in out["changes"]:
            where = f" stream {c['stream']!r}" if c["stream"] else ""
            print(f"  phase {c['phase']} ({c['policy']}): {c['slots']} {c['kind']}{where}")
    else:
        print("declared changes: none (every slot carries its requested cell)")
    return 0


def _check(args) -> int:
    from .check import check_index

    rep = check_index(args.workspace, args.name)
    print(rep)
    return 0 if rep.ok else 1


def register(sub, common) -> None:
    p = sub.add_parser("plan", parents=[common], help="build a scheduling index from a schedule spec (YAML)",
                       description="Plan SPEC.yaml into index/NAME/: every step, rank and slot gets an exact "
                       "sample; shards read sequentially; buffers bounded. See README for the spec format.")
    p.add_argument("spec", help="schedule spec YAML file")
    p.add_argument("--name", required=True, help="index name (folder index/NAME)")
    p.add_argument("--continue-from", metavar="OLD", help="continue index OLD from --at-step under SPEC: "
                   "when only world_size/readers_per_rank/buffer changed, the same schedule re-planned (no "
                   "sample repeated or lost); any other change (weights, phases, policies, steps, batch size, "
                   "shard set) amends it: what each stream's current pass left unread comes first, and "
                   "nothing delivered before comes back until its pass is used up (docs/sched_index.md)")
    p.add_argument("--at-step", type=int, default=0, help="first step the new index delivers (the training "
                   "run's next step: `step` in ScheduleDataset.state_dict())")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--allow-remote", metavar="SCHEMES", help="URL schemes the shard set's shard paths may use "
                   "(e.g. s3,gs,https; shards written with `shard --output URL`); default: local only")
    p.set_defaults(func=_plan)
    ix = sub.add_parser("index", help="inspect, report on, or check a scheduling index")
    isub = ix.add_subparsers(dest="index_command", metavar="SUBCOMMAND", required=True)
    a = isub.add_parser("inspect", parents=[common], help="print each phase's composition")
    a.add_argument("name")
    a.set_defaults(func=_inspect)
    b = isub.add_parser("report", parents=[common], help="write fidelity tables and a PNG of the realized mixture")
    b.add_argument("name")
    b.add_argument("--column", default="task", help="column whose shares are plotted over steps (default task)")
    b.set_defaults(func=_report)
    c = isub.add_parser("check", parents=[common], help="verify the index's properties independently (exit 1 on failure)")
    c.add_argument("name")
    c.set_defaults(func=_check)
