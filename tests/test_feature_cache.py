"""Feature-cached episode evaluation against the per-episode path it replaces.

References: the per-episode path (every episode's images through the backbone, ``--features
per-episode``) gives the per-episode accuracies the cached path must reproduce; a hand count of the
images and views the backbone sees (one pass per image and view); the batches a model whose
features depend on its batch sees (only whole episodes, never cached per-class batches).
"""

import json

import numpy as np
import pytest
import torch
from synthetic import synthetic_dataset
from test_distributed import torchrun
from test_meta_cli import train_args
from torch import nn

from fewshot_sla.backbones import get_backbone
from fewshot_sla.cli import main
from fewshot_sla.config import ConfigError
from fewshot_sla.data.spec import ImageSpec
from fewshot_sla.episodes import EpisodeSampler
from fewshot_sla.heads import get_head
from fewshot_sla.meta import feature_cache
from fewshot_sla.meta.evaluate import evaluate_episodes
from fewshot_sla.meta.feature_cache import CACHED, CacheSettings, CacheStats, episode_dependence
from fewshot_sla.meta.model import FewShotModel

HEADS = ("protonet", "ridge", "svm", "r2d2", "logistic")
CPU = torch.device("cpu")
SHAPE = dict(n_way=4, k_shot=2, n_query=3, n_episodes=11, seed=5, device=CPU, tasks_per_batch=4)


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset(10, 12, 16, 1, seed=3), ImageSpec(1, 16, (0.5,), (0.25,)).normalise


def tiny_model(head="protonet", mode="sla", backbone=None):
    torch.manual_seed(0)
    net = backbone or get_backbone("conv4", 1, image_size=16, hidden=8, out_channels=8)
    return FewShotModel(net, get_head(head), mode, "rotation")


def both(model, ds, pre, **kw):
    """(per-episode accuracies, cached accuracies, cached record)."""
    record = {}
    ref = evaluate_episodes(model, ds, pre, **{**SHAPE, **kw}, cache=CacheSettings("per-episode"))
    got = evaluate_episodes(model, ds, pre, **{**SHAPE, **kw}, record=record)
    return ref, got, record


@pytest.mark.parametrize("mode", ["baseline", "sla", "sla+sd"])
@pytest.mark.parametrize("head", HEADS)
def test_cached_accuracies_equal_the_per_episode_ones(data, head, mode):
    ds, pre = data
    ref, got, record = both(tiny_model(head, mode), ds, pre)
    assert record["features"] == CACHED
    assert list(got) == list(ref)
    for k in ref:
        assert np.array_equal(got[k], ref[k]), k


def test_each_image_goes_through_the_backbone_once_per_view(data):
    ds, pre = data
    model = tiny_model("protonet", "sla")
    rows = []
    model.backbone.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    sampler = EpisodeSampler(ds.labels, 4, 2, 3, 11, seed=5)
    used = {int(ds.labels[j]) for i in range(11) for j in sampler.episode(i)}
    images = sum(int((ds.labels == c).sum()) for c in used)  # every image of each class used, once
    _, _, record = both(model, ds, pre)
    cached_rows = sum(rows) - 11 * 4 * (4 * (2 + 3))  # the per-episode run: 11 episodes x M x (S + Q)
    assert cached_rows == images * 4 == record["cache"].image_views


def test_streaming_under_a_small_cap_equals_the_in_memory_cache(data):
    ds, pre = data
    model = tiny_model("ridge", "sla+sd")
    row = 4 * 8 * 4  # M views x D x float32 bytes per image; 12 images per class
    kw = {**SHAPE, "tasks_per_batch": 1, "n_episodes": 17}
    memory, streamed = {}, {}
    a = evaluate_episodes(model, ds, pre, **kw, record=memory)
    b = evaluate_episodes(model, ds, pre, **kw, cache=CacheSettings(mib=5 * 12 * row / 2**20), record=streamed)
    ref = evaluate_episodes(model, ds, pre, **kw, cache=CacheSettings("per-episode"))
    assert not memory["cache"].streamed and streamed["cache"].streamed
    assert streamed["cache"].loads > streamed["cache"].classes == memory["cache"].loads == 10
    assert "streamed by class" in streamed["features"]
    for k in a:
        assert np.array_equal(a[k], b[k]) and np.array_equal(a[k], ref[k]), k
    with pytest.raises(ConfigError, match="raise --cache-mib to at least"):  # 3 classes < 4 ways
        evaluate_episodes(model, ds, pre, **kw, cache=CacheSettings(mib=3 * 12 * row / 2**20))


def test_float16_cache_is_an_option_close_to_float32(data):
    ds, pre = data
    model = tiny_model("protonet", "sla")
    a = evaluate_episodes(model, ds, pre, **SHAPE)
    b = evaluate_episodes(model, ds, pre, **SHAPE, cache=CacheSettings(dtype="float16"))
    assert abs(a["aggregated"].mean() - b["aggregated"].mean()) < 0.05


