"""Writes the run directories beside this file with the code of commit fb725f2 (whose checkpoints
hold NumPy's random state as an ndarray): a meta-train run stopped after epoch 1 of 2 and a
supervised run stopped after iteration 5 of 8, the tiny configurations of tests/test_checkpoint_safety.py.

    mkdir /tmp/fb && git archive fb725f2 | tar -x -C /tmp/fb
    PYTHONPATH=/tmp/fb:/tmp/fb/tests python tests/data/legacy/fb725f2/make.py tests/data/legacy/fb725f2
"""

import shutil
import sys
from pathlib import Path

from synthetic import synthetic_dataset

from fewshot_sla.meta.config import MetaTrainConfig
from fewshot_sla.meta.train import train
from fewshot_sla.supervised import SupervisedConfig, prepare_data, run_training

META = dict(dataset="synthetic", backbone="resnet12", backbone_options={"widths": [4, 4, 4, 4], "drop_rate": 0.1},
            head="protonet", mode="sla+sd", transforms="rotation", augment="standard", n_way=3, k_shot=1, n_query=2,
            episodes_per_epoch=6, tasks_per_batch=2, eval_way=3, eval_shot=1, eval_query=3, val_episodes=12,
            eval_tasks_per_batch=6, lr=0.05, lr_milestones=(1,), lr_factors=(1.0, 0.1), log_every=1, quiet=True,
            device="cpu")
SUPERVISED = dict(backbone="conv4", backbone_options="hidden=4,out_channels=4", batch_size=8, quiet=True, plot=False,
                  device="cpu", mode="sla+sd", iterations=8, eval_every=4, log_every=3, val_size=8)


def meta_data():
    return {"train": synthetic_dataset(8, 10, 16, 1, seed=0),
            "val": synthetic_dataset(6, 10, 16, 1, seed=1, prefix="val")}


def supervised_data(cfg):
    train_ds, test_ds = synthetic_dataset(4, 30, 16, 3, seed=3), synthetic_dataset(4, 10, 16, 3, seed=4)
    return prepare_data(train_ds, test_ds, cfg)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    train(MetaTrainConfig(**META, epochs=1, run_dir=str(out / "meta")), datasets=meta_data())
    cfg = SupervisedConfig(**SUPERVISED, stop_after=5, run_dir=str(out / "supervised"))
    run_training(cfg, data=supervised_data(cfg))
    for events in out.rglob("events.out.tfevents.*"):
        events.unlink()
    shutil.rmtree(out / "__pycache__", ignore_errors=True)
