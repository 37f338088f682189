"""The Lhotse bridge: a jadwal schedule as CutSets, consumed by a stock Lhotse dataset class, in the
planned order, resumable."""
from __future__ import annotations

import pytest

lhotse = pytest.importorskip("lhotse", reason="lhotse is the optional extra jadwal[lhotse]")

from lhotse.dataset import K2SpeechRecognitionDataset  # noqa: E402
from lhotse.dataset.input_strategies import AudioSamples  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from jadwal.sched_index import open_index  # noqa: E402
from jadwal.sched_index.planner import build_index  # noqa: E402
from jadwal.trainer import ScheduleDataset  # noqa: E402
from jadwal.trainer.lhotse_bridge import LhotseBridge, lhotse_bridge  # noqa: E402
from jadwal.shards.shardio import LoaderError  # noqa: E402

AUDIO_ONLY = {"asr_a": ("asr", None, 20, "audio"), "did_b": ("did", ["egy", "lev"], 14, "audio")}
SPEC = {"seed": 3, "batch_size": 6, "world_size": 2, "buffer": 200, "steps": 8,
        "phases": [{"policy": "mix", "by": "dataset", "weights": "uniform"}]}


@pytest.fixture(scope="module")
def bridge_ws(tmp_path_factory, lh):
    root = lh.make_workspace(tmp_path_factory.mktemp("bridge") / "ws", datasets=AUDIO_ONLY, max_samples=5)
    for r in (1, 2):
        build_index(root, {**SPEC, "readers_per_rank": r}, f"mix-r{r}", progress=False)
    return root


def _k2():
    return K2SpeechRecognitionDataset(input_strategy=AudioSamples(), return_cuts=True)


def test_k2_dataset_trains_from_the_plan(bridge_ws):
    import pyarrow.parquet as pq

    idx = open_index(bridge_ws, "mix-r1")
    manifest = {}
    for name in AUDIO_ONLY:
        for r in pq.read_table(bridge_ws / "manifests" / name / "manifest.parquet").to_pylist():
            manifest[r["id"]] = r
    for rank in (0, 1):
        ds = ScheduleDataset(bridge_ws, "mix-r1", rank=rank, world_size=2, decode_audio=False, prefetch=0)
        bridge = LhotseBridge(ds)
        k2 = _k2()
        steps = []
        for cuts in bridge:
            step = next(iter(cuts)).custom["jadwal_step"]
            plan = idx.plan(step, rank).ids
            assert [c.id for c in cuts] == list(plan)  # the CutSet is the micro-batch, in planned order
            batch = k2[cuts]  # a stock Lhotse dataset maps it to a training batch
            assert batch["inputs"].shape[0] == len(plan)
            assert sorted(c.id for c in batch["supervisions"]["cut"]) == sorted(plan)
            for c, text, n in zip(batch["supervisions"]["cut"], batch["supervisions"]["text"], batch["inputs"]):
                m = manifest[c.id]
                assert text == m["text"] and c.supervisions[0].speaker == m["speaker"]
                assert c.duration == pytest.approx(m["duration_s"], abs=1e-4)
                assert c.custom["dataset"] == m["dataset"] and c.supervisions[0].custom.get("label") == m["label"]
            steps.append(step)
        assert steps == list(range(idx.num_steps))


def test_dataloader_workers_and_lhotse_dataset_inside(bridge_ws):
    idx = open_index(bridge_ws, "mix-r2")
    bridge = lhotse_bridge(bridge_ws, "mix-r2", _k2(), rank=1, world_size=2, prefetch=0)
    dl = DataLoader(bridge, batch_size=None, num_workers=idx.readers_per_rank)
    got = [(b["jadwal"]["step"], b["jadwal"]["ids"], b["inputs"].shape[0]) for b in dl]
    assert got == [(t, list(idx.plan(t, 1).ids), len(idx.plan(t, 1).ids)) for t in range(idx.num_steps)]


def test_resume_from_state_dict_continues_exactly(bridge_ws):
    def run(state=None, stop=None):
        ds = ScheduleDataset(bridge_ws, "mix-r1", rank=0, world_size=2, decode_audio=False)
        bridge = LhotseBridge(ds)
        if state is not None:
            bridge.load_state_dict(state)
        out = []
        for cuts in bridge:
            out.append([c.id for c in cuts])
            if stop is not None and len(out) == stop:
                return out, bridge.state_dict()
        return out, bridge.state_dict()

    full, _ = run()
    head, state = run(stop=3)
    assert state["step"] == 3
    tail, _ = run(state)
    assert head + tail == full and len(full) == 8


def test_text_only_and_decoded_audio_are_refused(tmp_path, lh):
    root = lh.make_workspace(tmp_path / "ws", datasets={"asr_a": ("asr", None, 6, "audio"),
                                                         "txt_a": ("asr", None, 6, "text")}, max_samples=4)
    build_index(root, {**SPEC, "batch_size": 4, "steps": 2, "world_size": 1, "readers_per_rank": 1}, "m", progress=False)
    with pytest.raises(LoaderError, match="decode_audio=False"):
        LhotseBridge(ScheduleDataset(root, "m"))
    with pytest.raises(LoaderError, match="is text-only"):
        list(lhotse_bridge(root, "m", prefetch=0))
    cuts = [c for cs in lhotse_bridge(root, "m", text_only="keep", prefetch=0) for c in cs]
    text = [c for c in cuts if not c.has_recording]
    assert text and all(c.custom["modality"] == "text" and c.supervisions[0].text for c in text)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_with_stateful_dataloader(bridge_ws, workers):
    """torchdata's StatefulDataLoader saves the bridge's state (the dataset's) and resumes exactly."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    idx = open_index(bridge_ws, "mix-r2")
    ref = [(t, list(idx.plan(t, 0).ids)) for t in range(idx.num_steps)]

    def loader():
        bridge = lhotse_bridge(bridge_ws, "mix-r2", _k2(), rank=0, world_size=2, prefetch=0)
        return StatefulDataLoader(bridge, batch_size=None, num_workers=workers)

    dl = loader()
    head = []
    for b in dl:
        head.append((b["jadwal"]["step"], b["jadwal"]["ids"]))
        if len(head) == 3:
            break
    state = dl.state_dict()
    del dl
    dl2 = loader()
    dl2.load_state_dict(state)
    tail = [(b["jadwal"]["step"], b["jadwal"]["ids"]) for b in dl2]
    assert head + tail == ref
