"""Target columns and values (:mod:`jadwal.sched_index.targets`): one in-memory form (column tuple,
value tuples, ``None`` for a missing value), meta.json's spelling applied at the edge, and the same
spelling from the planner (meta.json), the report and the checker."""
from __future__ import annotations

import numpy as np
import pytest

from jadwal.sched_index import build_index, check_index
from jadwal.sched_index.report import fidelity
from jadwal.sched_index.targets import TargetColumns


def test_parse_name_and_composite():
    tc = TargetColumns.parse("task/label")
    assert tc.columns == ("task", "label") and tc.composite and tc.name == "task/label"
    assert TargetColumns.parse("task").columns == ("task",) and not TargetColumns.parse("task").composite
    # a column whose own name has a "/" stays one column when the shard set has it
    assert TargetColumns.parse("a/b", known=["a/b"]).columns == ("a/b",)


@pytest.mark.parametrize("columns, value, spelled", [
    (("task",), ("asr",), "asr"),
    (("task",), (None,), "None"),
    (("task",), (float("nan"),), "None"),
    (("cluster:k6",), (3,), "3"),
    (("task", "label"), ("did", "egy"), "did/egy"),
    (("task", "label"), ("asr", None), "asr/"),
    (("task", "label"), (None, "x"), "/x"),
])
def test_meta_spelling_round_trips(columns, value, spelled):
    tc = TargetColumns(columns)
    assert tc.encode(value) == spelled
    assert tc.decode(spelled) == tc.value(*value)


def test_decode_rejects_a_value_with_the_wrong_number_of_parts():
    with pytest.raises(ValueError, match="2 part"):
        TargetColumns(("task", "label", "cluster")).decode("a/b")
    with pytest.raises(ValueError, match="1 value"):
        TargetColumns(("task", "label")).value("a")


def test_encode_rows():
    tc = TargetColumns(("task", "label"))
    assert tc.encode_rows(["asr", "did"], [None, "egy"]) == ["asr/", "did/egy"]


def test_planner_report_and_checker_spell_targets_alike(ds_ws):
    """ads requests task/label shares (asr has no label: a missing part); every requested value decodes
    to an existing (task, label) pair, and the report's realized values use the same spelling."""
    spec = {"seed": 1, "shards": "syn", "batch_size": 12, "steps": 40, "world_size": 2, "readers_per_rank": 2,
            "buffer": 128, "fallback": "substitute", "phases": [{"policy": "ads", "clusters": "k6"}]}
    meta = build_index(ds_ws, spec, "a", progress=False)
    targets = meta["phases"][0]["targets"]
    tc = TargetColumns.parse("task/label")
    pairs = {tc.decode(v) for v in targets["task/label"]}
    assert ("asr", None) in pairs and ("did", "egy") in pairs
    assert all(len(p) == 2 and p[0] is not None for p in pairs)
    df = fidelity(ds_ws, "a")
    tl = df[df["column"] == "task/label"]
    realized = set(tl.loc[tl["realized"] > 0, "value"])
    assert realized and realized <= set(targets["task/label"])  # nothing spelled another way
    assert np.isclose(tl["realized"].sum(), 1.0)
    # the checker realizes the same spelled values (else every requested share would miss)
    rep = check_index(ds_ws, "a")
    assert rep.ok, str(rep)
