"""Label algebra and losses against explicit loops and hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from fewshot_sla import inferences, sla


def test_joint_labels_by_loop():
    y = torch.tensor([2, 0, 1])
    M = 4
    out = sla.joint_labels(y, M)
    ref = [int(y[b]) * M + j for b in range(3) for j in range(M)]
    assert out.tolist() == ref
    # leading batch dims
    yy = torch.tensor([[1, 0], [0, 2]])
    assert sla.joint_labels(yy, 2).tolist() == [[2, 3, 0, 1], [0, 1, 4, 5]]


def test_single_aggregated_and_distilled_logits_by_loop():
    g = torch.Generator().manual_seed(1)
    T, B, N, M = 2, 3, 4, 3
    joint = torch.randn(T, B * M, N * M, generator=g)
    nway = torch.randn(T, B * M, N, generator=g)  # N-way logits of every view (da, mt; the distilled head)
    single = sla.single_logits(joint, M)
    agg = sla.aggregated_logits(joint, M)
    assert single.shape == agg.shape == (T, B, N)
    identity_only = sla.single_logits(joint[:, ::M].clone(), M, views=False)  # [T, B, N*M]: untransformed rows
    head = {k: inferences.head_logits(k, joint if k == "aggregated" else joint[:, ::M].clone(), M)
            for k in ("aggregated", "single")}
    for t in range(T):
        for b in range(B):
            assert torch.equal(sla.identity_rows(nway, M)[t, b], nway[t, b * M])  # distilled: rows b*M + 0
            for i in range(N):
                assert single[t, b, i] == joint[t, b * M, i * M] == identity_only[t, b, i] == head["single"][t, b, i]
                ref = sum(joint[t, b * M + j, i * M + j] for j in range(M)) / M
                assert torch.allclose(agg[t, b, i], ref) and head["aggregated"][t, b, i] == agg[t, b, i]
                views = sum(nway[t, b * M + j, i] for j in range(M)) / M
                assert torch.allclose(sla.aggregated_logits(nway, M, joint=False)[t, b, i], views)
    assert inferences.head_logits("distilled", nway, M) is nway  # plain, distilled: N-way already


def test_bad_joint_shape():
    with pytest.raises(ValueError, match="divisible by M"):
        sla.aggregated_logits(torch.zeros(5, 8), 4)
    for bad in (lambda: sla.identity_rows(torch.zeros(6, 3), 4), lambda: sla.single_logits(torch.zeros(2, 6), 4,
                views=False), lambda: sla.aggregated_logits(torch.zeros(6, 3), 4, joint=False)):
        with pytest.raises(ValueError, match="divisible by M"):
            bad()


def test_large_loss_is_exactly_m_times():
    joint = torch.randn(6 * 4, 3 * 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    a = sla.sla_loss(joint, y, 4)
    b = sla.sla_loss(joint, y, 4, large_loss=True)
    assert torch.equal(b, a * 4)
    # and the mean loss equals a hand loop of -log softmax at the joint label
    ref = -sum(F.log_softmax(joint[r], 0)[int(y[r // 4]) * 4 + r % 4] for r in range(24)) / 24
    assert torch.allclose(a, ref)


def test_metaoptnet_label_smoothing_by_hand():
    logits = torch.tensor([[2.0, 0.5, -1.0]])
    eps = 0.1
    p = F.log_softmax(logits[0], 0)
    ref = -((1 - eps) * p[1] + eps / 2 * p[0] + eps / 2 * p[2])
    assert torch.allclose(sla.cross_entropy(logits, torch.tensor([1]), eps), ref)


def test_sla_sd_teacher_gets_no_gradient_and_matches_formula():
    torch.manual_seed(0)
    B, N, M, T = 4, 3, 2, 2.0
    joint = torch.randn(B * M, N * M, requires_grad=True)
    single = torch.randn(B, N, requires_grad=True)
    y = torch.tensor([0, 2, 1, 1])
    parts = sla.sla_sd_loss(joint, single, y, M, T=T, beta=0.5)
    # distillation alone must not reach the joint (teacher) logits
    g = torch.autograd.grad(parts["distill"], [joint, single], allow_unused=True)
    assert g[0] is None or torch.count_nonzero(g[0]) == 0
    assert torch.count_nonzero(g[1]) > 0
    # hand formula: T^2 * mean_b sum_i p_i (log p_i - log q_i), p = softmax(agg/T), q = softmax(u/T)
    agg = torch.tensor([[sum(float(joint.detach()[b * M + j, i * M + j]) for j in range(M)) / M for i in range(N)]
                        for b in range(B)])
    p = F.softmax(agg / T, -1)
    q = F.log_softmax(single / T, -1)
    kl = (p * (p.log() - q)).sum(-1).mean() * T * T
    assert torch.allclose(parts["distill"], kl, atol=1e-6)
    total = sla.sla_loss(joint, y, M) + kl + 0.5 * F.cross_entropy(single, y)
    assert torch.allclose(parts["total"], total, atol=1e-6)


def test_da_keeps_labels_and_mt_has_both_heads():
    B, N, M = 3, 4, 2
    y = torch.tensor([3, 0, 1])
    logits = torch.randn(B * M, N)
    ref = F.cross_entropy(logits, torch.tensor([3, 3, 0, 0, 1, 1]))
    assert torch.allclose(sla.da_loss(logits, y, M), ref)
    tl = torch.randn(B * M, M)
    parts = sla.mt_loss(logits, tl, y, M)
    assert torch.allclose(parts["transform"], F.cross_entropy(tl, torch.tensor([0, 1, 0, 1, 0, 1])))
    assert torch.allclose(parts["total"], ref + parts["transform"])


def test_sla_with_m1_is_plain_cross_entropy():
    logits = torch.randn(5, 3)
    y = torch.tensor([0, 1, 2, 1, 0])
    assert torch.allclose(sla.sla_loss(logits, y, 1), F.cross_entropy(logits, y))
    assert torch.equal(sla.aggregated_logits(logits, 1), logits)
    assert math.isclose(float(sla.distillation_loss(logits, logits)), 0.0, abs_tol=1e-7)
