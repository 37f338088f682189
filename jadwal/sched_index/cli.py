"""``jadwal plan`` and ``jadwal index inspect|report|check``."""
from __future__ import annotations


def _plan(args) -> int:
    from .planner import build_index

    kw = {}
    if args.continue_from:
        from .elastic import replan

        meta = replan(args.workspace, args.spec, args.name, old=args.continue_from, at_step=args.at_step,
                      progress=not args.quiet)
    else:
        meta = build_index(args.workspace, args.spec, args.name, progress=not args.quiet, **kw)
    print(f"index {args.name}: {meta['num_steps'] - meta['start_step']} steps × {meta['world_size']} ranks, "
          f"{meta['eligible_samples']} eligible samples, max buffer {meta['max_buffer']} (bound {meta['buffer']}), "
          f"{meta['deviations']} deviations → {args.workspace}/index/{args.name}/")
    return 0


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
    p.add_argument("--continue-from", metavar="OLD", help="re-plan the remainder of index OLD from --at-step "
                   "(e.g. on a different world size): no sample repeated or lost within the epoch")
    p.add_argument("--at-step", type=int, default=0, help="first step of the re-planned remainder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
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
