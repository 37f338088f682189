"""``jadwal plan`` and ``jadwal index inspect|report|check``."""
from __future__ import annotations

import numpy as np


def _plan(args) -> int:
    from ..access import parse_schemes
    from ..workspace import Workspace
    from .planner import build_index
    from .spec import SpecError, sweep_specs

    ws = Workspace(args.workspace)
    if args.sweep:
        if args.continue_from:
            raise SpecError("--sweep plans fresh indexes; it cannot be combined with --continue-from")
        runs = [(f"{args.name}-{suffix}", raw) for suffix, raw in sweep_specs(args.spec, args.sweep)]
    else:
        runs = [(args.name, args.spec)]
    for name, spec in runs:
        with ws.stage("index", name):  # name check, one writer, killed runs' index/.NAME.tmp-PID removed
            _check_shard_paths(ws, spec, parse_schemes(args.allow_remote))
            if args.continue_from:
                from .amendment import continue_index

                meta = continue_index(ws, spec, name, old=args.continue_from, at_step=args.at_step,
                                      progress=not args.quiet)
            else:
                meta = build_index(ws, spec, name, progress=not args.quiet)
        print(f"index {name}: {meta['num_steps'] - meta['start_step']} steps × {meta['world_size']} ranks, "
              f"{meta['eligible_samples']} eligible samples, max buffer {meta['max_buffer']} (bound {meta['buffer']}), "
              f"{meta['deviations']} deviations → {args.workspace}/index/{name}/")
        _print_expected(meta)
    return 0


def _print_expected(meta: dict) -> None:
    """Per phase: the switch steps of composite phases and the expected reuse (before any GPU hour)."""
    from .report import reuse_line

    for ph in meta["phases"]:
        if ph["end_step"] <= meta["start_step"]:
            continue
        parts = ph.get("parts") or []
        sw = "".join(f", switch to {p['policy']} at step {p['start_step']}" for p in parts[1:])
        mod = f", modality {ph['modality']}" if ph.get("modality") else ""
        er = ph.get("expected_reuse")
        print(f"  phase {ph['index']} {ph['policy']} [{ph['start_step']}, {ph['end_step']}){mod}{sw}"
              + (f": {reuse_line(er)}" if er else ""))


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

    out = write_report(args.workspace, args.name, column=args.column, top=args.top)
    print(f"fidelity table: {out['csv']}\nmixture plot:   {out['png']}")
    if out.get("fidelity_png"):
        print(f"fidelity plot:  {out['fidelity_png']}")
    if out.get("clusters_png"):
        print(f"cluster plot:   {out['clusters_png']}")
    print(f"max |realized − requested| share: {out['max_abs_diff']:.4f}")
    df = out["fidelity"]
    for ru in out["reuse"]:
        label = f"phase {ru['phase']} {ru['policy']}" + (f" part {ru['part']}" if ru["part"] else "")
        exp = (f" (expected {ru['expected_distinct_ratio']:.2f}, ×{ru['expected_max_reuse']})"
               if ru["expected_distinct_ratio"] is not None else "")
        print(f"{label} [{ru['start_step']}, {ru['end_step']}): {ru['slots']} slots, distinct samples / slots "
              f"{ru['distinct_ratio']:.2f}, max reuse of one sample ×{ru['max_reuse']}{exp}")
        if not len(df):
            continue
        mine = df[(df["phase"] == ru["phase"]) & (df["part"] == ru["part"])]
        for col, g in mine.groupby("column", sort=True):
            g = g.sort_values(["requested", "value"], ascending=[False, True])
            shown = g.head(args.top)
            cells = ", ".join(f"{v} {p:.3f}→{q:.3f}" for v, p, q in
                              zip(shown["value"], shown["requested"], shown["realized"]))
            more = f" … ({len(g) - len(shown)} more)" if len(g) > len(shown) else ""
            print(f"    {col}: requested→realized {cells}{more}; max |diff| {g['diff'].abs().max():.4f}")
            if col.startswith("cluster:") and len(g) > 1:
                slots = (g["realized"] * g["n"]).round().astype(int).to_numpy()
                hist, edges = np.histogram(slots, bins=min(8, len(g)))
                print("      slots per cluster: " + ", ".join(f"[{edges[i]:.0f}, {edges[i + 1]:.0f}) {h}"
                                                            for i, h in enumerate(hist)))
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
    p.add_argument("--sweep", metavar="KEY=V1,V2,…", help="plan one index per value of one spec key, named "
                   "NAME-<key><number> or NAME-<key>-<word>: e.g. --sweep phases[0].switch=0.25,0.5,0.75 "
                   "plans NAME-switch0.25, NAME-switch0.5 and NAME-switch0.75 (KEY: dotted, with list indexes)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--allow-remote", metavar="SCHEMES", help="URL schemes the shard set's shard paths may use "
                   "(e.g. s3,gs,https; shards written with `shard --output URL`); default: local only")
    p.set_defaults(func=_plan)
    ix = sub.add_parser("index", help="inspect, report on, or check a scheduling index")
    isub = ix.add_subparsers(dest="index_command", metavar="SUBCOMMAND", required=True)
    a = isub.add_parser("inspect", parents=[common], help="print each phase's composition, parts and switch steps")
    a.add_argument("name")
    a.set_defaults(func=_inspect)
    b = isub.add_parser("report", parents=[common], help="fidelity per phase and part (requested vs realized by "
                        "task, label, cluster), reuse of samples, and PNGs",
                        description="Write fidelity.csv/.json, mixture.png and clusters.png in index/NAME/ and "
                        "print, per phase and per part of a composite phase (hybrid: tpc, then ads), requested "
                        "vs realized shares by each target column (clusters: top-N and a histogram), the "
                        "ratio of distinct samples to slots and the most times one sample is delivered.")
    b.add_argument("name")
    b.add_argument("--column", default="task", help="column whose shares are plotted over steps (default task)")
    b.add_argument("--top", type=int, default=10, help="values (clusters, …) listed per column and part, "
                   "largest request first (default 10)")
    b.set_defaults(func=_report)
    c = isub.add_parser("check", parents=[common], help="verify the index's properties independently (exit 1 on failure)")
    c.add_argument("name")
    c.set_defaults(func=_check)
