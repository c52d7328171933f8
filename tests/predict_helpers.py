"""Shared pieces of the predict/export tests: a tiny SLA+SD checkpoint, a support/query folder with
unequal shots, and an independent preprocessing of its PNGs."""

import numpy as np
import torch
from PIL import Image
from synthetic import synthetic_dataset, write_image_folder

from fewshot_sla.meta.config import MetaTrainConfig
from fewshot_sla.meta.train import train

SHOTS = (3, 1, 2, 4)  # unequal shots per support class


def meta_run(path, mode="sla+sd", head="protonet"):
    cfg = MetaTrainConfig(
        dataset="synthetic", backbone="conv4", backbone_options={"hidden": 8, "out_channels": 8}, head=head,
        mode=mode, transforms="rotation", n_way=3, k_shot=1, n_query=2, episodes_per_epoch=6, tasks_per_batch=2,
        eval_way=3, eval_shot=1, eval_query=2, val_episodes=4, eval_tasks_per_batch=4, epochs=1, lr=0.05,
        lr_milestones=(), lr_factors=(1.0,), svm_max_iter=3, run_dir=str(path), quiet=True, device="cpu",
        test_episodes=0)
    train(cfg, datasets={"train": synthetic_dataset(8, 10, 16, 1, seed=0),
                         "val": synthetic_dataset(6, 10, 16, 1, seed=1, prefix="val")})
    return path


def supervised_run(path, mode="sla", transforms="rotation"):
    """A tiny supervised checkpoint (an RGB model) trained for two iterations."""
    from fewshot_sla.supervised import SupervisedConfig, prepare_data, run_training

    ds = synthetic_dataset(4, 12, 16, 3, seed=3)
    cfg = SupervisedConfig(backbone="conv4", backbone_options="hidden=4,out_channels=4", batch_size=8, quiet=True,
                           plot=False, device="cpu", iterations=2, eval_every=2, log_every=2, val_size=4,
                           mode=mode, transforms=transforms, run_dir=str(path))
    run_training(cfg, data=prepare_data(ds, ds, cfg))
    return path


def write_episode(root):
    """``root/support/<class>/*.png`` with SHOTS images per class, ``root/query/<class>/*.png`` (3 each)."""
    ds = synthetic_dataset(4, 8, 16, 1, seed=7, prefix="cls")
    keep_s = [i for c, k in enumerate(SHOTS) for i in range(c * 8, c * 8 + k)]
    keep_q = [i for c in range(4) for i in range(c * 8 + 5, c * 8 + 8)]
    write_image_folder(root, {"support": subset(ds, keep_s), "query": subset(ds, keep_q)})
    return root


def subset(ds, idx):
    from fewshot_sla.data.base import ImageDataset

    return ImageDataset(ds.images[idx], ds.labels[idx], ds.class_names, name="x", split="x")


def files(folder):
    return sorted(folder.rglob("*.png"))


def manual_inputs(paths, data):
    """Independent preprocessing of 16 px grey PNGs: PIL -> /255 (-> grey copied to RGB) -> (x - mean) / std."""
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("L"), dtype=np.float32) / 255.0)[None]
                     for p in paths]).expand(-1, data["channels"], -1, -1)
    return (x - torch.tensor(data["mean"]).view(-1, 1, 1)) / torch.tensor(data["std"]).view(-1, 1, 1)


def labels_of(paths):
    names = sorted({p.parent.name for p in paths})
    return torch.tensor([names.index(p.parent.name) for p in paths])
