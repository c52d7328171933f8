"""Multinomial logistic-regression head: RFS's few-shot classifier, batched over episodes.

RFS (Tian et al., ECCV 2020) fits scikit-learn's ``LogisticRegression(C=1.0, solver='lbfgs',
multi_class='multinomial')`` per episode on L2-normalised features; this head solves the same
objective ``sum_s CE(W x_s + b, y_s) + 1/(2C) ||W||_F^2`` exactly, with ``W^T = X^T A``, by Newton's
method with backtracking (each system per Rasmussen & Williams, GPML Alg. 3.3), in float64.
Gradients: one Newton step with autograd from the detached solution (the implicit-function derivative).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from ._common import check_dtype, check_episode, check_positive, check_positive_int, one_hot_labels

__all__ = ["LogisticHead", "logistic_fit", "logistic_logits"]

# Memory per chunk of episodes for the [T, N, S, S] factors (small chunks stay in cache on CPU).
_CHUNK_BYTES = {"cpu": 32 * 2**20, "cuda": 1024 * 2**20}
_ARMIJO = 1e-4
_MAX_HALVINGS = 30


def _objective(z: Tensor, y: Tensor, a: Tensor, ka: Tensor, c: float) -> Tensor:
    """Per-episode objective: sum_s CE(z_s, y_s) + 1/(2C) tr(A^T K A). [T]"""
    loss = (torch.logsumexp(z, dim=-1) - (z * y).sum(-1)).sum(-1)
    return loss + (a * ka).sum((-2, -1)) / (2.0 * c)


def _residual(kernel: Tensor, a: Tensor, b: Tensor, y: Tensor, c: float, fit_intercept: bool):
    """``(P, r = P - Y + A/C, gb = 1^T (P - Y), max-abs residual [T])`` at (A [T,S,N], b [T,N])."""
    p = torch.softmax(kernel @ a + b.unsqueeze(1), dim=-1)
    r = p - y + a / c
    gb = (p - y).sum(1)
    residual = r.abs().amax((-2, -1))
    if fit_intercept:
        residual = torch.maximum(residual, gb.abs().amax(-1))
    return p, r, gb, residual


def _newton_direction(kernel: Tensor, p: Tensor, r: Tensor, gb: Tensor, c: float, fit_intercept: bool):
    """Newton direction ``(dA [T,S,N], db [T,N])`` for F(A, b) = (C r, gb) = 0 (see module docstring)."""
    t, s, n = p.shape
    u = -c * (kernel @ r)  # [T, S, N]
    # E_c = D_c^1/2 (I + C D_c^1/2 K D_c^1/2)^-1 D_c^1/2 per class, [T, N, S, S]
    sq = p.transpose(1, 2).sqrt()  # [T, N, S]
    outer = sq.unsqueeze(-1) * sq.unsqueeze(-2)  # [T, N, S, S]
    inner = outer * (c * kernel).unsqueeze(1)
    inner.diagonal(dim1=-2, dim2=-1).add_(1.0)
    e = torch.cholesky_inverse(torch.linalg.cholesky(inner)) * outer
    g_chol = torch.linalg.cholesky(e.sum(1))  # G = sum_c E_c, SPD
    eu = (e @ u.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2)  # column c: E_c u_c
    s0 = torch.cholesky_solve(eu.sum(-1, keepdim=True), g_chol)  # [T, S, 1]
    if fit_intercept:
        ecol = e.sum(-1).transpose(1, 2)  # [T, S, N]: column c is e_c = E_c 1
        w = torch.cholesky_solve(ecol, g_chol)  # G^-1 e_c
        q = torch.diag_embed(ecol.sum(1)) - ecol.transpose(1, 2) @ w  # [T, N, N], PSD, null 1
        scale = (torch.diagonal(q, dim1=-2, dim2=-1).mean(-1) + 1e-300).view(t, 1, 1)
        q = q + scale / n  # + (scale/n) 1 1^T: fixes the gauge sum(db) = 0
        rhs = gb - (ecol * (s0 - u)).sum(1)  # [T, N]
        db = torch.linalg.solve(q, -rhs)
        svec = s0 + w @ db.unsqueeze(-1)  # [T, S, 1]
    else:
        db = gb.new_zeros(t, n)
        svec = s0
    # dA_c = -C r_c + C E_c (s - u_c - db_c 1)
    vec = (svec - u - db.unsqueeze(1)).transpose(1, 2).unsqueeze(-1)  # [T, N, S, 1]
    da = -c * r + c * (e @ vec).squeeze(-1).transpose(1, 2)
    return da, db


def _solve_chunk(kernel, y, c, fit_intercept, max_iter, tol):
    """Newton iterations with backtracking for one chunk of episodes -> (A, b, residual); episodes
    whose residual reaches ``tol`` leave the active set."""
    t, s, n = y.shape
    a = kernel.new_zeros(t, s, n)
    b = kernel.new_zeros(t, n)
    final = kernel.new_full((t,), float("inf"))
    idx = torch.arange(t, device=kernel.device)
    for it in range(max_iter + 1):
        ka_all, aa, bb, yy = kernel[idx], a[idx], b[idx], y[idx]
        p, r, gb, residual = _residual(ka_all, aa, bb, yy, c, fit_intercept)
        final[idx] = residual
        keep = residual > tol
        if it == max_iter or not bool(keep.any()):
            break
        idx, kk, aa, bb, yy, p, r, gb = (v[keep] for v in (idx, ka_all, aa, bb, yy, p, r, gb))
        da, db = _newton_direction(kk, p, r, gb, c, fit_intercept)
        m = idx.shape[0]
        ka = kk @ aa
        kda = kk @ da
        z = ka + bb.unsqueeze(1)
        dz = kda + db.unsqueeze(1)
        f0 = _objective(z, yy, aa, ka, c)
        slope = (r * kda).sum((-2, -1)) + (gb * db).sum(-1)  # <grad f, d>, grad_A f = K r
        slack = 1e-12 * f0.abs()  # round-off: lets the last, tiny steps through
        step = torch.ones_like(f0)
        todo = torch.ones_like(f0, dtype=torch.bool)
        for _ in range(_MAX_HALVINGS):
            st = step.view(m, 1, 1)
            f1 = _objective(z + st * dz, yy, aa + st * da, ka + st * kda, c)
            todo = todo & ~(f1 <= f0 + _ARMIJO * step * slope + slack)
            if not bool(todo.any()):
                break
            step = torch.where(todo, step * 0.5, step)
        step = torch.where(todo, torch.zeros_like(step), step)  # no decrease found: stay
        a[idx] = aa + step.view(m, 1, 1) * da
        b[idx] = bb + step.view(m, 1) * db
    return a, b, final


def logistic_fit(support: Tensor, labels: Tensor, n_way: int, C: float = 1.0, fit_intercept: bool = True,
                 max_iter: int = 100, tol: float = 1e-10, chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """L2-penalised multinomial logistic regression per episode (no autograd): ``support [T, S, D]``
    (solved in its dtype), ``labels [T, S]`` -> ``(A [T, S, N], b [T, N])`` with ``logits(q) = q
    support^T A + b``; ``RuntimeWarning`` when the residual stays above ``tol`` after ``max_iter``."""
    t, s, _ = support.shape
    with torch.no_grad():
        x = support.detach()
        kernel = x @ x.transpose(1, 2)
        y = one_hot_labels(labels, n_way, x.dtype)
        if chunk_size is None:
            budget = _CHUNK_BYTES.get(x.device.type, _CHUNK_BYTES["cuda"])
            chunk_size = max(1, budget // (4 * n_way * s * s * x.element_size()))
        outs = [_solve_chunk(kernel[i : i + chunk_size], y[i : i + chunk_size], C, fit_intercept, max_iter, tol)
                for i in range(0, t, chunk_size)]
        a = torch.cat([o[0] for o in outs])
        b = torch.cat([o[1] for o in outs])
        worst = float(torch.cat([o[2] for o in outs]).max())
    if worst > tol:
        warnings.warn(f"logistic head: Newton stopped after max_iter={max_iter} iterations with residual "
                      f"{worst:.2e} > tol={tol:.0e}; raise max_iter", RuntimeWarning, stacklevel=2)
    return a, b - b.mean(-1, keepdim=True)


def _normalize(x: Tensor) -> Tensor:
    """Rows divided by their L2 norm (RFS's ``normalize``); all-zero rows stay zero."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def logistic_logits(query: Tensor, support: Tensor, labels: Tensor, n_way: int, C: float = 1.0, normalize: bool = True,
                    fit_intercept: bool = True, max_iter: int = 100, tol: float = 1e-10,
                    dtype: torch.dtype = torch.float64, chunk_size: int | None = None) -> Tensor:
    """Logits ``W q + b`` [T, Q, n_way] in the input dtype (options as :class:`LogisticHead`),
    differentiable w.r.t. query and support."""
    q = query.to(dtype)
    x = support.to(dtype)
    if normalize:
        q, x = _normalize(q), _normalize(x)
    a, b = logistic_fit(x, labels, n_way, C, fit_intercept, max_iter, tol, chunk_size)
    if torch.is_grad_enabled() and x.requires_grad:
        # One Newton step from the solution with autograd on: exact implicit gradients.
        kernel = x @ x.transpose(1, 2)
        p, r, gb, _ = _residual(kernel, a, b, one_hot_labels(labels, n_way, dtype), C, fit_intercept)
        da, db = _newton_direction(kernel, p, r, gb, C, fit_intercept)
        a, b = a + da, b + db
    logits = (q @ x.transpose(1, 2)) @ a + b.unsqueeze(1)
    return logits.to(query.dtype)


