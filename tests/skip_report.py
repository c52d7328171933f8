"""pytest hooks: the run ends with one line per skip group and reason, and with ``FEWSHOT_SLA_CI=1``
(``.ci/run``) a skip that CI does not allow fails the run (groups and policy: ``skips.py``).

``conftest.py`` imports these hooks; ``python -m pytest -p skip_report`` loads them elsewhere (the
policy's own test, ``test_skip_policy.py``)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Generator
from pathlib import Path

import pytest
from skips import CI_VARIABLE, ci_verdict, group_of

#: per run: (group, reason, dataset, root, package) of each skipped test, in order
_SKIPS = pytest.StashKey[list]()
#: per run, with FEWSHOT_SLA_CI on: each distinct entry of _SKIPS -> (CI allows it, why)
_VERDICTS = pytest.StashKey[dict]()


def ci_mode() -> bool:
    """Whether ``FEWSHOT_SLA_CI`` is on (set, not 0)."""
    return os.environ.get(CI_VARIABLE, "") not in ("", "0")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_SKIPS] = []
    config.stash[_VERDICTS] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None, pytest.TestReport,
                                                                                      pytest.TestReport]:
    """Each skipped test (one report: its setup's or its call's) with the group its skip carries."""
    report = yield
    if report.skipped and not hasattr(report, "wasxfail"):
        g = group_of(call.excinfo.value) if call.excinfo is not None else None
        group, dataset, root, package = (g.group, g.dataset, g.root, g.package) if g is not None else (None,) * 4
        longrepr = report.longrepr
        reason = (longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)).removeprefix("Skipped: ")
        item.config.stash[_SKIPS].append((group, reason, dataset, None if root is None else str(root), package))
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    """With ``FEWSHOT_SLA_CI`` on: a skip that CI refuses makes the run fail (exit status 1)."""
    if not ci_mode():
        return
    verdicts = session.config.stash[_VERDICTS]
    for key in session.config.stash[_SKIPS]:
        group, _, dataset, root, package = key
        verdicts[key] = ci_verdict(group, dataset, None if root is None else Path(root), package)
    if not all(ok for ok, _ in verdicts.values()) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> Generator[None]:
    """After pytest's own summary (``-ra``): ``skipped N [group] reason`` per group and reason, with
    CI's verdict where ``FEWSHOT_SLA_CI`` is on."""
    result = yield
    counts = Counter(config.stash[_SKIPS])
    verdicts = config.stash[_VERDICTS]
    for key, n in counts.items():
        group, reason = key[:2]
        ok, why = verdicts.get(key, (True, ""))
        note = "" if key not in verdicts else f" (CI allows it: {why})" if ok else f" <- CI refuses it: {why}"
        terminalreporter.write_line(f"skipped {n} [{group or 'no group'}] {reason}{note}", red=not ok)
    refused = sum(n for key, n in counts.items() if not verdicts.get(key, (True, ""))[0])
    if refused:
        terminalreporter.write_line(f"{CI_VARIABLE} is on: {refused} skipped test(s) that CI does not allow: the run "
                                    "fails", red=True, bold=True)
    return result
