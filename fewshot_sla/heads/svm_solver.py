"""Structured primal-dual interior-point solver for MetaOptNet's Crammer-Singer SVM dual.

The dual ``min_x 1/2 x^T (I_C (x) K + I) x - y^T x  s.t.  x <= C_svm y, sum_c x[c, s] = 0`` (x
class-major) has a block-diagonal Hessian, so each KKT system reduces to C Cholesky factorisations
of ``K + I + D_c`` and one S x S Schur complement: O(C S^3) instead of qpth's O((C S)^3). The
iteration, stopping tests and implicit backward are qpth's (``qpth.solvers.pdipm.batch``, Mattingley
& Boyd) step for step; only the linear algebra differs, so iterates equal qpth's to round-off.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["svm_cs_qp"]


class _Factor(NamedTuple):
    """Factorisation of the reduced KKT matrix for one d."""

    hinv: Tensor  # [T, C, S, S]: (K + I + diag(d_c))^-1
    schur: Tensor  # [T, S, S]: Cholesky factor of sum_c hinv_c
    failed: Tensor  # [] bool: some Cholesky factorisation failed (non-finite or not PD)


def _factor(kernel1: Tensor, d: Tensor) -> _Factor:
    """Factor blockdiag_c(K + I + D_c) (kernel1 = K + I [T, S, S], d [T, C, S]) and its Schur complement."""
    blocks = kernel1.unsqueeze(1).repeat(1, d.shape[1], 1, 1)  # [T, C, S, S]
    blocks.diagonal(dim1=-2, dim2=-1).add_(d)
    chol, info = torch.linalg.cholesky_ex(blocks)
    hinv = torch.cholesky_inverse(chol)
    schur, info_s = torch.linalg.cholesky_ex(hinv.sum(1))
    return _Factor(hinv, schur, (info != 0).any() | (info_s != 0).any())


def _solve(
    fac: _Factor, d: Tensor, rx: Tensor, rs: Tensor, rz: Tensor, ry: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Solve the KKT system (module docstring): rx, rs, rz, d [T, C, S], ry [T, S] -> dx, ds, dz, dy."""
    # dx + ds = -rz, D ds + dz = -rs  =>  (Q + D) dx + A^T dy = -rx + rs - D rz
    r1 = rs - rx - d * rz
    # H_c^-1 is symmetric: products as row vectors (batched row-times-matrix is the fast path)
    u = (r1.unsqueeze(-2) @ fac.hinv).squeeze(-2)  # H_c^-1 r1_c
    # A dx = -ry  =>  (sum_c H_c^-1) dy = sum_c H_c^-1 r1_c + ry
    dy = torch.cholesky_solve((u.sum(1) + ry).unsqueeze(-1), fac.schur).squeeze(-1)
    dx = u - (dy[:, None, None, :] @ fac.hinv).squeeze(-2)
    ds = -rz - dx
    dz = -rs - d * ds
    return dx, ds, dz, dy


def _get_step(v: Tensor, dv: Tensor) -> Tensor:
    """qpth's ``get_step``: largest step to the boundary per task, [T, C, S] -> [T] (entries
    moving away get ``max(1, batch-wide max of -v/dv)``, as qpth)."""
    a = -v / dv
    amax = a.max()
    fill = torch.where(amax > 1.0, amax, torch.ones_like(amax))  # Python's max(1.0, amax)
    return torch.where(dv > 0, fill, a).flatten(1).amin(1)


def _norm(v: Tensor) -> Tensor:
    return torch.linalg.vector_norm(v.flatten(1), 2, dim=1)


