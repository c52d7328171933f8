"""Tests for the structured SVM-CS solver (fewshot_sla.heads.svm_solver), against independent references.

References: qpth's dense interior point (its iterates at 1, 3 and 15 iterations, its implicit
KKT gradients), cvxpy + Clarabel (the converged optimum), finite differences (gradcheck).
Episodes cover 5-way / 20-way, 1- / 5-shot, and SLA's NM-way expansion (rotation, M = 4:
joint label y*M + j at row b*M + j). The 20-way SLA episode (6,400 dual variables) is left to
benchmarks/svm_solver.py: qpth needs minutes for it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skips import skip_no_cuda
from test_heads import cvxpy_svm_cs  # the one cvxpy reference of the SVM-CS dual
from torch.autograd import gradcheck

from fewshot_sla.heads import get_head
from fewshot_sla.heads._common import kron_identity
from fewshot_sla.heads.svm import svm_cs_dual
from fewshot_sla.heads.svm_solver import _pdipm, svm_cs_qp
from fewshot_sla.sla import joint_labels

F64 = torch.float64


def sla_episode(seed, n_way, k_shot, M, T=2, Q=6, D=32, scale=1.0):
    """Random features of an (n_way*M)-way k-shot episode; row b*M + j has joint label y_b*M + j."""
    g = torch.Generator().manual_seed(seed)
    base = torch.stack([torch.arange(n_way).repeat(k_shot)[torch.randperm(n_way * k_shot, generator=g)]
                        for _ in range(T)])  # [T, B]
    labels = torch.stack([joint_labels(b, M) for b in base]) if M > 1 else base
    S = labels.shape[1]
    support = scale * torch.randn(T, S, D, generator=g, dtype=F64)
    query = scale * torch.randn(T, Q, D, generator=g, dtype=F64)
    return query, support, labels, n_way * M


# (n_way, k_shot, M): 5-way 1/5-shot, 20-way 1-shot, 5-way 1- and 2-shot with rotation (M = 4)
EPISODES = [(5, 1, 1), (5, 5, 1), (20, 1, 1), (5, 1, 4), (5, 2, 4)]


def qpth_dense(kernel, labels, n, C):
    """MetaOptNet's dense support-major QP data for qpth: Q, p, G, h, A, b."""
    T, S, _ = kernel.shape
    quad = kron_identity(kernel, n) + torch.eye(S * n, dtype=F64)
    y = torch.nn.functional.one_hot(labels, n).to(F64).reshape(T, S * n)
    G = torch.eye(S * n, dtype=F64).expand(T, -1, -1)
    A = torch.kron(torch.eye(S, dtype=F64), torch.ones(1, n, dtype=F64)).expand(T, -1, -1)
    return quad, -y, G, C * y, A, torch.zeros(T, S, dtype=F64)


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("max_iter", [1, 3, 15])
@pytest.mark.parametrize(("n_way", "k_shot", "M"), EPISODES)
def test_logits_equal_qpth(n_way, k_shot, M, max_iter):
    query, support, labels, n = sla_episode(n_way * 100 + k_shot * 10 + M, n_way, k_shot, M)
    out = get_head("svm", max_iter=max_iter)(query, support, labels, n)
    ref = get_head("svm", max_iter=max_iter, solver="qpth")(query, support, labels, n)
    assert rel(out, ref) < 1e-6  # measured: < 1e-12


@pytest.mark.parametrize(("n_way", "k_shot", "M", "C"), [(5, 1, 4, 0.1), (3, 2, 1, 1.0), (5, 1, 1, 10.0)])
def test_primal_dual_iterates_equal_qpth(n_way, k_shot, M, C):
    """x, the slacks s and the duals z equal qpth's pdipm iterates (reordered class-major)."""
    from qpth.solvers.pdipm import batch as pdipm  # qpth is a hard dependency
    _, support, labels, n = sla_episode(7, n_way, k_shot, M, T=3)
    kernel = support @ support.transpose(1, 2)
    quad, p, G, h, A, b = qpth_dense(kernel, labels, n, C)
    y = torch.nn.functional.one_hot(labels, n).to(F64).transpose(1, 2)
    T, S = labels.shape
    for max_iter in (1, 3, 15):
        lu = pdipm.pre_factor_kkt(quad, G, A)
        x_ref, _, z_ref, s_ref = pdipm.forward(quad, p, G, h, A, b, *lu, 1e-12, -1, 3, max_iter)
        x, s, z = _pdipm(kernel + torch.eye(S, dtype=F64), y, C, max_iter, 1e-12, 3)
        for mine, ref in ((x, x_ref), (s, s_ref), (z, z_ref)):
            assert rel(mine.transpose(1, 2).reshape(T, -1), ref) < (1e-9 if max_iter < 15 else 1e-6)


@pytest.mark.parametrize(("n_way", "k_shot", "M", "C"),
                         [(5, 1, 1, 0.1), (2, 2, 4, 0.1), (3, 2, 1, 1.0), (4, 1, 1, 5.0)])
def test_converged_solution_equals_cvxpy(n_way, k_shot, M, C):
    _, support, labels, n = sla_episode(3, n_way, k_shot, M, T=2, D=8)
    alpha = svm_cs_dual(support, labels, n, C, max_iter=50)  # stops at qpth's tolerance
    for t in range(2):
        ref = cvxpy_svm_cs(support[t], labels[t], n, C)
        np.testing.assert_allclose(alpha[t].numpy(), ref, rtol=0, atol=1e-6 * C)


