"""The package as a user gets it: ``python -m build`` makes an sdist and, from it, a wheel; the wheel
installs in a clean virtual environment (no shared site-packages: torch 2.13.0 and the dependencies
installed there by pip) whose ``fewshot-sla list`` names every shipped config with its description,
as the source tree does. About a minute (pip unpacking torch is most of it); ``-m "not packaging"``
leaves it out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from skips import import_or_skip

import fewshot_sla
from fewshot_sla.cli import main
from fewshot_sla.config import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ROOT / "fewshot_sla" / "data" / "splits"

pytestmark = pytest.mark.packaging


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _source_files() -> list[str]:
    """The files a clone holds: tracked and untracked-but-not-ignored (what a commit would add)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the packaged files are those of a clone")
    out = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT).stdout
    return [p for p in out.split("\0") if p and (ROOT / p).exists()]


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """sdist and wheel of a copy of the checkout (the build writes egg-info beside setup.cfg)."""
    import_or_skip("build", "pip install -c constraints.txt -e '.[dev]' (the dev extra holds `build`)")
    base = tmp_path_factory.mktemp("package")
    src = base / "src"
    for rel in _source_files():
        target = src / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target, follow_symlinks=False)
    _run([sys.executable, "-m", "build", "--outdir", str(base / "dist"), str(src)])
    return base / "dist"


def _one(folder: Path, pattern: str) -> Path:
    (path,) = folder.glob(pattern)
    return path


def test_sdist_and_wheel_hold_the_configs_splits_license_and_metadata(dist):
    version = fewshot_sla.__version__
    configs = sorted(p.name for p in CONFIG_DIR.glob("*.toml"))
    splits = sorted(p.name for p in SPLITS.glob("*.txt"))
    assert len(configs) > 30 and len(splits) >= 7
    with tarfile.open(_one(dist, f"fewshot_sla-{version}.tar.gz")) as sdist:
        names = sdist.getnames()
    top = f"fewshot_sla-{version}/"
    assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith(f"{top}fewshot_sla/configs/")) == configs
    assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith(f"{top}fewshot_sla/data/splits/")) == splits
    assert {f"{top}LICENSE", f"{top}README.md", f"{top}setup.cfg"} <= set(names)
    with zipfile.ZipFile(_one(dist, f"fewshot_sla-{version}-py3-none-any.whl")) as wheel:
        names = wheel.namelist()
        meta = Parser().parsestr(wheel.read(f"fewshot_sla-{version}.dist-info/METADATA").decode())
        entry_points = wheel.read(f"fewshot_sla-{version}.dist-info/entry_points.txt").decode()
    assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("fewshot_sla/configs/")) == configs
    assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("fewshot_sla/data/splits/")) == splits
    assert f"fewshot_sla-{version}.dist-info/licenses/LICENSE" in names and not any("__pycache__" in n for n in names)
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    assert "fewshot-sla = fewshot_sla.cli:main" in entry_points
    assert meta["Name"] == "fewshot-sla" and meta["Version"] == version and meta["License"] == "MIT"
    assert meta["Requires-Python"] == ">=3.10"
    classifiers = meta.get_all("Classifier")
    assert {f"Programming Language :: Python :: 3.{m}" for m in range(10, 14)} <= set(classifiers)
    assert {"Operating System :: OS Independent", "Intended Audience :: Science/Research"} <= set(classifiers)
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert urls["Source"].startswith("https://") and urls["Issues"].startswith(urls["Source"])


def test_the_wheel_installs_in_a_clean_venv_and_lists_the_configs(dist, tmp_path, capsys):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    # the venv's processes see neither this checkout (PYTHONPATH, the working folder) nor the shared site-packages
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")} | {"PYTHONNOUSERSITE": "1"}
    clean = {"env": env, "cwd": tmp_path}
    paths = _run([str(python), "-c", "import sys; print('\\n'.join(sys.path))"], **clean).stdout.split()
    assert not any("site-packages" in p for p in paths if not p.startswith(str(venv))), paths
    wheel = _one(dist, "fewshot_sla-*.whl")
    # this interpreter's pip installs into the venv; --no-compile: torch's .pyc files are most of the time
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-compile",
          "-c", str(ROOT / "constraints.txt"), "torch==2.13.0", str(wheel)], **clean)
    where = _run([str(python), "-c", "import fewshot_sla; print(fewshot_sla.__file__, fewshot_sla.__version__)"],
                 **clean)
    file, version = where.stdout.split()
    assert file.startswith(str(venv)) and version == fewshot_sla.__version__
    listed = _run([str(python), "-m", "fewshot_sla.cli", "list"], **clean).stdout
    script = _run([str(venv / "bin" / "fewshot-sla"), "list"], **clean).stdout
    assert main(["list"]) == 0
    assert listed == script == capsys.readouterr().out  # the source tree's listing, configs and descriptions
    assert all(f"\n  {p.stem} " in listed for p in CONFIG_DIR.glob("*.toml"))
