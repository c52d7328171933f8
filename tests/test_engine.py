"""The shared training engine: checkpoints of both pipelines and of earlier versions, the chunked
optimiser step against a hand-written one, sharding, backends, run directories, the registries
and the one config dialect (old spellings still accepted)."""

import json
from pathlib import Path
from unittest import mock

import pytest
import torch
from torch import nn

from fewshot_sla import sla
from fewshot_sla.config import ConfigError, build_config, config_from_dict
from fewshot_sla.distributed import DistInfo
from fewshot_sla.engine import (
    ChunkedStep,
    claim_run_dir,
    configure_backends,
    load_model,
    make_checkpoint,
    shard_indices,
    upgrade,
)
from fewshot_sla.meta.config import MetaTrainConfig
from fewshot_sla.seeding import derive_seed
from fewshot_sla.supervised.config import SupervisedConfig

LEGACY = Path(__file__).resolve().parent / "data" / "legacy"


# ---------------------------------------------------------------- checkpoints
def test_checkpoints_written_by_the_previous_version_load_and_compute_the_same():
    """meta_v1.pt / supervised_v1.pt and the logits in expected.pt were written by the code of
    commit c117c97 (formats fewshot-sla/meta/1 and fewshot-sla-supervised/1)."""
    exp = torch.load(LEGACY / "expected.pt")
    meta = load_model(LEGACY / "meta_v1.pt")
    assert meta.pipeline == "meta" and meta.checkpoint["format"] == "fewshot-sla/2"
    assert isinstance(meta.config, MetaTrainConfig) and meta.config.mode == "sla+sd"
    assert meta.config.runs_root == "runs"  # saved as out_dir by that version
    assert not meta.model.training
    with torch.no_grad():
        logits = meta.model(exp["support"], exp["labels"], exp["query"], 3)
    assert torch.equal(logits, exp["meta_logits"])

    sup = load_model(LEGACY / "supervised_v1.pt")
    assert sup.pipeline == "supervised" and sup.data["M"] == 4 and sup.data["num_classes"] == 4
    cfg = sup.config
    assert isinstance(cfg, SupervisedConfig)
    # the old spellings of that version's config: temperature, out_dir, progress, amp=False, a string of options
    assert cfg.sd_temperature == 2.0 and cfg.run_dir.endswith("sup") and cfg.quiet and cfg.amp == "none"
    assert cfg.backbone_options == {"hidden": 4, "out_channels": 4}
    with torch.no_grad():
        out = sup.model(exp["x"])
    assert out.keys() == exp["supervised"].keys()
    assert all(torch.equal(out[k], exp["supervised"][k]) for k in out)


def test_supervised_evaluation_refuses_a_meta_checkpoint_in_one_line():
    from fewshot_sla.supervised.evaluate import evaluate_checkpoints

    with pytest.raises(ValueError, match="checkpoint of `fewshot-sla meta`.*fewshot-sla eval"):
        evaluate_checkpoints([str(LEGACY / "meta_v1.pt")])


def test_upgrade_names_the_source_of_a_foreign_file():
    assert upgrade(make_checkpoint("meta", {}, {}, {}))["pipeline"] == "meta"
    with pytest.raises(ValueError, match="x.pt is not a fewshot-sla checkpoint"):
        upgrade({"state_dict": {}}, "x.pt")
    with pytest.raises(ValueError, match="not a fewshot-sla checkpoint"):
        upgrade([1, 2], "y.pt")
    with pytest.raises(ValueError, match="unknown pipeline"):
        make_checkpoint("rl", {}, {}, {})


# ---------------------------------------------------------------- the chunked step
class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(4, 1)

    def forward(self, x):
        return self.out(self.drop(self.bn(self.lin(x))))


def test_chunked_step_equals_a_hand_written_accumulation():
    """Two chunks: dropout seeded from (seed, stream, step, chunk), BatchNorm running statistics
    from the first chunk only, gradient of the sum of the scaled chunk losses, summed values."""
    torch.manual_seed(0)
    net = _Net()
    ref = _Net()
    ref.load_state_dict(net.state_dict())
    xs = [torch.randn(5, 3), torch.randn(5, 3)]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    step = ChunkedStep(net, net, opt, torch.amp.GradScaler("cuda", enabled=False), DistInfo(), seed=3,
                       dropout_stream=8)

    def chunk_loss(x, chunk):
        loss = net(x).pow(2).mean()
        return loss / 2, {"loss": loss.detach(), "n": torch.tensor(float(len(x)))}

    got = step(7, [(4, xs[0]), (9, xs[1])], chunk_loss)

    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    ref_opt.zero_grad()
    losses = []
    for i, (chunk, x) in enumerate([(4, xs[0]), (9, xs[1])]):
        torch.manual_seed(derive_seed(3, 8, 7, chunk))
        momentum = ref.bn.momentum
        if i > 0:  # later chunks: batch statistics, running statistics untouched
            ref.bn.momentum = 0.0
        loss = ref(x).pow(2).mean()
        ref.bn.momentum = momentum
        (loss / 2).backward()
        losses.append(loss.detach())
    ref_opt.step()
    assert torch.allclose(got["loss"], losses[0] + losses[1]) and got["n"] == 10
    for (k, a), b in zip(net.state_dict().items(), ref.state_dict().values()):
        if k != "bn.num_batches_tracked":
            assert torch.equal(a, b), k
    assert int(net.bn.num_batches_tracked) == 1  # the first chunk only


