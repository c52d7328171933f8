"""The README's and the documentation's own commands: the main job and the quick start parse, fetch
Omniglot themselves, test what they trained in the same command and train exactly what produced the
results tables; every committed benchmark result is reproduced by a command with an explicit ``--out``
in the README or a docs page; every ``fewshot-sla`` command there parses; the install and
learn2learn recipes are the portable ones; the README stays short."""

from __future__ import annotations

import dataclasses
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fewshot_sla.cli import build_parser
from fewshot_sla.config import build_config
from fewshot_sla.meta.config import MetaTrainConfig

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
#: every page of the documentation site (docs/ and its subfolders)
DOCS = {p.relative_to(ROOT).as_posix(): p.read_text() for p in sorted((ROOT / "docs").rglob("*.md"))}
README_MAX_LINES = 250


def code_blocks(text: str = README, langs: tuple[str, ...] = ("bash", "sh", "")) -> list[str]:
    """The fenced code blocks of ``text`` in one of ``langs``."""
    blocks, current, lang = [], None, ""
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current, lang = [], line[3:].strip()
            else:
                if lang in langs:
                    blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def commands(block: str) -> list[list[str]]:
    """Shell commands of a code block (continuations joined, comments dropped), split into words."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.split(" #")[0].strip()
        if line and not line.startswith("#"):
            out.append(shlex.split(line))
    return out


def readme_commands() -> list[list[str]]:
    """Every command in a code block of the README, plus every inline `python benchmarks/...` command."""
    cmds = [c for b in code_blocks() for c in commands(b)]
    cmds += [shlex.split(m) for m in re.findall(r"`((?:python|bash) benchmarks/[^`]+)`", README)]
    return cmds


def doc_benchmark_commands() -> list[list[str]]:
    """The ``benchmarks/`` commands in the code blocks of every docs page (docs/ and its subfolders),
    plus the inline ones: a result documented there."""
    out = []
    for text in DOCS.values():
        for block in code_blocks(text):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].strip()
                if "benchmarks/" in line and not line.startswith("#"):
                    out.append(shlex.split(line))
        out += [shlex.split(m) for m in re.findall(r"`((?:python|bash) benchmarks/[^`]+)`", text)]
    return out


def main_job(config: str = "omniglot_conv4_sla_20way") -> list[list[str]]:
    """The README's first block that meta-trains ``--config CONFIG``: the main job (the one-hour
    recipe), or with ``omniglot_conv4_sla`` the quick start's 10-epoch job."""
    for block in code_blocks():
        cmds = commands(block)
        if any(c[:2] == ["fewshot-sla", "meta-train"] and config in c for c in cmds):
            return cmds
    raise AssertionError(f"README has no block running fewshot-sla meta-train --config {config}")


def _meta_cfg(argv: list[str]) -> MetaTrainConfig:
    args = build_parser().parse_args(argv)
    names = {f.name for f in dataclasses.fields(MetaTrainConfig)}
    return build_config(MetaTrainConfig, {k: v for k, v in vars(args).items() if k in names}, config=args.config)


@pytest.mark.parametrize("config", ["omniglot_conv4_sla_20way", "omniglot_conv4_sla"])
def test_main_job_downloads_tests_and_parses(config):
    """One command: it fetches its data, carves its own test alphabets (no --dataset-options) and
    ends by testing the selected checkpoint on 1000 episodes (no separate eval step)."""
    block = main_job(config)
    assert len(block) == 1, f"the {config} block should be the one meta-train command: {block}"
    train = block[0]
    assert train[:2] == ["fewshot-sla", "meta-train"]
    assert "--download" in train and "--data-root" not in train  # the newcomer has no local copy
    assert "--dataset-options" not in train  # the config carves the test split itself
    cfg = _meta_cfg(train[1:])
    assert cfg.download and cfg.data_root == "data/omniglot"
    assert cfg.dataset_options == {"val_alphabets": 5, "test_alphabets": 5}
    assert cfg.test_episodes == 1000 and cfg.test_split == "test"
    assert "`data/omniglot/`" in README and "9.5 MB" in README and "--data-root DIR" in README
    assert "--test-episodes 0" in README and "test.json" in README


