"""Meta-training configs: every shipped TOML loads, paper values, layering, and one-line errors."""

import inspect
import sys

import pytest
import torch

from fewshot_sla.cli import build_parser, main
from fewshot_sla.config import CONFIG_DIR, ConfigError, build_config
from fewshot_sla.meta.config import EvalConfig, MetaTrainConfig, check_against_data, meta_config_names, parse_options
from fewshot_sla.optim import build_optimizer, piecewise_scheduler

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

METAOPTNET = [f"metaoptnet_{h}_{d}{s}" for h in ("protonet", "ridge", "svm")
              for d in ("miniimagenet", "cifarfs", "fc100") for s in ("", "_sla")]
CPU = ["omniglot_conv4_baseline", "omniglot_conv4_sla", "omniglot_conv4_slasd", "cifarfs_conv4_cpu"]


def test_all_shipped_meta_configs_load_and_have_a_description():
    names = meta_config_names()
    assert set(METAOPTNET + CPU) <= set(names)
    for name in names:
        cfg = build_config(MetaTrainConfig, {}, config=name)  # unknown keys or bad values raise
        assert isinstance(cfg, MetaTrainConfig)
        raw = tomllib.loads((CONFIG_DIR / f"{name}.toml").read_text())
        assert raw.get("description", "").strip(), f"{name}.toml needs a description line"


def metaoptnet_epoch_lrs(epochs: int = 60) -> list[float]:
    """The lr of each epoch in MetaOptNet's train.py: LambdaLR stepped at the START of 1-based epoch e."""
    import warnings

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    lambda_epoch = lambda e: 1.0 if e < 20 else (0.06 if e < 40 else 0.012 if e < 50 else (0.0024))  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lambda_epoch, last_epoch=-1)
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()", as in MetaOptNet
        for _ in range(1, epochs + 1):
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
    return lrs


def trainer_epoch_lrs(cfg: MetaTrainConfig) -> list[float]:
    """The lr of each epoch as fewshot_sla.meta.train uses it: the scheduler steps after each epoch."""
    opt = build_optimizer("sgd", [torch.zeros(1, requires_grad=True)], cfg.lr)
    sched = piecewise_scheduler(opt, cfg.lr_milestones, cfg.lr_factors, cfg.warmup_epochs)
    lrs = []
    for _ in range(cfg.epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("name", METAOPTNET)
def test_metaoptnet_configs_follow_the_paper(name):
    cfg = build_config(MetaTrainConfig, {}, config=name)
    shots = {"miniimagenet": 15, "cifarfs": 5, "fc100": 15}
    eps = {"miniimagenet": 0.1, "cifarfs": 0.0, "fc100": 0.0}
    key = name.split("_")[2]
    assert (cfg.k_shot, cfg.label_smoothing) == (shots[key], eps[key])
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov) == (0.1, 0.9, 5e-4, True)
    assert metaoptnet_epoch_lrs() == trainer_epoch_lrs(cfg)
    assert (cfg.epochs, cfg.steps_per_epoch, cfg.tasks_per_batch, cfg.n_query) == (60, 1000, 8, 6)
    assert (cfg.val_episodes, cfg.eval_way, cfg.eval_shot, cfg.eval_query) == (2000, 5, 5, 15)
    assert cfg.backbone == "resnet12" and cfg.head == name.split("_")[1]
    assert (cfg.mode, cfg.transforms) == (("sla", "rotation") if name.endswith("_sla") else ("baseline", "none"))


def test_cli_options_override_named_config_over_defaults():
    args = build_parser().parse_args(["meta-train", "--config", "omniglot_conv4_sla", "--epochs", "3",
                                      "--backbone-options", "hidden=16,out_channels=16"])
    cfg = build_config(MetaTrainConfig, args, config=args.config)
    assert cfg.epochs == 3 and cfg.dataset == "omniglot" and cfg.k_shot == 1  # option > file
    assert cfg.backbone_options == {"hidden": 16, "out_channels": 16}
    assert cfg.weight_decay == 5e-4  # file
    assert MetaTrainConfig().epochs == 60  # defaults untouched


def test_parse_options_forms():
    assert parse_options("hidden=8, avg_pool=true,name=x,widths=[1,2]", "o") == \
        {"hidden": 8, "avg_pool": True, "name": "x", "widths": [1, 2]}
    assert parse_options('{"drop-rate": 0.1}', "o") == {"drop_rate": 0.1}
    with pytest.raises(ConfigError, match="key=value"):
        parse_options("hidden", "backbone_options")


