"""Meta-training objectives and inferences against brute-force references.

The reference embeds every image (and every rotation) in its own backbone call, builds
ProtoNet prototypes and logits with explicit loops, and writes the cross-entropy with
MetaOptNet's label smoothing, the aggregated inference and the SLA+SD loss out by hand.
"""


import pytest
import torch
from synthetic import synthetic_dataset

from fewshot_sla.backbones import get_backbone
from fewshot_sla.episodes import EpisodeSampler, collate_episodes
from fewshot_sla.heads import get_head
from fewshot_sla.meta.methods import LossSettings, run_episodes
from fewshot_sla.meta.model import FewShotModel

N, K, Q, T = 3, 2, 2, 2  # ways, shots, queries per class, tasks
M = 4  # rotation


def _batch(seed=0):
    ds = synthetic_dataset(6, 6, 16, 1, seed=seed)
    s = EpisodeSampler(ds.labels, N, K, Q, T, seed=seed)
    b = collate_episodes(ds.images, [s.episode(i) for i in range(T)], N, K, Q)
    return b.map_images(lambda x: x.float() / 255.0)


def _model(mode):
    torch.manual_seed(0)
    bb = get_backbone("conv4", in_channels=1, image_size=16, hidden=6, out_channels=6)
    m = FewShotModel(bb, get_head("protonet"), mode=mode, transforms="rotation")
    with torch.no_grad():
        m.scale.fill_(1.7)
        if mode == "sla+sd":
            m.distill_scale.fill_(0.6)
    return m.eval()  # BN with running statistics: per-image features, comparable to one-by-one calls


def _feat(model, img):  # one image [C, H, W] -> [D], its own backbone call
    return model.backbone(img[None])[0]


def _proto_logits(qf, protos, scale):  # loops: -||q - c||^2 * scale
    return torch.stack([torch.stack([-(q - c).pow(2).sum() for c in protos]) for q in qf]) * scale


def _smoothed_ce(logits_rows, targets, eps):
    total = 0.0
    for row, y in zip(logits_rows, targets):
        logp = row - torch.logsumexp(row, 0)
        c = row.numel()
        total = total - sum(((1 - eps) if i == y else eps / (c - 1)) * logp[i] for i in range(c))
    return total / len(targets)


def _reference(model, b, eps, temp=1.0, beta=1.0):
    """Per task: joint NM-way logits by loops, aggregated, distilled, and the losses."""
    joint_rows, joint_targets, agg_all, dist_all, y_all = [], [], [], [], []
    for t in range(T):
        sup = [[_feat(model, torch.rot90(x, j, dims=(1, 2))) for j in range(M)] for x in b.support[t]]
        qry = [[_feat(model, torch.rot90(x, j, dims=(1, 2))) for j in range(M)] for x in b.query[t]]
        ys, yq = b.support_labels[t].tolist(), b.query_labels[t].tolist()
        # prototypes of every (class i, transform j), joint index i*M + j
        protos = [torch.stack([sup[s][j] for s in range(len(ys)) if ys[s] == i]).mean(0)
                  for i in range(N) for j in range(M)]
        for q in range(len(yq)):
            rows = _proto_logits([qry[q][j] for j in range(M)], protos, model.scale)  # [M, N*M]
            for j in range(M):
                joint_rows.append(rows[j])
                joint_targets.append(yq[q] * M + j)
            agg_all.append(torch.stack([sum(rows[j, i * M + j] for j in range(M)) / M for i in range(N)]))
        protos0 = [torch.stack([sup[s][0] for s in range(len(ys)) if ys[s] == i]).mean(0) for i in range(N)]
        dscale = model.distill_scale if hasattr(model, "distill_scale") else model.scale
        dist_all.extend(_proto_logits([qry[q][0] for q in range(len(yq))], protos0, dscale))
        y_all.extend(yq)
    l_sla = _smoothed_ce(joint_rows, joint_targets, eps)
    kd = 0.0
    for a, d in zip(agg_all, dist_all):
        p = torch.softmax(a / temp, 0)
        kd = kd + (p * (torch.log_softmax(a / temp, 0) - torch.log_softmax(d / temp, 0))).sum()
    kd = kd / len(agg_all) * temp**2
    ce = _smoothed_ce(dist_all, y_all, 0.0)
    return {"sla": l_sla, "distill": kd, "ce": ce, "total": l_sla + kd + beta * ce,
            "aggregated": torch.stack(agg_all).reshape(T, -1, N), "distilled": torch.stack(dist_all).reshape(T, -1, N),
            "single": torch.stack(joint_rows[::M])[:, ::M].reshape(T, -1, N)}  # rows q*M+0, columns i*M+0


def test_sla_sd_loss_and_inferences_match_brute_force():
    model, b = _model("sla+sd"), _batch()
    settings = LossSettings(smoothing=0.1, sd_temperature=2.0, sd_beta=0.5)
    out = run_episodes(model, b, loss=settings)
    with torch.no_grad():
        ref = _reference(model, b, eps=0.1, temp=2.0, beta=0.5)
    for k in ("sla", "distill", "ce"):
        assert out.parts[k].item() == pytest.approx(ref[k].item(), rel=1e-4, abs=1e-5), k
    assert out.loss.item() == pytest.approx(ref["total"].item(), rel=1e-4)
    for k in ("aggregated", "distilled", "single"):
        torch.testing.assert_close(out.logits[k], ref[k], rtol=1e-4, atol=1e-4)