def test_main_job_is_the_recipe_benchmark():
    """The main job and benchmarks/omniglot_recipe.sh's SLA run: the config as it is, up to
    where the data is, the seed and how it is shown."""
    train = main_job()[0]
    assert set(train[2:]) <= {"--config", "omniglot_conv4_sla_20way", "--download", "--run-dir",
                              train[train.index("--run-dir") + 1]}
    script = (ROOT / "benchmarks" / "omniglot_recipe.sh").read_text()
    line = next(ln for ln in script.splitlines() if "--config omniglot_conv4_sla_20way" in ln)
    assert line.split() == ["fewshot-sla", "meta-train", "--config", "omniglot_conv4_sla_20way", '"${opts[@]}"',
                            "--seed", '"$seed"', "\\"]
    assert 'opts=(--data-root "$DATA" --num-threads 1 --quiet)' in script


def test_main_job_trains_what_the_results_table_trained():
    """The README's command and benchmarks/omniglot_cpu.sh (10 epochs, as in the README's table)
    give the same configuration, up to where the data is and how it is shown."""
    script = (ROOT / "benchmarks" / "omniglot_cpu.sh").read_text()
    m = re.search(r"^train=\((.*?)\)$", script, flags=re.S | re.M)
    assert m, "omniglot_cpu.sh's train=(...) options"
    words = shlex.split(m.group(1).replace('"$DATA"', "DATA").replace('"$EPOCHS"', "10")
                        .replace("$((EPOCHS / 2))", "5").replace("$((EPOCHS * 3 / 4))", "7"))
    assert "EPOCHS=${3:-10}" in script and "(10 epochs, 750 steps)" in README
    bench = _meta_cfg(["meta-train", "--config", "omniglot_conv4_sla", *words])
    readme = _meta_cfg(main_job("omniglot_conv4_sla")[0][1:])
    ignore = {"data_root", "download", "num_threads", "quiet", "run_dir", "test_episodes"}
    diff = {f.name for f in dataclasses.fields(MetaTrainConfig)
            if f.name not in ignore and getattr(bench, f.name) != getattr(readme, f.name)}
    assert not diff, {k: (getattr(readme, k), getattr(bench, k)) for k in diff}
    assert readme.epochs == 10


def test_every_committed_result_has_its_documented_command_with_out():
    cmds = readme_commands() + doc_benchmark_commands()
    named = set()
    for c in cmds:
        scripts = [w for w in c if w.startswith("benchmarks/") and w.endswith((".py", ".sh"))]
        if not scripts:
            continue
        script = scripts[0]
        if script.endswith(".sh"):
            named.update(w for w in c if w.startswith("benchmarks/results/"))
        elif "--out" in c:
            named.add(c[c.index("--out") + 1])
        else:  # without --out a benchmark may only print
            assert script == "benchmarks/omniglot_table.py", f"the docs run {script} without --out: {shlex.join(c)}"
    committed = {f"benchmarks/results/{p.name}" for p in (ROOT / "benchmarks" / "results").glob("*.json")}
    assert committed and committed <= named, committed - named


def test_benchmark_defaults_do_not_touch_committed_results():
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        text = script.read_text()
        for m in re.finditer(r'add_argument\(\s*"--out"(.*?)\)\n', text, flags=re.S):
            default = re.search(r"default=([^\n]*)", m.group(1))
            assert default is None or "results" not in default.group(1), (script.name, default.group(1))
    assert 'RESULT=${4:-$OUT/omniglot_cpu.json}' in (ROOT / "benchmarks" / "omniglot_cpu.sh").read_text()


@pytest.mark.parametrize("script", ["omniglot_table.py", "collect_results.py", "sd_study_table.py",
                                    "omniglot_runs_table.py", "cross_domain_table.py", "maml_table.py"])