def _pdipm(
    kernel1: Tensor, y: Tensor, C_reg: float, max_iter: int, eps: float, not_improved_lim: int
) -> tuple[Tensor, Tensor, Tensor]:
    """qpth's batched PDIPM on the structured QP. Returns the best (x, s, z) iterates, [T, C, S] each."""
    t, c, s_dim = y.shape
    n = c * s_dim  # qpth's nz = nineq
    p = -y
    h = C_reg * y
    zeros_eq = torch.zeros(t, s_dim, dtype=y.dtype, device=y.device)
    d = torch.ones_like(y)
    fac = _factor(kernel1, d)
    failed = fac.failed  # K + 2I is PD unless K is not finite: tested at the first sync below
    x, s, z, yv = _solve(fac, d, p, torch.zeros_like(y), -h, -zeros_eq)
    # shift the slacks and inequality duals to >= 1 where some entry is negative
    for_shift = []
    for v in (s, z):
        m = v.flatten(1).amin(1)[:, None, None]
        for_shift.append(torch.where(m < 0, v - (m - 1), v))
    s, z = for_shift

    best = None
    not_improved = torch.zeros((), dtype=torch.long, device=y.device)
    for i in range(max_iter):
        rx = ((yv.unsqueeze(1) + z) + torch.bmm(x, kernel1)) + p  # A^T y + G^T z + Q x + p
        rs = z
        rz = x + s - h
        ry = x.sum(1) - zeros_eq
        mu = ((s * z).flatten(1).sum(1) / n).abs()
        resids = (_norm(ry) + _norm(rz)) + _norm(rx) + n * mu
        d = z / s
        if best is None:
            best = [resids, x.clone(), s.clone(), z.clone()]
            not_improved = torch.zeros_like(not_improved)
            if bool(failed):  # host sync (the first iteration's stopping test needs one anyway)
                raise ValueError("svm head: the support kernel is not finite (NaN or Inf in the support features?); "
                                 "the QP cannot be solved")
        else:
            better = (resids < best[0]) & ~failed
            not_improved = torch.where(better.any(), torch.zeros_like(not_improved), not_improved + 1)
            keep = better[:, None, None]
            best = [torch.where(better, resids, best[0]), torch.where(keep, x, best[1]), torch.where(keep, s, best[2]),
                    torch.where(keep, z, best[3])]
        stop = (not_improved == not_improved_lim) | (best[0].max() < eps) | (mu.min() > 1e32) | failed
        # qpth's last step is never evaluated (it returns the best iterate so far): skip it
        if i == max_iter - 1 or bool(stop):  # one host sync per iteration: the batch-wide test
            break
        fac = _factor(kernel1, d)
        # a failed factorisation (only with non-finite iterates) stops at the next test, and
        # the iterate it produced is not a candidate (qpth returns its best point likewise)
        failed = fac.failed

        dx_aff, ds_aff, dz_aff, _dy_aff = aff = _solve(fac, d, rx, rs, rz, ry)
        alpha = torch.clamp(torch.minimum(_get_step(z, dz_aff), _get_step(s, ds_aff)), max=1.0)
        a3 = alpha[:, None, None]
        t3 = ((s + a3 * ds_aff) * (z + a3 * dz_aff)).flatten(1).sum(1)
        t4 = (s * z).flatten(1).sum(1)
        sig = (t3 / t4) ** 3
        rs_cor = ((-mu * sig)[:, None, None] + ds_aff * dz_aff) / s
        zero = torch.zeros_like(y)
        cor = _solve(fac, d, zero, rs_cor, zero, torch.zeros_like(zeros_eq))
        dx, ds, dz, dy = (a + b for a, b in zip(aff, cor))
        alpha = torch.clamp(0.999 * torch.minimum(_get_step(z, dz), _get_step(s, ds)), max=1.0)
        a3 = alpha[:, None, None]
        x = x + a3 * dx
        s = s + a3 * ds
        z = z + a3 * dz
        yv = yv + alpha[:, None] * dy
    return best[1], best[2], best[3]


class _SVMCSQP(torch.autograd.Function):
    """x*(K) of the structured QP; backward: implicit KKT differentiation w.r.t. K."""

    @staticmethod
    def forward(ctx, kernel: Tensor, y: Tensor, C_reg: float, max_iter: int, eps: float, lim: int) -> Tensor:
        eye = torch.eye(kernel.shape[-1], dtype=kernel.dtype, device=kernel.device)
        kernel1 = kernel + eye
        x, s, z = _pdipm(kernel1, y, C_reg, max_iter, eps, lim)
        ctx.save_for_backward(kernel1, x, s, z)
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        kernel1, x, s, z = ctx.saved_tensors
        d = z.clamp(min=1e-8) / s.clamp(min=1e-8)  # qpth's clamp
        zero = torch.zeros_like(x)
        dx, _, _, _ = _solve(_factor(kernel1, d), d, grad, zero, zero, torch.zeros_like(x[:, 0]))
        m = torch.einsum("tca,tcb->tab", dx, x)
        return 0.5 * (m + m.transpose(1, 2)), None, None, None, None, None


def svm_cs_qp(kernel: Tensor, y: Tensor, C_reg: float, max_iter: int, *, eps: float = 1e-12,
              not_improved_lim: int = 3) -> Tensor:
    """Dual variables x [T, C, S] (MetaOptNet's ``a[t, s*C + c]``) of the Crammer-Singer SVM.

    ``kernel`` [T, S, S] PSD (differentiable; float64 recommended), ``y`` [T, C, S] one-hot
    class-major labels; ``max_iter``, ``eps``, ``not_improved_lim``: qpth's ``maxIter``, ``eps``,
    ``notImprovedLim``. Raises ``ValueError`` on a non-finite kernel.
    """
    return _SVMCSQP.apply(kernel, y, float(C_reg), int(max_iter), float(eps), int(not_improved_lim))
