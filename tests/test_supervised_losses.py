"""Losses and heads of the supervised modes against element-wise reference computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from fewshot_sla import sla
from fewshot_sla.supervised.losses import supervised_loss
from fewshot_sla.supervised.model import CosineLinear, build_model
from fewshot_sla.transforms import get_transform_set

B, N, M = 3, 5, 4


def _ce_row(z, t, margin=0.0):
    """-log softmax(z - margin e_t)[t] for one row, in plain Python floats."""
    zs = [float(v) for v in z]
    zs[t] -= margin
    mx = max(zs)
    return -(zs[t] - mx - math.log(sum(math.exp(v - mx) for v in zs)))


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([2, 0, 4])
    out = {
        "joint": torch.randn(B * M, N * M, generator=g),
        "class": torch.randn(B * M, N, generator=g),
        "transform": torch.randn(B * M, M, generator=g),
    }
    return out, y


def test_da_keeps_the_class_label(batch):
    out, y = batch
    ref = sum(_ce_row(out["class"][r], int(y[r // M])) for r in range(B * M)) / (B * M)
    got = supervised_loss("da", out, y, M)["total"]
    assert float(got) == pytest.approx(ref, rel=1e-5)
    assert float(sla.da_loss(out["class"], y, M)) == pytest.approx(ref, rel=1e-5)


def test_sla_uses_joint_label_y_times_m_plus_j(batch):
    out, y = batch
    rows = [_ce_row(out["joint"][b * M + j], int(y[b]) * M + j) for b in range(B) for j in range(M)]
    ref = sum(rows) / len(rows)
    assert float(supervised_loss("sla", out, y, M)["total"]) == pytest.approx(ref, rel=1e-5)
    big = supervised_loss("sla", out, y, M, large_loss=True)["total"]
    assert float(big) == pytest.approx(M * ref, rel=1e-5)


def test_mt_sums_class_and_transform_heads(batch):
    out, y = batch
    cls = sum(_ce_row(out["class"][r], int(y[r // M])) for r in range(B * M)) / (B * M)
    tfm = sum(_ce_row(out["transform"][r], r % M) for r in range(B * M)) / (B * M)
    parts = supervised_loss("mt", out, y, M)
    assert float(parts["class"]) == pytest.approx(cls, rel=1e-5)
    assert float(parts["transform"]) == pytest.approx(tfm, rel=1e-5)
    assert float(parts["total"]) == pytest.approx(cls + tfm, rel=1e-5)
    ref = sla.mt_loss(out["class"], out["transform"], y, M)
    assert float(parts["total"]) == pytest.approx(float(ref["total"]), rel=1e-6)


def test_sla_sd_matches_reference_formula(batch):
    out, y = batch
    T = 2.0
    parts = supervised_loss("sla+sd", out, y, M, temperature=T, sd_beta=0.5)
    u = out["class"][::M]
    # teacher: s_b,i = mean_j joint[b*M + j, i*M + j]
    s = torch.stack([torch.stack([out["joint"][b * M + j, i * M + j] for j in range(M)]).mean()
                     for b in range(B) for i in range(N)]).view(B, N)
    p, logq = F.softmax(s / T, -1), F.log_softmax(u / T, -1)
    kl = float((p * (p.log() - logq)).sum(-1).mean()) * T * T
    joint = float(supervised_loss("sla", out, y, M)["total"])
    ce = sum(_ce_row(u[b], int(y[b])) for b in range(B)) / B
    assert float(parts["distill"]) == pytest.approx(kl, rel=1e-5)
    assert float(parts["total"]) == pytest.approx(joint + 0.5 * ce + kl, rel=1e-5)
    ref = sla.sla_sd_loss(out["joint"], u, y, M, T=T, beta=0.5)
    assert float(parts["total"]) == pytest.approx(float(ref["total"]), rel=1e-6)


def test_teacher_is_detached_in_sla_sd(batch):
    out, y = batch
    joint = out["joint"].clone().requires_grad_(True)
    u = out["class"].clone().requires_grad_(True)
    parts = supervised_loss("sla+sd", {"joint": joint, "class": u}, y, M)
    g_joint, g_u = torch.autograd.grad(parts["distill"], (joint, u), allow_unused=True)
    assert g_joint is None  # the aggregated teacher is detached
    assert torch.count_nonzero(g_u[::M]) > 0 and torch.count_nonzero(g_u[1::M]) == 0  # u on identity rows only


def test_weighted_margin_cross_entropy_by_hand():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 3, generator=g) * 3
    t = torch.tensor([0, 1, 2, 2, 1, 0])
    w = torch.tensor([0.5, 1.0, 2.0])
    d = torch.tensor([0.3, 0.2, 0.9])
    losses = [_ce_row(z[i], int(t[i]), float(d[t[i]])) for i in range(6)]
    ref = sum(float(w[t[i]]) * losses[i] for i in range(6)) / sum(float(w[t[i]]) for i in range(6))
    assert float(sla.cross_entropy(z, t, weight=w, margin=d)) == pytest.approx(ref, rel=1e-5)
    assert float(sla.cross_entropy(z, t)) == pytest.approx(float(F.cross_entropy(z, t)), rel=1e-6)


def test_ldam_with_cosine_head_is_cao_et_al_formula():
    torch.manual_seed(0)
    s = 30.0
    head = CosineLinear(8, 4, scale=s)
    f = torch.randn(10, 8)
    y = torch.randint(0, 4, (10,))
    m = torch.tensor([0.1, 0.2, 0.3, 0.5])
    cos = (f / f.norm(dim=1, keepdim=True)) @ (head.weight / head.weight.norm(dim=1, keepdim=True)).T
    assert torch.allclose(head(f), s * cos, atol=1e-5)
    # LDAMLoss: CE(s * (cos - m_y e_y)); ours: head logits s*cos minus the logit margin s*m_y
    cao = F.cross_entropy(s * (cos - F.one_hot(y, 4) * m[y][:, None]), y)
    ours = supervised_loss("baseline", {"class": head(f)}, y, 1, margin=s * m)["total"]
    assert float(ours.detach()) == pytest.approx(float(cao.detach()), rel=1e-5)


def test_joint_head_weighting_options(batch):
    out, y = batch
    w = torch.tensor([1.0, 2.0, 0.5, 1.5, 3.0])
    d = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    rows = [(b * M + j, int(y[b]) * M + j, int(y[b])) for b in range(B) for j in range(M)]

    def ref(use_w, use_d):
        num = den = 0.0
        for r, t, c in rows:
            wr = float(w[c]) if use_w else 1.0
            num += wr * _ce_row(out["joint"][r], t, float(d[c]) if use_d else 0.0)
            den += wr
        return num / den

    kw = {"weight": w, "margin": d}
    assert float(supervised_loss("sla", out, y, M, joint_loss="ce", **kw)["joint"]) == pytest.approx(ref(0, 0), 1e-5)
    assert float(supervised_loss("sla", out, y, M, joint_loss="weighted", **kw)["joint"]) == pytest.approx(
        ref(1, 0), 1e-5)
    assert float(supervised_loss("sla", out, y, M, joint_loss="same", **kw)["joint"]) == pytest.approx(
        ref(1, 1), 1e-5)
    # the N-way head of SLA+SD gets weights and margins of y on the untransformed rows
    u = out["class"][::M]
    ce = sum(float(w[y[b]]) * _ce_row(u[b], int(y[b]), float(d[y[b]])) for b in range(B)) / float(w[y].sum())
    assert float(supervised_loss("sla+sd", out, y, M, **kw)["ce"]) == pytest.approx(ce, rel=1e-5)


def test_model_heads_per_mode():
    opts = {"hidden": 4, "out_channels": 4}
    x = get_transform_set("rotation")(torch.randn(2, 3, 16, 16))
    shapes = {}
    for mode in ("baseline", "da", "mt", "sla", "sla+sd"):
        model = build_model("conv4", N, M, mode, image_size=16, backbone_options=opts)
        shapes[mode] = {k: tuple(v.shape) for k, v in model(x).items()}
    assert shapes["mt"] == {"class": (8, N), "transform": (8, M)}
    assert shapes["sla"] == {"joint": (8, N * M)}
    assert shapes["sla+sd"] == {"joint": (8, N * M), "class": (8, N)}
    assert shapes["da"] == shapes["baseline"] == {"class": (8, N)}
    cos = build_model("conv4", N, M, "sla+sd", image_size=16, backbone_options=opts, cosine=True, scale=30.0)
    assert isinstance(cos.joint, CosineLinear) and isinstance(cos.classifier, CosineLinear)
    assert float(cos(x)["class"].detach().abs().max()) <= 30.0 + 1e-4
    with pytest.raises(ValueError, match="unknown mode"):
        supervised_loss("joint", {}, torch.zeros(1, dtype=torch.long), M)


def _head_by_hand(head, f: torch.Tensor, cosine: bool) -> torch.Tensor:
    """Logits of ``head`` on feature rows ``f`` in float64 loops: ``sum_d f_d W_kd + b_k``, or
    ``s * sum_d (f_d/|f|) (W_kd/|W_k|)`` for a cosine head."""
    W = head.weight.detach().double()
    f = f.detach().double()
    if cosine:
        f, W = f / f.norm(dim=1, keepdim=True), W / W.norm(dim=1, keepdim=True)
    scale = head.scale if cosine else 1.0
    bias = head.bias.detach().double().tolist() if not cosine else [0.0] * len(W)
    return torch.tensor([[scale * sum(float(f[r, d] * W[c, d]) for d in range(W.shape[1])) + bias[c]
                          for c in range(len(W))] for r in range(len(f))], dtype=torch.float64)


@pytest.mark.parametrize("cosine", [False, True])
@pytest.mark.parametrize("mode", ["baseline", "da", "mt", "sla", "sla+sd"])
def test_heads_are_maps_of_one_backbone_feature(mode, cosine):
    """Every head's logits are its own weights applied to the rows of one backbone output:
    ``f W^T + b`` (linear) or ``s <f/|f|, w_k/|w_k|>`` (cosine), by hand, in training mode
    (BatchNorm on the batch) and in eval mode, where each row alone also gives its logits."""
    torch.manual_seed(3)
    s = 7.5
    model = build_model("conv4", N, M, mode, image_size=16, backbone_options={"hidden": 8, "out_channels": 8},
                        cosine=cosine, scale=s)
    x = get_transform_set("rotation")(torch.randn(3, 3, 16, 16))
    heads = {"joint": model.joint, "class": model.classifier, "transform": model.transform_head}
    for training in (True, False):
        model.train(training)
        with torch.no_grad():
            out = model(x)
            f = model.backbone(x)
            rows = None if training else [model(x[r : r + 1]) for r in range(len(x))]
        assert f.shape == (3 * M, 8) and float(f.norm(dim=1).min()) > 0 and float(torch.cdist(f, f).max()) > 1e-3
        assert set(out) == {k for k, h in heads.items() if h is not None}
        for k, v in out.items():
            head = heads[k]
            cos_head = cosine and k != "transform"  # the transform head of MT stays linear
            assert isinstance(head, CosineLinear if cos_head else torch.nn.Linear), k
            ref = _head_by_hand(head, f, cos_head)
            if cos_head:
                assert head.scale == s
                assert float(ref.abs().max()) <= s + 1e-9
                assert not torch.allclose(ref, f.double() @ head.weight.detach().double().T, atol=1e-2)
            else:
                assert torch.allclose(F.linear(f.double(), head.weight.double(), head.bias.double()), ref, atol=1e-10)
            assert torch.allclose(v.double(), ref, atol=1e-5), (k, training)
            assert float(ref.std(0).min()) > 1e-4  # logits differ across rows: a row mix-up would show
            if rows is not None:
                assert torch.allclose(torch.cat([r[k] for r in rows]).double(), ref, atol=1e-5), k


# ---------------------------------------------------------------------------- one implementation (fewshot_sla.sla)
def _weighted(rows):
    """sum_r w_r * CE_r / sum_r w_r over rows (logits, target, weight, margin), in Python floats."""
    num = sum(w * _ce_row(z, t, d) for z, t, w, d in rows)
    return num / sum(w for _, _, w, _ in rows)


def test_sla_losses_take_per_class_weights_and_margins(batch):
    out, y = batch
    w = torch.tensor([1.0, 2.0, 0.5, 1.5, 3.0])
    d = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    jw, jd = torch.tensor([0.3, 1.0, 2.0, 1.0, 0.7]), torch.tensor([0.0, 0.6, 0.2, 0.1, 0.4])
    cls, joint, tfm = out["class"], out["joint"], out["transform"]
    yb = [int(v) for v in y]
    # DA: every transformed row keeps y_b, with y_b's weight and margin
    da = _weighted([(cls[r], yb[r // M], float(w[yb[r // M]]), float(d[yb[r // M]])) for r in range(B * M)])
    assert float(sla.da_loss(cls, y, M, weight=w, margin=d)) == pytest.approx(da, rel=1e-5)
    # MT: weighted N-way part plus the unweighted transform part
    mt = sla.mt_loss(cls, tfm, y, M, weight=w, margin=d)
    t_ref = sum(_ce_row(tfm[r], r % M) for r in range(B * M)) / (B * M)
    assert float(mt["class"]) == pytest.approx(da, rel=1e-5)
    assert float(mt["transform"]) == pytest.approx(t_ref, rel=1e-5)
    assert float(mt["total"]) == pytest.approx(da + t_ref, rel=1e-5)
    # SLA: joint class (y, j) = column y*M + j gets the weight and margin of y
    rows = [(joint[b * M + j], yb[b] * M + j, float(jw[yb[b]]), float(jd[yb[b]])) for b in range(B) for j in range(M)]
    assert float(sla.sla_loss(joint, y, M, weight=jw, margin=jd)) == pytest.approx(_weighted(rows), rel=1e-5)
    assert float(sla.sla_loss(joint, y, M, True, weight=jw, margin=jd)) == pytest.approx(M * _weighted(rows), 1e-5)
    # SLA+SD: weighted joint part, weighted CE(u, y), the distillation term unchanged
    u = cls[::M]
    sd = sla.sla_sd_loss(joint, u, y, M, T=1.0, beta=0.5, weight=w, margin=d, joint_weight=jw, joint_margin=jd)
    ce = _weighted([(u[b], yb[b], float(w[yb[b]]), float(d[yb[b]])) for b in range(B)])
    kl = float(sla.distillation_loss(u, sla.aggregated_logits(joint, M)))
    assert float(sd["sla"]) == pytest.approx(_weighted(rows), rel=1e-5)
    assert float(sd["ce"]) == pytest.approx(ce, rel=1e-5)
    assert float(sd["total"]) == pytest.approx(_weighted(rows) + 0.5 * ce + kl, rel=1e-5)
    # without weights and margins nothing changes
    assert float(sla.da_loss(cls, y, M, weight=torch.ones(N), margin=torch.zeros(N))) == pytest.approx(
        float(sla.da_loss(cls, y, M)), rel=1e-6)
    with pytest.raises(ValueError, match="one value per class"):
        sla.da_loss(cls, y, M, weight=torch.ones(N * M))


def test_weighted_cross_entropy_with_label_smoothing_by_hand():
    g = torch.Generator().manual_seed(2)
    z, t = torch.randn(5, 4, generator=g), torch.tensor([0, 3, 1, 3, 2])
    w, d, eps = torch.tensor([2.0, 0.5, 1.0, 3.0]), torch.tensor([0.2, 0.0, 0.4, 0.1]), 0.2
    num = den = 0.0
    for i in range(5):
        zs = [float(v) for v in z[i]]
        zs[int(t[i])] -= float(d[t[i]])
        lse = math.log(sum(math.exp(v) for v in zs))
        soft = [1 - eps if k == int(t[i]) else eps / 3 for k in range(4)]
        num += float(w[t[i]]) * -sum(p * (v - lse) for p, v in zip(soft, zs))
        den += float(w[t[i]])
    assert float(sla.cross_entropy(z, t, eps, weight=w, margin=d)) == pytest.approx(num / den, rel=1e-5)


@pytest.mark.parametrize("mode, expected", [
    ("baseline", {"cross_entropy"}), ("da", {"da_loss"}), ("mt", {"mt_loss"}), ("sla", {"sla_loss"}),
    ("sla+sd", {"sla_sd_loss"}),
])
def test_supervised_loss_calls_the_shared_sla_functions(monkeypatch, batch, mode, expected):
    out, y = batch
    called = set()
    for name in ("cross_entropy", "da_loss", "mt_loss", "sla_loss", "sla_sd_loss"):
        fn = getattr(sla, name)
        monkeypatch.setattr(sla, name, lambda *a, _fn=fn, _n=name, **k: called.add(_n) or _fn(*a, **k))
    m = 1 if mode == "baseline" else M  # baseline: untransformed rows
    supervised_loss(mode, out if m == M else {"class": out["class"][::M]}, y, m, weight=torch.ones(N),
                    margin=torch.zeros(N))
    assert expected <= called
