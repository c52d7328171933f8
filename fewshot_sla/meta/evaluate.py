"""Episode evaluation: per-episode accuracies, 95% confidence intervals, paired comparisons.

Every checkpoint (``--checkpoint``, ``--compare``) is scored on the same seeded episodes; each
inference reports ``mean +- 1.96 * std / sqrt(n)``; ``comparisons`` hold paired differences
episode by episode: A's reported inference minus B's and each inference both support, and within
a model its reported inference minus the others.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_write_text
from ..config import ConfigError
from ..data.spec import ImageSpec
from ..distributed import DistInfo, barrier
from ..engine import amp_dtype, checkpoint_step, load_model, progress, run_sharded, start_session
from ..episodes import EpisodeSampler
from ..inferences import episode_table, reported
from ..overlap import check_overlap
from ..record import file_sha256, make_record, split_fingerprint
from ..rundir import resolve_checkpoint, to_jsonable
from ..stats import mean_ci, paired_difference
from ..support_augment import SupportAugment, training_recipe
from ..writable import check_report_output, writing
from .batches import EpisodeDataset, Preprocess, load_batch, load_split
from .config import EvalConfig, check_against_data
from .cross_domain import describe_domains, resolve_target, through_spec
from .feature_cache import CACHED, CacheSettings, CacheStats, cached_episode_accuracies, episode_dependence
from .methods import episode_accuracy, run_episodes
from .model import EPISODIC_MODELS, FewShotModel

__all__ = ["evaluate_episodes", "evaluate", "summarize", "format_report"]


@torch.no_grad()
def evaluate_episodes(model: FewShotModel, dataset: EpisodeDataset, preprocess: Preprocess, *, n_way: int, k_shot: int,
                      n_query: int, n_episodes: int, seed: int, device: torch.device,
                      inferences: Sequence[str] | None = None, tasks_per_batch: int = 8, quiet: bool = True,
                      desc: str = "eval", dist: DistInfo | None = None,
                      support_augment: SupportAugment | None = None, cache: CacheSettings | None = None,
                      record: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Inference -> ``float64 [n_episodes]`` accuracies of the episodes of a sampler seeded with ``seed``;
    under torchrun (``dist``) the episodes are split across ranks and gathered in episode order.
    ``support_augment``: supports replaced by augmented copies (:mod:`fewshot_sla.support_augment`).
    Features are cached (one pass per image and view, :mod:`.feature_cache`) unless ``cache`` says
    ``per-episode``, the supports are augmented per episode, or the model's features depend on the
    episode; ``record["features"]`` says which."""
    dist = dist or DistInfo()
    sampler = EpisodeSampler(dataset.labels, n_way, k_shot, n_query, n_episodes, seed=seed,
                             class_names=list(dataset.class_names))
    names = tuple(inferences or model.inferences)
    cache = cache or CacheSettings()
    record = {} if record is None else record

    def run(indices: list[int]) -> dict[str, np.ndarray]:  # the episodes ``indices``, in that order
        accs: dict[str, list[np.ndarray]] = {k: [] for k in names}
        was_training = model.training
        model.eval()
        why = ("--features per-episode" if cache.features == "per-episode"
               else "--support-augment: supports augmented per episode" if support_augment is not None
               else episode_dependence(model, preprocess))
        record["features"] = CACHED if why is None else f"per episode ({why})"
        try:
            with progress(len(indices), desc, quiet=quiet or not dist.is_main) as bar:
                if why is None:
                    stats = CacheStats()
                    out = cached_episode_accuracies(model, dataset, preprocess, sampler, indices, names, device,
                                                    tasks_per_batch, cache, stats, bar)
                    record.update(features=stats.line(), cache=stats)
                    return out
                for start in range(0, len(indices), tasks_per_batch):
                    idx = indices[start : start + tasks_per_batch]
                    if support_augment is None:
                        batch = load_batch(dataset, sampler, idx, device, preprocess)
                    else:
                        batch = support_augment.apply(load_batch(dataset, sampler, idx, device, _raw), idx, preprocess)
                    out = run_episodes(model, batch, inferences=names)
                    for k in names:
                        accs[k].append(episode_accuracy(out.logits[k], out.labels).double().cpu().numpy())
                    bar.update(len(idx))
        finally:
            model.train(was_training)
        return {k: np.concatenate(v) if v else np.zeros(0) for k, v in accs.items()}

    parts = run_sharded(n_episodes, dist, run)
    if len(parts) == 1:
        return parts[0][1]
    order = np.concatenate([np.asarray(ix, dtype=np.int64) for ix, _ in parts])
    out = {}
    for k in parts[0][1]:
        full = np.empty(n_episodes, dtype=np.float64)
        full[order] = np.concatenate([acc[k] for _, acc in parts])
        out[k] = full
    return out


