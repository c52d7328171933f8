"""Export a fitted :class:`~fewshot_sla.predict.FewShotClassifier` as one standalone module.

Queries ``float32 [B, C, S, S]`` (:func:`~fewshot_sla.predict.preprocess_images`) -> the M transforms
(aggregated) -> backbone -> the head fitted to the support set (protonet: distances to the
prototypes; ridge, r2d2, svm: ``f W + b``, read off the head and checked on the support) times the
logit scale -> the inference's N-way logits -> probabilities ``[B, N]``. Formats: ``torchscript``,
``onnx`` (needs ``pip install onnx onnxscript``), ``backbone`` (the embedding network alone);
``pixels=True``: raw ``uint8 [B, H, W(, C)]`` pixels of any size (TorchScript only).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ..data.spec import PixelPreprocess
from ..heads.protonet import ProtoNetHead, class_prototypes
from ..inferences import head_logits
from ..transforms import TransformSet
from .classifier import FewShotClassifier

__all__ = ["FORMATS", "FittedPrototypes", "FittedLinear", "ExportedClassifier", "fitted_head", "exported_module",
           "export_classifier", "metadata"]

FORMATS = ("torchscript", "onnx", "backbone")


class FittedPrototypes(nn.Module):
    """``f [R, D] -> scale * -||f - c_k||^2 [R, K]`` (divided by D when ``normalize``), computed in
    float64 as the classifier's head (float32 logits out)."""

    def __init__(self, prototypes: Tensor, scale: float, normalize: bool) -> None:
        super().__init__()
        self.register_buffer("prototypes", prototypes.detach().double().clone())
        self.scale, self.normalize = float(scale), bool(normalize)

    def forward(self, f: Tensor) -> Tensor:
        c, f = self.prototypes, f.double()
        d = f.pow(2).sum(-1, keepdim=True) - 2.0 * f @ c.t() + c.pow(2).sum(-1)[None]
        if self.normalize:
            d = d / f.shape[-1]
        return (-self.scale * d).float()


class FittedLinear(nn.Module):
    """``f [R, D] -> scale * (f W + b) [R, K]``, computed in float64 (float32 logits out)."""

    def __init__(self, weight: Tensor, bias: Tensor, scale: float) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().double().clone())
        self.register_buffer("bias", bias.detach().double().clone())
        self.scale = float(scale)

    def forward(self, f: Tensor) -> Tensor:
        return (self.scale * (f.double() @ self.weight + self.bias)).float()


@torch.no_grad()
def fitted_head(clf: FewShotClassifier, chunk: int = 1024) -> nn.Module:
    """The head of a fitted classifier with its support set baked in; ``ValueError`` for a head
    whose logits are not linear in the query features (and not ProtoNet's distances)."""
    clf._check_fitted()
    if clf._adapted is not None:  # a gradient-based learner: its adapted linear classifier
        w, b = clf._adapted
        return FittedLinear(w.t(), b, 1.0)
    fs, ys = clf._support_features, clf._support_labels  # [1, S', D], [1, S']
    k = clf.n_way * clf.M
    if isinstance(clf.head, ProtoNetHead):
        return FittedPrototypes(class_prototypes(fs, ys, k)[0], clf.scale, clf.head.normalize)
    d = fs.shape[-1]

    def head(q: Tensor) -> Tensor:
        return clf.head(q[None], fs, ys, k, **clf.head_kwargs)[0]

    bias = head(fs.new_zeros(1, d))[0]
    eye = torch.eye(d, dtype=fs.dtype, device=fs.device)
    weight = torch.cat([head(e) - bias for e in eye.split(chunk)])  # [D, K]
    want, got = head(fs[0]), fs[0] @ weight + bias
    if not torch.allclose(got, want, rtol=1e-6, atol=1e-6 * float(want.abs().max().clamp_min(1.0))):
        raise ValueError(f"head {clf.head_name!r} is not linear in the query features: it cannot be exported; "
                         "export supports protonet, ridge, r2d2 and svm")
    return FittedLinear(weight, bias, clf.scale)


