"""Batched augmentation against per-image references (numpy slicing, PIL's ImageEnhance) and
the published recipes (MetaOptNet's data/*.py, the SLA authors' datasets.py)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance
from skips import skip_no_cuda

from fewshot_sla.data import get_augmentation
from fewshot_sla.data.augment import (
    AugmentConfig,
    BatchAugment,
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    color_jitter,
    normalize,
    random_crop,
    random_hflip,
    to_float,
)


def _batch(b=16, c=3, s=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, s, s), dtype=torch.uint8, generator=g)


def test_random_crop_matches_numpy_slices_with_the_same_offsets():
    x = _batch(b=32, s=10)
    size, pad = 10, 3
    out = random_crop(x, size, pad, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)  # replay the draws: dy for all images, then dx
    dy = torch.randint(0, 2 * pad + 1, (32,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (32,), generator=g)
    xp = np.pad(x.numpy(), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    for i in range(32):
        ref = xp[i, :, dy[i] : dy[i] + size, dx[i] : dx[i] + size]
        assert np.array_equal(out[i].numpy(), ref)


def test_random_crop_is_a_window_of_the_padded_image_and_covers_all_offsets():
    x = _batch(b=400, c=1, s=6, seed=3)
    pad, size = 2, 6
    out = random_crop(x, size, pad, torch.Generator().manual_seed(0))
    xp = np.pad(x.numpy(), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    seen = set()
    for i in range(len(x)):  # brute force: which windows equal the output?
        hits = {(a, b) for a in range(2 * pad + 1) for b in range(2 * pad + 1)
                if np.array_equal(xp[i, :, a : a + size, b : b + size], out[i].numpy())}
        assert hits
        seen |= hits
    assert len(seen) == (2 * pad + 1) ** 2


@pytest.mark.parametrize("pad", [0, 1])
def test_crop_to_smaller_size_and_uint8_dtype_kept(pad):
    x = _batch(b=600, c=1, s=12, seed=4)
    size, n_off = 8, 12 + 2 * pad - 8 + 1
    out = random_crop(x, size, pad, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8
    xp = np.pad(x.numpy(), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    seen = set()
    for i in range(len(x)):  # brute force: the output is one window of the padded image
        o = out[i].numpy()
        hits = {(a, b) for a in range(n_off) for b in range(n_off)
                if np.array_equal(xp[i, :, a : a + size, b : b + size], o)}
        assert hits, i
        seen |= hits
    assert len(seen) == n_off**2  # every offset occurs (600 draws over at most 49 offsets)
    rgb = _batch(s=12)
    got = random_crop(rgb, size, pad, torch.Generator().manual_seed(1))
    rp = np.pad(rgb.numpy(), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    for i in range(len(rgb)):  # all three channels come from the same window
        assert any(np.array_equal(rp[i, :, a : a + size, b : b + size], got[i].numpy())
                   for a in range(n_off) for b in range(n_off)), i
    with pytest.raises(ValueError, match="exceeds"):
        random_crop(x, 20, 2)


def test_hflip_flips_about_half_and_only_flips():
    x = _batch(b=2000, c=1, s=5)
    out = random_hflip(x, 0.5, torch.Generator().manual_seed(1))
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(3)).flatten(1).all(1)
    assert bool((same | flipped).all())
    frac = float(flipped.float().mean())
    assert 0.45 < frac < 0.55  # binomial(2000, 0.5): sd 0.011


def _pil(img: torch.Tensor) -> Image.Image:
    return Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def _from_pil(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)


@pytest.mark.parametrize("f", [0.6, 1.0, 1.4])
def test_single_adjustments_match_pil_image_enhance(f):
    x = to_float(_batch(b=4, s=16, seed=5))
    fac = torch.full((4,), f)
    for ours, pil_cls in ((adjust_brightness, ImageEnhance.Brightness),
                          (adjust_contrast, ImageEnhance.Contrast),
                          (adjust_saturation, ImageEnhance.Color)):
        got = ours(x, fac)
        for i in range(4):
            ref = _from_pil(pil_cls(_pil(x[i])).enhance(f))
            # PIL rounds to 8 bits (and its contrast mean to an integer level)
            assert torch.allclose(got[i], ref, atol=2.5 / 255), ours.__name__


_LUMA = np.array([0.299, 0.587, 0.114])


def _jitter_factors(g: torch.Generator, b: int, strengths) -> list[torch.Tensor]:
    """Replay of the documented factor draws: one uniform vector per adjustment, in the
    order brightness, contrast, saturation, each mapped to [max(0, 1 - s), 1 + s]."""
    return [max(0, 1 - v) + (1 + v - max(0, 1 - v)) * torch.rand(b, generator=g) for v in strengths]


def _jitter_one(img: np.ndarray, order, factors) -> np.ndarray:
    """numpy float64 reference on ``img`` ``[..., 3, H, W]`` (one image, or a stack with one
    factor per image): adjustments applied in ``order`` (0 brightness, 1 contrast, 2 saturation),
    each a clamped blend with black, the image's mean grey level or its grey image."""
    lead = img.shape[:-3]
    for k in order:
        f = np.asarray(factors[k], dtype=np.float64).reshape(lead + (1, 1, 1))
        grey = np.einsum("c,...chw->...hw", _LUMA, img)[..., None, :, :]
        other = {0: np.zeros_like(img), 1: np.broadcast_to(grey.mean(axis=(-3, -2, -1), keepdims=True), img.shape),
                 2: np.broadcast_to(grey, img.shape)}[k]
        img = np.clip(f * img + (1 - f) * other, 0, 1)
    return img


