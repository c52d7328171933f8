"""Suite-wide test settings and shared fixtures."""

import pickle

import numpy as np
import pytest
import torch
from skip_report import (  # noqa: F401 - the hooks: one line per skip group; FEWSHOT_SLA_CI fails on refused skips
    pytest_configure,
    pytest_runtest_makereport,
    pytest_sessionfinish,
    pytest_terminal_summary,
)


@pytest.fixture(scope="session")
def fewshot_folder(tmp_path_factory):
    """A tiny few-shot image folder (``--dataset folder``): 16 px grey images, train 8 classes,
    val and test 6 classes, 8 images each."""
    from synthetic import synthetic_dataset, write_image_folder

    root = tmp_path_factory.mktemp("folder")
    return write_image_folder(root, {
        "train": synthetic_dataset(8, 8, 16, 1, seed=0, prefix="tr"),
        "val": synthetic_dataset(6, 8, 16, 1, seed=1, prefix="va"),
        "test": synthetic_dataset(6, 8, 16, 1, seed=2, prefix="te"),
    })


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The tests use tiny models: one thread avoids OpenMP spin-waiting between threads, which
    makes small convolutions and QP solves several times slower on a 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _write_cifar10_batches(root, n_per_class=12, n_test=4, seed=0):
    """A tiny CIFAR-10 in the official python-batch layout (5 train batches + test batch)."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    base = rng.integers(0, 256, (10, 3072))

    def make(n):
        labels = np.repeat(np.arange(10), n)
        data = np.clip(base[labels] + rng.integers(-30, 30, (len(labels), 3072)), 0, 255).astype(np.uint8)
        perm = rng.permutation(len(labels))
        return data[perm], labels[perm].tolist()

    data, labels = make(n_per_class)
    for i, part in enumerate(np.array_split(np.arange(len(labels)), 5)):
        with open(d / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump({"data": data[part], "labels": [labels[j] for j in part]}, f)
    tdata, tlabels = make(n_test)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({"data": tdata, "labels": tlabels}, f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)


@pytest.fixture
def write_cifar10_batches():
    """``write(root, n_per_class=12, n_test=4, seed=0)``: a tiny CIFAR-10 in the official layout."""
    return _write_cifar10_batches


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    """A tiny meta-trained SLA+SD checkpoint (run directory) for the predict and export tests."""
    from predict_helpers import meta_run

    return meta_run(tmp_path_factory.mktemp("meta") / "run")


@pytest.fixture(scope="session")
def episode(tmp_path_factory):
    """A support/query folder of PNGs for the predict and export tests."""
    from predict_helpers import write_episode

    return write_episode(tmp_path_factory.mktemp("episode"))