class ExportedClassifier(nn.Module):
    """Preprocessed images ``[B, C, S, S]`` -> class probabilities ``[B, N]`` (module docs)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, transforms: TransformSet, inference: str) -> None:
        super().__init__()
        self.backbone, self.head, self.transforms, self.inference = backbone, head, transforms, inference
        self.M = transforms.M if inference in ("single", "aggregated") else 1

    def forward(self, x: Tensor) -> Tensor:
        if self.inference == "aggregated":
            x = self.transforms(x)
        logits = self.head(self.backbone(x))  # [B*M or B, N*M]
        return torch.softmax(head_logits(self.inference, logits, self.M), dim=-1)


def exported_module(clf: FewShotClassifier) -> ExportedClassifier:
    """The fitted classifier as one module on the CPU, in eval mode (not yet traced)."""
    head = fitted_head(clf)
    mod = ExportedClassifier(copy.deepcopy(clf.backbone), head, clf.transforms, clf.inference)
    return mod.cpu().eval()


def metadata(clf: FewShotClassifier, pixels: bool = False) -> dict[str, str]:
    """What ships with an export: ``class_names`` and ``spec`` (JSON strings)."""
    spec = dataclasses.asdict(clf.spec)
    spec.update(inference=clf.inference, head=clf.head_name, checkpoint=clf.loaded.path,
                input="uint8 [B, H, W] or [B, H, W, C] raw pixels, any size" if pixels else
                "float32 [B, C, S, S]: preprocessed images (fewshot_sla.predict.preprocess_images)")
    return {"class_names": json.dumps([str(c) for c in clf.classes_]), "spec": json.dumps(spec)}


class _WithNames(nn.Module):
    """A traced module with ``class_names`` and ``spec`` (JSON) as TorchScript attributes, optionally
    behind :class:`PixelPreprocess`."""

    def __init__(self, inner: nn.Module, class_names: list[str], spec: str, pre: nn.Module | None = None) -> None:
        super().__init__()
        self.inner, self.class_names, self.spec = inner, class_names, spec
        self.pre = pre if pre is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(self.pre(x))


def _onnx_modules() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError(f"--format onnx needs {e.name}: pip install onnx onnxscript (and onnxruntime to run "
                          "the file)") from None


def export_classifier(clf: FewShotClassifier, path: str | Path, fmt: str = "torchscript",
                      pixels: bool = False) -> Path:
    """Write the fitted classifier (or, ``fmt="backbone"``, its embedding network) to ``path``;
    ``pixels``: the module takes raw uint8 pixels (TorchScript only). Exporter warnings are silenced."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        logger = logging.getLogger("torch.onnx")
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            return _export(clf, path, fmt, pixels)
        finally:
            logger.setLevel(level)


def _export(clf: FewShotClassifier, path: str | Path, fmt: str, pixels: bool) -> Path:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if pixels and fmt == "onnx":
        raise ValueError("--input pixels is available for TorchScript exports only; export ONNX with the default "
                         "--input tensors and preprocess with fewshot_sla.predict.preprocess_images")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = metadata(clf, pixels)
    x = torch.randn(2, clf.spec.channels, clf.spec.image_size, clf.spec.image_size)
    pre = PixelPreprocess(clf.spec) if pixels else None
    names = json.loads(meta["class_names"])
    if fmt in ("backbone", "torchscript"):
        mod = copy.deepcopy(clf.backbone).cpu().eval() if fmt == "backbone" else exported_module(clf)
        traced = torch.jit.trace(mod, x, check_trace=False)
        torch.jit.save(torch.jit.script(_WithNames(traced, names, meta["spec"], pre)), str(path))
        return path
    _onnx_modules()
    import onnx

    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(exported_module(clf), (x,), str(path), input_names=["images"], output_names=["probabilities"],
                      dynamic_shapes={"x": {0: batch}}, dynamo=True, external_data=False, verbose=False)
    model = onnx.load(str(path))
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path
