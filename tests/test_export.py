"""``fewshot-sla export``: the exported TorchScript/ONNX classifier gives the probabilities of the
Python classifier, run in a fresh process where fewshot_sla cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from predict_helpers import files
from skips import import_or_skip
from torch import nn

from fewshot_sla.cli import main
from fewshot_sla.heads import HEADS
from fewshot_sla.predict import FewShotClassifier
from fewshot_sla.predict.export import export_classifier

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.load: what users of the file call
CASES = [("aggregated", None), ("single", "ridge"), ("distilled", "svm"), ("aggregated", "r2d2")]

STANDALONE = textwrap.dedent("""
    import json, sys
    sys.modules["fewshot_sla"] = None  # the exported files must not need the package
    try:
        import fewshot_sla  # noqa: F401
        raise SystemExit("fewshot_sla is importable")
    except ImportError:
        pass
    import numpy as np, torch
    x = torch.from_numpy(np.load("x.npy"))
    out = {}
    for name in sys.argv[1:]:
        if name.endswith(".pt"):
            m = torch.jit.load(name)
            out[name] = {"all": m(x).tolist(), "five": m(x[:5]).tolist(), "classes": list(m.class_names),
                         "spec": json.loads(m.spec)}
        else:
            import onnxruntime as ort
            s = ort.InferenceSession(name, providers=["CPUExecutionProvider"])
            run = lambda a: s.run(["probabilities"], {"images": a.numpy()})[0].tolist()
            meta = s.get_modelmeta().custom_metadata_map
            out[name] = {"all": run(x), "five": run(x[:5]), "classes": json.loads(meta["class_names"]),
                         "spec": json.loads(meta["spec"])}
    json.dump(out, open("out.json", "w"))
""")


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exported_modules_equal_the_classifier_in_a_fresh_process(run, episode, tmp_path, fmt):
    if fmt == "onnx":
        for module in ("onnx", "onnxscript", "onnxruntime"):
            import_or_skip(module, "pip install -c constraints.txt -e '.[onnx]' (onnx, onnxscript, onnxruntime, "
                                   "numpy<2)")
    suffix = {"torchscript": ".pt", "onnx": ".onnx"}[fmt]
    queries = files(episode / "query")
    expected, names = {}, []
    for inference, head in CASES:
        options = {"max_iter": 3} if head == "svm" else None
        clf = FewShotClassifier.from_checkpoint(run, inference=inference, head=head, head_options=options)
        clf.fit(episode / "support")
        x = clf.preprocess(queries)
        # a smaller logit scale (used by both the classifier and the export) keeps the probabilities
        # away from 0 and 1, so that comparing them tests the graph
        clf.scale *= 4.0 / float(clf.logits(x).abs().max())
        probs = clf.predict_proba(queries)
        assert float(probs.max(-1).values.min()) < 0.95 and float(probs.max(-1).values.max()) > 0.5
        name = f"{inference}-{head}{suffix}"
        export_classifier(clf, tmp_path / name, fmt)
        expected[name] = (probs, clf.classes_, clf.inference)
        names.append(name)
    np.save(tmp_path / "x.npy", x.numpy())
    env = {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, "-c", STANDALONE, *names], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads((tmp_path / "out.json").read_text())
    for name, (probs, classes, inference) in expected.items():
        got = out[name]
        assert got["classes"] == classes and got["spec"]["inference"] == inference, name
        torch.testing.assert_close(torch.tensor(got["all"]), probs, atol=1e-5, rtol=0, msg=name)
        torch.testing.assert_close(torch.tensor(got["five"]), probs[:5], atol=1e-5, rtol=0, msg=name)


def test_backbone_export_and_the_cli(run, episode, tmp_path, capsys):
    out = tmp_path / "backbone.pt"
    assert main(["export", "--checkpoint", str(run), "--support", str(episode / "support"), "--format", "backbone",
                 "--output", str(out)]) == 0
    clf = FewShotClassifier.from_checkpoint(run, inference="distilled").fit(episode / "support")
    x = clf.preprocess(files(episode / "query"))
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(out))(x), clf.backbone(x))
    ts = tmp_path / "clf.pt"
    assert main(["export", "--checkpoint", str(run), "--support", str(episode / "support"), "--output", str(ts)]) == 0
    assert f"wrote {ts}" in capsys.readouterr().out
    m = torch.jit.load(str(ts))
    assert list(m.class_names) == clf.classes_ and json.loads(m.spec)["inference"] == "distilled"
    with torch.no_grad():
        torch.testing.assert_close(m(x), clf.predict_proba(files(episode / "query")), atol=1e-5, rtol=0)


class L1Head(nn.Module):
    """-L1 distance to class means: not linear in the query, so not exportable."""

    def forward(self, query, support, support_labels, n_way):
        onehot = torch.nn.functional.one_hot(support_labels, n_way).to(support.dtype)
        protos = onehot.transpose(1, 2) @ support / onehot.sum(1)[..., None]
        return -(query[:, :, None] - protos[:, None]).abs().sum(-1)


def test_export_errors_are_one_line(run, episode, tmp_path, capsys, monkeypatch):
    base = ["export", "--checkpoint", str(run), "--support", str(episode / "support")]
    monkeypatch.setitem(HEADS, "l1", L1Head)
    for argv, pattern in [
        (["--output", str(tmp_path / "m.onnx")], "end the name with .pt or .pth or .ts"),
        (["--format", "onnx", "--output", str(tmp_path / "m.pt")], "end the name with .onnx"),
        (["--head", "l1", "--output", str(tmp_path / "m.pt")], "head 'l1' is not linear in the query features"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(base + argv)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1 and pattern in err, err
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(SystemExit) as e:
        main(base + ["--format", "onnx", "--output", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "pip install onnx onnxscript" in err and len(err.splitlines()) == 1


def test_pixel_input_export_preprocesses_inside(run, episode, tmp_path):
    """``--input pixels``: raw uint8 pixels give the classifier's probabilities (at the model's size
    exactly; an RGB image of another size as preprocess_images converts a float image)."""
    from PIL import Image

    from fewshot_sla.predict import preprocess_images

    clf = FewShotClassifier.from_checkpoint(run).fit(episode / "support")
    queries = files(episode / "query")
    export_classifier(clf, tmp_path / "px.pt", "torchscript", pixels=True)
    m = torch.jit.load(str(tmp_path / "px.pt"))
    raw = torch.stack([torch.from_numpy(np.array(Image.open(q))) for q in queries])  # uint8 [B, 16, 16]
    with torch.no_grad():
        torch.testing.assert_close(m(raw), clf.predict_proba(queries), atol=1e-5, rtol=0)
        rgb = torch.randint(0, 256, (3, 24, 40, 3), dtype=torch.uint8)  # [B, H, W, C], another size
        ref = clf.logits(preprocess_images(list(rgb.permute(0, 3, 1, 2).float() / 255), clf.spec)).softmax(-1)
        torch.testing.assert_close(m(rgb), ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="TorchScript exports only"):
        export_classifier(clf, tmp_path / "px.onnx", "onnx", pixels=True)