def test_sla_loss_matches_brute_force_and_large_loss_scales_by_m():
    model, b = _model("sla"), _batch(1)
    out = run_episodes(model, b, loss=LossSettings(smoothing=0.2))
    with torch.no_grad():
        ref = _reference(model, b, eps=0.2)
    assert out.loss.item() == pytest.approx(ref["sla"].item(), rel=1e-4)
    big = run_episodes(model, b, loss=LossSettings(smoothing=0.2, large_loss=True))
    assert big.loss.item() == pytest.approx(M * ref["sla"].item(), rel=1e-4)
    assert set(out.logits) == {"single", "aggregated"}


def test_da_loss_keeps_labels_and_pools_transformed_shots():
    model, b = _model("da"), _batch(2)
    out = run_episodes(model, b, loss=LossSettings(smoothing=0.0))
    rows, targets = [], []
    with torch.no_grad():
        for t in range(T):
            ys, yq = b.support_labels[t].tolist(), b.query_labels[t].tolist()
            sup = [(_feat(model, torch.rot90(x, j, dims=(1, 2))), ys[s]) for s, x in enumerate(b.support[t])
                   for j in range(M)]
            protos = [torch.stack([f for f, y in sup if y == i]).mean(0) for i in range(N)]  # M*K shots each
            for q, x in enumerate(b.query[t]):
                for j in range(M):
                    rows.append(_proto_logits([_feat(model, torch.rot90(x, j, dims=(1, 2)))], protos, model.scale)[0])
                    targets.append(yq[q])
        ref = _smoothed_ce(rows, targets, 0.0)
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-4)
    # at test time da reports the plain inference on untransformed images
    assert set(run_episodes(model, b).logits) == {"plain"}


def test_baseline_loss_is_smoothed_ce_of_plain_protonet():
    model, b = _model("baseline"), _batch(3)
    out = run_episodes(model, b, loss=LossSettings(smoothing=0.1))
    rows, targets = [], []
    with torch.no_grad():
        for t in range(T):
            ys = b.support_labels[t].tolist()
            feats = [_feat(model, x) for x in b.support[t]]
            protos = [torch.stack([f for f, y in zip(feats, ys) if y == i]).mean(0) for i in range(N)]
            rows.extend(_proto_logits([_feat(model, x) for x in b.query[t]], protos, model.scale))
            targets.extend(b.query_labels[t].tolist())
        ref = _smoothed_ce(rows, targets, 0.1)
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-4)
    torch.testing.assert_close(out.logits["plain"], torch.stack(rows).reshape(T, -1, N), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["baseline", "da", "sla", "sla+sd"])
def test_one_backbone_call_per_step(mode):
    model, b = _model(mode), _batch()
    model.train()
    calls = []
    handle = model.backbone.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    out = run_episodes(model, b, loss=LossSettings())
    out.loss.backward()
    handle.remove()
    m = 1 if mode == "baseline" else M
    assert calls == [T * N * (K + Q) * m]  # every image of every episode and transform, one call


def test_distilled_single_pass_equals_identity_rows_of_the_joint_forward():
    model, b = _model("sla+sd"), _batch(4)
    with torch.no_grad():
        full = run_episodes(model, b)  # computed from the identity rows of the NM-way features
        single_pass = run_episodes(model, b, inferences=("distilled",))  # untransformed images only
        plain = model(b.support, b.support_labels, b.query, N)
    assert set(single_pass.logits) == {"distilled"}
    torch.testing.assert_close(single_pass.logits["distilled"], full.logits["distilled"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain, full.logits["distilled"], rtol=1e-5, atol=1e-5)


def test_unsupported_inference_is_a_clear_error():
    model, b = _model("baseline"), _batch()
    with pytest.raises(ValueError, match="not supported by a model trained with mode 'baseline'"):
        run_episodes(model, b, inferences=("aggregated",))


def test_aggregated_accuracy_uses_logit_average_not_probability_average():
    """One query, N = 3 classes, M = 2 views, with per-view logits (view x class)
    [[6, 0, 5], [-5, 1, -3]]: the mean logits (0.5, 0.5, 1.0) pick class 2, the mean of the
    per-view softmaxes (0.37, 0.49, 0.14) picks class 1. SLA+AG averages logits (paper, eq. 5)."""
    from fewshot_sla import sla
    from fewshot_sla.meta.methods import episode_accuracy

    n, m = 3, 2
    per_view = torch.tensor([[6.0, 0.0, 5.0], [-5.0, 1.0, -3.0]])
    joint = torch.full((m, n * m), -50.0)  # off-diagonal pairs (i, j') with j' != j never count
    for j in range(m):
        for i in range(n):
            joint[j, i * m + j] = per_view[j, i]
    agg = sla.aggregated_logits(joint[None], m)  # [1 episode, 1 query, 3]
    torch.testing.assert_close(agg[0, 0], torch.tensor([0.5, 0.5, 1.0]))
    assert episode_accuracy(agg, torch.tensor([[2]])).item() == 1.0
    assert episode_accuracy(agg, torch.tensor([[1]])).item() == 0.0  # the probability average's answer
