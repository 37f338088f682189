"""Bad specs give clear errors naming the key and what is allowed."""
import pytest

from jadwal.sched_index import PlanError, SpecError, build_index

BASE = {"seed": 1, "batch_size": 8, "steps": 20, "world_size": 2, "readers_per_rank": 1, "buffer": 0}


@pytest.mark.parametrize(
    "patch, pattern",
    [
        ({"phases": [{"policy": "zigzag"}]}, r"unknown policy 'zigzag'; known: .*mix"),
        ({"phases": [{"policy": "mix", "weights": {"asr_a": 0.5, "did": 0.3}}]}, r"must sum to 1, they sum to 0.8"),
        ({"phases": [{"policy": "mix", "weights": {"nope": 1.0}}]}, r"unknown value\(s\) \['nope'\]"),
        ({"phases": [{"policy": "mix", "length": 15}, {"policy": "mix", "length": 10}]}, r"25 steps, longer than the run \(20 steps\)"),
        ({"phases": [{"policy": "ads", "clusters": "k99"}]}, r"cluster:k99.*jadwal cluster --name k99"),
        ({"phases": [{"policy": "gst", "groups": [["asr_a"], ["klingon"]]}]}, r"group names dataset 'klingon'"),
        ({"phases": [{"policy": "gst", "groups": "nogroups"}]}, r"groups file .* not found"),
        ({"phases": [{"policy": "tpc", "stages": [["asr"], ["dance"]]}]}, r"stage names task 'dance'"),
        ({"phases": [{"policy": "tpc", "stages": [["asr"]], "replay": 1.5}]}, r"`replay` must be in \[0, 1\)"),
        ({"phases": [{"policy": "mix", "colour": "red"}]}, r"unknown key\(s\) \['colour'\]"),
        ({"batch_size": 7, "phases": [{"policy": "mix"}]}, r"`batch_size` 7 must be divisible by `world_size` 2"),
        ({"bogus": 1, "phases": [{"policy": "mix"}]}, r"unknown key\(s\) \['bogus'\]"),
        ({"on_exhaustion": "explode", "phases": [{"policy": "mix"}]}, r"on_exhaustion.default.*repeat, stop, fail"),
        ({"phases": [{"policy": "mix", "length": 1.5}]}, r"fractional `length` must be in \(0, 1\]"),
        ({"phases": [{"policy": "mix"}, {"policy": "mix"}]}, r"phases\[0\]: `length` is required"),
        ({"phases": [{"policy": "mix", "by": "colour"}]}, r"column 'colour'"),
        ({"shards": "nope", "phases": [{"policy": "mix"}]}, r"`shards` names 'nope'"),
        ({"phases": []}, r"`phases` must be a non-empty list"),
    ],
)
def test_bad_specs(ds_ws, patch, pattern):
    spec = {**BASE, **patch}
    with pytest.raises((SpecError, PlanError), match=pattern):
        build_index(ds_ws, spec, "bad", progress=False)
    assert not (ds_ws.root / "index" / "bad").exists()  # nothing half-written


def test_missing_required_keys(ds_ws):
    with pytest.raises(SpecError, match="missing required key `seed`"):
        build_index(ds_ws, {"world_size": 1, "batch_size": 2, "steps": 2, "phases": [{"policy": "mix"}]}, "x")
    with pytest.raises(SpecError, match="exactly one of `batch_size`"):
        build_index(ds_ws, {"seed": 0, "world_size": 1, "steps": 2, "phases": [{"policy": "mix"}]}, "x")


def test_user_policy_module(ds_ws, tmp_path):
    mod = tmp_path / "mine.py"
    mod.write_text(
        "import numpy as np\n"
        "from jadwal.sched_index.policies import register, categories, pick_cells, spread, to_steps\n"
        "@register('only_did', columns=lambda p: ['dataset'])\n"
        "def only_did(ctx):\n"
        "    values, ids = categories(ctx.cells, 'dataset')\n"
        "    seq = np.zeros(ctx.n_steps * ctx.slots, dtype=np.int32)\n"
        "    ctx.add_target('dataset', ['did'], [1.0], len(seq))\n"
        "    return to_steps(pick_cells(seq, [ids[values.index('did')]], ctx.cells, ctx.rng), ctx)\n"
    )
    spec = {**BASE, "policy_modules": [str(mod)], "phases": [{"policy": "only_did"}]}
    build_index(ds_ws, spec, "u", progress=False)
    from jadwal.sched_index import check_index, open_index

    idx = open_index(ds_ws, "u")
    assert set(idx.plan(3, 1).ids) and all(i.startswith("did/") for i in idx.plan(3, 1).ids)
    assert check_index(ds_ws, "u").ok


@pytest.mark.parametrize(
    "patch, pattern",
    [
        ({"phases": [{"policy": "mix", "length": 8}, {"policy": "mix", "length": 7}]},
         r"phases add up to 15 steps but the run has 20"),
        ({"phases": [{"policy": "pool", "factor": 2.5}]}, r"`factor` must be an integer ≥ 1"),
    ],
)
def test_lengths_that_do_not_add_up_and_bad_pool_factor(ds_ws, patch, pattern):
    with pytest.raises((SpecError, PlanError), match=pattern):
        build_index(ds_ws, {**BASE, **patch}, "bad", progress=False)


def test_fractions_fill_the_run_exactly(ds_ws):
    from jadwal.sched_index import open_index

    spec = {**BASE, "steps": 10, "phases": [{"policy": "mix", "length": 0.25}] * 4}
    build_index(ds_ws, spec, "q", progress=False)
    spans = [(p["start_step"], p["end_step"]) for p in open_index(ds_ws, "q").meta["phases"]]
    assert spans == [(0, 3), (3, 5), (5, 8), (8, 10)]  # cumulative rounding, not [2, 2, 2, 4]


def test_policy_returning_floats_is_refused(ds_ws, tmp_path):
    mod = tmp_path / "floaty.py"
    mod.write_text(
        "import numpy as np\n"
        "from jadwal.sched_index.policies import register\n"
        "@register('floaty', columns=lambda p: ['dataset'])\n"
        "def floaty(ctx):\n"
        "    return np.zeros((ctx.n_steps, ctx.slots)) + 0.7\n"
    )
    with pytest.raises(PlanError, match="float64 values; it must return integer cell ids"):
        build_index(ds_ws, {**BASE, "policy_modules": [str(mod)], "phases": [{"policy": "floaty"}]}, "f",
                    progress=False)
