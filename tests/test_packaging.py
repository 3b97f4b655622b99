"""Packaging: the sdist builds the wheel, the wheel installs in a clean venv and runs
``aiotls demo``; license, metadata and the version have one source each."""

from __future__ import annotations

import email
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

import aiotls

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VERSION = PYPROJECT["version"]


def sh(*argv: str | Path, cwd: Path, timeout: float = 150) -> str:
    """Run a command to completion; its stdout (it must succeed). AIOTLS_NO_EXTENSIONS
    (a test run on the fallback) would build and load no extension: it is left out."""
    env = {k: v for k, v in os.environ.items() if k != "AIOTLS_NO_EXTENSIONS"}
    proc = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def test_version_comes_from_the_distribution_metadata() -> None:
    assert aiotls.__version__ == importlib.metadata.version("aiotls") == VERSION


def test_uninstalled_source_tree_reads_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert aiotls._version() == VERSION


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sdist_builds_a_wheel_that_installs_and_runs_the_demo(tmp_path: Path) -> None:
    # A copy of the tree, so that the build leaves nothing (egg-info) in the checkout.
    tree = tmp_path / "src"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".*", "*.egg-info", "__pycache__"))
    dist = tmp_path / "dist"
    # python -m build: the sdist from the tree, then the wheel from the unpacked sdist.
    sh(sys.executable, "-m", "build", "--outdir", dist, tree, cwd=tmp_path)
    (sdist,) = dist.glob("aiotls-*.tar.gz")
    (wheel,) = dist.glob("aiotls-*.whl")
    assert sdist.name == f"aiotls-{VERSION}.tar.gz"
    # The compiled data path (aiotls._speedups) makes it a CPython wheel for this platform.
    assert wheel.name.startswith(f"aiotls-{VERSION}-cp3")

    with tarfile.open(sdist) as tar:
        names = set(tar.getnames())
    assert {f"aiotls-{VERSION}/{n}" for n in ("LICENSE", "README.md", "pyproject.toml")} <= names

    info = f"aiotls-{VERSION}.dist-info"
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        metadata = email.message_from_bytes(whl.read(f"{info}/METADATA"))
        entry_points = whl.read(f"{info}/entry_points.txt").decode()
        license_text = whl.read(f"{info}/licenses/LICENSE").decode()
    assert {"aiotls/py.typed", "aiotls/testing.py", "aiotls/pki.py"} <= names
    assert any(n.startswith("aiotls/_speedups.") and n.endswith(".so") for n in names)
    assert license_text == (ROOT / "LICENSE").read_text()
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["Version"] == VERSION
    assert set(metadata.get_all("Classifier") or ()) == set(PYPROJECT["classifiers"])
    assert len(metadata.get_all("Project-URL") or ()) == len(PYPROJECT["urls"])
    assert metadata["Author-email"]
    assert "aiotls = aiotls.cli:main" in entry_points
    assert "[pytest11]\naiotls = aiotls.testing" in entry_points

    # A clean venv, away from the checkout: only the wheel (and its dependencies).
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    sh(env_dir / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=tmp_path)
    version = sh(env_dir / "bin" / "aiotls", "--version", cwd=tmp_path)
    assert version.strip() == f"aiotls {VERSION}"
    demo = sh(env_dir / "bin" / "aiotls", "demo", cwd=tmp_path, timeout=60)
    assert "yes (chain and host name verified)" in demo
    where = sh(
        env_dir / "bin" / "python", "-c", "import aiotls; print(aiotls.__file__)", cwd=tmp_path
    )
    assert where.startswith(str(env_dir))
    loaded = sh(
        env_dir / "bin" / "python",
        "-c",
        "import aiotls._openssl.speedups as s; print(s.COMPILED, s.DataPath.__module__)",
        cwd=tmp_path,
    )
    assert loaded.split() == ["True", "aiotls._speedups"]
