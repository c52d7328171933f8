"""Gradient-based learners (``--learner maml|fomaml|anil``, Meta-SGD; :mod:`fewshot_sla.meta.gradient`)
against hand-written references that share none of their code: an explicit Conv-4 (``F.conv2d``,
the fused ``F.batch_norm`` on the batch's statistics, ReLU, max-pooling, ``F.linear``) adapted with
``torch.autograd.grad(create_graph=True)`` task by task; finite differences (gradcheck); explicit
loops over the M rotations; ``learn2learn.algorithms.MAML`` (its algorithms subpackage, loaded by
``l2l_import.py`` without the torchvision/gym imports of its package ``__init__``); one process
against ``--accumulate``; and the ``eval`` report."""

import json

import pytest
import torch
import torch.nn.functional as F
from l2l_import import import_learn2learn
from skips import skip_missing_package
from test_meta_cli import data_root, train_args  # noqa: F401 - the module's fixture
from test_meta_train_eval import DATA, tiny

from fewshot_sla.backbones.conv4 import Conv4
from fewshot_sla.cli import main
from fewshot_sla.episodes import EpisodeBatch
from fewshot_sla.meta.gradient import BN_RULE, GradientModel
from fewshot_sla.meta.methods import LossSettings, run_episodes
from fewshot_sla.meta.train import train
from fewshot_sla.rundir import load_checkpoint

N, K, Q, T, LR, STEPS = 2, 2, 3, 2, 0.3, 3


def _model(learner="maml", mode="baseline", batching="loop", meta_sgd=False, init="learned", steps=STEPS,
           hidden=3, seed=0):
    torch.manual_seed(seed)
    m = GradientModel(Conv4(1, image_size=16, hidden=hidden, out_channels=hidden), learner, mode, "rotation", N, LR,
                      steps, steps, False, meta_sgd, init, batching).double()
    with torch.no_grad():  # BatchNorm affine weights away from (1, 0), so that their gradients matter
        for name, p in m.named_parameters():
            if "encoder" in name and p.dim() == 1:
                p.add_(0.3 * torch.randn_like(p))
    return m


def _batch(seed=1, n=N):
    g = torch.Generator().manual_seed(seed)
    ys = torch.arange(n).repeat_interleave(K).expand(T, -1).contiguous()
    yq = torch.arange(n).repeat_interleave(Q).expand(T, -1).contiguous()
    return EpisodeBatch(torch.randn(T, n * K, 1, 16, 16, generator=g, dtype=torch.float64), ys,
                        torch.randn(T, n * Q, 1, 16, 16, generator=g, dtype=torch.float64), yq, n)


# ------------------------------------------------------------------ the hand-written reference
def _features(p, x):
    for i in range(4):
        x = F.conv2d(x, p[f"backbone.encoder.{4 * i}.weight"], padding=1)
        x = F.batch_norm(x, None, None, p[f"backbone.encoder.{4 * i + 1}.weight"],
                         p[f"backbone.encoder.{4 * i + 1}.bias"], training=True)
        x = F.max_pool2d(F.relu(x), 2)
    return x.flatten(1)


def _head(p, f):
    return F.linear(f, p["classifier.weight"], p["classifier.bias"])


def _adapt(fast, loss_of, steps, lrs, first_order):
    for _ in range(steps):
        g = torch.autograd.grad(loss_of(fast), list(fast.values()), create_graph=not first_order)
        fast = {k: v - lrs[k] * gi for (k, v), gi in zip(fast.items(), g)}
    return fast