def test_color_jitter_equals_a_per_image_loop_with_the_same_draws():
    x = to_float(_batch(b=24, s=8, seed=9))
    s = (0.4, 0.3, 0.5)
    before = x.clone()
    out = color_jitter(x, *s, generator=torch.Generator().manual_seed(11))
    assert torch.equal(x, before)  # the input is not modified
    g = torch.Generator().manual_seed(11)  # replay: 3 factor vectors, then the order keys
    factors = _jitter_factors(g, 24, s)
    order = torch.argsort(torch.rand(24, 3, generator=g), dim=1)
    for i in range(24):
        ref = _jitter_one(x[i].double().numpy(), order[i].tolist(), [float(f[i]) for f in factors])
        assert np.allclose(out[i].numpy(), ref, atol=1e-5)


def test_jitter_order_is_random_per_image():
    # Without clamping the three blends commute, so strong jitter (factors in [0.1, 1.9]) on
    # full-range images is used: clamping then makes the 3! orders give different images.
    b, s = 3000, (0.9, 0.9, 0.9)
    x = to_float(_batch(b=b, s=4, seed=21))
    out = color_jitter(x, *s, generator=torch.Generator().manual_seed(5)).double().numpy()
    factors = [f.double().numpy() for f in _jitter_factors(torch.Generator().manual_seed(5), b, s)]
    orders = list(itertools.permutations(range(3)))  # the order keys are NOT replayed
    img = x.double().numpy()
    cands = np.stack([_jitter_one(img, o, factors) for o in orders], axis=1)  # [B, 6, 3, 4, 4]
    err = np.abs(cands - out[:, None]).reshape(b, 6, -1).max(-1)
    match = err < 2e-6  # float32 rounding stays below 4e-7; distinct orders differ by more
    assert match.any(1).all(), np.flatnonzero(~match.any(1))  # each output is one composition
    # Orders that give the same image cannot be told apart: spread each image's unit weight over
    # its matching orders. The partition of the orders into equal-output classes depends on the
    # pixels and factors only, drawn independently of the order keys; with a uniform order each
    # order's weight has mean 1/6 per image and variance <= Bernoulli(1/6)'s: a binomial bound.
    weight = (match / match.sum(1, keepdims=True)).sum(0)
    sd = math.sqrt(b * (1 / 6) * (5 / 6))
    assert np.all(np.abs(weight - b / 6) < 4.5 * sd), dict(zip(orders, weight.round(1)))
    unique = match.sum(1) == 1  # images whose output identifies the order
    assert unique.sum() > b // 5
    assert set(np.argmax(match[unique], 1).tolist()) == set(range(6))  # all 3! orders occur


def test_normalize_and_uint8_float_equivalence():
    x = _batch()
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    m, sd = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in (mean, std))
    ref = (x.double() / 255 - m) / sd
    assert torch.allclose(normalize(to_float(x), mean, std).double(), ref, atol=1e-6)
    aug = BatchAugment(AugmentConfig(crop=12, padding=2, flip=True, brightness=0.4, mean=mean, std=std))
    a = aug(x, torch.Generator().manual_seed(4))
    b = aug(x.float() / 255, torch.Generator().manual_seed(4))
    assert a.dtype == torch.float32 and torch.allclose(a, b, atol=1e-6)