@pytest.mark.parametrize("max_iter", [3, 15])
@pytest.mark.parametrize(("n_way", "k_shot", "M"), [(5, 1, 1), (5, 5, 1), (5, 1, 4)])
def test_gradients_equal_qpth(n_way, k_shot, M, max_iter):
    query, support, labels, n = sla_episode(5 + M, n_way, k_shot, M)
    # a weighted sum: sum over classes of the logits is 0 for every query (rows of a sum to 0)
    w = torch.randn(query.shape[0], query.shape[1], n, generator=torch.Generator().manual_seed(1), dtype=F64)
    grads = []
    for solver in ("structured", "qpth"):
        q, s = query.clone().requires_grad_(True), support.clone().requires_grad_(True)
        loss = (get_head("svm", max_iter=max_iter, solver=solver)(q, s, labels, n) * w).sum()
        grads.append(torch.autograd.grad(loss, (q, s)))
    for mine, ref in zip(*grads):
        assert rel(mine, ref) < 1e-6  # measured: < 1e-12


def test_gradcheck_sla_episode():
    # 2-way 1-shot with rotation: an 8-way problem; converged (max_iter=50 stops at 1e-12),
    # so finite differences of the solution map match the implicit KKT gradient
    query, support, labels, n = sla_episode(11, 2, 1, 4, T=2, Q=3, D=5)
    head = get_head("svm", max_iter=50)
    query.requires_grad_(True)
    support.requires_grad_(True)
    assert gradcheck(lambda q, s: head(q, s, labels, n), (query, support), eps=1e-6, atol=1e-5)


def test_gradcheck_of_the_solver_wrt_kernel():
    _, support, labels, n = sla_episode(12, 3, 2, 1, T=2, D=4)
    y = torch.nn.functional.one_hot(labels, n).to(F64).transpose(1, 2)
    root = support.clone().requires_grad_(True)
    # symmetric PSD kernels through their square roots; a weighted output (rows sum to 0)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    assert gradcheck(lambda r: svm_cs_qp(r @ r.transpose(1, 2), y, 0.1, 50) * w, (root,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("case", ["duplicate_rows", "zero_features", "C_tiny", "C_large"])
def test_degenerate_episodes_stay_finite_and_match_qpth(case):
    query, support, labels, n = sla_episode(13, 5, 1, 4, T=2, D=16)
    C = {"C_tiny": 1e-8, "C_large": 1e8}.get(case, 0.1)
    if case == "duplicate_rows":
        support[:, 1] = support[:, 0]
        support[:, 5] = support[:, 0]
    elif case == "zero_features":
        support.zero_()
    w = torch.randn(query.shape[0], query.shape[1], n, generator=torch.Generator().manual_seed(3), dtype=F64)
    results = []
    for solver in ("structured", "qpth"):
        q, s = query.clone().requires_grad_(True), support.clone().requires_grad_(True)
        logits = get_head("svm", C_reg=C, max_iter=15, solver=solver)(q, s, labels, n)
        results.append((logits.detach(), *torch.autograd.grad((logits * w).sum(), (q, s))))
    for mine, ref in zip(*results):
        assert torch.isfinite(mine).all()
        assert (mine - ref).abs().max() <= 1e-6 * ref.abs().max() + 1e-300


def test_large_features_finite_feasible_and_at_least_as_good_as_qpth():
    # features ~1e4 (K ~ 1e9): the +I term is negligible and qpth's dense LU loses accuracy (its
    # equality residual is ~1e-9 for a solution of size ~1e-9); the structured solver stays
    # feasible and reaches an objective at least as low
    query, support, labels, n = sla_episode(13, 5, 1, 4, T=2, D=16, scale=1e4)
    y = torch.nn.functional.one_hot(labels, n).to(F64)
    kernel = support @ support.transpose(1, 2)

    def objective(a):  # [T, S, N]
        return 0.5 * ((a * (kernel @ a)).sum((1, 2)) + (a * a).sum((1, 2))) - (a * y).sum((1, 2))

    a = svm_cs_dual(support, labels, n, 0.1, 50)
    ref = svm_cs_dual(support, labels, n, 0.1, 50, "qpth")
    assert torch.isfinite(a).all()
    assert (a <= 0.1 * y).all() and a.sum(2).abs().max() < 1e-20
    assert (objective(a) <= objective(ref) + 1e-15 * objective(ref).abs()).all()
    q, s = query.clone().requires_grad_(True), support.clone().requires_grad_(True)
    grads = torch.autograd.grad(get_head("svm")(q, s, labels, n)[..., 0].sum(), (q, s))
    assert all(torch.isfinite(g).all() for g in grads)


def test_non_finite_features_are_one_line_errors():
    query, support, labels, n = sla_episode(14, 5, 1, 1)
    support[0, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"^svm head: the support kernel is not finite"):
        get_head("svm")(query, support, labels, n)


def test_bad_solver_name():
    with pytest.raises(ValueError, match=r"solver must be one of \('structured', 'qpth'\)"):
        get_head("svm", solver="cvxpy")


@pytest.mark.parametrize("max_iter", [3, 15])
def test_cuda_equals_cpu(max_iter):
    skip_no_cuda()
    query, support, labels, n = sla_episode(15, 5, 1, 4)
    w = torch.randn(query.shape[0], query.shape[1], n, generator=torch.Generator().manual_seed(4), dtype=F64)
    results = []
    for device in ("cpu", "cuda"):
        q = query.to(device).requires_grad_(True)
        s = support.to(device).requires_grad_(True)
        logits = get_head("svm", max_iter=max_iter)(q, s, labels.to(device), n)
        grads = torch.autograd.grad((logits * w.to(device)).sum(), (q, s))
        results.append([t.detach().cpu() for t in (logits, *grads)])
    for mine, ref in zip(*results):
        assert rel(mine, ref) < 1e-9
