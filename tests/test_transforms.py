"""Transform sets against torch.rot90 and explicit channel index lists."""

import pytest
import torch

from fewshot_sla.transforms import get_transform_set, list_transform_sets

RGB, RBG, GRB, GBR, BRG, BGR = [0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]

# Expected (quarter turns, channel order) of t_j for each set, written out by hand.
EXPECTED = {
    "none": [(0, RGB)],
    "rotation": [(0, RGB), (1, RGB), (2, RGB), (3, RGB)],
    "rotation2": [(0, RGB), (2, RGB)],
    "color_perm": [(0, p) for p in (RGB, RBG, GRB, GBR, BRG, BGR)],
    "color_perm3": [(0, RGB), (0, GBR), (0, BRG)],
    "rot_color_perm6": [(k, p) for k in (0, 2) for p in (RGB, GBR, BRG)],
    "rot_color_perm12": [(k, p) for k in (0, 1, 2, 3) for p in (RGB, GBR, BRG)],
    "rot_color_perm24": [(k, p) for k in (0, 1, 2, 3) for p in (RGB, RBG, GRB, GBR, BRG, BGR)],
}


def test_every_documented_set_is_registered():
    assert set(list_transform_sets()) == set(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_rows_match_explicit_transforms(name):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 5, 5, generator=g)
    t = get_transform_set(name)
    assert t.M == len(EXPECTED[name])
    out = t(x)
    assert out.shape == (3 * t.M, 3, 5, 5)
    for b in range(3):
        for j, (k, perm) in enumerate(EXPECTED[name]):
            # rotate first, then permute channels
            ref = torch.rot90(x[b : b + 1], k, dims=(2, 3))[:, perm]
            assert torch.equal(out[b * t.M + j], ref[0]), (name, b, j)


def test_identity_first_and_rotation_is_exact_on_uint8():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4)
    out = get_transform_set("rotation")(x)
    assert out.dtype == torch.uint8
    assert torch.equal(out[0], x[0]) and torch.equal(out[4], x[1])
    # 90-degree counter-clockwise turn by hand: new[i][j] = old[j][W-1-i]
    old = x[0, 0]
    hand = torch.stack([torch.stack([old[j, 3 - i] for j in range(4)]) for i in range(4)])
    assert torch.equal(out[1, 0], hand)


def test_grayscale_color_perm_is_a_clear_error():
    with pytest.raises(ValueError, match="3-channel"):
        get_transform_set("color_perm")(torch.zeros(2, 1, 4, 4))
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    out = get_transform_set("rotation")(x)  # grayscale is fine for rotations
    assert out.shape == (8, 1, 4, 4)
    for b in range(2):
        for k in range(4):
            assert torch.equal(out[4 * b + k], torch.rot90(x[b : b + 1], k, (2, 3))[0]), (b, k)


def test_non_square_rotation_and_unknown_name():
    with pytest.raises(ValueError, match="square"):
        get_transform_set("rotation")(torch.zeros(1, 3, 4, 6))
    x = torch.randn(2, 3, 4, 6, generator=torch.Generator().manual_seed(2))
    out = get_transform_set("rotation2")(x)  # 0 and 180 degrees keep a non-square shape
    assert out.shape == (4, 3, 4, 6)
    for b in range(2):
        assert torch.equal(out[2 * b], x[b])
        assert torch.equal(out[2 * b + 1], x[b].flip(1, 2))  # 180 deg = flip both spatial axes
        assert torch.equal(out[2 * b + 1, 0, 0, 0], x[b, 0, 3, 5])  # corner by hand
    with pytest.raises(ValueError, match="choose one of"):
        get_transform_set("rotate")


def test_channels_last_preserved_and_values_equal():
    x = torch.randn(2, 3, 6, 6)
    t = get_transform_set("rot_color_perm12")
    y = t(x.contiguous(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, t(x))


def _list_indexed(t, x):
    """The previous implementation (one Python-list channel index per colour view), kept as the
    reference the current one must match bit for bit."""
    b, c, h, w = x.shape
    views = []
    for k in t.rotations:
        r = torch.rot90(x, k, dims=(2, 3)) if k else x
        if t.color_perms is None:
            views.append(r)
        else:
            views.extend(r[:, list(p)] for p in t.color_perms)
    out = torch.stack(views, dim=1).reshape(b * t.M, c, h, w)
    if x.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


@pytest.mark.parametrize("name", list(EXPECTED))
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_equals_python_list_channel_indexing_bit_for_bit(name, dtype, channels_last):
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(4, 3, 6, 6, generator=g) * 255).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    t = get_transform_set(name)
    got, want = t(x), _list_indexed(t, x)
    assert got.dtype == want.dtype and got.stride() == want.stride()
    assert torch.equal(got, want)


def test_colour_permutations_build_no_index_tensor_per_view():
    """A Python-list index is turned into an index tensor on the host and copied to the input's
    device (a blocking copy per colour view on CUDA). The permutations must not index: every op
    they dispatch (seen on a meta tensor) takes only tensors already on the input's device."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            devices = {str(a.device) for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)}
            self.ops.append((func.overloadpacket.__name__, devices))
            return func(*args, **kwargs)

    x = torch.empty(2, 3, 4, 4, device="meta")
    t = get_transform_set("rot_color_perm24")
    with Record() as rec:
        out = t.stack_views(x)  # the view-by-view path (used when tracing)
    assert out.device.type == "meta" and out.shape == (48, 3, 4, 4)
    names = [n for n, _ in rec.ops]
    assert not [n for n in names if n.startswith("index")], names  # no list index (old: 24 aten.index)
    assert all(devs <= {"meta"} for _, devs in rec.ops), rec.ops  # no host tensor enters
    # the gather path: the index map is built and sent once per shape and device; a later call
    # dispatches one index_select whose every tensor is already on the input's device
    t(x)
    with Record() as rec:
        out = t(x)
    assert out.device.type == "meta" and out.shape == (48, 3, 4, 4)
    assert [n for n, _ in rec.ops if n.startswith("index")] == ["index_select"], rec.ops
    assert all(devs <= {"meta"} for _, devs in rec.ops), rec.ops


_SQUARE_ONLY = {n for n, views in EXPECTED.items() if any(k % 2 for k, _ in views)}


@pytest.mark.parametrize("name,shape", [(n, s) for n in EXPECTED if n != "none"
                                        for s in [(5, 3, 7, 7), (2, 3, 84, 84), (3, 3, 4, 6)]
                                        if s[2] == s[3] or n not in _SQUARE_ONLY])
def test_gather_expansion_equals_view_by_view_reference(name, shape):
    """The one-gather expansion (index map over flattened pixels) is bit-identical to the
    rot90/channel-stacking reference, and to the hand-written list reference, for every set."""
    t = get_transform_set(name)
    assert t.is_pixel_permutation
    b, c, h, w = shape
    g = torch.Generator().manual_seed(11)
    for x in (torch.randn(shape, generator=g), torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)):
        got = t(x)
        assert torch.equal(got, t.stack_views(x))
        assert torch.equal(got, _list_indexed(t, x))
        idx = t.pixel_index(c, h, w)
        assert sorted(idx[: c * h * w].tolist()) == list(range(c * h * w))  # each view is a permutation
        assert torch.equal(idx[: c * h * w], torch.arange(c * h * w))  # identity first


def test_grayscale_gather_expansion_equals_rot90():
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    t = get_transform_set("rotation")
    ref = torch.stack([torch.rot90(x, k, (2, 3)) for k in range(4)], dim=1).reshape(24, 1, 28, 28)
    assert torch.equal(t(x), ref)