class LogisticHead(nn.Module):
    """RFS's multinomial logistic-regression classifier, fitted per episode; no parameters.

    ``C``: inverse L2 penalty (scikit-learn's; RFS 1.0); ``normalize``: L2-normalise features (RFS);
    ``max_iter``/``tol``: Newton iterations and residual tolerance; ``fit_intercept``: unpenalised
    intercept (RFS); ``dtype``: solver dtype; ``chunk_size``: episodes at once (default ~32 MB of
    factors on CPU, ~1 GB on GPU).
    """

    def __init__(self, C: float = 1.0, normalize: bool = True, max_iter: int = 100, tol: float = 1e-10,
                 fit_intercept: bool = True, dtype: torch.dtype = torch.float64, chunk_size: int | None = None) -> None:
        super().__init__()
        self.C = check_positive("C", C, "logistic")
        self.tol = check_positive("tol", tol, "logistic")
        self.max_iter = check_positive_int("max_iter", max_iter, "logistic")
        self.chunk_size = check_positive_int("chunk_size", chunk_size, "logistic", none_ok=True)
        self.normalize = bool(normalize)
        self.fit_intercept = bool(fit_intercept)
        self.dtype = check_dtype(dtype, "logistic")

    def extra_repr(self) -> str:
        return (f"C={self.C}, normalize={self.normalize}, fit_intercept={self.fit_intercept}, "
                f"max_iter={self.max_iter}, tol={self.tol}")

    def forward(self, query: Tensor, support: Tensor, support_labels: Tensor, n_way: int) -> Tensor:
        labels, n_way = check_episode(query, support, support_labels, n_way, "logistic")
        return logistic_logits(query, support, labels, n_way, self.C, self.normalize, self.fit_intercept,
                               self.max_iter, self.tol, self.dtype, self.chunk_size)
