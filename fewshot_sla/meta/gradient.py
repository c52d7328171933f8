"""Gradient-based meta-learners on ``torch.func``: MAML, first-order MAML, ANIL and Meta-SGD, with SLA.

Per task the inner loop adapts the *fast* weights ``theta`` to the support set with ``steps``
gradient steps ``theta <- theta - alpha * grad L_support(theta)`` (:func:`torch.func.grad` of a
:func:`torch.func.functional_call`), and the adapted weights score the queries:

- ``maml`` (Finn et al., ICML 2017): the fast weights are the whole network (backbone and N-way
  linear classifier); the meta-gradient goes through the inner loop (second order).
- ``fomaml``: the same with the inner gradients detached (first order).
- ``anil`` (Raghu et al., ICLR 2020): only the linear classifier is adapted, on the features of
  the shared backbone (computed once per task); ``first_order`` detaches its inner gradients.
- ``meta_sgd`` (Li et al., 2017), an option of each: ``alpha`` is a learned tensor of the fast
  weight's shape (initialised to ``inner_lr``), trained by the meta-gradient.

The classifier's initial weights are learned (one row per class, Finn et al.; tests then need the
training's ways) or zero (``classifier_init="zero"``: any number of ways; rows that start equal are
what a learned shared row would give, the softmax being invariant to it).

Modes: ``baseline`` (N-way); ``da`` (every support and query image transformed M times keeps its
label; test time: the untransformed episode); ``sla``: the inner loop adapts an N*M-way classifier
on the expanded support (row ``s*M + j`` = ``t_j(x_s)``, label ``y*M + j``), the outer loss is the
joint cross-entropy of the expanded queries, and at test the adapted network's joint logits give
SLA+SI (``single``) and SLA+AG (``aggregated``: the M views' logits of each query averaged).

BatchNorm (:data:`BN_RULE`): batch statistics of the set being forwarded, in training and at test
(transductive, as MAML's code and learn2learn), no running statistics: every BatchNorm2d of the
backbone becomes a :class:`TaskBatchNorm`. The tasks of a chunk run batched with
:func:`torch.func.vmap` (``task_batching="vmap"``) or one at a time (``"loop"``; ``"auto"``: vmap
on CUDA, the loop on the CPU, where vmap's grouped convolutions are slower); both compute the same
losses and meta-gradients (``tests/test_maml.py``). The loop uses torch's fused batch_norm kernel;
under vmap ``TaskBatchNorm`` computes the statistics with plain tensor operations, because the
double backward of the fused kernel under vmap is wrong in torch 2.13 (it differs from the per-task
loop by ~1e-3 in float64).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from .. import sla
from ..config import ConfigError
from ..episodes import EpisodeBatch, expand_episodes
from ..inferences import INFERENCES
from ..transforms import TransformSet, get_transform_set
from .config import LEARNERS
from .methods import EpisodeOutput, LossSettings, episode_accuracy

__all__ = ["LEARNERS", "BN_RULE", "TaskBatchNorm", "task_batch_norm", "GradientModel", "inner_loop"]

BN_RULE = ("transductive: batch statistics of the set being forwarded (the support in the inner loop, each "
           "task's queries when scored), in training and at test; no running statistics")

Params = dict[str, Tensor]


class TaskBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d that always normalises with the statistics of its input batch and keeps no running
    statistics; same ``weight``/``bias`` as BatchNorm2d. ``fused``: torch's batch_norm kernel (the
    per-task loop), else plain tensor operations (biased variance, as the kernel; under vmap)."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps=eps, affine=True, track_running_stats=False)
        self.fused = True

    def forward(self, x: Tensor) -> Tensor:
        if self.fused:
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = (x - mean).pow(2).mean(dim=(0, 2, 3), keepdim=True)
        y = (x - mean) * torch.rsqrt(var + self.eps)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def task_batch_norm(module: nn.Module) -> nn.Module:
    """``module`` with every ``BatchNorm2d`` replaced by a :class:`TaskBatchNorm` holding its affine weights."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, TaskBatchNorm):
            bn = TaskBatchNorm(child.num_features, child.eps)
            if child.affine:
                bn.weight.data.copy_(child.weight.data)
                bn.bias.data.copy_(child.bias.data)
            setattr(module, name, bn)
        else:
            task_batch_norm(child)
    return module


