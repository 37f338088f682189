import pytest

from jadwal.sched_index.synthetic import write_synthetic_shard_set

CORPUS = {
    "asr_a": ("asr", None, 1200),
    "asr_b": ("asr", None, 400),
    "did": ("did", ["egy", "glf", "lev", "msa"], 500),
    "ser": ("ser", ["neutral", "happy", "sad"], 300),
    "ssum": ("ssum", None, 120),
}


@pytest.fixture
def syn_ws(tmp_path):
    """A synthetic shard set streamed by (cluster, task, label): pure for every built-in policy."""
    return write_synthetic_shard_set(tmp_path / "syn", datasets=CORPUS, n_clusters=6, cluster_name="k6",
                                     stream_by=("cluster", "task", "label"), shard_size=40, seed=3)


@pytest.fixture
def ds_ws(tmp_path):
    """A synthetic shard set streamed by dataset (clusters as a separate assignment file)."""
    return write_synthetic_shard_set(tmp_path / "ds", datasets=CORPUS, n_clusters=6, cluster_name="k6",
                                     stream_by=("dataset",), shard_size=50, seed=4,
                                     text_fraction={"asr_a": 0.5})