@pytest.mark.parametrize("kw, match", [
    (dict(mode="sla", transforms="none"), "more than one transform"),
    (dict(svm_max_iter=0), "svm-max-iter"),
    (dict(episodes_per_epoch=10, tasks_per_batch=4), "not a multiple of --tasks-per-batch"),
    (dict(label_smoothing=1.0), "label-smoothing"),
    (dict(lr_factors=(1.0,)), "one more value"),
    (dict(head="knn"), "--head: unknown head 'knn'; choose one of: logistic, protonet, r2d2, ridge, svm"),
    (dict(backbone="vgg"), "--backbone: unknown backbone 'vgg'; choose one of"),
    (dict(optimizer="rmsprop"), "--optimizer must be one of sgd, adam"),
    (dict(mode="mt"), "--mode must be one of"),
    (dict(transforms="jigsaw"), "unknown transform set"),
    (dict(n_way=1), "--n-way must be a number >= 2, got 1"),
    (dict(eval_way=1), "--eval-way must be a number >= 2, got 1"),
    (dict(sd_start=float("nan")), r"--sd-start must be in \[0, 1\), got nan"),
    (dict(lr_milestones=(3, 2), lr_factors=(1.0, 0.1, 0.01)), "--lr-milestones must be increasing"),
    (dict(amp="fp8"), "--amp must be one of none, bf16, fp16, got 'fp8'"),
    (dict(scale_init=0.0), "--scale-init must be a finite number > 0"),
    (dict(scale_init=float("inf")), "--scale-init must be a finite number > 0"),
    (dict(scale_init=float("nan")), "--scale-init must be a finite number > 0"),
])
def test_invalid_options_raise_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        MetaTrainConfig(**kw)


def test_data_checks():
    cfg = MetaTrainConfig(dataset="omniglot", mode="sla", transforms="color_perm")
    with pytest.raises(ConfigError, match="3-channel"):
        check_against_data(cfg, "train", channels=1, image_size=28, num_classes=100)
    with pytest.raises(ConfigError, match="lower --n-way to at most 4"):
        check_against_data(MetaTrainConfig(n_way=5), "train", 3, 32, 4)
    with pytest.raises(ConfigError, match="--eval-way"):
        check_against_data(MetaTrainConfig(eval_way=20), "val", 3, 32, 16, role="val")
    with pytest.raises(ConfigError, match="--inferences"):
        EvalConfig(inferences=("ensemble",))


def _one_line_error(capsys, argv, match):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert match in last, err
    return err


def test_color_perm_on_grayscale_omniglot_is_a_one_line_error_before_loading(tmp_path, capsys):
    err = _one_line_error(capsys, ["meta-train", "--dataset", "omniglot", "--data-root", str(tmp_path / "none"),
                                   "--mode", "sla", "--transforms", "color_perm", "--device", "cpu",
                                   "--run-dir", str(tmp_path / "run")], "3-channel")
    assert len(err.splitlines()) == 1 and err.startswith("fewshot-sla meta-train: error:")
    assert "rotation" in err  # names the fix
    assert not (tmp_path / "run").exists()


def test_omniglot_rotated_classes_with_rotation_transforms_is_a_one_line_error(tmp_path, capsys):
    base = ["meta-train", "--dataset", "omniglot", "--data-root", str(tmp_path / "none"), "--device", "cpu",
            "--run-dir", str(tmp_path / "run")]
    for mode, tset in (("sla", "rotation"), ("da", "rotation2"), ("sla+sd", "rotation")):
        err = _one_line_error(capsys, [*base, "--dataset-options", "rotate_classes=true", "--mode", mode,
                                       "--transforms", tset], "rotate_classes")
        assert len(err.splitlines()) == 1 and "contradict" in err and "--mode baseline" in err
    # allowed: rotated classes without SLA's rotations, and SLA's rotations without rotated classes
    MetaTrainConfig(dataset="omniglot", dataset_options="rotate_classes=true", mode="baseline", transforms="none")
    MetaTrainConfig(dataset="omniglot", dataset_options="rotate_classes=false", mode="sla", transforms="rotation")
    with pytest.raises(SystemExit):
        main(["meta-train", "--help"])
    helptext = " ".join(capsys.readouterr().out.split())
    assert "rotate_classes=true (rotations as new classes: not with SLA's rotation transforms)" in helptext


def test_bad_svm_iterations_and_unknown_config_are_one_line_errors(tmp_path, capsys):
    err = _one_line_error(capsys, ["meta-train", "--svm-max-iter", "0"], "svm-max-iter")
    assert len(err.splitlines()) == 1
    err = _one_line_error(capsys, ["meta-train", "--scale-init", "-2"], "--scale-init must be a finite number > 0")
    assert len(err.splitlines()) == 1
    err = _one_line_error(capsys, ["meta-train", "--config", "no_such_config"], "named configs")
    assert "omniglot_conv4_sla" in err
    err = _one_line_error(capsys, ["eval", "--checkpoint", str(tmp_path / "missing.pt")], "checkpoint not found")
    assert len(err.splitlines()) == 1


