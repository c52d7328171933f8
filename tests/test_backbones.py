"""Tests of fewshot_sla.backbones against hand computations and brute-force references."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F

from fewshot_sla.backbones import (
    Backbone,
    _registry,
    feature_dim,
    get_backbone,
    list_backbones,
    register_backbone,
)
from fewshot_sla.backbones.dropblock import DropBlock, block_keep_mask, dropblock_gamma
from fewshot_sla.backbones.resnet12 import ResNet12
from fewshot_sla.registry import UnknownOptionError


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def conv(k: int, cin: int, cout: int) -> int:
    """Weights of a bias-free k x k convolution."""
    return k * k * cin * cout


def bn(c: int) -> int:
    """BatchNorm affine weight + bias."""
    return 2 * c


# Full-size ResNet-12 forwards are slow on a shared CPU: the default model is used for
# sizes and parameter counts, a slim one (same code path, narrower blocks) for behaviour.
SLIM = (16, 32, 64, 128)


@pytest.fixture(scope="module")
def resnet12_32() -> ResNet12:
    torch.manual_seed(0)
    return get_backbone("resnet12", image_size=32)


@pytest.fixture(scope="module")
def slim12() -> ResNet12:
    torch.manual_seed(0)
    return get_backbone("resnet12", image_size=32, widths=SLIM)


# --------------------------------------------------------------------- registry


def test_registry_lists_required_names():
    names = list_backbones()
    assert names == sorted(names)
    for name in ("resnet12", "conv4", "resnet32", "resnet18"):
        assert name in names


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        get_backbone("resnet13")
    msg = str(info.value)
    assert "resnet13" in msg
    for name in ("resnet12", "conv4", "resnet32", "resnet18"):
        assert name in msg


@pytest.mark.parametrize("exc", [TypeError, ValueError])
def test_unknown_option_is_named(exc):
    with pytest.raises(exc) as info:
        get_backbone("resnet12", blocksize=3, image_size=32)
    msg = str(info.value)
    assert isinstance(info.value, UnknownOptionError)
    assert "'blocksize'" in msg and "block_size" in msg  # the typo and the fix


@pytest.mark.parametrize(
    "name, options, words",
    [
        ("resnet12", {"image_size": 8}, ["16", "image_size"]),
        ("conv4", {"image_size": (28, 12)}, ["16"]),
        ("resnet12", {"drop_rate": 1.5, "image_size": 32}, ["drop_rate"]),
        ("resnet12", {"widths": (64, 160, 320), "image_size": 32}, ["widths"]),
        ("resnet18", {"image_size": "32"}, ["image_size"]),
        ("conv4", {"in_channels": 0}, ["in_channels"]),
    ],
)
def test_bad_option_values(name, options, words):
    with pytest.raises(ValueError) as info:
        get_backbone(name, **options)
    for word in words:
        assert word in str(info.value)


def test_register_custom_backbone():
    name = "_test_linear_backbone"

    def factory(in_channels: int = 3, dim: int = 5) -> torch.nn.Module:
        m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(dim))
        m.out_dim = dim
        return m

    try:
        register_backbone(name)(factory)
        assert name in list_backbones()
        m = get_backbone(name, in_channels=1, dim=7)
        assert m(torch.zeros(2, 1, 4, 4)).shape == (2, 7)
        with pytest.raises(UnknownOptionError, match="'width'"):
            get_backbone(name, width=3)
        with pytest.raises(ValueError, match="already registered"):
            register_backbone(name)(lambda in_channels=3: None)
    finally:
        _registry.BACKBONES.pop(name, None)
    assert name not in list_backbones()


# ---------------------------------------------------------------- output sizes


@pytest.mark.parametrize(
    "name, size, options, expected",
    [
        ("resnet12", 28, {}, 640),  # 28 -> 14 -> 7 -> 3 -> 1
        ("resnet12", 32, {}, 2560),  # 640 * 2 * 2
        ("resnet12", 84, {}, 16000),  # 640 * 5 * 5
        ("resnet12", 28, {"avg_pool": True}, 640),
        ("resnet12", 32, {"avg_pool": True}, 640),
        ("resnet12", 84, {"avg_pool": True}, 640),
        ("conv4", 28, {}, 64),
        ("conv4", 32, {}, 256),
        ("conv4", 84, {}, 1600),
        ("resnet32", 32, {}, 64),
        ("resnet18", 32, {}, 512),
        ("resnet18", 84, {}, 512),  # ImageNet stem
    ],
)
def test_output_dim_matches_forward(name, size, options, expected):
    torch.manual_seed(0)
    m = get_backbone(name, image_size=size, **options).eval()
    assert isinstance(m, Backbone)
    assert m.out_dim == expected
    assert m.feature_dim(size) == expected
    assert feature_dim(name, size, **options) == expected
    if name == "resnet12" and (size == 84 or options):
        # same spatial pipeline with cheap inner blocks (D depends on widths[-1] only)
        m = get_backbone(name, image_size=size, widths=(8, 8, 8, 640), **options).eval()
        assert m.out_dim == expected
    batch = 1 if name in ("resnet12", "resnet18") else 2
    with torch.no_grad():
        y = m(torch.randn(batch, 3, size, size))
    assert y.shape == (batch, expected)
    assert torch.isfinite(y).all()


def test_non_square_feature_dim():
    m = get_backbone("conv4", image_size=(28, 44)).eval()
    assert m.out_dim == 64 * 1 * 2
    with torch.no_grad():
        assert m(torch.randn(2, 3, 28, 44)).shape == (2, 128)
    assert feature_dim("resnet12", (84, 40)) == 640 * 5 * 2


def test_default_image_sizes():
    assert feature_dim("resnet12", 84) == get_backbone("resnet12").out_dim == 16000
    assert get_backbone("conv4").out_dim == 1600
    assert get_backbone("resnet32").image_size == (32, 32)
    assert get_backbone("resnet18").small_input is True
    assert get_backbone("resnet18", image_size=84).small_input is False


def test_wrong_input_size_names_the_fix(slim12):
    m = copy.deepcopy(slim12).eval()
    with pytest.raises(ValueError) as info, torch.no_grad():
        m(torch.randn(1, 3, 84, 84))
    assert "image_size=84" in str(info.value)
    with pytest.raises(ValueError, match="in_channels=1"), torch.no_grad():
        m(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="at least 16x16"), torch.no_grad():
        get_backbone("resnet12", image_size=32, avg_pool=True, widths=SLIM)(
            torch.randn(1, 3, 8, 8)
        )


# ------------------------------------------------------------ parameter counts


def resnet12_count(cin: int, widths=(64, 160, 320, 640)) -> int:
    total = 0
    for c in widths:
        total += conv(3, cin, c) + 2 * conv(3, c, c) + 3 * bn(c)  # three conv+BN
        total += conv(1, cin, c) + bn(c)  # 1x1 shortcut + BN
        cin = c
    return total


def test_resnet12_parameter_count(resnet12_32):
    # block 1:   1728 +  73728 +  384 +   192 +  128 =    76160
    # block 2:  92160 + 460800 +  960 + 10240 +  320 =   564480
    # block 3: 460800 +1843200 + 1920 + 51200 +  640 =  2357760
    # block 4:1843200 +7372800 + 3840 +204800 + 1280 =  9425920
    assert resnet12_count(3) == 76160 + 564480 + 2357760 + 9425920 == 12_424_320
    assert n_params(resnet12_32) == 12_424_320
    assert 12.3e6 <= n_params(resnet12_32) <= 12.5e6
    m1 = ResNet12(in_channels=1, image_size=28, widths=(8, 16, 24, 32))
    assert n_params(m1) == resnet12_count(1, (8, 16, 24, 32))


def test_conv4_parameter_count():
    # 4 blocks of conv3x3 (no bias) + BN: (27*64 + 128) + 3 * (576*64 + 128)
    expected = conv(3, 3, 64) + bn(64) + 3 * (conv(3, 64, 64) + bn(64))
    assert expected == 1856 + 3 * 36992 == 112_832
    assert n_params(get_backbone("conv4", image_size=28)) == expected
    omni = get_backbone("conv4", in_channels=1, image_size=28)
    assert n_params(omni) == conv(3, 1, 64) + bn(64) + 3 * (conv(3, 64, 64) + bn(64))
    biased = get_backbone("conv4", image_size=28, conv_bias=True, hidden=32, out_channels=16)
    expected_biased = (
        conv(3, 3, 32) + 32 + bn(32) + 2 * (conv(3, 32, 32) + 32 + bn(32))
    ) + conv(3, 32, 16) + 16 + bn(16)
    assert n_params(biased) == expected_biased


def test_resnet32_parameter_count():
    # stem 3->16; 3 stages x 5 blocks x (2 conv3x3 + 2 BN); option-A shortcuts are free.
    stem = conv(3, 3, 16) + bn(16)  # 464
    stage1 = 5 * (2 * conv(3, 16, 16) + 2 * bn(16))  # 23360
    stage2 = conv(3, 16, 32) + conv(3, 32, 32) + 2 * bn(32) + 4 * (
        2 * conv(3, 32, 32) + 2 * bn(32)
    )  # 88192
    stage3 = conv(3, 32, 64) + conv(3, 64, 64) + 2 * bn(64) + 4 * (
        2 * conv(3, 64, 64) + 2 * bn(64)
    )  # 351488
    assert (stem, stage1, stage2, stage3) == (464, 23360, 88192, 351488)
    m = get_backbone("resnet32")
    assert n_params(m) == stem + stage1 + stage2 + stage3 == 463_504
    assert abs(n_params(m) - 0.46e6) < 0.01e6
    # depth 20 = 3 blocks per stage
    assert n_params(get_backbone("resnet20")) == 463_504 - 2 * (
        2 * conv(3, 16, 16) + 2 * bn(16) + 2 * conv(3, 32, 32) + 2 * bn(32)
        + 2 * conv(3, 64, 64) + 2 * bn(64)
    )


def test_resnet18_parameter_count():
    def stage(cin, c):
        first = conv(3, cin, c) + conv(3, c, c) + 2 * bn(c)
        if cin != c:
            first += conv(1, cin, c) + bn(c)
        return first + 2 * conv(3, c, c) + 2 * bn(c)

    body = stage(64, 64) + stage(64, 128) + stage(128, 256) + stage(256, 512)
    small = conv(3, 3, 64) + bn(64) + body
    imagenet = conv(7, 3, 64) + bn(64) + body
    assert small == 11_168_832
    # torchvision's resnet18 has 11,689,512 parameters including the 512*1000+1000 fc
    assert imagenet == 11_689_512 - (512 * 1000 + 1000)
    assert n_params(get_backbone("resnet18", image_size=32)) == small
    assert n_params(get_backbone("resnet18", image_size=84)) == imagenet


def test_resnet12_initialisation(resnet12_32):
    for m in resnet12_32.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
    # kaiming_normal_(fan_out, leaky_relu with a=0): std = sqrt(2 / (k*k*cout))
    w = resnet12_32.layer4.conv2.weight
    expected_std = math.sqrt(2.0 / (9 * 640))
    assert abs(w.std().item() / expected_std - 1) < 0.01  # 3.7M samples
    assert abs(w.mean().item()) < 0.01 * expected_std * 10


# -------------------------------------------------------------------- DropBlock


def brute_force_keep_mask(seeds: torch.Tensor, bh: int, bw: int) -> torch.Tensor:
    """MetaOptNet semantics: a seed at (i, j) zeroes [i:i+bh, j:j+bw]."""
    b, c, sh, sw = seeds.shape
    mask = torch.ones(b, c, sh + bh - 1, sw + bw - 1)
    for n, ch, i, j in seeds.nonzero().tolist():
        mask[n, ch, i : i + bh, j : j + bw] = 0
    return mask


@pytest.mark.parametrize("h, w, bh, bw", [(10, 10, 5, 5), (7, 9, 2, 3), (4, 4, 2, 2), (5, 5, 5, 5)])
def test_block_keep_mask_matches_loop(h, w, bh, bw):
    g = torch.Generator().manual_seed(h * 100 + w)
    seeds = (torch.rand(2, 3, h - bh + 1, w - bw + 1, generator=g) < 0.15).float()
    assert torch.equal(block_keep_mask(seeds, (bh, bw)), brute_force_keep_mask(seeds, bh, bw))


def test_dropblock_gamma_formula():
    # MetaOptNet: (1 - keep) / bs^2 * fs^2 / (fs - bs + 1)^2
    assert dropblock_gamma(0.1, 5, 10, 10) == pytest.approx(0.1 / 25 * 100 / 36)
    assert dropblock_gamma(0.1, 5, 5, 5) == pytest.approx(0.1)
    assert dropblock_gamma(0.1, 2, 4, 4) == pytest.approx(0.1 / 4 * 16 / 9)
    # block clipped to a 1x1 map: every seed drops the whole map
    assert dropblock_gamma(0.1, 5, 1, 1) == pytest.approx(0.1)


def expected_drop_fraction(gamma: float, h: int, w: int, bh: int, bw: int) -> float:
    """Exact mean over positions of P(dropped) = 1 - (1 - gamma)^(#seeds covering it)."""

    def cover(p, size, b):
        return sum(1 for i in range(size - b + 1) if i <= p <= i + b - 1)

    probs = [
        1 - (1 - gamma) ** (cover(p, h, bh) * cover(q, w, bw)) for p in range(h) for q in range(w)
    ]
    return sum(probs) / len(probs)


@pytest.mark.parametrize("h, bs, n", [(10, 5, 400), (5, 5, 2000), (4, 2, 2000)])
def test_dropblock_drop_fraction(h, bs, n):
    drop = 0.1
    gamma = dropblock_gamma(drop, bs, h, h)
    expected = expected_drop_fraction(gamma, h, h, bs, bs)
    if h == bs:
        assert expected == pytest.approx(drop)  # one seed position: exactly the drop rate
    else:  # overlapping blocks make it a little less than the target
        assert 0.07 < expected < drop
    db = DropBlock(bs).train()
    torch.manual_seed(1)
    x = torch.ones(n, 8, h, h)
    out = db(x, drop)
    dropped = (out == 0).float()
    frac = dropped.mean().item()
    # maps are independent: standard error of the mean over n*8 maps is < sqrt(p(1-p)/(n*8))
    se = math.sqrt(expected * (1 - expected) / (n * 8))
    assert abs(frac - expected) < 5 * se + 1e-3
    # kept units are scaled by numel / (number kept), over the whole batch
    kept = out[out != 0]
    scale = x.numel() / (1 - dropped).sum().item()
    assert torch.allclose(kept, torch.full_like(kept, scale))


def test_dropblock_tensor_rate_equals_float_rate():
    db = DropBlock(3).train()
    x = torch.randn(4, 5, 9, 9)
    torch.manual_seed(11)
    a = db(x, 0.2)
    torch.manual_seed(11)
    b = db(x, torch.tensor(0.2))
    assert torch.equal(a, b)
    assert (a == 0).any()


def test_dropblock_eval_and_zero_rate_are_identity():
    db = DropBlock(3)
    x = torch.randn(2, 4, 6, 6)
    state = torch.get_rng_state()
    assert db.eval()(x, 0.5) is x
    assert db.train()(x, 0.0) is x
    assert torch.equal(torch.get_rng_state(), state)


# ------------------------------------------------- ResNet-12 drop schedule


def test_keep_rate_ramp_schedule():
    m = ResNet12(image_size=32, widths=(4, 4, 4, 4), drop_rate=0.1, drop_ramp_steps=100)
    block = m.layer3
    assert m.block_size == 2  # MetaOptNet's CIFAR-FS/FC100 choice below 64 px
    assert ResNet12(image_size=84, widths=(4, 4, 4, 4)).block_size == 5
    # max(1 - p * t / T, 1 - p)
    for t, keep in [(0, 1.0), (1, 0.999), (50, 0.95), (100, 0.9), (1000, 0.9)]:
        assert block.keep_rate(t) == pytest.approx(keep)
        m.set_drop_step(t)  # the on-device rate that forward uses
        assert block._ramped_drop().item() == pytest.approx(1 - keep)
    m.set_drop_step(0)
    x = torch.randn(2, 3, 32, 32)
    m.train()
    for _ in range(3):
        m(x)
    assert m.drop_step == 3 and all(b.drop_step == 3 for b in m.blocks())
    assert block.keep_rate() == pytest.approx(1 - 0.1 * 3 / 100)
    m.eval()
    with torch.no_grad():
        m(x)
    assert m.drop_step == 3  # eval calls do not advance the ramp by default
    m_all = ResNet12(image_size=32, widths=(4, 4, 4, 4), count_eval_forwards=True).eval()
    with torch.no_grad():
        m_all(x)
        m_all(x)
    assert m_all.drop_step == 2  # MetaOptNet's counting


def test_drop_step_survives_state_dict_round_trip():
    m = ResNet12(image_size=32, widths=(4, 4, 4, 4))
    m.set_drop_step(1234)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    m2 = ResNet12(image_size=32, widths=(4, 4, 4, 4))
    m2.load_state_dict(torch.load(buf, weights_only=True))
    assert [b.drop_step for b in m2.blocks()] == [1234] * 4
    assert copy.deepcopy(m).drop_step == 1234


def test_resnet12_eval_equals_drop_disabled(slim12):
    m = copy.deepcopy(slim12)
    m.set_drop_step(10**6)
    no_drop = get_backbone("resnet12", image_size=32, drop_rate=0.0, widths=SLIM)
    no_drop.load_state_dict(m.state_dict())
    m.eval()
    no_drop.eval()
    x = torch.randn(2, 3, 32, 32)
    state = torch.get_rng_state()
    with torch.no_grad():
        y1, y2, y3 = m(x), m(x), no_drop(x)
    assert torch.equal(torch.get_rng_state(), state)  # no random numbers drawn
    assert torch.equal(y1, y2)
    assert torch.equal(y1, y3)


def test_resnet12_train_mode_seeded_reproducible(slim12):
    m = copy.deepcopy(slim12).train()
    m.set_drop_step(10**6)
    no_drop = get_backbone("resnet12", image_size=32, drop_rate=0.0, widths=SLIM).train()
    no_drop.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.manual_seed(7)
        a = m(x)
        torch.manual_seed(7)
        b = m(x)
        torch.manual_seed(8)
        c = m(x)
        d = no_drop(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.allclose(a, d)  # the regularisers are active in training


def test_resnet12_dropped_fraction_after_ramp(slim12):
    """Zero fraction of each block's output vs dropout/DropBlock theory, at 32 px.

    Blocks 1-2: dropout, P(zero) = p. Block 3 (4x4 map, block 2): exact overlap formula.
    Block 4 (2x2 map, block 2): one seed position, P(zero map) = gamma = p.
    """
    m = copy.deepcopy(slim12).train()
    m.set_drop_step(40000)  # end of the ramp: keep rate 1 - p
    p = 0.1
    outs = {}
    hooks = [
        getattr(m, name).register_forward_hook(lambda mod, i, o, name=name: outs.__setitem__(name, o))
        for name in ("layer1", "layer2", "layer3", "layer4")
    ]
    torch.manual_seed(3)
    with torch.no_grad():
        m(torch.randn(16, 3, 32, 32))
    for h in hooks:
        h.remove()
    checks = {
        "layer1": p,
        "layer2": p,
        "layer3": expected_drop_fraction(dropblock_gamma(p, 2, 4, 4), 4, 4, 2, 2),
        "layer4": p,
    }
    for name, expected in checks.items():
        o = outs[name]
        units = o.numel() if name in ("layer1", "layer2") else o.shape[0] * o.shape[1]
        frac = (o == 0).float().mean().item()
        se = math.sqrt(expected * (1 - expected) / units)  # conservative for DropBlock maps
        assert abs(frac - expected) < 5 * se, (name, frac, expected)
    # in block 4 a whole 2x2 map is dropped or kept
    zeros = (outs["layer4"] == 0).flatten(2).sum(-1)
    assert set(zeros.unique().tolist()) <= {0, 4}


# --------------------------------------------------------- layouts and channels


@pytest.mark.parametrize(
    "name, size, options",
    [
        ("resnet12", 32, {"widths": SLIM}),
        ("resnet12", 28, {"avg_pool": True, "widths": SLIM}),
        ("conv4", 28, {}),
        ("resnet32", 32, {}),
        ("resnet18", 32, {}),
    ],
)
def test_channels_last_matches_contiguous(name, size, options):
    torch.manual_seed(0)
    m = get_backbone(name, image_size=size, **options).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        y = m(x)
        y_cl = m(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y_cl, y, atol=1e-5, rtol=1e-5)


def test_channels_last_train_mode_resnet12(slim12):
    m = copy.deepcopy(slim12).train()
    m.set_drop_step(40000)
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(5)
    y = m(x)
    torch.manual_seed(5)
    y_cl = m(x.contiguous(memory_format=torch.channels_last))
    # same dropout/DropBlock masks (exact zeros), values equal up to float rounding that
    # batch-statistics BN on 2 samples amplifies a little
    assert torch.equal(y == 0, y_cl == 0)
    torch.testing.assert_close(y_cl, y, atol=1e-4, rtol=1e-4)
    y_cl.sum().backward()  # gradients flow through DropBlock


@pytest.mark.parametrize(
    "name, size, options",
    [("conv4", 28, {}), ("resnet12", 28, {"widths": SLIM}), ("resnet32", 32, {}), ("resnet18", 16, {})],
)
def test_single_channel_input(name, size, options):
    torch.manual_seed(0)
    m = get_backbone(name, in_channels=1, image_size=size, **options).eval()
    assert m.in_channels == 1
    with torch.no_grad():
        y = m(torch.randn(2, 1, size, size))
    assert y.shape == (2, m.out_dim)
    first = next(mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d))
    assert first.in_channels == 1


# --------------------------------------------------------------------- forward values


def _randomise_bn(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BN affine parameters and running statistics (the initial ones are 1, 0, 0, 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.3 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.3 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))


def _bn_ref(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    """Eval-mode BatchNorm with running statistics, eps = 1e-5 (PyTorch's and MetaOptNet's default)."""
    return F.batch_norm(x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"],
                        sd[f"{name}.weight"], sd[f"{name}.bias"], training=False, eps=1e-5)


def conv4_reference(x: torch.Tensor, sd: dict) -> torch.Tensor:
    """Conv-4 as documented: 4 x [conv3x3 pad 1 (+bias) -> BN -> ReLU -> max-pool 2], flatten."""
    for i in range(4):
        conv, bnorm = f"encoder.{4 * i}", f"encoder.{4 * i + 1}"
        x = F.conv2d(x, sd[f"{conv}.weight"], sd.get(f"{conv}.bias"), stride=1, padding=1)
        x = F.max_pool2d(F.relu(_bn_ref(x, sd, bnorm)), 2)
    return x.flatten(1)


def resnet12_reference(x: torch.Tensor, sd: dict, avg_pool: bool) -> torch.Tensor:
    """MetaOptNet's ResNet-12 in eval mode (dropout/DropBlock off), from the module docstring."""
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        w = {k[len(layer) + 1 :]: v for k, v in sd.items() if k.startswith(layer + ".")}
        out = F.leaky_relu(_bn_ref(F.conv2d(x, w["conv1.weight"], padding=1), w, "bn1"), 0.1)
        out = F.leaky_relu(_bn_ref(F.conv2d(out, w["conv2.weight"], padding=1), w, "bn2"), 0.1)
        out = _bn_ref(F.conv2d(out, w["conv3.weight"], padding=1), w, "bn3")
        short = _bn_ref(F.conv2d(x, w["shortcut.0.weight"]), w, "shortcut.1")  # 1x1 conv + BN
        x = F.max_pool2d(F.leaky_relu(out + short, 0.1), 2)
    if avg_pool:
        x = x.mean(dim=(2, 3), keepdim=True)
    return x.flatten(1)


@pytest.mark.parametrize("conv_bias", [False, True])
def test_conv4_forward_equals_functional_reference(conv_bias):
    torch.manual_seed(1)
    size = (20, 35)  # odd sides: pooling floors 20->10->5->2->1, 35->17->8->4->2
    m = get_backbone("conv4", in_channels=3, image_size=size, hidden=5, out_channels=6, conv_bias=conv_bias)
    if conv_bias:
        with torch.no_grad():
            for mod in m.modules():
                if isinstance(mod, torch.nn.Conv2d):
                    mod.bias.normal_(0.0, 0.2)
    _randomise_bn(m, 2)
    m = m.double().eval()
    x = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sd = m.state_dict()
    assert ("encoder.0.bias" in sd) == conv_bias
    with torch.no_grad():
        y = m(x)
    ref = conv4_reference(x, sd)
    assert ref.shape == (3, 6 * 1 * 2) and ref.abs().max() > 0.1  # not trivially zero
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("avg_pool", [False, True])
def test_resnet12_forward_equals_functional_reference(avg_pool):
    torch.manual_seed(4)
    size = (16, 33)  # 16->8->4->2->1, 33->16->8->4->2
    widths = (4, 6, 8, 10)
    m = get_backbone("resnet12", in_channels=3, image_size=size, widths=widths, avg_pool=avg_pool)
    m.set_drop_step(10**6)  # regularisers at full rate: eval mode must still switch them off
    _randomise_bn(m, 5)
    m = m.double().eval()
    x = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    sd = m.state_dict()
    with torch.no_grad():
        y = m(x)
    ref = resnet12_reference(x, sd, avg_pool)
    assert ref.shape == (3, 10 if avg_pool else 10 * 2) and ref.abs().max() > 0.1
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)


def test_strided_conv4_is_finn_et_al_omniglot_network_written_out():
    """``strided=True``: four ``conv3x3(stride 2, padding 1) + BN + ReLU`` blocks, no max-pooling, the
    maps averaged over space (Finn et al.'s Omniglot network; learn2learn's ``OmniglotCNN``), against
    the same computation with ``F.conv2d`` / ``F.batch_norm`` written out; 28 -> 14 -> 7 -> 4 -> 2."""
    torch.manual_seed(0)
    m = get_backbone("conv4", in_channels=1, image_size=28, conv_bias=True, strided=True).train()
    assert m.out_dim == m.feature_dim(84) == 64
    x = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    m = m.double()
    convs = [c for c in m.encoder if isinstance(c, torch.nn.Conv2d)]
    bns = [b for b in m.encoder if isinstance(b, torch.nn.BatchNorm2d)]
    assert not any(isinstance(p, torch.nn.MaxPool2d) for p in m.encoder)
    h, widths = x, []
    for c, b in zip(convs, bns):
        h = torch.nn.functional.conv2d(h, c.weight, c.bias, stride=2, padding=1)
        mean, var = h.mean(dim=(0, 2, 3), keepdim=True), h.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        h = torch.relu((h - mean) / torch.sqrt(var + b.eps) * b.weight[:, None, None] + b.bias[:, None, None])
        widths.append(h.shape[-1])
    assert widths == [14, 7, 4, 2]
    torch.testing.assert_close(m(x), h.mean(dim=(2, 3)), rtol=1e-12, atol=1e-12)
    # the same weights as the max-pooled network: only the downsampling differs
    assert n_params(m) == n_params(get_backbone("conv4", in_channels=1, image_size=28, conv_bias=True))
    with pytest.raises(ValueError, match="strided must be true or false"):
        get_backbone("conv4", strided="yes")