# ---------------------------------------------------------------- sharding, backends, run directories
@pytest.mark.parametrize("n", [0, 1, 7, 12])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_shards_partition_the_items_as_tensor_split_and_mod_k(n, k):
    contiguous = [shard_indices(n, DistInfo(r, k), contiguous=True) for r in range(k)]
    assert contiguous == [t.tolist() for t in torch.tensor_split(torch.arange(n), k)]
    interleaved = [shard_indices(n, DistInfo(r, k)) for r in range(k)]
    assert interleaved == [[i for i in range(n) if i % k == r] for r in range(k)]


def test_deterministic_backends_and_autotuner(monkeypatch):
    import os
    from types import SimpleNamespace

    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda flag, warn_only: calls.append((flag, warn_only)))
    cudnn = SimpleNamespace(benchmark=None, deterministic=None)
    monkeypatch.setattr(torch.backends, "cudnn", cudnn)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    configure_backends(torch.device("cuda", 0), deterministic=False)
    assert cudnn.benchmark is True and cudnn.deterministic is None and calls == []
    configure_backends(torch.device("cuda", 0), deterministic=True)
    assert cudnn.benchmark is False and cudnn.deterministic is True and calls == [(True, True)]
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    cudnn.benchmark = None
    configure_backends(torch.device("cpu"), deterministic=False)
    assert cudnn.benchmark is None  # CPU runs leave cuDNN alone


def test_run_directory_claims(tmp_path):
    info = DistInfo()
    assert claim_run_dir(tmp_path / "new", info, resume=False) == tmp_path / "new"
    assert not (tmp_path / "new").exists()  # nothing written until the run has its data
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "last.pt").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"already holds a run \(last.pt\); continue it with --resume"):
        claim_run_dir(tmp_path / "old", info, resume=False)
    with pytest.raises(FileNotFoundError, match="no last.pt"):
        claim_run_dir(tmp_path / "new", info, resume=True)


# ---------------------------------------------------------------- one config dialect
def test_old_spellings_of_supervised_options_still_work_with_a_note(tmp_path, capsys):
    cfg = build_config(SupervisedConfig, {"out_dir": str(tmp_path / "r"), "temperature": 4.0, "progress": False,
                                          "amp": True, "backbone_options": "width=32,avg_pool=true"})
    assert cfg.run_dir == str(tmp_path / "r") and cfg.sd_temperature == 4.0 and cfg.quiet and cfg.amp == "bf16"
    assert cfg.backbone_options == {"width": 32, "avg_pool": True}
    err = capsys.readouterr().err
    assert "note: --out-dir is deprecated; use --run-dir" in err and "--temperature is deprecated" in err
    # a config saved by an earlier version loads silently
    saved = config_from_dict(SupervisedConfig, {"out_dir": "x", "progress": True}, notes=False)
    assert saved.run_dir == "x" and not saved.quiet and capsys.readouterr().err == ""
    # the new name wins over the old one
    assert build_config(SupervisedConfig, {"out_dir": "a", "run_dir": "b"}).run_dir == "b"
    assert build_config(MetaTrainConfig, {"out_dir": "mine"}).run_dir == "mine"  # one table: out_dir -> run_dir


def test_both_commands_speak_one_dialect():
    from fewshot_sla.cli import build_parser

    parser = build_parser()
    for cmd in ("meta-train", "supervised"):
        ns = parser.parse_args([cmd, "--run-dir", "r", "--amp", "fp16", "--num-threads", "2", "--quiet",
                                "--sd-temperature", "2", "--backbone-options", "width=32", "--deterministic"])
        assert (ns.run_dir, ns.amp, ns.num_threads, ns.quiet, ns.sd_temperature, ns.backbone_options,
                ns.deterministic) == ("r", "fp16", 2, True, 2.0, "width=32", True), cmd


# ---------------------------------------------------------------- one SLA+SD loss
def test_sla_sd_loss_with_label_smoothing_is_the_sum_of_its_parts():
    g = torch.Generator().manual_seed(0)
    M, N = 4, 3
    joint = torch.randn(2, 5 * M, N * M, generator=g)  # [T, Q*M, N*M]
    single = torch.randn(2, 5, N, generator=g)
    y = torch.randint(0, N, (2, 5), generator=g)
    parts = sla.sla_sd_loss(joint, single, y, M, T=2.0, beta=0.5, smoothing=0.1)
    target = (y.unsqueeze(-1) * M + torch.arange(M)).reshape(-1)
    soft = torch.full((target.numel(), N * M), 0.1 / (N * M - 1)).scatter_(1, target[:, None], 0.9)
    l_sla = -(soft * joint.reshape(-1, N * M).log_softmax(-1)).sum(-1).mean()
    agg = joint.reshape(2, 5, M, N, M).diagonal(dim1=2, dim2=4).mean(-1)
    p_t = (agg / 2).softmax(-1)
    kd = 4 * (p_t * (p_t.log() - (single / 2).log_softmax(-1))).sum(-1).mean()
    ce = torch.nn.functional.cross_entropy(single.reshape(-1, N), y.reshape(-1))
    assert torch.allclose(parts["sla"], l_sla) and torch.allclose(parts["distill"], kd)
    assert torch.allclose(parts["ce"], ce) and torch.allclose(parts["total"], l_sla + kd + 0.5 * ce)


def test_saved_config_json_is_readable_by_both_pipelines(tmp_path):
    cfg = SupervisedConfig(run_dir=str(tmp_path))
    data = json.loads(json.dumps(cfg.__dict__))
    assert config_from_dict(SupervisedConfig, data) == cfg
    with mock.patch("sys.stderr"):
        assert config_from_dict(MetaTrainConfig, MetaTrainConfig().to_dict()) == MetaTrainConfig()