# ---------------------------------------------------------------- one vocabulary of both pipelines
def test_omniglot_configs_carve_their_test_alphabets_as_the_main_job():
    """Every CPU-sized Omniglot meta config (the quick jobs, the main job, MAML's) tests on 5 background
    alphabets held out as the main job's are (so the one download, images_background.zip, is all a run
    needs), with the same split seed: the same test classes. (maml_omniglot_conv4, Finn et al.'s setting,
    tests on the official evaluation alphabets.)"""
    from fewshot_sla.data.omniglot import load_omniglot

    main = build_config(MetaTrainConfig, {}, config="omniglot_conv4_sla_20way")
    seed = inspect.signature(load_omniglot).parameters["split_seed"].default
    cpu = [n for n in meta_config_names() if "omniglot" in n
           and "CPU" in tomllib.loads((CONFIG_DIR / f"{n}.toml").read_text())["description"]]
    assert len(cpu) == 7 and {"omniglot_conv4_sla", "omniglot_conv4_baseline", "omniglot_conv4_slasd"} <= set(cpu)
    for name in cpu:
        cfg = build_config(MetaTrainConfig, {}, config=name)
        options = {**cfg.dataset_options, **cfg.test_dataset_options}
        assert options.get("val_alphabets") == main.dataset_options["val_alphabets"] == 5, name
        assert options.get("test_alphabets") == main.dataset_options["test_alphabets"] == 5, name
        assert options.get("split_seed", seed) == main.dataset_options.get("split_seed", seed), name
        assert not options.get("rotate_classes") and cfg.test_split == "test" and cfg.test_episodes == 1000, name


def test_resume_options_are_the_fields_marked_resume_and_todays_sets():
    from fewshot_sla.config import resume_options
    from fewshot_sla.supervised.config import SupervisedConfig

    # the two allow-lists of the previous version, written out by hand
    assert set(resume_options(MetaTrainConfig)) == {
        "epochs", "device", "num_threads", "quiet", "data_root", "download", "test_episodes", "dist_timeout",
        "deterministic", "accumulate", "test_split", "test_dataset_options"}  # the final test: after training
    assert set(resume_options(SupervisedConfig)) == {
        "device", "quiet", "plot", "stop_after", "eval_batch_size", "data_root", "cache_dir", "dist_timeout",
        "accumulate", "num_threads", "deterministic"}


def test_episode_shapes_of_training_validation_and_test():
    from fewshot_sla.sections import EpisodeShape
    from fewshot_sla.supervised.config import SupervisedConfig

    cfg = MetaTrainConfig(n_way=7, k_shot=2, n_query=3, eval_way=4, eval_shot=1, eval_query=9)
    assert cfg.train_shape == EpisodeShape(way=7, shot=2, query=3)
    assert cfg.val_shape == cfg.test_shape == EpisodeShape(4, 1, 9)
    assert SupervisedConfig(val_way=3, val_shot=2, val_query=5).val_shape == EpisodeShape(3, 2, 5)
    with pytest.raises(AttributeError):
        cfg.train_shape.way = 3  # frozen


def test_one_table_of_old_spellings_and_one_transforms_rule(capsys):
    from fewshot_sla.supervised.config import SupervisedConfig

    sup = build_config(SupervisedConfig, {"lr_milestones": [0.25, 0.5], "out_dir": "a"})
    assert sup.lr_milestone_fractions == (0.25, 0.5) and sup.run_dir == "a"
    assert "note: --lr-milestones is deprecated; use --lr-milestone-fractions" in capsys.readouterr().err
    meta = build_config(MetaTrainConfig, {"lr_milestones": [2, 4], "lr_factors": [1, 0.1, 0.01], "out_dir": "b"})
    assert meta.lr_milestones == (2, 4) and meta.lr_factors == (1.0, 0.1, 0.01) and meta.run_dir == "b"
    assert "lr-milestones is deprecated" not in capsys.readouterr().err  # meta-train's own option (epochs)
    for cls in (MetaTrainConfig, SupervisedConfig):
        assert [cls(mode=m).transforms for m in ("baseline", "da", "sla", "sla+sd")] == \
            ["none", "rotation", "rotation", "rotation"]


@pytest.mark.parametrize("cls_name", ["MetaTrainConfig", "SupervisedConfig", "EvalConfig"])
def test_every_bounded_option_refuses_a_value_just_outside_its_bounds(cls_name):
    import dataclasses

    from fewshot_sla.meta import config as meta_config
    from fewshot_sla.supervised.config import SupervisedConfig

    cls = {"SupervisedConfig": SupervisedConfig}.get(cls_name) or getattr(meta_config, cls_name)
    checked = 0
    for f in dataclasses.fields(cls):
        if "bounds" not in f.metadata:
            continue
        ge, gt, lt, le = f.metadata["bounds"]
        tuple_field = isinstance(f.default, tuple)
        for bad in [ge - 1 if ge is not None else None, gt, lt, le + 0.5 if le is not None else None]:
            if bad is None:
                continue
            value = (bad,) if tuple_field else bad
            extra = {"lr_factors": (1.0, 0.1)} if tuple_field else {}
            with pytest.raises(ConfigError, match="--" + f.name.replace("_", "-") + " must be"):
                cls(**{f.name: value, **extra})
            checked += 1
    assert checked >= 5
