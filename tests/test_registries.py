"""The registries: ``Registry.build`` passes options to a head, backbone, dataset or pipeline
and refuses an unknown one naming the valid ones; a head registered in this file, with an option
of its own, trains from the command line and from a TOML config through ``--head-options``, and
is rebuilt with other options at evaluation; pipelines register their checkpoint loaders."""

import pytest
import torch
from torch import nn

from fewshot_sla.backbones import BACKBONES
from fewshot_sla.cli import main
from fewshot_sla.config import ConfigError, build_config
from fewshot_sla.data import get_dataset, register_dataset
from fewshot_sla.data.base import DATASET_INFO
from fewshot_sla.data.registry import DATASETS
from fewshot_sla.engine import load_model, make_checkpoint
from fewshot_sla.engine.checkpoint import PIPELINES
from fewshot_sla.heads import HEADS
from fewshot_sla.meta.config import MetaTrainConfig
from fewshot_sla.meta.model import EPISODIC_MODELS
from fewshot_sla.registry import Registry, UnknownOptionError


# ---------------------------------------------------------------- build: options pass, unknown ones are refused
def test_a_head_gets_its_options_and_an_unknown_one_names_the_valid_ones():
    ridge = HEADS.build("ridge", lambda_reg=3.0, form="dual")
    assert (ridge.lambda_reg, ridge.form) == (3.0, "dual")
    assert HEADS.build("SVM", C_reg=0.5).C_reg == 0.5  # names are case-insensitive
    with pytest.raises(UnknownOptionError) as e:
        HEADS.build("ridge", lam=1.0)
    assert str(e.value) == ("head 'ridge' got unknown option(s) ['lam']; "
                            "valid options: lambda_reg, solver, form, max_iter, dtype")


def test_a_backbone_gets_its_options_and_an_unknown_one_names_the_valid_ones():
    net = BACKBONES.build("conv4", in_channels=1, image_size=32, hidden=8, out_channels=4)
    assert [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)] == [8, 8, 8, 4]
    assert net.out_dim == 4 * (32 // 16) ** 2 and net(torch.zeros(2, 1, 32, 32)).shape == (2, 16)
    with pytest.raises(ValueError) as e:  # also a TypeError, as Python's own for a stray keyword
        BACKBONES.build("conv4", hiden=8, width=2)
    assert isinstance(e.value, TypeError)
    assert str(e.value) == ("backbone 'conv4' got unknown option(s) ['hiden', 'width']; "
                            "valid options: in_channels, image_size, hidden, out_channels, conv_bias, strided")


def test_a_dataset_gets_its_options_and_an_unknown_one_names_the_valid_ones(fewshot_folder, tmp_path):
    ds = get_dataset("folder", fewshot_folder, "val", image_size=8, channels=3)
    assert ds.images.shape == (48, 3, 8, 8) and len(ds.class_names) == 6
    with pytest.raises(ValueError, match=r"^dataset 'omniglot' got unknown option\(s\) \['val_alphabet'\]; "
                                         r"valid options: image_size, download, val_alphabets, test_alphabets, "):
        get_dataset("omniglot", tmp_path, "train", val_alphabet=3)
    seen = []  # a loader with **options takes any option
    register_dataset("anyopts", lambda root, split, **options: seen.append(options) or ds, DATASET_INFO["folder"])
    try:
        assert get_dataset("anyopts", tmp_path, "train", colour="red") is ds
        assert seen == [{"image_size": None, "download": False, "colour": "red"}]
    finally:
        DATASETS.pop("anyopts")


def test_build_passes_positional_arguments_and_a_factory_with_kwargs_takes_any_option_it_accepts():
    things = Registry("thing")
    things.register("pair")(lambda a, b=0, *, c=1: (a, b, c))
    things.register("bag")(lambda **kw: kw)
    assert things.build("pair", 5, c=3) == (5, 0, 3)
    with pytest.raises(UnknownOptionError, match=r"got unknown option\(s\) \['a'\]; valid options: b, c$"):
        things.build("pair", 5, a=3)  # a is taken by the positional argument
    assert things.build("bag", name=1, x=2) == {"name": 1, "x": 2}
    things.register("bare")(type("Bare", (nn.Module,), {}))  # **kwargs of nn.Module that refuses them
    with pytest.raises(ValueError, match=r"^thing 'bare': Bare.__init__\(\) got an unexpected keyword argument 't'$"):
        things.build("bare", t=1)
    with pytest.raises(ValueError, match="unknown thing 'box'; choose one of: bag, bare, pair$"):
        things.build("box")


# ---------------------------------------------------------------- a head of one's own, with an option
class ScaledProtoNet(nn.Module):
    """A user's head: minus squared distances to the class means, divided by ``temperature``."""

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, query, support, support_labels, n_way):
        onehot = torch.nn.functional.one_hot(support_labels, n_way).to(support.dtype)
        protos = onehot.transpose(1, 2) @ support / onehot.sum(1).unsqueeze(-1)
        return -torch.cdist(query, protos).pow(2) / self.temperature


@pytest.fixture
def mine():
    HEADS.register("mine")(ScaledProtoNet)
    yield
    HEADS.pop("mine")