@contextmanager
def _unfused(model: nn.Module) -> Iterator[None]:
    """Every :class:`TaskBatchNorm` of ``model`` on plain tensor operations (vmap), restored afterwards."""
    bns = [m for m in model.modules() if isinstance(m, TaskBatchNorm)]
    for m in bns:
        m.fused = False
    try:
        yield
    finally:
        for m in bns:
            m.fused = True


def inner_loop(loss_fn: Callable[[Params], Tensor], fast: Params, lrs: Params | float, steps: int,
               first_order: bool) -> Params:
    """``steps`` steps ``theta <- theta - lr * grad loss_fn(theta)`` (``torch.func.grad``); ``lrs``: one
    learning rate, or a tensor per fast weight (Meta-SGD, broadcast against it); ``first_order``
    detaches the inner gradients."""
    for _ in range(steps):
        g = grad(loss_fn)(fast)
        fast = {k: v - (lrs if isinstance(lrs, float) else lrs[k]) * (g[k].detach() if first_order else g[k])
                for k, v in fast.items()}
    return fast


class GradientModel(nn.Module):
    """Backbone ``[B, C, H, W] -> [B, D]`` (:class:`TaskBatchNorm`) + linear classifier adapted per task."""

    episode_independent = False  # features depend on the episode: no feature caching across episodes
    batch_norm_rule = BN_RULE

    def __init__(self, backbone: nn.Module, learner: str = "maml", mode: str = "baseline",
                 transforms: TransformSet | str = "none", n_way: int = 5, inner_lr: float = 0.4, inner_steps: int = 1,
                 inner_steps_test: int = 3, first_order: bool = False, meta_sgd: bool = False,
                 classifier_init: str = "learned", task_batching: str = "auto") -> None:
        super().__init__()
        if learner not in LEARNERS[1:]:
            raise ValueError(f"learner must be one of {', '.join(LEARNERS[1:])}, got {learner!r}")
        if mode not in ("baseline", "da", "sla"):
            raise ConfigError(f"--learner {learner} supports --mode baseline, da or sla, not {mode}")
        self.backbone = task_batch_norm(backbone)
        self.learner, self.mode = learner, mode
        self.transforms = get_transform_set("none" if mode == "baseline" else transforms)
        self.inner_lr, self.inner_steps = float(inner_lr), int(inner_steps)
        self.inner_steps_test = int(inner_steps_test)
        self.first_order = bool(first_order) or learner == "fomaml"
        self.classifier_init, self.task_batching = classifier_init, task_batching
        dim = backbone.out_dim
        self.ways = n_way * (self.M if mode == "sla" else 1)  # classifier rows (learned init)
        self.classifier = nn.Linear(dim, self.ways) if classifier_init == "learned" else None
        if self.classifier is not None:
            nn.init.zeros_(self.classifier.bias)
        self.lrs: nn.ParameterDict | None = None
        if meta_sgd:
            shapes = self._fast_shapes()
            self.lrs = nn.ParameterDict({k.replace(".", "__"): nn.Parameter(torch.full(s, self.inner_lr))
                                         for k, s in shapes.items()})
        self.amp_dtype: torch.dtype | None = None  # set by the trainer; not used (float32 inner loops)
        self.channels_last = False
        self.head_kwargs: dict = {}
        self.inferences: tuple[str, ...] = INFERENCES["meta"][mode]

    @property
    def M(self) -> int:
        return self.transforms.M

    def _fast_shapes(self) -> dict[str, torch.Size]:
        """Shapes of the fast weights (zero-init classifier rows: one, broadcast over the classes)."""
        dim = self.backbone.out_dim
        rows = self.ways if self.classifier is not None else 1
        shapes = {} if self.learner == "anil" else {f"backbone.{k}": p.shape
                                                   for k, p in self.backbone.named_parameters()}
        return {**shapes, "classifier.weight": torch.Size((rows, dim)), "classifier.bias": torch.Size((rows,))}

    # -- the functional network --------------------------------------------------------------
    def _split(self) -> tuple[Params, Params]:
        """(slow, fast) initial weights: ``slow`` are never adapted (ANIL's backbone)."""
        named = dict(self.named_parameters())
        backbone = {k: v for k, v in named.items() if k.startswith("backbone.")}
        head = {k: v for k, v in named.items() if k.startswith("classifier.")}
        if self.learner == "anil":
            return backbone, head
        return {}, {**backbone, **head}

    def _lrs(self) -> Params | float:
        return self.inner_lr if self.lrs is None else {k.replace("__", "."): v for k, v in self.lrs.items()}

    def _features(self, weights: Params, x: Tensor) -> Tensor:
        bb = {k[len("backbone."):]: v for k, v in weights.items() if k.startswith("backbone.")}
        return functional_call(self.backbone, bb, (x,))

    @staticmethod
    def _linear(fast: Params, f: Tensor) -> Tensor:
        return F.linear(f, fast["classifier.weight"], fast["classifier.bias"])

    def _adapt(self, slow: Params, fast: Params, lrs: Params | float, xs: Tensor, ys: Tensor, n_cls: int,
               steps: int) -> Params:
        """Every weight of the network after adapting ``fast`` to one task's support ``(xs, ys)``."""
        if "classifier.weight" not in fast:  # zero init: n_cls equal (zero) rows
            dim = self.backbone.out_dim
            fast = {**fast, "classifier.weight": xs.new_zeros(n_cls, dim), "classifier.bias": xs.new_zeros(n_cls)}
        if self.learner == "anil":  # the backbone is shared: the support's features once
            fs = self._features(slow, xs)

            def support_loss(w: Params) -> Tensor:
                return F.cross_entropy(self._linear(w, fs), ys)
        else:
            def support_loss(w: Params) -> Tensor:
                return F.cross_entropy(self._linear(w, self._features(w, xs)), ys)

        return {**slow, **inner_loop(support_loss, fast, lrs, steps, self.first_order)}

    def _task(self, slow: Params, fast: Params, lrs: Params | float, xs: Tensor, ys: Tensor, xq: Tensor,
              n_cls: int, steps: int) -> Tensor:
        """Query logits ``[Q, n_cls]`` of one task after adapting ``fast`` to ``(xs, ys)``."""
        weights = self._adapt(slow, fast, lrs, xs, ys, n_cls, steps)
        return self._linear(weights, self._features(weights, xq))

    def _check_ways(self, n_cls: int) -> None:
        if self.classifier is not None and n_cls != self.ways:
            per = self.M if self.mode == "sla" else 1
            raise ConfigError(f"this {self.learner} model learned the initial weights of a {self.ways // per}-way "
                              f"classifier (--classifier-init learned), not of a {n_cls // per}-way one; evaluate "
                              f"with --n-way {self.ways // per}, or train with --classifier-init zero (any ways)")

    def adapted_network(self, support: Tensor, labels: Tensor, n_cls: int) -> tuple[nn.Module, Tensor, Tensor]:
        """One support set ``[S, C, H, W]`` (labels in ``[0, n_cls)``) baked in: a copy of the backbone with
        the adapted weights (``inner_steps_test`` steps) and the adapted classifier's weight ``[n_cls, D]``
        and bias ``[n_cls]`` (detached)."""
        self._check_ways(n_cls)
        slow, fast = self._split()
        with torch.enable_grad():
            weights = self._adapt(slow, fast, self._lrs(), support, labels, n_cls, self.inner_steps_test)
        backbone = copy.deepcopy(self.backbone)
        with torch.no_grad():
            for k, p in backbone.named_parameters():
                p.copy_(weights[f"backbone.{k}"])
        backbone.requires_grad_(False)
        return backbone, weights["classifier.weight"].detach(), weights["classifier.bias"].detach()

    def adapt_and_score(self, support: Tensor, support_labels: Tensor, query: Tensor, n_cls: int,
                        steps: int, detach: bool = False) -> Tensor:
        """Query logits ``[T, Q, n_cls]`` of T tasks (support ``[T, S, C, H, W]``, labels ``[T, S]`` in
        ``[0, n_cls)``, query ``[T, Q, C, H, W]``), each adapted with ``steps`` inner steps; ``detach``:
        no graph back to the model's weights (evaluation)."""
        self._check_ways(n_cls)
        slow, fast = self._split()
        lrs = self._lrs()
        if detach:
            slow, fast = ({k: v.detach() for k, v in d.items()} for d in (slow, fast))
            lrs = lrs if isinstance(lrs, float) else {k: v.detach() for k, v in lrs.items()}
        with torch.enable_grad():  # the inner loop takes gradients also under no_grad (evaluation)
            batching = self.task_batching
            if batching == "auto":  # vmap's batched (grouped) convolutions are slower than a loop on the CPU
                batching = "vmap" if support.device.type == "cuda" else "loop"
            if batching == "vmap":
                task = partial(self._task, n_cls=n_cls, steps=steps)
                with _unfused(self):
                    return vmap(task, in_dims=(None, None, None, 0, 0, 0))(slow, fast, lrs, support, support_labels,
                                                                          query)
            return torch.stack([self._task(slow, fast, lrs, support[t], support_labels[t], query[t], n_cls, steps)
                                for t in range(support.shape[0])])

    # -- the episodes --------------------------------------------------------------------------
    def run_episodes(self, batch: EpisodeBatch, loss: LossSettings | None = None,
                     inferences: Sequence[str] | None = None) -> EpisodeOutput:
        """As :func:`fewshot_sla.meta.methods.run_episodes`: the loss with ``loss`` (training: ``inner_steps``),
        the logits of ``inferences`` (``inner_steps_test`` without ``loss``)."""
        if batch.M != 1:
            raise ValueError("run_episodes expects N-way episodes (M == 1); it expands them itself")
        wanted = tuple(self.inferences if inferences is None else inferences)
        bad = [i for i in wanted if i not in self.inferences]
        if bad:
            raise ValueError(f"inference(s) {bad} are not supported by a model trained with mode {self.mode!r}; "
                             f"choose from {', '.join(self.inferences)}")
        n, m = batch.n_way, self.M
        steps = self.inner_steps if loss is not None else self.inner_steps_test
        ys, yq = batch.support_labels, batch.query_labels
        out = EpisodeOutput(loss=None, labels=yq)
        if self.mode == "baseline" or (self.mode == "da" and loss is None):
            plain = self.adapt_and_score(batch.support, ys, batch.query, n, steps, detach=loss is None)
            out.logits["plain"] = plain
            if loss is not None:
                out.loss = sla.cross_entropy(plain, yq, loss.smoothing)
                out.objective_acc = episode_accuracy(plain, yq)
            return out
        if self.mode == "da":  # training: every view keeps its class label
            xb = batch.map_images(self.transforms)
            logits = self.adapt_and_score(xb.support, sla.repeat_labels(ys, m), xb.query, n, steps)
            target = sla.repeat_labels(yq, m)
            out.loss = sla.cross_entropy(logits, target, loss.smoothing)
            out.objective_acc = episode_accuracy(logits, target)
            return out
        xb = expand_episodes(batch, self.transforms)  # sla: NM-way episodes, labels y*M + j
        joint = self.adapt_and_score(xb.support, xb.support_labels, xb.query, n * m, steps,
                                     detach=loss is None)  # [T, Q*M, N*M]
        out.logits["single"] = sla.single_logits(joint, m)
        out.logits["aggregated"] = sla.aggregated_logits(joint, m)
        if loss is not None:
            out.objective_acc = episode_accuracy(joint, xb.query_labels)
            out.loss = sla.sla_loss(joint, yq, m, large_loss=loss.large_loss, smoothing=loss.smoothing)
            out.parts["sla"] = out.loss.detach()
        elif inferences is not None:
            out.logits = {k: v for k, v in out.logits.items() if k in wanted}
        return out

    def forward(self, support: Tensor, support_labels: Tensor, query: Tensor, n_way: int) -> Tensor:
        """N-way logits ``[T, Q, n_way]`` of untransformed episodes, adapted with ``inner_steps_test`` steps."""
        return self.adapt_and_score(support, support_labels, query, n_way, self.inner_steps_test)