def test_deterministic_under_a_seed():
    x = _batch(b=32, s=32)
    aug = get_augmentation("cifar-fs", "metaoptnet")
    a = aug(x, torch.Generator().manual_seed(0))
    b = aug(x, torch.Generator().manual_seed(0))
    c = aug(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (32, 3, 32, 32) and a.device == x.device


# MetaOptNet's data/CIFAR_FS.py statistics (over 255), written out independently of the registry
_CIFARFS_MEAN = (129.37731888 / 255, 124.10583864 / 255, 112.47758569 / 255)
_CIFARFS_STD = (68.20947949 / 255, 65.43124043 / 255, 70.45866994 / 255)


@pytest.mark.parametrize("dataset, recipe", [("cifar-fs", "metaoptnet"), ("cifar10", "sla")])
def test_recipe_equals_the_documented_ops_replayed_with_one_generator(dataset, recipe):
    """The composed recipe equals the individual ops called by hand in the documented order
    (crop -> jitter -> flip -> normalise) on one generator threaded through them."""
    x = _batch(b=32, s=32, seed=6)
    got = get_augmentation(dataset, recipe)(x, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    y = x.double() / 255
    y = random_crop(y, 32, 4, g)
    if recipe == "metaoptnet":
        y = color_jitter(y, 0.4, 0.4, 0.4, g)
        mean, std = _CIFARFS_MEAN, _CIFARFS_STD
    else:  # the SLA authors' datasets.py: no jitter, Normalize((0.5,) * 3, (0.5,) * 3)
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    y = random_hflip(y, 0.5, g)
    ref = (y - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        std, dtype=torch.float64).view(1, 3, 1, 1)
    assert got.dtype == torch.float32 and got.device == x.device
    torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=0)
    # the generator is consumed the same way: the next draw after both agrees
    g2 = torch.Generator().manual_seed(3)
    get_augmentation(dataset, recipe)(x, g2)
    assert torch.equal(torch.rand(4, generator=g2), torch.rand(4, generator=g))


def test_output_on_the_input_device():
    skip_no_cuda()
    x = _batch(b=8, s=32).cuda()
    out = get_augmentation("cifar-fs", "metaoptnet")(x, torch.Generator().manual_seed(0))
    ref = get_augmentation("cifar-fs", "metaoptnet")(x.cpu(), torch.Generator().manual_seed(0))
    assert out.device == x.device and torch.allclose(out.cpu(), ref, atol=1e-5)


def test_metaoptnet_recipes_use_their_published_values():
    mini = get_augmentation("miniimagenet", "metaoptnet").config
    assert (mini.crop, mini.padding, mini.flip) == (84, 8, True)
    assert (mini.brightness, mini.contrast, mini.saturation) == (0.4, 0.4, 0.4)
    # MetaOptNet data/mini_imagenet.py: mean_pix / std_pix over 255
    assert mini.mean == pytest.approx([120.39586422 / 255, 115.59361427 / 255, 104.54012653 / 255])
    assert mini.std == pytest.approx([70.68188272 / 255, 68.27635443 / 255, 72.54505529 / 255])
    for name in ("cifar-fs", "fc100"):  # data/CIFAR_FS.py and data/FC100.py
        c = get_augmentation(name, "metaoptnet").config
        assert (c.crop, c.padding) == (32, 4)
        assert c.mean == pytest.approx([129.37731888 / 255, 124.10583864 / 255, 112.47758569 / 255])
        assert c.std == pytest.approx([68.20947949 / 255, 65.43124043 / 255, 70.45866994 / 255])
    tiered = get_augmentation("tiered-imagenet", "metaoptnet").config
    assert (tiered.crop, tiered.padding) == (84, 8) and tiered.mean == mini.mean


def test_sla_supervised_recipe_and_eval():
    sla = get_augmentation("cifar10", "sla").config  # SLA authors' datasets.py
    assert (sla.crop, sla.padding, sla.flip) == (32, 4, True)
    assert sla.brightness == sla.contrast == sla.saturation == 0
    assert sla.mean == (0.5, 0.5, 0.5) and sla.std == (0.5, 0.5, 0.5)
    ev = get_augmentation("cifar100", "eval")
    x = _batch(s=32)
    out = ev(x)  # deterministic: normalise only
    ref = (x.float() / 255 - torch.tensor([0.5071, 0.4865, 0.4409]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2673, 0.2564, 0.2762]).view(1, 3, 1, 1)
    assert torch.allclose(out, ref, atol=1e-6)
    with pytest.raises(ValueError, match="metaoptnet"):
        get_augmentation("cifar10", "autoaugment")
