"""The skip report and CI's skip policy (``skips.py``, ``skip_report.py``), on a small test file run by
pytest in a child process: one line per skip group and reason; with ``FEWSHOT_SLA_CI=1`` the run
fails on a skip that CI refuses (a missing package, data missing from a data folder that exists, a
skip without a group) and passes on the ones it allows (CUDA, no data folder, a dataset the shared
folder does not carry)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent

CASES = textwrap.dedent("""
    from pathlib import Path

    import pytest
    from skips import SkipGroup, import_or_skip, skip, skip_missing_package

    DATA = Path(__file__).parent / "data"

    def test_passes():
        pass

    @pytest.mark.parametrize("i", [0, 1])
    def test_allowed_cuda(i):
        skip(SkipGroup("cuda"), "needs a CUDA device")

    def test_allowed_not_shared():
        skip(SkipGroup("data", "CUB-200-2011", DATA), "CUB-200-2011 not found")

    def test_allowed_no_folder():
        skip(SkipGroup("data", "Omniglot", DATA / "absent"), "Omniglot not found (no folder)")

    def test_refused_data_in_folder():
        skip(SkipGroup("data", "Omniglot", DATA), "Omniglot not found (folder there)")

    def test_refused_package():
        import_or_skip("no_such_module_here", "pip install no-such-module-here")

    def test_refused_system_package():
        skip_missing_package("the Debian package dataset-x", "apt-get install dataset-x", system_package="dataset-x")

    def test_refused_bare():
        pytest.skip("a bare skip")

    def test_refused_importorskip():
        pytest.importorskip("no_such_module_here")
""")


def _pytest(tmp_path: Path, select: str, ci: str | None, **extra_env: str) -> tuple[int, list[str]]:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "test_cases.py").write_text(CASES)
    env = {k: v for k, v in os.environ.items() if k not in ("FEWSHOT_SLA_CI", "FEWSHOT_SLA_CI_UNINSTALLABLE")}
    env.update(extra_env)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    if ci is not None:
        env["FEWSHOT_SLA_CI"] = ci
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "skip_report", "-p", "no:cacheprovider", "-q", "-rs",
                           "-k", select, "test_cases.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    return proc.returncode, proc.stdout.splitlines()


def _skip_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("skipped ")]


def test_one_line_per_group_and_reason_and_no_verdict_outside_ci(tmp_path):
    rc, lines = _pytest(tmp_path, "not nothing", ci=None)
    assert rc == 0, lines
    assert _skip_lines(lines) == [
        "skipped 2 [cuda] needs a CUDA device",
        "skipped 1 [data] CUB-200-2011 not found",
        "skipped 1 [data] Omniglot not found (no folder)",
        "skipped 1 [data] Omniglot not found (folder there)",
        "skipped 1 [package] no_such_module_here is not installed (ModuleNotFoundError: No module named "
        "'no_such_module_here'): pip install no-such-module-here",
        "skipped 1 [package] the Debian package dataset-x is not installed: apt-get install dataset-x",
        "skipped 1 [no group] a bare skip",
        "skipped 1 [no group] could not import 'no_such_module_here': No module named 'no_such_module_here'",
    ]
    # pytest's own lines (-rs) point at the test, not at the helper that raised the skip
    pytest_lines = [line for line in lines if line.startswith("SKIPPED")]
    assert len(pytest_lines) == 8 and all("test_cases.py:" in line for line in pytest_lines), pytest_lines
    assert lines[-1].startswith("1 passed, 9 skipped")


def test_ci_allows_cuda_and_absent_data(tmp_path):
    rc, lines = _pytest(tmp_path, "passes or allowed", ci="1")
    assert rc == 0, lines
    skips = _skip_lines(lines)
    assert len(skips) == 3 and all(" (CI allows it: " in line for line in skips), skips
    assert "CI runs on CPUs" in skips[0] and "not in the shared data folder" in skips[1]
    assert f"there is no data folder {tmp_path / 'data' / 'absent'}" in skips[2]


def test_ci_fails_the_run_on_each_refused_skip(tmp_path):
    rc, lines = _pytest(tmp_path, "not nothing", ci="1")
    assert rc == 1, lines
    refused = {line.split(" <- CI refuses it: ")[0]: line.split(" <- CI refuses it: ")[1]
               for line in _skip_lines(lines) if " <- CI refuses it: " in line}
    without_group = "a skip without a group: raise it with a helper of tests/skips.py (cuda, data, package)"
    assert refused == {
        "skipped 1 [data] Omniglot not found (folder there)":
            f"the data folder {tmp_path / 'data'} exists, so it should hold Omniglot",
        "skipped 1 [package] no_such_module_here is not installed (ModuleNotFoundError: No module named "
        "'no_such_module_here'): pip install no-such-module-here":
            ".ci/run installs every optional package the tests use",
        "skipped 1 [package] the Debian package dataset-x is not installed: apt-get install dataset-x":
            ".ci/run installs every optional package the tests use",
        "skipped 1 [no group] a bare skip": without_group,
        "skipped 1 [no group] could not import 'no_such_module_here': No module named 'no_such_module_here'":
            without_group,
    }
    assert "FEWSHOT_SLA_CI is on: 5 skipped test(s) that CI does not allow: the run fails" in lines
    assert lines[-1].startswith("1 passed, 9 skipped")
    # one refused skip is enough; FEWSHOT_SLA_CI=0 is off
    assert _pytest(tmp_path, "passes or allowed or refused_package", ci="1")[0] == 1
    assert _pytest(tmp_path, "not nothing", ci="0")[0] == 0


def test_ci_allows_a_system_package_that_ci_run_could_not_install_and_says_why(tmp_path):
    """``.ci/run`` lists a Debian package it could not install (no root, no apt-get) in
    FEWSHOT_SLA_CI_UNINSTALLABLE: that package's skip is allowed with the reason, no other."""
    why = "neither root nor passwordless sudo"
    rc, lines = _pytest(tmp_path, "system_package", ci="1", FEWSHOT_SLA_CI_UNINSTALLABLE=f"dataset-x={why}")
    assert rc == 0, lines
    assert _skip_lines(lines) == [
        "skipped 1 [package] the Debian package dataset-x is not installed: apt-get install dataset-x "
        f"(CI allows it: .ci/run could not install dataset-x on this machine: {why})"]
    # another package named there does not excuse it, nor does it excuse a Python package
    assert _pytest(tmp_path, "system_package", ci="1", FEWSHOT_SLA_CI_UNINSTALLABLE="dataset-y=no apt-get")[0] == 1
    assert _pytest(tmp_path, "refused_package", ci="1", FEWSHOT_SLA_CI_UNINSTALLABLE=f"dataset-x={why}")[0] == 1