def _raw(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return x


def summarize(accuracies: dict[str, np.ndarray], with_values: bool = True) -> dict[str, dict[str, Any]]:
    """Inference -> ``{"mean", "ci95", "std", "n"[, "accuracies"]}`` (see :func:`~fewshot_sla.stats.mean_ci`)."""
    out = {}
    for k, v in accuracies.items():
        d: dict[str, Any] = mean_ci(v).as_dict()
        if with_values:
            d["accuracies"] = [float(a) for a in v]
        out[k] = d
    return out


def _default_output(cfg: EvalConfig, n_way: int, k_shot: int) -> Path:
    ck = Path(cfg.checkpoint)
    folder = ck if ck.is_dir() else ck.parent
    stem = f"eval_{cfg.split}_{n_way}way{k_shot}shot_{cfg.episodes}ep_seed{cfg.seed}"
    if cfg.dataset:
        stem = f"eval_{cfg.dataset}_{stem[5:]}"
    if cfg.support_augment:
        stem += f"_aug{cfg.support_augment}"
    if cfg.compare:
        stem += "_compare"
    return folder / f"{stem}.json"


def evaluate(cfg: EvalConfig, datasets: dict[tuple, EpisodeDataset] | None = None,
             show: Callable[[dict[str, Any]], None] | None = None,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``fewshot-sla eval``: write and return the JSON report. ``datasets`` caches loaded splits by
    ``(dataset, data_root, split, image_size, json of dataset_options)`` (tests pass in-memory data);
    ``show(report)`` runs on the main process before the report is written (so a failed write loses nothing);
    ``extra``: more fields of the report (meta-train's final test: the equivalent ``command``)."""
    if not cfg.checkpoint:
        raise ConfigError("--checkpoint is required: a .pt file or a run directory holding best.pt")
    session = start_session(cfg.device, num_threads=cfg.num_threads)
    device, info = session.device, session.dist
    if info.is_main:  # an unwritable --output (or checkpoint folder) is one line before any episode
        check_report_output(cfg.output, cfg.checkpoint)
    datasets = {} if datasets is None else datasets
    paths = [cfg.checkpoint, *cfg.compare]
    report: dict[str, Any] = {"split": cfg.split, "episodes": cfg.episodes, "n_query": cfg.n_query,
                              "seed": cfg.seed, "support_augment": cfg.support_augment, "models": [],
                              "comparisons": []}
    n_way = k_shot = None
    reference = None
    fingerprints: dict[tuple, dict[str, Any]] = {}
    for p in paths:
        loaded = load_model(p, device)  # any pipeline that registered an episodic model (supervised: its backbone)
        model, tcfg = EPISODIC_MODELS.build(loaded.pipeline, loaded, cfg.head, cfg.head_options, cfg.svm_max_iter)
        ckpt = loaded.checkpoint
        mode = loaded.config.mode
        model.amp_dtype = amp_dtype(cfg.amp, device)
        if cfg.channels_last:
            model.channels_last = True
            model.to(memory_format=torch.channels_last)
        n_way = cfg.n_way or n_way or tcfg.eval_way
        k_shot = cfg.k_shot or k_shot or tcfg.eval_shot
        target = resolve_target(cfg.dataset, cfg.data_root, cfg.dataset_options, tcfg)
        data_options = target.options
        options = json.dumps(data_options, sort_keys=True)  # e.g. which alphabets are held out
        key = target.key(cfg.split)
        if key not in datasets:
            datasets[key] = load_split(target.dataset, target.root, cfg.split, target.image_size, options=data_options)
        ds = datasets[key]
        if key not in fingerprints:
            fingerprints[key] = split_fingerprint(ds)
        spec = ImageSpec.from_checkpoint(ckpt["data"], loaded.config)  # invert: how its training data was read
        check_against_data(tcfg, cfg.split, spec.channels if target.cross else ds.channels,
                           spec.image_size if target.cross else ds.image_size, 10**9, role="test")
        check_overlap(ckpt["data"], ds, target.dataset, cfg.split, data_options, p, allow=cfg.allow_overlap,
                      notes=info.is_main)
        if n_way > len(ds.class_names):
            raise ConfigError(f"--n-way {n_way} needs {n_way} classes but the {cfg.split} split of "
                              f"{target.dataset} has {len(ds.class_names)}; lower --n-way to at most "
                              f"{len(ds.class_names)}")
        split_id = (target.dataset, tuple(ds.class_names), ds.labels.shape[0], int(ds.labels.sum()))
        if reference is None:
            reference = (split_id, options)
            report.update(dataset=target.dataset, dataset_options=data_options, classes=len(ds.class_names),
                          images=int(ds.labels.shape[0]), n_way=n_way, k_shot=k_shot, fingerprint=fingerprints[key],
                          target={"dataset": target.dataset, "dataset_options": data_options, "split": cfg.split,
                                  "channels": ds.channels, "image_size": ds.image_size})
        elif reference[0] != split_id:
            raise ConfigError(
                f"{p} (dataset {tcfg.dataset}, options {options}) and {paths[0]} (dataset "
                f"{reference[0][0]}, options {reference[1]}) have different {cfg.split} splits; --compare "
                "needs checkpoints trained with the same dataset and --dataset-options, so that both are "
                "evaluated on the same episodes"
            )
        supported = model.inferences
        names = [i for i in cfg.inferences if i in supported] if cfg.inferences else list(supported)
        if not names:
            raise ConfigError(f"{p} (mode {mode}) supports the inferences {', '.join(supported)}, none of "
                              f"{', '.join(cfg.inferences)}; change --inferences")
        EpisodeSampler(ds.labels, n_way, k_shot, cfg.n_query, 1, class_names=list(ds.class_names),
                       option_names=("--n-way", "--k-shot", "--n-query"))
        check_same_reading(report["models"], spec, fingerprints[key], p, paths[0], target.cross)
        pre = through_spec(spec.normalise, ds.channels, ds.image_size, spec)
        recipe = cfg.support_recipe or training_recipe(loaded.pipeline, loaded.config)
        augment = None if not cfg.support_augment else SupportAugment(
            cfg.support_augment, through_spec(spec.augmentation(recipe), ds.channels, ds.image_size, spec),
            cfg.seed, recipe)
        t0 = time.time()
        record: dict[str, Any] = {}
        accs = evaluate_episodes(
            model, ds, pre, n_way=n_way, k_shot=k_shot, n_query=cfg.n_query, n_episodes=cfg.episodes,
            seed=cfg.seed, device=device, inferences=names, tasks_per_batch=cfg.tasks_per_batch,
            quiet=cfg.quiet or not info.is_main, desc=Path(p).name, dist=info, support_augment=augment,
            cache=CacheSettings(cfg.features, cfg.cache_mib, cfg.cache_dtype), record=record,
        )
        report["models"].append({"checkpoint": str(p), "sha256": file_sha256(resolve_checkpoint(p)),
                                 "source": {"dataset": target.source, "dataset_options": dict(tcfg.dataset_options)},
                                 "image_spec": dataclasses.asdict(spec), "fingerprint": fingerprints[key]["sha256"],
                                 "support_recipe": recipe if cfg.support_augment else None,
                                 "pipeline": loaded.pipeline, "mode": mode, "head": tcfg.head,
                                 "backbone": tcfg.backbone, "transforms": tcfg.transforms,
                                 "reported": reported(episode_table(loaded.pipeline), mode),
                                 "epoch": ckpt.get("epoch"), "step": checkpoint_step(ckpt),
                                 "seconds": round(time.time() - t0, 3), "features": record["features"],
                                 "results": summarize(accs), **_learner_record(model)})
        del model
    report["comparisons"] = compare_models(report["models"])
    report["domains"] = describe_domains([m["source"]["dataset"] for m in report["models"]], report["dataset"],
                                         cfg.split)
    report["record"] = eval_record(cfg, report)
    out = Path(cfg.output) if cfg.output else _default_output(cfg, n_way, k_shot)
    report["output"] = str(out)
    report.update(extra or {})
    if info.is_main:
        if show is not None:
            show(report)
        with writing(out, "the evaluation JSON", "pass another --output FILE (the results are printed above)"):
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out, json.dumps(to_jsonable(report), indent=1) + "\n")
    barrier(info)
    return report


def check_same_reading(models: list[dict[str, Any]], spec: ImageSpec, fingerprint: dict[str, Any], path: str,
                       first: str, cross: bool = False) -> None:
    """``--compare`` scores every model on the same episodes, each model through its own image
    specification: its size, channels and normalisation are its own input format and may differ. A
    one-line :class:`ConfigError` when the split as this model reads it holds other pixels than the
    first model's at the same image size (dataset options such as Omniglot's ``resample``), or, on
    their own dataset (not ``cross``: one loaded split for all), the specs disagree on ``invert``
    (each model's split read with ink and background swapped: not the same images)."""
    if not models:
        return
    a = models[0]
    if not cross and bool(a["image_spec"]["invert"]) != spec.invert:
        raise ConfigError(f"{path} reads images inverted={spec.invert} and {first} inverted="
                          f"{a['image_spec']['invert']}: --compare needs checkpoints that read the same images; "
                          "evaluate them separately")
    for m in models:
        same_size = m["image_spec"]["image_size"] == spec.image_size
        if same_size and m["fingerprint"] != fingerprint["sha256"]:
            raise ConfigError(f"{path} and {m['checkpoint']} read different pixels of the same split (split "
                              f"fingerprint {fingerprint['sha256'][:12]} vs {m['fingerprint'][:12]}): their dataset "
                              "options change the images; --compare needs the same images, evaluate them separately")


def eval_record(cfg: EvalConfig, report: dict[str, Any]) -> dict[str, Any]:
    """The reproducibility record (:mod:`fewshot_sla.record`) of an evaluation report."""
    protocol = {"n_way": report["n_way"], "k_shot": report["k_shot"], "n_query": cfg.n_query,
                "episodes": cfg.episodes, "seed": cfg.seed, "support_augment": cfg.support_augment,
                "support_recipe": cfg.support_recipe or None, "head": cfg.head or None,
                "inferences": {m["checkpoint"]: list(m["results"]) for m in report["models"]}}
    checkpoints = [{"path": m["checkpoint"], "sha256": m["sha256"], "image_spec": m["image_spec"],
                    "source": m["source"], "support_recipe": m["support_recipe"]} for m in report["models"]]
    return make_record(dataset=report["dataset"], dataset_options=report["dataset_options"], split=cfg.split,
                       fingerprint=report["fingerprint"], protocol=protocol, checkpoints=checkpoints)


def _learner_record(model: torch.nn.Module) -> dict[str, Any]:
    """A gradient-based learner's name, inner steps and BatchNorm rule (:mod:`fewshot_sla.meta.gradient`)."""
    if not hasattr(model, "batch_norm_rule"):
        return {}
    return {"learner": model.learner, "inner_steps": model.inner_steps_test, "batch_norm": model.batch_norm_rule}


def compare_models(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired differences (see the module docs) between evaluated models' per-episode accuracies."""
    out = []

    def pair(a: dict, ia: str, b: dict, ib: str) -> None:
        d = paired_difference(a["results"][ia]["accuracies"], b["results"][ib]["accuracies"])
        out.append({"a": a["checkpoint"], "b": b["checkpoint"], "inference_a": ia, "inference_b": ib,
                    **d.as_dict()})

    for m in models:  # within a model: reported minus each other inference
        r = m["reported"] if m["reported"] in m["results"] else None
        for other in m["results"]:
            if r is not None and other != r:
                pair(m, r, m, other)
    if len(models) > 1:
        a = models[0]
        for b in models[1:]:
            done = set()
            ra, rb = a["reported"], b["reported"]
            if ra in a["results"] and rb in b["results"]:
                pair(a, ra, b, rb)
                done.add((ra, rb))
            for inf in a["results"]:
                if inf in b["results"] and (inf, inf) not in done:
                    pair(a, inf, b, inf)
    return out


def format_report(report: dict[str, Any]) -> str:
    """Human-readable table of an evaluation report."""
    lines = [f"{report.get('dataset', '?')} {report['split']}: {report['episodes']} episodes, "
             f"{report.get('n_way')}-way {report.get('k_shot')}-shot, {report['n_query']} queries/class, "
             f"seed {report['seed']}  (mean +- 1.96 std/sqrt(n))"]
    if report.get("domains"):
        lines.append(f"domains: {report['domains']}")
    if report.get("support_augment"):
        lines.append(f"support: {report['support_augment']} augmented copies of each image (augmentation "
                     f"{', '.join(sorted({str(m.get('support_recipe')) for m in report['models']}))})")
    width = max(len(m["checkpoint"]) for m in report["models"])
    for m in report["models"]:
        if "features" in m:
            lines.append(f"  {m['checkpoint']:<{width}}  features: {m['features']}")
        for inf, r in m["results"].items():
            star = " *" if inf == m["reported"] else ""
            lines.append(f"  {m['checkpoint']:<{width}}  {m['mode']:<7} {inf:<11} "
                         f"{100 * r['mean']:6.2f} +- {100 * r['ci95']:.2f}%{star}")
    for m in report["models"]:
        if "batch_norm" in m:
            lines.append(f"  {m['checkpoint']}: {m['learner']}, {m['inner_steps']} inner steps, BatchNorm "
                         f"{m['batch_norm']}")
    if report["comparisons"]:
        lines.append("paired differences (A - B, same episodes):")
        for c in report["comparisons"]:
            a = c["a"] if c["a"] == c["b"] else f"{c['a']} vs {c['b']}"
            lines.append(f"  {a}: {c['inference_a']} - {c['inference_b']} = "
                         f"{100 * c['mean']:+.2f} +- {100 * c['ci95']:.2f}%")
    lines.append(f"per-episode accuracies: {report['output']}")
    return "\n".join(lines)