def _hand(model, batch, first_order=False, anil=False, expand=None):
    """Mean query loss over the tasks, its gradients w.r.t. every parameter (and Meta-SGD's lrs),
    and each task's adapted weights; ``expand(x, y) -> (x', y')`` builds the NM-way sets."""
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters() if not k.startswith("lrs")}
    lrs = ({k.replace("__", "."): v.detach().clone().requires_grad_() for k, v in model.lrs.items()}
           if model.lrs is not None else {k: LR for k in params})
    losses, adapted = [], []
    for t in range(batch.support.shape[0]):
        xs, ys, xq, yq = batch.support[t], batch.support_labels[t], batch.query[t], batch.query_labels[t]
        if expand is not None:
            (xs, ys), (xq, yq) = expand(xs, ys), expand(xq, yq)
        if anil:  # the backbone's features once; the inner loop adapts the linear head alone
            fs, fq = _features(params, xs), _features(params, xq)
            head = {k: v for k, v in params.items() if k.startswith("classifier.")}
            fast = _adapt(head, lambda w, fs=fs, ys=ys: F.cross_entropy(_head(w, fs), ys), model.inner_steps, lrs,
                          first_order)
            losses.append(F.cross_entropy(_head(fast, fq), yq))
        else:
            fast = _adapt(dict(params), lambda w, xs=xs, ys=ys: F.cross_entropy(_head(w, _features(w, xs)), ys),
                          model.inner_steps, lrs, first_order)
            losses.append(F.cross_entropy(_head(fast, _features(fast, xq)), yq))
        adapted.append(fast)
    loss = torch.stack(losses).mean()
    leaves = list(params.values()) + ([v for v in lrs.values()] if model.lrs is not None else [])
    grads = torch.autograd.grad(loss, leaves)
    names = list(params) + ([f"lrs.{k.replace('.', '__')}" for k in lrs] if model.lrs is not None else [])
    return loss, dict(zip(names, grads)), adapted


def _ours(model, batch):
    loss = run_episodes(model, batch, loss=LossSettings()).loss
    named = dict(model.named_parameters())
    return loss, dict(zip(named, torch.autograd.grad(loss, list(named.values()), allow_unused=True)))


def _assert_grads(ours, hand, rtol=1e-7):
    assert set(hand) <= set(ours)
    for k, g in hand.items():
        torch.testing.assert_close(ours[k], g, rtol=rtol, atol=1e-9, msg=k)


# ------------------------------------------------------------------ MAML, FOMAML, ANIL, Meta-SGD
@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_second_order_meta_gradient_equals_a_create_graph_loop(batching):
    model, batch = _model("maml", batching=batching), _batch()
    loss, grads = _ours(model, batch)
    ref_loss, ref_grads, _ = _hand(model, batch)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-10, atol=0)
    _assert_grads(grads, ref_grads)
    # the second-order terms matter here: the first-order gradient is measurably different
    _, fo_grads, _ = _hand(model, batch, first_order=True)
    assert max(float((grads[k] - fo_grads[k]).abs().max()) for k in fo_grads) > 1e-4


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_first_order_equals_the_loop_with_detached_inner_gradients(batching):
    model, batch = _model("fomaml", batching=batching), _batch()
    loss, grads = _ours(model, batch)
    ref_loss, ref_grads, _ = _hand(model, batch, first_order=True)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-10, atol=0)
    _assert_grads(grads, ref_grads)


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_anil_equals_an_explicit_loop_over_a_linear_head(batching):
    model, batch = _model("anil", batching=batching), _batch()
    loss, grads = _ours(model, batch)
    ref_loss, ref_grads, _ = _hand(model, batch, anil=True)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-10, atol=0)
    _assert_grads(grads, ref_grads)


@pytest.mark.parametrize("learner", ["maml", "anil"])
def test_meta_sgd_learning_rates_receive_the_hand_loops_gradient(learner):
    model, batch = _model(learner, meta_sgd=True), _batch()
    with torch.no_grad():  # per-entry learning rates that differ
        for v in model.lrs.values():
            v.uniform_(0.1, 0.5)
    loss, grads = _ours(model, batch)
    ref_loss, ref_grads, _ = _hand(model, batch, anil=learner == "anil")
    torch.testing.assert_close(loss, ref_loss, rtol=1e-10, atol=0)
    assert any(k.startswith("lrs.") for k in ref_grads)
    _assert_grads(grads, ref_grads)