class BatchStatsNet(nn.Module):
    """Features normalised by the statistics of the batch they come in (BatchNorm without running
    statistics): an image's features depend on its episode. Records the batch sizes it sees."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4, track_running_stats=False)
        self.out_dim = 4
        self.seen = []

    def forward(self, x):
        self.seen.append(x.shape[0])
        return self.bn(self.conv(x)).mean((2, 3))


def test_a_model_using_batch_statistics_is_never_cached(data):
    ds, pre = data
    net = BatchStatsNet()
    model = tiny_model("protonet", "sla", backbone=net)
    ref, got, record = both(model, ds, pre)
    assert record["features"].startswith("per episode (BatchNorm backbone.bn uses the episode's batch statistics")
    episode_batch = 4 * 4 * (4 * (2 + 3))  # tasks_per_batch x M x (S + Q): whole episodes only
    assert set(net.seen) <= {episode_batch, 3 * 4 * (4 * (2 + 3))}  # the last group holds 3 episodes
    for k in ref:
        assert np.array_equal(got[k], ref[k])
    net.seen.clear()  # what caching would do: per-class batches, other statistics, other logits
    sampler = EpisodeSampler(ds.labels, 4, 2, 3, 11, seed=5)
    model.eval()
    with torch.no_grad():
        feature_cache.cached_episode_accuracies(model, ds, pre, sampler, list(range(11)), ("aggregated",), CPU, 4,
                                                CacheSettings(), CacheStats())
    assert episode_batch not in net.seen


def test_declared_episode_dependent_models_and_heads_keep_the_per_episode_path(data, monkeypatch):
    ds, pre = data

    def refuse(*a, **k):
        raise AssertionError("cached")

    monkeypatch.setattr("fewshot_sla.meta.evaluate.cached_episode_accuracies", refuse)
    model = tiny_model("protonet", "baseline")
    model.episode_independent = False  # the MAML family: the backbone adapts to each episode
    record = {}
    evaluate_episodes(model, ds, pre, **SHAPE, record=record)
    assert record["features"] == "per episode (FewShotModel adapts to each episode)"
    model = tiny_model("protonet", "baseline")
    model.head.episode_independent = False  # a transductive head
    assert episode_dependence(model) == "the head ProtoNetHead is transductive"
    model = tiny_model("protonet", "baseline")
    model.backbone.train()  # BatchNorm in training mode
    assert episode_dependence(model).startswith("BatchNorm ")
    assert episode_dependence(tiny_model().eval(), ImageSpec(1, 16).augmentation("metaoptnet")) == \
        "the preprocessing is random"
    with pytest.raises(AssertionError, match="cached"):  # the guard above is live
        evaluate_episodes(tiny_model(), ds, pre, **SHAPE)


# ------------------------------------------------------------------ checkpoints, from the command line
@pytest.fixture(scope="module")
def checkpoints(fewshot_folder, tmp_path_factory):
    base = tmp_path_factory.mktemp("cache_ckpts")
    assert main(train_args(fewshot_folder, base / "meta", "--mode", "sla+sd", "--epochs", "1")) == 0
    assert main(["supervised", "--dataset", "folder", "--data-root", str(fewshot_folder), "--mode", "sla",
                 "--run-dir", str(base / "sup"), "--backbone", "conv4", "--backbone-options",
                 "hidden=8,out_channels=8", "--batch-size", "8", "--iterations", "2", "--eval-every", "2",
                 "--device", "cpu", "--quiet", "--no-plot"]) == 0
    return base


def eval_json(path, out, *extra):
    assert main(["eval", "--checkpoint", str(path), "--episodes", "9", "--n-way", "3", "--k-shot", "2",
                 "--n-query", "3", "--tasks-per-batch", "4", "--quiet", "--seed", "2", "--output", str(out),
                 *extra]) == 0
    return json.loads(out.read_text())["models"][0]


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("kind", ["meta", "sup"])
def test_eval_of_checkpoints_cached_equals_per_episode(checkpoints, tmp_path, kind, head):
    a = eval_json(checkpoints / kind, tmp_path / "a.json", "--head", head, "--features", "per-episode")
    b = eval_json(checkpoints / kind, tmp_path / "b.json", "--head", head)
    assert a["features"] == "per episode (--features per-episode)" and b["features"] == CACHED
    assert set(a["results"]) == set(b["results"]) >= {"single", "aggregated"}  # with SLA; plain/distilled without
    for k in a["results"]:
        assert a["results"][k]["accuracies"] == b["results"][k]["accuracies"], k


def test_torchrun_two_ranks_cached_equals_one_process_per_episode(checkpoints, tmp_path):
    common = ["--checkpoint", str(checkpoints / "meta"), "--compare", str(checkpoints / "sup"), "--episodes", "13",
              "--n-way", "3", "--n-query", "3", "--tasks-per-batch", "4", "--device", "cpu", "--quiet", "--seed", "4"]
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    assert main(["eval", *common, "--features", "per-episode", "--output", str(one)]) == 0
    proc = torchrun(2, "eval", *common, "--output", str(two))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(f"features: {CACHED}") == 2  # both models, reported by rank 0 only
    for a, b in zip(json.loads(one.read_text())["models"], json.loads(two.read_text())["models"]):
        for k in a["results"]:
            assert a["results"][k]["accuracies"] == b["results"][k]["accuracies"], k


def test_a_cap_below_one_group_of_episodes_is_one_line_and_exit_2(checkpoints, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--checkpoint", str(checkpoints / "meta"), "--episodes", "3", "--n-way", "3", "--n-query", "3",
              "--quiet", "--cache-mib", "0.0001", "--output", str(tmp_path / "x.json")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "raise --cache-mib to at least 1" in err
    assert not (tmp_path / "x.json").exists()
