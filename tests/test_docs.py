"""The documentation site: it builds with ``mkdocs build --strict`` (every page in the nav, every
link and anchor resolved, the API pages rendered from the docstrings), the command-line reference
is the one the code generates, and the changelog's latest version is the package's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from skips import import_or_skip

import fewshot_sla
from fewshot_sla.cli_reference import FIX, render

ROOT = Path(__file__).resolve().parents[1]
DEV = "pip install -c constraints.txt -e \".[dev]\" (the dev extra holds mkdocs, mkdocs-material, mkdocstrings)"


def test_cli_reference_is_generated_from_the_code():
    committed = (ROOT / "docs" / "reference" / "cli.md").read_text()
    assert committed == render(), f"docs/reference/cli.md is out of date; regenerate it: {FIX}"


def test_cli_reference_lists_every_option_of_every_command():
    """Independent of the generator: every option string argparse knows (hidden old spellings
    aside) appears in the committed page, under its command's heading."""
    import argparse

    from fewshot_sla.cli import build_parser

    page = (ROOT / "docs" / "reference" / "cli.md").read_text()
    sections = dict(re.findall(r"^## (\S+)\n(.*?)(?=^## |\Z)", page, flags=re.S | re.M))
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sections) == set(sub.choices)
    for name, parser in sub.choices.items():
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or not action.option_strings or action.dest == "help":
                continue
            flag = action.option_strings[0]
            assert f"`{flag}" in sections[name], f"{name}: {flag} missing from docs/reference/cli.md; {FIX}"


def test_changelog_latest_version_is_the_package_version():
    text = (ROOT / "docs" / "CHANGELOG.md").read_text()
    versions = re.findall(r"^## (\d+\.\d+\.\d+\S*)", text, flags=re.M)
    assert versions, "docs/CHANGELOG.md has no '## X.Y.Z' version heading"
    assert versions[0] == fewshot_sla.__version__, (
        f"docs/CHANGELOG.md's latest version is {versions[0]}, fewshot_sla.__version__ is "
        f"{fewshot_sla.__version__}: add a '## {fewshot_sla.__version__}' section on top")


def test_mkdocs_build_strict(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        import_or_skip(module, DEV)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                        "--site-dir", str(site)], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # the API pages hold the docstrings, the reference the options, the results their plots
    api = (site / "reference" / "api" / "sla" / "index.html").read_text()
    assert "aggregated_logits" in api and "joint_labels" in api
    assert "--test-episodes" in (site / "reference" / "cli" / "index.html").read_text()
    assert (site / "results" / "data" / "sd_study.png").is_file()
    assert (site / "assets" / "episode.svg").is_file()
