"""Long-tailed CIFAR: published class counts, the seeded subset, shot groups, class-balanced
weights and LDAM margins against hand computations."""

import math

import numpy as np
import pytest
import torch

from fewshot_sla.supervised.longtail import (
    class_counts,
    group_accuracy,
    longtail_counts,
    longtail_indices,
    shot_groups,
)
from fewshot_sla.supervised.losses import class_balanced_weights, ldam_margins


def test_cifar10_r100_counts_are_the_published_ones():
    counts = longtail_counts(5000, 10, 100)
    assert counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(counts) == 12406


@pytest.mark.parametrize(
    "n_max, classes, ratio, total",
    [(5000, 10, 10, 20431), (500, 100, 100, 10847), (500, 100, 10, 19573), (5000, 10, 1, 50000)],
)
def test_published_totals(n_max, classes, ratio, total):
    assert sum(longtail_counts(n_max, classes, ratio)) == total


def test_counts_reject_bad_ratio():
    with pytest.raises(ValueError, match="imbalance ratio"):
        longtail_counts(5000, 10, 0.5)


def test_subset_is_cao_et_al_seeded_shuffle():
    rng = np.random.default_rng(3)
    labels = rng.permutation(np.repeat(np.arange(5), 40))  # 5 classes x 40, shuffled order
    counts = longtail_counts(40, 5, 8)
    got = longtail_indices(torch.from_numpy(labels), counts, seed=7)
    # reference: LDAM-DRW's gen_imbalanced_data (global np.random.seed, shuffle per class in order)
    np.random.seed(7)
    ref = []
    for c, n in enumerate(counts):
        idx = np.where(labels == c)[0]
        np.random.shuffle(idx)
        ref.extend(idx[:n].tolist())
    assert got.tolist() == ref
    assert class_counts(labels[got], 5) == counts
    assert longtail_indices(labels, counts, seed=8).tolist() != ref  # the seed matters
    with pytest.raises(ValueError, match="asks for"):
        longtail_indices(labels, [41, 1, 1, 1, 1])


def test_shot_groups_and_group_accuracy_by_hand():
    counts = [500, 101, 100, 20, 19, 5]
    assert shot_groups(counts) == {"many": [0, 1], "medium": [2, 3], "few": [4, 5]}
    acc = [1.0, 0.5, 0.25, 0.75, 0.0, 0.5]
    g = group_accuracy(acc, counts)
    assert g == pytest.approx({"overall": 3.0 / 6, "many": 0.75, "medium": 0.5, "few": 0.25})
    # CIFAR-10 at R = 100: no class has fewer than 20 images
    g10 = group_accuracy([0.5] * 10, longtail_counts(5000, 10, 100))
    assert g10["few"] is None and g10["many"] == 0.5


def test_class_balanced_weights_by_hand():
    # counts (1, 2), beta 0.5: raw (0.5/0.5, 0.5/0.75) = (1, 2/3), normalised to sum 2 -> (1.2, 0.8)
    assert class_balanced_weights([1, 2], 0.5).tolist() == pytest.approx([1.2, 0.8])
    counts = longtail_counts(5000, 10, 100)
    beta = 0.9999
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    ref = [r / sum(raw) * 10 for r in raw]
    w = class_balanced_weights(counts, beta)
    assert w.dtype == torch.float32
    assert w.tolist() == pytest.approx(ref, rel=1e-6)
    assert float(w.sum()) == pytest.approx(10.0)
    assert class_balanced_weights(counts, 0.0).tolist() == pytest.approx([1.0] * 10)  # DRW before its start
    with pytest.raises(ValueError, match="at least one"):
        class_balanced_weights([3, 0], 0.9)


def test_ldam_margins_by_hand():
    # n^(-1/4) of (16, 81, 1) = (1/2, 1/3, 1); the rarest gets max_margin 0.5
    assert ldam_margins([16, 81, 1], 0.5).tolist() == pytest.approx([0.25, 0.5 / 3, 0.5])
    m = ldam_margins(longtail_counts(5000, 10, 100), 0.5)
    assert float(m[-1]) == pytest.approx(0.5)
    assert float(m[0]) == pytest.approx(0.5 * (50 / 5000) ** 0.25)
    assert float(m[3]) == pytest.approx(0.5 * math.pow(50 / 1077, 0.25))
