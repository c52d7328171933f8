"""Host-to-device copies of the data pipeline (augmentation, episode collation) and their
results against the previous one-copy-per-draw code, kept here verbatim as the reference.

No GPU is needed: copies are counted with a ``TorchDispatchMode`` while the pipeline runs on
``meta`` tensors (a stand-in device: every CPU -> meta ``_to_copy``/``copy_`` is what a CPU ->
CUDA copy would be), and the pinned, non-blocking path is checked with mocked CUDA calls.
"""

from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from fewshot_sla.data import augment as aug
from fewshot_sla.data import get_augmentation


# ------------------------------------------------------------------------ the previous code, verbatim
def old_rand(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``n`` uniform [0, 1) numbers drawn on the generator's device, moved to ``device``."""
    gdev = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(n, generator=generator, device=gdev).to(device)


def old_randint(high: int, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gdev = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(0, high, (n,), generator=generator, device=gdev).to(device)


def old_random_crop(
    x: torch.Tensor, size: int, padding: int = 0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-image random ``size x size`` crop of the zero-padded batch (torchvision
    ``RandomCrop(size, padding)``), done with two batched gathers (rows, then columns).

    ``x``: ``[B, C, H, W]`` -> ``[B, C, size, size]``; offsets uniform over all positions
    (row offsets for all images are drawn first, then column offsets).
    """
    b, c, h, w = x.shape
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
    hp, wp = h + 2 * padding, w + 2 * padding
    if size > hp or size > wp:
        raise ValueError(f"crop size {size} exceeds the padded image {hp}x{wp}")
    dy = old_randint(hp - size + 1, b, generator, x.device)
    dx = old_randint(wp - size + 1, b, generator, x.device)
    ar = torch.arange(size, device=x.device)
    rows = (dy[:, None] + ar)[:, None, :, None].expand(b, c, size, wp)
    x = torch.gather(x, 2, rows)
    cols = (dx[:, None] + ar)[:, None, None, :].expand(b, c, size, size)
    return torch.gather(x, 3, cols)


def old_random_hflip(x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image left-right with probability ``p``."""
    flip = old_rand(x.shape[0], generator, x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def old_color_jitter(
    x: torch.Tensor,
    brightness: float = 0.0,
    contrast: float = 0.0,
    saturation: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """torchvision ``ColorJitter(brightness, contrast, saturation)`` on a float batch in
    ``[0, 1]``: per image, random factors and a random order of the three adjustments.

    All three are blends ``clamp(f * x + (1 - f) * d(x))`` with ``d`` = 0 (brightness), the
    image's mean grey level (contrast) or its grey image (saturation). Each of the three
    positions of the order is therefore one batched blend whose ``f`` and ``d`` are picked
    per image; a disabled adjustment has ``f = 1`` (the identity).

    Draws: factors for brightness, contrast, saturation (``[B]`` each), then the order keys.
    """
    b = x.shape[0]
    factors = []
    for s in (brightness, contrast, saturation):
        lo, hi = max(0.0, 1.0 - s), 1.0 + s
        factors.append(lo + (hi - lo) * old_rand(b, generator, x.device))
    factors = torch.stack(factors, dim=1).to(x.dtype)  # [B, 3]
    gdev = generator.device if generator is not None else torch.device("cpu")
    order = torch.argsort(torch.rand(b, 3, generator=generator, device=gdev), dim=1).to(x.device)
    for pos in range(3):
        k = order[:, pos]
        f = factors.gather(1, k[:, None]).view(-1, 1, 1, 1)
        grey = aug.grayscale(x)
        mean = grey.mean(dim=(1, 2, 3), keepdim=True)
        kk = k.view(-1, 1, 1, 1)
        other = torch.where(kk == 2, grey, torch.where(kk == 1, mean, torch.zeros_like(mean)))
        x = (f * x + (1.0 - f) * other).clamp_(0.0, 1.0)
    return x


def old_normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    if m.shape[1] != x.shape[1]:
        raise ValueError(f"mean/std have {m.shape[1]} channels, images have {x.shape[1]}")
    return (x - m) / s




def old_batch_augment(a: aug.BatchAugment, x: torch.Tensor, generator: torch.Generator | None = None):
    """The previous ``BatchAugment.__call__``."""
    c = a.config
    x = aug.to_float(x)
    if c.crop is not None:
        x = old_random_crop(x, c.crop, c.padding, generator)
    if c.brightness or c.contrast or c.saturation:
        x = old_color_jitter(x, c.brightness, c.contrast, c.saturation, generator)
    if c.flip:
        x = old_random_hflip(x, 0.5, generator)
    if c.mean is not None and c.std is not None:
        x = old_normalize(x, c.mean, c.std)
    return x


# ------------------------------------------------------------------------ counting copies
class CountCopies(TorchDispatchMode):
    """Records every copy of a tensor from the CPU to another device (``_to_copy``, ``copy_``)
    and the ``non_blocking`` flag it was asked with."""

    def __init__(self):
        super().__init__()
        self.copies: list[bool] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        if name in ("_to_copy", "copy_"):
            src = args[1] if name == "copy_" else args[0]
            dst = args[0] if name == "copy_" else out
            if src.device.type == "cpu" and dst.device.type != "cpu":
                self.copies.append(bool(kwargs.get("non_blocking", args[2] if len(args) > 2 else False)))
        return out


def _images(b=6, c=3, s=12, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, s, s), dtype=torch.uint8, generator=g).to(device)


RECIPES = [("cifar-fs", "metaoptnet"), ("miniimagenet", "metaoptnet"), ("cifar10", "sla"),
           ("cifar10", "standard"), ("omniglot", "standard"), ("cifar-fs", "eval")]


# ------------------------------------------------------------------------ augmentation
@pytest.mark.parametrize("dataset,recipe", RECIPES)
@pytest.mark.parametrize("floating", [False, True])
def test_batch_augment_equals_the_one_copy_per_draw_code_bit_for_bit(dataset, recipe, floating):
    a = get_augmentation(dataset, recipe, image_size=12)
    x = _images(c=1 if dataset == "omniglot" else 3, seed=2)
    if floating:
        x = x.float() / 255
    for seed in range(3):
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        got, want = a(x, g1), old_batch_augment(a, x, g2)
        assert got.dtype == want.dtype == torch.float32
        assert torch.equal(got, want), (dataset, recipe, seed)
        assert torch.equal(torch.rand(5, generator=g1), torch.rand(5, generator=g2))  # same draws consumed
    torch.manual_seed(7)  # without a generator: the global CPU RNG, consumed the same way
    got = a(x)
    after = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(got, old_batch_augment(a, x)) and torch.equal(torch.rand(3), after)


def test_public_steps_equal_the_previous_code_bit_for_bit():
    x = _images(b=9, seed=4).float() / 255
    for seed in range(3):
        g = lambda s=seed: torch.Generator().manual_seed(s)  # noqa: E731
        assert torch.equal(aug.random_crop(x, 10, 3, g()), old_random_crop(x, 10, 3, g()))
        assert torch.equal(aug.random_hflip(x, 0.3, g()), old_random_hflip(x, 0.3, g()))
        assert torch.equal(aug.color_jitter(x, 0.4, 0.0, 0.7, g()), old_color_jitter(x, 0.4, 0.0, 0.7, g()))
        assert torch.equal(aug.color_jitter(x.double(), 0.4, 0.4, 0.4, g()),
                           old_color_jitter(x.double(), 0.4, 0.4, 0.4, g()))


def test_a_batch_augment_call_is_one_non_blocking_copy():
    """MetaOptNet's recipe draws 7 tensors (crop rows and columns, 3 jitter factors, the jitter
    order, flips): previously 7 blocking copies, now one. Normalisation constants are made once
    per device."""
    a = get_augmentation("cifar-fs", "metaoptnet", image_size=12)
    x = _images(device="meta")
    for _ in range(2):
        with CountCopies() as c:
            out = a(x, torch.Generator().manual_seed(0))
        assert out.device.type == "meta" and out.shape == (6, 3, 12, 12)
        assert c.copies == [True]  # one copy, non_blocking
    with CountCopies() as c:
        get_augmentation("cifar-fs", "eval")(x)
    assert len(c.copies) <= 1  # no random numbers: at most the constants' first copy
    with CountCopies() as c:
        aug.color_jitter(x.float(), 0.4, 0.4, 0.4, torch.Generator().manual_seed(0))
    assert c.copies == [True]  # was 4


def test_draws_reach_a_gpu_from_one_pinned_buffer_without_blocking(monkeypatch):
    """``_send`` to a CUDA device (mocked): one pinned buffer, one ``non_blocking`` copy."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    pinned, moves = [], []
    empty, to = torch.empty, torch.Tensor.to

    def fake_empty(*args, pin_memory=False, **kwargs):
        pinned.append(pin_memory)
        return empty(*args, **kwargs)

    def fake_to(self, *args, **kwargs):
        target = args[0] if args else kwargs.get("device")
        if isinstance(target, torch.device) and target.type == "cuda":
            moves.append((self.data_ptr(), kwargs.get("non_blocking", False)))
            return self.clone()  # stands in for the device copy
        return to(self, *args, **kwargs)

    monkeypatch.setattr(torch, "empty", fake_empty)
    monkeypatch.setattr(torch.Tensor, "to", fake_to)
    g = torch.Generator().manual_seed(0)
    parts = [torch.randint(0, 9, (4,), generator=g), torch.rand(3, 2, generator=g)]
    out = aug._send(parts, torch.device("cuda", 1))
    assert pinned == [True] and len(moves) == 1 and moves[0][1] is True
    assert torch.equal(out[0], parts[0].float()) and torch.equal(out[1], parts[1].flatten())


# ------------------------------------------------------------------------ episode collation
def old_collate(images, episodes, n_way, k_shot, n_query, device):
    """The previous collate_episodes followed by EpisodeBatch.to(device): one copy per tensor."""
    size = n_way * (k_shot + n_query)
    idx = torch.as_tensor([list(e) for e in episodes], dtype=torch.long)
    t = idx.shape[0]
    x = images.index_select(0, idx.flatten().to(images.device)).reshape(t, size, *images.shape[1:])
    s = n_way * k_shot
    labels = torch.arange(n_way).repeat_interleave
    move = lambda v: v.to(device)  # noqa: E731
    return (move(x[:, :s]), move(labels(k_shot).expand(t, -1).contiguous()), move(x[:, s:]),
            move(labels(n_query).expand(t, -1).contiguous()))


def _episodes(images_labels, n_way=3, k_shot=2, n_query=3, tasks=4):
    from fewshot_sla.episodes import EpisodeSampler

    sampler = EpisodeSampler(images_labels, n_way, k_shot, n_query, tasks, seed=1)
    return [sampler.episode(i) for i in range(tasks)]


def test_collated_batches_equal_the_previous_code():
    from fewshot_sla.episodes import collate_episodes

    labels = torch.arange(8).repeat_interleave(6)
    images = _images(b=48, c=3, s=5, seed=3)
    eps = _episodes(labels)
    batch = collate_episodes(images, eps, 3, 2, 3).to("cpu", non_blocking=True)
    want = old_collate(images, eps, 3, 2, 3, "cpu")
    got = (batch.support, batch.support_labels, batch.query, batch.query_labels)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and torch.equal(g, w)
    assert batch.support_labels.is_contiguous() and batch.query_labels.is_contiguous()


def test_tensors_sent_together_keep_dtypes_shapes_and_values():
    from fewshot_sla.episodes.batch import _send_together

    g = torch.Generator().manual_seed(0)
    ts = [torch.randint(0, 256, (3, 5, 2), dtype=torch.uint8, generator=g), torch.randint(-9, 9, (7,), generator=g),
          torch.rand(2, 3, generator=g), torch.rand(4, 6, generator=g)[:, ::2],  # a non-contiguous view
          torch.rand(5, generator=g).half(), torch.rand(3, generator=g) > 0.5, torch.zeros(0, 4),
          torch.rand(3, generator=g).double()]
    out = _send_together(ts, "cpu")  # packed, sent (here to the same device) and viewed back
    for a, b in zip(ts, out):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b) and b.is_contiguous()


@pytest.mark.parametrize("data_on_device", [True, False])
def test_loading_an_episode_batch_is_one_non_blocking_copy(data_on_device):
    """Indices of the episodes (images on the device) or the batch (images on the host): one
    copy; the labels are made on the device. Previously 3 and 4 blocking copies."""
    from fewshot_sla.episodes import collate_episodes

    labels = torch.arange(8).repeat_interleave(6)
    images = _images(b=48, c=3, s=5, device="meta" if data_on_device else "cpu")
    eps = _episodes(labels)
    with CountCopies() as c:
        batch = collate_episodes(images, eps, 3, 2, 3).to("meta", non_blocking=True)
    assert c.copies == [True]
    assert {t.device.type for t in (batch.support, batch.support_labels, batch.query, batch.query_labels)} == {"meta"}
    assert batch.support.shape == (4, 6, 3, 5, 5) and batch.query_labels.shape == (4, 9)


def test_an_episode_batch_reaches_a_gpu_from_one_pinned_buffer(monkeypatch):
    from fewshot_sla.episodes.batch import _send_together

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    pinned, moves = [], []
    empty, to = torch.empty, torch.Tensor.to

    def fake_empty(*args, pin_memory=False, **kwargs):
        pinned.append(pin_memory)
        return empty(*args, **kwargs)

    def fake_to(self, *args, **kwargs):
        target = args[0] if args else kwargs.get("device")
        if isinstance(target, torch.device) and target.type == "cuda":
            moves.append(kwargs.get("non_blocking", False))
            return self.clone()  # stands in for the device copy
        return to(self, *args, **kwargs)

    monkeypatch.setattr(torch, "empty", fake_empty)
    monkeypatch.setattr(torch.Tensor, "to", fake_to)
    ts = [_images(b=4), torch.arange(6).view(2, 3)]
    out = _send_together(ts, torch.device("cuda", 0))
    assert pinned == [True] and moves == [True]
    assert all(torch.equal(a, b) for a, b in zip(ts, out))