def test_table_scripts_refuse_a_folder_without_runs(tmp_path, script):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), str(tmp_path)],
                       capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert r.returncode == 2
    assert "Traceback" not in r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path) in lines[0], r.stderr
    assert not list(tmp_path.rglob("*.json"))


def test_install_and_learn2learn_recipes_are_portable():
    install = next(b for b in code_blocks() if "pip install torch" in b)  # the README's own install
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in install
    assert 'pip install -c constraints.txt -e ".[dev]"' in install
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install --quiet torch==2.13.0\n" in ci and '-c constraints.txt -e ".[dev]"' in ci
    # learn2learn: one script, run by CI and named by the README, builds it in a temporary folder
    script = (ROOT / ".ci" / "install_learn2learn.sh").read_text()
    assert "bash .ci/install_learn2learn.sh" in ci
    assert 'WORK=$(mktemp -d)' in script and """trap 'rm -rf "$WORK"' EXIT""" in script and 'cd "$WORK"' in script
    assert "learn2learn==0.2.0" in script and "--no-deps" in script and '"cython<3"' in script
    assert "learn2learn==0.2.0" not in README  # the build is a docs how-to that runs the same script
    assert "bash .ci/install_learn2learn.sh" in (ROOT / "docs" / "how-to" / "learn2learn.md").read_text()
    assert '"learn2learn-*"' in (ROOT / "pyproject.toml").read_text()


def test_readme_links_and_mentions():
    assert "DESIGN.md" not in README and "(docs/architecture.md)" in README
    assert "FEWSHOT_SLA_DATA" in README
    docs = "\n".join(DOCS.values())
    assert "tensorboard --logdir runs" in docs and "FEWSHOT_SLA_DATA" in docs
    assert (ROOT / "configs").is_symlink() and (ROOT / "configs").resolve() == ROOT / "fewshot_sla" / "configs"
    assert "symbolic link" in docs


def test_readme_links_resolve():
    """Every relative link of the README names a file of the repository (and its anchor, a heading there)."""
    links = re.findall(r"\]\(([^)\s]+)\)", README)
    assert len(links) > 20
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.is_file(), f"README links to {link}, which does not exist"
        if anchor and target.suffix == ".md":
            slugs = {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
                     for h in re.findall(r"^#+ (.*)$", target.read_text(), flags=re.M)}
            assert anchor in slugs, f"README links to {link}: no such heading in {path}"


def test_readme_is_short():
    lines = README.count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}); move detail to docs/"


def test_user_facing_commands_do_not_use_the_developer_data_path():
    for name, text in {"README.md": README, **DOCS}.items():
        assert "../shared/data" not in text, f"{name} uses the developer-only path ../shared/data"


def _fewshot_sla_commands() -> list[tuple[str, list[str]]]:
    out = []
    for name, text in {"README.md": README, **DOCS}.items():
        for block in code_blocks(text, langs=("bash", "sh")):
            for line in block.replace("\\\n", " ").splitlines():
                for part in line.split(" #")[0].split(";"):
                    if part.strip().startswith("fewshot-sla "):
                        out.append((name, shlex.split(part)))
    return out


def test_every_documented_fewshot_sla_command_parses():
    """Each ``fewshot-sla ...`` line of a bash block in the README or the docs is a valid command line
    (options, choices and types; paths are placeholders)."""
    cmds = _fewshot_sla_commands()
    assert len(cmds) > 30
    parser, bad = build_parser(), []
    for name, words in cmds:
        try:
            parser.parse_args(words[1:])
        except SystemExit as e:
            if e.code != 0:
                bad.append(f"{name}: {shlex.join(words)}")
    assert not bad, "these documented commands do not parse:\n" + "\n".join(bad)


def test_every_benchmark_script_the_docs_run_exists():
    named = {w for c in readme_commands() + doc_benchmark_commands() for w in c
             if w.startswith("benchmarks/") and w.endswith((".py", ".sh"))}
    missing = sorted(s for s in named if not (ROOT / s).is_file())
    assert len(named) > 10 and not missing, missing
