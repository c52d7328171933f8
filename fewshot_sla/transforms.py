"""Label-changing input transform sets of SLA (names as in the SLA authors' code): ``[B, C, H, W] ->
[B*M, C, H, W]``, row ``b*M + j`` = ``t_j(x_b)`` (identity first): rotations and/or channel orders;
composed sets index ``j = j_rot * M_color + j_color``.

Every set here is a permutation of pixels (quarter turns, channel orders), so the M views of a
batch are one gather: an index map ``[M*C*H*W]`` into the flattened image, built once per image
shape and device by running the per-view reference expansion (:meth:`TransformSet.stack_views`)
on the pixel positions themselves, then applied to all images with one ``index_select``.
Both paths give bit-identical tensors (``tests/test_transforms.py``); the reference path is kept
for tracing/export and for inputs that are not a plain 4-d batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from .registry import Registry

__all__ = ["TransformSet", "get_transform_set", "list_transform_sets", "TRANSFORM_SETS"]

# Channel orders, as index lists into (R, G, B).
COLOR_PERM6: tuple[tuple[int, int, int], ...] = (
    (0, 1, 2),  # RGB
    (0, 2, 1),  # RBG
    (1, 0, 2),  # GRB
    (1, 2, 0),  # GBR
    (2, 0, 1),  # BRG
    (2, 1, 0),  # BGR
)
COLOR_PERM3: tuple[tuple[int, int, int], ...] = ((0, 1, 2), (1, 2, 0), (2, 0, 1))  # RGB, GBR, BRG

#: Registry: name -> (quarter turns k, channel orders or None).
TRANSFORM_SETS: Registry = Registry("transform set")
TRANSFORM_SETS.update({"none": ((0,), None), "rotation": ((0, 1, 2, 3), None), "rotation2": ((0, 2), None),
                       "color_perm": ((0,), COLOR_PERM6), "color_perm3": ((0,), COLOR_PERM3),
                       "rot_color_perm6": ((0, 2), COLOR_PERM3), "rot_color_perm12": ((0, 1, 2, 3), COLOR_PERM3),
                       "rot_color_perm24": ((0, 1, 2, 3), COLOR_PERM6)})


@dataclass(frozen=True)
class TransformSet:
    """M label-changing transforms, identity first: ``x [B, C, H, W] -> [B*M, C, H, W]``."""

    name: str
    rotations: tuple[int, ...]
    color_perms: tuple[tuple[int, int, int], ...] | None = None

    @property
    def M(self) -> int:
        return len(self.rotations) * (len(self.color_perms) if self.color_perms else 1)

    def check_input(self, channels: int, height: int | None = None, width: int | None = None) -> None:
        """Raise ``ValueError`` when inputs of this shape cannot be transformed by this set."""
        if self.color_perms is not None and channels != 3:
            raise ValueError(f"transform set '{self.name}' permutes colour channels and needs 3-channel (RGB) "
                             f"images, got {channels} channel(s); use 'rotation' or 'rotation2' for grayscale "
                             "data such as Omniglot")
        odd = any(k % 2 for k in self.rotations)
        if odd and height is not None and width is not None and height != width:
            raise ValueError(f"transform set '{self.name}' rotates by 90 degrees and needs square images, "
                             f"got {height}x{width}; resize or crop to a square first")

    @property
    def is_pixel_permutation(self) -> bool:
        """Whether every view only moves pixels (quarter turns and channel orders): then the
        expansion is one gather (:meth:`pixel_index`)."""
        return all(k in (0, 1, 2, 3) for k in self.rotations) and all(
            sorted(p) == [0, 1, 2] for p in (self.color_perms or ()))

    def pixel_index(self, channels: int, height: int, width: int,
                    device: torch.device | str = "cpu") -> torch.Tensor:
        """``int64 [M*C*H*W]``: view ``j`` of a flattened image ``v`` is ``v[idx[j*CHW:(j+1)*CHW]]``
        (cached per shape and device)."""
        if not self.is_pixel_permutation:
            raise ValueError(f"transform set '{self.name}' is not a permutation of pixels")
        self.check_input(channels, height, width)
        return _pixel_index(self.rotations, self.color_perms, int(channels), int(height), int(width),
                            torch.device(device))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected a batch [B, C, H, W], got a tensor of shape {tuple(x.shape)}")
        b, c, h, w = x.shape
        self.check_input(c, h, w)
        if self.M == 1:
            return x
        if not self.is_pixel_permutation or _tracing():
            return self.stack_views(x)
        idx = _pixel_index(self.rotations, self.color_perms, c, h, w, x.device)
        out = x.reshape(b, c * h * w).index_select(1, idx).reshape(b * self.M, c, h, w)
        if x.is_contiguous(memory_format=torch.channels_last):
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def stack_views(self, x: torch.Tensor) -> torch.Tensor:
        """The reference expansion, view by view (``rot90`` and channel stacking); what
        ``__call__`` computes, kept for tracing and as the definition of :meth:`pixel_index`."""
        b, c, h, w = x.shape
        self.check_input(c, h, w)
        if self.M == 1:
            return x
        rotated = [torch.rot90(x, k, dims=(2, 3)) if k else x for k in self.rotations]
        if self.color_perms is None:
            # M views [B, C, H, W] -> [B, M, C, H, W] -> [B*M, C, H, W]: row b*M + j = t_j(x_b)
            out = torch.stack(rotated, dim=1)
        else:
            # Channel c' of view (k, p) is channel p[c'] of rotation k, stacked in one copy (no
            # index tensor: that would be one blocking host-to-device copy per view on CUDA).
            planes = [r.unbind(1) for r in rotated]
            out = torch.stack([ch[i] for ch in planes for p in self.color_perms for i in p], dim=1)
        out = out.reshape(b * self.M, c, h, w)
        if x.is_contiguous(memory_format=torch.channels_last):
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def __repr__(self) -> str:
        return f"TransformSet(name={self.name!r}, M={self.M})"


def _tracing() -> bool:
    """Inside ``torch.jit`` tracing/scripting (also the TorchScript ONNX exporter) or ``torch.export``
    (the dynamo ONNX exporter): there the view-by-view path is used, so no shape-specific index
    constant is baked into the graph."""
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(exporting is not None and exporting())


@lru_cache(maxsize=64)
def _pixel_index(rotations: tuple[int, ...], color_perms: tuple[tuple[int, int, int], ...] | None, c: int, h: int,
                 w: int, device: torch.device) -> torch.Tensor:
    """Index map of :meth:`TransformSet.pixel_index`: the reference expansion of the pixel positions."""
    positions = torch.arange(c * h * w, dtype=torch.int64).reshape(1, c, h, w)
    ref = TransformSet("index", rotations, color_perms).stack_views(positions)
    return ref.reshape(-1).to(device)


def list_transform_sets() -> list[str]:
    """Names accepted by :func:`get_transform_set`."""
    return list(TRANSFORM_SETS)


def get_transform_set(name: str) -> TransformSet:
    """Return the transform set called ``name`` (see the module docstring)."""
    if isinstance(name, TransformSet):
        return name
    key = TRANSFORM_SETS.canonical(str(name).replace("-", "_"))
    rotations, perms = TRANSFORM_SETS[key]
    return TransformSet(key, rotations, perms)
