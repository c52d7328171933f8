"""Tests for the ``logistic`` head (RFS's multinomial logistic regression), each against an
independent reference: scikit-learn's ``LogisticRegression`` (probabilities to 1e-4), the
objective's gradient computed in numpy at the returned solution, per-task calls, closed forms
of degenerate episodes, finite differences (gradcheck).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from skips import import_or_skip
from torch.autograd import gradcheck

from fewshot_sla.heads import HEADS, LogisticHead, get_head
from fewshot_sla.heads.logistic import logistic_fit

F64 = torch.float64


def episode(seed, shots, D, Q=6, T=1, scale=1.0):
    """T tasks with ``shots[i]`` support rows of class i (labels shuffled), features N(0, scale^2)."""
    g = torch.Generator().manual_seed(seed)
    n_way, s = len(shots), sum(shots)
    base = torch.repeat_interleave(torch.arange(n_way), torch.tensor(shots))
    labels = torch.stack([base[torch.randperm(s, generator=g)] for _ in range(T)])
    support = scale * torch.randn(T, s, D, generator=g, dtype=F64)
    query = scale * torch.randn(T, Q, D, generator=g, dtype=F64)
    return query, support, labels, n_way


def l2n(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def sklearn_proba(query, support, labels, C, normalize=True, fit_intercept=True):
    """scikit-learn's probabilities, one fit per task: [T, Q, N]."""
    sklearn = import_or_skip("sklearn", "the reference; pip install scikit-learn (the dev extra)")
    from sklearn.linear_model import LogisticRegression

    major, minor = (int(v) for v in sklearn.__version__.split(".")[:2])
    extra = {} if (major, minor) >= (1, 5) else {"multi_class": "multinomial"}  # default since 1.5
    out = []
    for q, s, y in zip(query.numpy(), support.numpy(), labels.numpy()):
        if normalize:
            q, s = l2n(q), l2n(s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = LogisticRegression(C=C, solver="lbfgs", max_iter=10000, tol=1e-10,
                                     fit_intercept=fit_intercept, **extra).fit(s, y)
        assert list(clf.classes_) == list(range(int(y.max()) + 1))
        out.append(clf.predict_proba(q))
    return np.stack(out)


def head_proba(query, support, labels, n_way, **options):
    return torch.softmax(get_head("logistic", **options)(query, support, labels, n_way), -1).numpy()


# ----------------------------------------------------------------------------- scikit-learn


@pytest.mark.parametrize(
    ("shots", "D"),
    [([1] * 5, 64), ([5] * 5, 64), ([1] * 20, 64), ([1] * 5, 640), ([5] * 5, 640), ([1] * 20, 640),
     ([1, 3, 2, 5, 4], 64), ([4, 1, 1, 2], 640)],
    ids=["5w1s-64", "5w5s-64", "20w1s-64", "5w1s-640", "5w5s-640", "20w1s-640", "unequal-64", "unequal-640"],
)
def test_probabilities_equal_sklearn_rfs_setting(shots, D):
    query, support, labels, n = episode(0, shots, D, T=2)
    ref = sklearn_proba(query, support, labels, C=1.0)
    np.testing.assert_allclose(head_proba(query, support, labels, n), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("C", [0.05, 10.0, 100.0])
@pytest.mark.parametrize("normalize", [True, False])
def test_probabilities_equal_sklearn_other_C_and_unnormalised(C, normalize):
    query, support, labels, n = episode(1, [3, 1, 2, 5, 2], 32, T=2, scale=0.5)
    ref = sklearn_proba(query, support, labels, C=C, normalize=normalize)
    out = head_proba(query, support, labels, n, C=C, normalize=normalize)
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


def test_probabilities_equal_sklearn_without_intercept_and_with_more_support_than_dims():
    # S = 30 > D = 8: the kernel K = X X^T is singular, the solution for W is still unique.
    query, support, labels, n = episode(2, [6] * 5, 8, T=2)
    for fit_intercept in (True, False):
        ref = sklearn_proba(query, support, labels, C=1.0, fit_intercept=fit_intercept)
        out = head_proba(query, support, labels, n, fit_intercept=fit_intercept)
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


def test_two_way_equals_sklearn_binary_with_doubled_C():
    # Symmetric multinomial with 2 classes: W = [-w/2, w/2] at the optimum, so its penalty
    # 1/(2C)(|w0|^2 + |w1|^2) = 1/(2 (2C)) |w|^2, i.e. scikit-learn's binary model with 2C.
    query, support, labels, n = episode(3, [3, 2], 16, T=2)
    ref = sklearn_proba(query, support, labels, C=2.0 * 0.7)
    np.testing.assert_allclose(head_proba(query, support, labels, n, C=0.7), ref, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- optimality


@pytest.mark.parametrize(("shots", "D", "C", "fit_intercept"),
                         [([1, 2, 3, 1], 20, 1.0, True), ([4] * 6, 5, 30.0, True), ([2] * 3, 50, 0.3, False)])
def test_gradient_of_objective_vanishes_in_numpy(shots, D, C, fit_intercept):
    query, support, labels, n = episode(4, shots, D, T=3)
    x = torch.nn.functional.normalize(support, dim=-1)
    a, b = logistic_fit(x, labels, n, C=C, fit_intercept=fit_intercept)
    logits = get_head("logistic", C=C, fit_intercept=fit_intercept)(query, support, labels, n).numpy()
    for t in range(3):
        X, y = x[t].numpy(), labels[t].numpy()
        W = X.T @ a[t].numpy()  # [D, N]
        bb = b[t].numpy() if fit_intercept else np.zeros(n)
        z = X @ W + bb
        P = np.exp(z - z.max(1, keepdims=True))
        P /= P.sum(1, keepdims=True)
        Y = np.eye(n)[y]
        grad_w = X.T @ (P - Y) + W / C  # d/dW [sum_s CE + 1/(2C) |W|^2]
        assert np.abs(grad_w).max() < 1e-9
        if fit_intercept:
            assert np.abs((P - Y).sum(0)).max() < 1e-9  # d/db
            assert abs(bb.sum()) < 1e-12  # centred intercept
        else:
            assert np.abs(b[t].numpy()).max() == 0
        np.testing.assert_allclose(logits[t], l2n(query[t].numpy()) @ W + bb, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- batching


def test_batch_equals_separate_calls_and_chunking():
    query, support, labels, n = episode(5, [2, 1, 3, 2], 12, T=5)
    labels[2] = torch.tensor([0, 1, 2, 3, 3, 3, 3, 3])  # another task with other shots
    head = LogisticHead(C=2.0)
    batched = head(query, support, labels, n)
    for t in range(5):
        single = head(query[t : t + 1], support[t : t + 1], labels[t : t + 1], n)
        torch.testing.assert_close(batched[t : t + 1], single, rtol=1e-9, atol=1e-9)
    chunked = LogisticHead(C=2.0, chunk_size=2)(query, support, labels, n)
    torch.testing.assert_close(chunked, batched, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- degenerate


def test_all_zero_support_gives_class_frequencies():
    # K = 0: W = 0 and softmax(b) must equal the empirical class frequencies n_c / S.
    query, support, labels, n = episode(6, [1, 2, 4], 7, T=2)
    support = torch.zeros_like(support)
    query[0, 0] = 0.0
    for normalize in (True, False):
        proba = head_proba(query, support, labels, n, normalize=normalize)
        assert np.isfinite(proba).all()
        np.testing.assert_allclose(proba, np.broadcast_to([1 / 7, 2 / 7, 4 / 7], proba.shape), atol=1e-9)


def test_duplicate_rows_and_zero_queries_stay_finite_and_match_sklearn():
    query, support, labels, n = episode(7, [2, 2, 2], 6, T=1)
    support[0, 1] = support[0, 0]  # duplicate rows, possibly with different labels
    support[0, 3] = support[0, 0]
    support[0, 5] = 3.0 * support[0, 2]  # same direction: duplicate after normalisation
    query[0, 0] = 0.0
    out = head_proba(query, support, labels, n)
    assert np.isfinite(out).all()
    q = query.clone()
    q[0, 0] = 1.0  # sklearn needs a nonzero row to normalise; compare the others
    np.testing.assert_allclose(out[:, 1:], sklearn_proba(q, support, labels, 1.0)[:, 1:], atol=1e-4, rtol=0)


def test_large_C_on_separable_data_converges():
    query, support, labels, n = episode(8, [1] * 5, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "did not converge" warning
        logits = LogisticHead(C=1e4)(query, support, labels, n)
    assert torch.isfinite(logits).all()


# ----------------------------------------------------------------------------- gradients, dtypes


@pytest.mark.parametrize("normalize", [True, False])
def test_gradcheck_implicit_differentiation(normalize):
    query, support, labels, n = episode(9, [2, 1, 2], 4, Q=3, T=2)
    query.requires_grad_(True)
    support.requires_grad_(True)
    head = LogisticHead(C=3.0, normalize=normalize)
    assert gradcheck(lambda q, s: head(q, s, labels, n), (query, support), eps=1e-6, atol=1e-6)


def test_float32_inputs_solved_in_float64():
    query, support, labels, n = episode(10, [2, 3, 1], 9, T=2)
    ref = LogisticHead()(query, support, labels, n)
    out = LogisticHead()(query.float(), support.float(), labels, np.int64(n))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- options


def test_registered_parameter_free_and_bad_options():
    assert HEADS["logistic"] is LogisticHead
    assert list(get_head("logistic").parameters()) == []
    for option, value, match in [
        ("C", 0.0, r"logistic head: C must be a finite number > 0"),
        ("C", -1.0, r"logistic head: C must be a finite number > 0"),
        ("tol", 0.0, r"logistic head: tol must be a finite number > 0"),
        ("max_iter", 0, r"logistic head: max_iter must be a positive int"),
        ("chunk_size", 0, r"logistic head: chunk_size must be a positive int or None"),
        ("dtype", torch.int64, r"logistic head: dtype must be a floating torch.dtype"),
    ]:
        with pytest.raises(ValueError, match=match):
            get_head("logistic", **{option: value})


def test_too_few_iterations_warn():
    query, support, labels, n = episode(11, [2, 2], 5)
    with pytest.warns(RuntimeWarning, match=r"max_iter=1 .*raise max_iter"):
        LogisticHead(max_iter=1)(query, support, labels, n)
