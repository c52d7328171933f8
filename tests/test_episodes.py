"""Episode sampler, collation and NM-way expansion against hand counts and loops."""

from collections import Counter

import numpy as np
import pytest
import torch

from fewshot_sla.episodes import EpisodeSampler, collate_episodes, expand_episodes
from fewshot_sla.transforms import get_transform_set


def make_labels(n_classes=12, per_class=10, shuffle=True):
    labels = np.repeat(np.arange(n_classes), per_class)
    if shuffle:
        np.random.default_rng(0).shuffle(labels)
    return labels


def test_episode_layout_support_then_query_class_by_class():
    labels = make_labels()
    s = EpisodeSampler(labels, n_way=5, k_shot=2, n_query=3, n_episodes=20, seed=7)
    for ep in s:
        assert len(ep) == 5 * 5 and len(set(ep)) == 25  # no image twice
        sup = np.array(ep[:10]).reshape(5, 2)
        qry = np.array(ep[10:]).reshape(5, 3)
        for c in range(5):
            cls = set(labels[sup[c]]) | set(labels[qry[c]])
            assert len(cls) == 1  # support and queries of episode class c share one dataset class
        # classes are disjoint within an episode
        assert len({labels[sup[c, 0]] for c in range(5)}) == 5


def test_same_seed_same_episodes_any_order_and_different_seed_differs():
    labels = make_labels()
    a = EpisodeSampler(labels, 5, 1, 2, 50, seed=3)
    b = EpisodeSampler(labels, 5, 1, 2, 50, seed=3)
    assert list(a) == list(b)
    # episode i is drawn directly, independent of earlier draws
    assert b.episode(37) == list(a)[37]
    c = EpisodeSampler(labels, 5, 1, 2, 50, seed=4)
    assert list(c) != list(a)


def test_classes_covered_uniformly():
    labels = make_labels(n_classes=10, per_class=6)
    s = EpisodeSampler(labels, 5, 1, 1, 4000, seed=0)
    counts = Counter(int(labels[e[0 + k]]) for e in s for k in range(5))
    expected = 4000 * 5 / 10
    # binomial sd = sqrt(n p (1-p)) = sqrt(4000 * 0.5 * 0.5) ~ 31.6; allow 5 sd
    assert all(abs(v - expected) < 5 * 31.7 for v in counts.values()), counts
    assert len(counts) == 10


def test_errors_name_numbers_and_class():
    labels = make_labels(n_classes=4, per_class=5)
    with pytest.raises(ValueError, match=r"5-way episodes need at least 5 classes, but the dataset has 4"):
        EpisodeSampler(labels, 5, 1, 1, 10)
    labels = np.concatenate([labels, [9, 9]])  # class 9 has 2 images
    with pytest.raises(ValueError, match=r"class 'zeta' \(label 9\) has 2 images.*need 6"):
        EpisodeSampler(labels, 3, 1, 5, 10, class_names={9: "zeta"})
    with pytest.raises(ValueError, match="k_shot"):
        EpisodeSampler(labels, 3, 0, 5, 10)


def test_collate_gathers_the_right_images_and_labels():
    labels = make_labels(n_classes=6, per_class=4)
    images = torch.arange(len(labels)).reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2).to(torch.uint8)
    s = EpisodeSampler(labels, 3, 1, 2, 5, seed=1)
    eps = [s[0], s[1]]
    batch = collate_episodes(images, eps, 3, 1, 2)
    assert batch.support.shape == (2, 3, 1, 2, 2) and batch.query.shape == (2, 6, 1, 2, 2)
    for t, ep in enumerate(eps):
        assert batch.support[t, :, 0, 0, 0].tolist() == ep[:3]
        assert batch.query[t, :, 0, 0, 0].tolist() == ep[3:]
    assert batch.support_labels.tolist() == [[0, 1, 2]] * 2
    assert batch.query_labels.tolist() == [[0, 0, 1, 1, 2, 2]] * 2


def test_expansion_to_nm_way():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (30, 3, 4, 4), dtype=torch.uint8, generator=g)
    labels = np.repeat(np.arange(5), 6)
    s = EpisodeSampler(labels, 3, 2, 1, 4, seed=2)
    batch = collate_episodes(images, [s[0], s[3]], 3, 2, 1)
    t = get_transform_set("rotation")
    ex = expand_episodes(batch, t)
    assert ex.n_way == 12 and ex.M == 4 and ex.base_way == 3
    assert ex.support.shape == (2, 6 * 4, 3, 4, 4) and ex.query.shape == (2, 3 * 4, 3, 4, 4)
    for task in range(2):
        for s_ in range(6):
            for j in range(4):
                ref = torch.rot90(batch.support[task, s_], j, dims=(1, 2))
                assert torch.equal(ex.support[task, s_ * 4 + j], ref)
                assert ex.support_labels[task, s_ * 4 + j] == batch.support_labels[task, s_] * 4 + j
        for q in range(3):
            for j in range(4):
                assert torch.equal(ex.query[task, q * 4 + j], torch.rot90(batch.query[task, q], j, dims=(1, 2)))
                assert ex.query_labels[task, q * 4 + j] == batch.query_labels[task, q] * 4 + j
    with pytest.raises(ValueError, match="already expanded"):
        expand_episodes(ex, t)


@pytest.mark.parametrize("name", ["rotation", "rotation2", "color_perm3", "rot_color_perm12", "rot_color_perm24"])
def test_gather_expansion_and_precomputed_views_equal_view_by_view_expansion(name):
    """expand_episodes (one pixel gather each for support and query) and collate_expanded (one
    row gather from precomputed views) give the batch of the reference: map_images with the
    rot90/channel-stacking expansion, labels y*M + j."""
    from dataclasses import replace

    from fewshot_sla.episodes import collate_expanded, precompute_views
    from fewshot_sla.sla import joint_labels

    g = torch.Generator().manual_seed(4)
    images = torch.randint(0, 256, (60, 3, 8, 8), generator=g, dtype=torch.uint8)
    labels = np.repeat(np.arange(12), 5)
    sampler = EpisodeSampler(labels, 3, 2, 2, n_episodes=4, seed=7)
    episodes = list(sampler)
    tset = get_transform_set(name)
    base = collate_episodes(images, episodes, 3, 2, 2)
    ref = base.map_images(tset.stack_views)
    ref = replace(ref, support_labels=joint_labels(base.support_labels, tset.M),
                  query_labels=joint_labels(base.query_labels, tset.M), n_way=3 * tset.M, M=tset.M)
    for x in (images, images.float() / 255):
        got = expand_episodes(collate_episodes(x, episodes, 3, 2, 2), tset)
        pre = collate_expanded(precompute_views(x, tset), episodes, 3, 2, 2)
        want = ref if x.dtype == torch.uint8 else replace(ref, support=ref.support.float() / 255,
                                                          query=ref.query.float() / 255)
        for b in (got, pre):
            assert (b.n_way, b.M) == (want.n_way, want.M)
            for f in ("support", "support_labels", "query", "query_labels"):
                assert torch.equal(getattr(b, f), getattr(want, f)), (name, f)
    # hand check: episode 0, support image 1, view 1 is t_1 of that dataset image
    k, perm = tset.rotations[1 // (len(tset.color_perms) if tset.color_perms else 1)], None
    if tset.color_perms:
        perm = list(tset.color_perms[1 % len(tset.color_perms)])
    img = images[episodes[0][1]]
    hand = torch.rot90(img, k, (1, 2))
    hand = hand[perm] if perm else hand
    assert torch.equal(got.support[0, 1 * tset.M + 1].mul(255).round().to(torch.uint8), hand)