def test_zero_classifier_init_is_any_ways_and_matches_a_zero_head_loop():
    model, batch = _model("maml", init="zero"), _batch(n=3)  # trained for N = 2 ways, asked 3
    loss = run_episodes(model, batch, loss=LossSettings()).loss
    named = dict(model.named_parameters())
    grads = dict(zip(named, torch.autograd.grad(loss, list(named.values()))))
    params = {k: v.detach().clone().requires_grad_() for k, v in named.items()}
    losses = []
    for t in range(T):
        fast = {**params, "classifier.weight": torch.zeros(3, 3, dtype=torch.float64, requires_grad=True),
                "classifier.bias": torch.zeros(3, dtype=torch.float64, requires_grad=True)}
        xs, ys = batch.support[t], batch.support_labels[t]
        fast = _adapt(fast, lambda w, xs=xs, ys=ys: F.cross_entropy(_head(w, _features(w, xs)), ys), STEPS,
                      {k: LR for k in fast}, False)
        losses.append(F.cross_entropy(_head(fast, _features(fast, batch.query[t])), batch.query_labels[t]))
    ref = torch.stack(losses).mean()
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=0)
    _assert_grads(grads, dict(zip(params, torch.autograd.grad(ref, list(params.values())))))


def test_gradcheck_through_the_inner_loop():
    model = _model("maml", steps=2, hidden=2)
    batch = _batch()
    sub = EpisodeBatch(batch.support[:1], batch.support_labels[:1], batch.query[:1], batch.query_labels[:1], N)
    names = [k for k, _ in model.named_parameters()]
    init = tuple(p.detach().clone().requires_grad_() for p in model.parameters())

    def query_loss(*weights):
        with torch.no_grad():
            for p, w in zip(model.parameters(), weights):
                p.copy_(w)
        params = dict(zip(names, weights))
        out = torch.func.functional_call(model, params, (sub.support, sub.support_labels, sub.query, N))
        return F.cross_entropy(out[0], sub.query_labels[0])

    assert torch.autograd.gradcheck(query_loss, init, eps=1e-6, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------ SLA in the inner loop
def _rotations(x, y, m=4):
    """Explicit loop: row s*M + j = x_s rotated by j * 90 degrees, label y_s * M + j."""
    xs = [torch.rot90(x[s], j, dims=(1, 2)) for s in range(x.shape[0]) for j in range(m)]
    ys = [int(y[s]) * m + j for s in range(x.shape[0]) for j in range(m)]
    return torch.stack(xs), torch.tensor(ys)


@pytest.mark.parametrize("learner", ["maml", "anil"])
def test_sla_inner_and_outer_losses_equal_an_explicit_loop_over_the_rotations(learner):
    model, batch = _model(learner, mode="sla"), _batch()
    assert model.ways == N * 4
    loss, grads = _ours(model, batch)
    ref_loss, ref_grads, adapted = _hand(model, batch, anil=learner == "anil", expand=_rotations)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-10, atol=0)
    _assert_grads(grads, ref_grads)
    # test time: SLA+AG averages view j's logit of class (i, j) over j; SLA+SI takes view 0, classes (i, 0)
    out = run_episodes(model, batch)
    for t in range(T):
        xq, _ = _rotations(batch.query[t], batch.query_labels[t])
        p = adapted[t]  # inner_steps_test == inner_steps here
        fq = _features(p if learner == "maml" else {k: v for k, v in model.named_parameters()}, xq)
        joint = _head(p, fq).detach()
        agg = torch.stack([torch.stack([sum(joint[q * 4 + j, i * 4 + j] for j in range(4)) / 4 for i in range(N)])
                           for q in range(N * Q)])
        torch.testing.assert_close(out.logits["aggregated"][t], agg, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(out.logits["single"][t], joint[0::4, 0::4], rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------ learn2learn
def test_adapted_weights_and_meta_gradients_equal_learn2learn():
    try:
        l2l = import_learn2learn()
    except ImportError as e:
        skip_missing_package("learn2learn 0.2.0", "bash .ci/install_learn2learn.sh", e)
    model, batch = _model("maml"), _batch()
    loss, grads = _ours(model, batch)
    net = torch.nn.Sequential(model.backbone, torch.nn.Linear(3, model.ways).double())
    with torch.no_grad():
        net[1].weight.copy_(model.classifier.weight)
        net[1].bias.copy_(model.classifier.bias)
    maml = l2l.algorithms.MAML(net, lr=LR, first_order=False)
    _, _, adapted = _hand(model, batch)
    losses = []
    for t in range(T):
        learner = maml.clone()
        for _ in range(STEPS):
            learner.adapt(F.cross_entropy(learner(batch.support[t]), batch.support_labels[t]))
        for (name, p), k in zip(learner.module.named_parameters(), list(adapted[t])):
            torch.testing.assert_close(p, adapted[t][k], rtol=1e-8, atol=1e-10, msg=name)
        losses.append(F.cross_entropy(learner(batch.query[t]), batch.query_labels[t]))
    l2l_loss = torch.stack(losses).mean()
    torch.testing.assert_close(loss, l2l_loss, rtol=1e-10, atol=0)
    l2l_grads = torch.autograd.grad(l2l_loss, list(net.parameters()))
    for k, g in zip(list(grads), l2l_grads):
        torch.testing.assert_close(grads[k], g, rtol=1e-7, atol=1e-9, msg=k)


# ------------------------------------------------------------------ in the engine
def test_accumulate_gives_the_same_meta_gradient_as_one_chunk(tmp_path):
    kw = dict(learner="maml", mode="sla", inner_lr=0.1, inner_steps=2, episodes_per_epoch=4, tasks_per_batch=4,
              val_episodes=0, optimizer="sgd", momentum=0.0, nesterov=False, weight_decay=0.0)
    train(tiny(tmp_path, "one", **kw), datasets=DATA)
    train(tiny(tmp_path, "acc", accumulate=2, **kw), datasets=DATA)
    a, b = (load_checkpoint(tmp_path / name / "last.pt")["model"] for name in ("one", "acc"))
    assert a.keys() == b.keys() and not any("running" in k for k in a)  # no BatchNorm running statistics
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_eval_reports_the_batch_norm_rule_and_refuses_other_ways_with_a_learned_init(data_root, tmp_path,  # noqa: F811
                                                                                      capsys):
    run = tmp_path / "maml"
    assert main(train_args(data_root, run, "--learner", "maml", "--mode", "sla", "--inner-lr", "0.1",
                           "--inner-steps-test", "2", "--epochs", "1")) == 0
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(run), "--episodes", "4", "--n-query", "3", "--device", "cpu", "--quiet",
                 "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    m = report["models"][0]
    assert m["batch_norm"] == BN_RULE and m["learner"] == "maml" and m["inner_steps"] == 2
    assert set(m["results"]) == {"single", "aggregated"} and m["reported"] == "aggregated"
    assert "BatchNorm transductive" in capsys.readouterr().out
    for extra, message in ((["--n-way", "2"], "a 3-way classifier"), (["--head", "ridge"], "drop --head")):
        with pytest.raises(SystemExit) as e:
            main(["eval", "--checkpoint", str(run), "--episodes", "2", "--n-query", "3", "--device", "cpu", "--quiet",
                  "--output", str(tmp_path / "e2.json"), *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and message in err[0], err


def test_sla_sd_and_sync_bn_are_refused_with_one_line(tmp_path):
    from fewshot_sla.config import ConfigError

    with pytest.raises(ConfigError, match="use --mode sla"):
        tiny(tmp_path, learner="maml", mode="sla+sd")
    with pytest.raises(ConfigError, match="drop --sync-bn"):
        tiny(tmp_path, learner="anil", sync_bn=True)


# ------------------------------------------------------------------ predict and export
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.load
def test_predict_fits_by_the_inner_loop_and_export_bakes_the_support_in(tmp_path):
    from predict_helpers import files, labels_of, manual_inputs, write_episode
    from synthetic import synthetic_dataset

    from fewshot_sla.engine import load_model
    from fewshot_sla.meta.config import MetaTrainConfig
    from fewshot_sla.predict import FewShotClassifier
    from fewshot_sla.predict.export import export_classifier

    run = tmp_path / "run"
    cfg = MetaTrainConfig(
        test_episodes=0,
        dataset="synthetic", backbone="conv4", backbone_options={"hidden": 8, "out_channels": 8}, learner="maml",
        classifier_init="zero", mode="sla", transforms="rotation", inner_lr=0.1, inner_steps=1, inner_steps_test=2,
        n_way=3, k_shot=1, n_query=2, episodes_per_epoch=4, tasks_per_batch=2, eval_way=3, eval_shot=1,
        eval_query=2, val_episodes=2, epochs=1, lr=0.01, optimizer="adam", weight_decay=0.0, lr_milestones=(),
        lr_factors=(1.0,), run_dir=str(run), quiet=True, device="cpu")
    train(cfg, datasets={"train": synthetic_dataset(8, 10, 16, 1, seed=0),
                         "val": synthetic_dataset(6, 10, 16, 1, seed=1, prefix="val")})
    episode = write_episode(tmp_path / "episode")
    clf = FewShotClassifier.from_checkpoint(run)
    assert clf.inference == "aggregated" and clf.head_name == "maml"
    clf.fit(episode / "support")
    queries = files(episode / "query")
    probs = clf.predict_proba(queries)

    # by hand: 2 inner steps from a zero 16-way classifier on the support's 4 rotations, then the
    # adapted network on the queries' rotations (one batch), logits of view j for class (i, j) averaged
    loaded = load_model(run)
    params = {k: v.detach().clone().requires_grad_() for k, v in loaded.model.named_parameters()}
    s_paths = files(episode / "support")
    xs, ys = _rotations(manual_inputs(s_paths, loaded.data), labels_of(s_paths))
    fast = {**params, "classifier.weight": torch.zeros(16, 8, requires_grad=True),
            "classifier.bias": torch.zeros(16, requires_grad=True)}
    fast = _adapt(fast, lambda w: F.cross_entropy(_head(w, _features(w, xs)), ys), 2, {k: 0.1 for k in fast}, True)
    xq, _ = _rotations(manual_inputs(queries, loaded.data), labels_of(queries))
    joint = _head(fast, _features(fast, xq)).detach()
    agg = torch.stack([torch.stack([sum(joint[q * 4 + j, i * 4 + j] for j in range(4)) / 4 for i in range(4)])
                       for q in range(len(queries))])
    torch.testing.assert_close(probs, torch.softmax(agg, -1), atol=1e-5, rtol=0)

    path = export_classifier(clf, tmp_path / "maml.pt")
    exported = torch.jit.load(str(path))
    torch.testing.assert_close(exported(clf.preprocess(queries)), probs, atol=1e-5, rtol=0)
    assert list(exported.class_names) == clf.classes_


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_two_torchrun_processes_equal_one_with_accumulate(data_root, tmp_path):  # noqa: F811
    from test_distributed import assert_same_weights, torchrun, train_losses

    args = ["--learner", "maml", "--mode", "sla", "--inner-steps", "2", "--inner-lr", "0.1", "--episodes-per-epoch",
            "8", "--tasks-per-batch", "4", "--epochs", "1", "--val-episodes", "4", "--optimizer", "adam", "--lr",
            "0.01", "--weight-decay", "0"]
    assert main(train_args(data_root, tmp_path / "single", *args, "--accumulate", "2")) == 0
    proc = torchrun(2, *train_args(data_root, tmp_path / "ddp", *args))
    assert proc.returncode == 0, proc.stderr[-3000:]
    la, lb = train_losses(tmp_path / "single"), train_losses(tmp_path / "ddp")
    assert len(la) == 2 and la == pytest.approx(lb, rel=1e-5)
    assert_same_weights(tmp_path / "single" / "last.pt", tmp_path / "ddp" / "last.pt")