def _tiny_run(folder, run_dir) -> list[str]:
    return ["--dataset", "folder", "--data-root", str(folder), "--backbone", "conv4", "--backbone-options",
            "hidden=8,out_channels=8", "--mode", "sla", "--n-way", "3", "--k-shot", "1", "--n-query", "2",
            "--episodes-per-epoch", "4", "--tasks-per-batch", "2", "--eval-way", "3", "--eval-shot", "1",
            "--eval-query", "2", "--val-episodes", "2", "--epochs", "1", "--device", "cpu", "--quiet",
            "--run-dir", str(run_dir)]


def _hand_logits(model, support, labels, query, n_way, temperature):
    """``scale * -||f(q) - mean_c f(s)||^2 / temperature``, one query and one class at a time."""
    fs, fq = model.backbone(support[0]), model.backbone(query[0])
    out = torch.empty(1, len(fq), n_way)
    for i, f in enumerate(fq):
        for c in range(n_way):
            out[0, i, c] = -(f - fs[labels[0] == c].mean(0)).pow(2).sum() / temperature
    return model.scale * out


@pytest.mark.parametrize("source", ["command line", "toml table", "toml string"])
def test_a_head_registered_here_trains_with_its_option(mine, source, fewshot_folder, tmp_path, capsys):
    argv = ["meta-train", "--head", "mine", "--head-options", "temperature=2"]
    if source != "command line":
        toml = tmp_path / "mine.toml"
        options = "{temperature = 2}" if source == "toml table" else '"temperature=2"'
        toml.write_text(f'head = "mine"\nhead_options = {options}\n')
        argv = ["meta-train", "--config", str(toml)]
    assert main(argv + _tiny_run(fewshot_folder, tmp_path / "run")) == 0
    loaded = load_model(tmp_path / "run")
    assert loaded.config.head == "mine" and loaded.config.head_options == {"temperature": 2}
    assert type(loaded.model.head) is ScaledProtoNet and loaded.model.head.temperature == 2
    g = torch.Generator().manual_seed(0)
    support, query = torch.rand(1, 3, 1, 16, 16, generator=g), torch.rand(1, 4, 1, 16, 16, generator=g)
    labels = torch.tensor([[2, 0, 1]])
    with torch.no_grad():
        got = loaded.model(support, labels, query, 3)
        assert torch.allclose(got, _hand_logits(loaded.model, support, labels, query, 3, 2.0), atol=1e-5)
        # eval rebuilds the head with its own --head-options over the run's
        model, cfg = EPISODIC_MODELS.build("meta", loaded, "", {"temperature": 4}, 3)
        assert cfg.head_options == {"temperature": 4} and model.head.temperature == 4
        assert torch.allclose(model(support, labels, query, 3), got / 2, atol=1e-5)
    if source == "command line":  # eval --head-options reaches the head too: a misspelt one is named
        with pytest.raises(SystemExit) as e:
            main(["eval", "--checkpoint", str(tmp_path / "run"), "--head-options", "temprature=4", "--episodes", "2"])
        assert e.value.code == 2
        assert capsys.readouterr().err.strip().endswith("got unknown option(s) ['temprature']; valid options: "
                                                        "temperature")


def test_head_options_of_a_head_without_them_or_a_misspelt_one_are_refused(mine, fewshot_folder, tmp_path, capsys):
    cfg = build_config(MetaTrainConfig, {"head": "mine"})
    assert cfg.head_kwargs() == {}  # a user's head: its defaults
    assert build_config(MetaTrainConfig, {"head": "ridge", "head_options": "form=dual"}).head_kwargs() == \
        {"lambda_reg": 50.0, "form": "dual"}  # the built-in head's own fields, updated by --head-options
    with pytest.raises(SystemExit) as e:
        main(["meta-train", "--head", "mine", "--head-options", "temprature=2"] + _tiny_run(fewshot_folder, tmp_path))
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert err.endswith("head 'mine' got unknown option(s) ['temprature']; valid options: temperature")


def test_an_unregistered_head_is_refused_with_the_valid_names():
    with pytest.raises(ConfigError, match="--head: unknown head 'mine'; choose one of"):
        build_config(MetaTrainConfig, {"head": "mine"})


# ---------------------------------------------------------------- pipelines register themselves
def test_the_built_in_pipelines_are_registered_by_importing_the_package():
    assert {"meta", "supervised"} <= set(PIPELINES) and {"meta", "supervised"} <= set(EPISODIC_MODELS)


def test_a_pipeline_registered_here_loads_through_load_model(tmp_path):
    @PIPELINES.register("toy")
    def toy_model(ckpt, source="checkpoint"):
        model = nn.Linear(2, 1)
        model.load_state_dict(ckpt["model"])
        return model, ckpt["config"]

    try:
        weights = nn.Linear(2, 1).state_dict()
        torch.save(make_checkpoint("toy", {"k": 1}, {}, weights), tmp_path / "last.pt")
        loaded = load_model(tmp_path / "last.pt")
        assert loaded.pipeline == "toy" and loaded.config == {"k": 1} and not loaded.model.training
        assert torch.equal(loaded.model.weight, weights["weight"])
    finally:
        PIPELINES.pop("toy")
