"""The documentation stays true: its programs run, it names every error code, its links hold.

The option and hook reference is generated from the code (docs/_ext/aiotls_docs.py);
CI builds the site with warnings as errors. These tests cover what a build cannot see.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
_BLOCK = re.compile(r"```python\n(.*?)```", re.S)

#: Every complete program in the docs (a python block that starts with an import).
PROGRAMS = [
    pytest.param(block, id=f"{page.relative_to(DOCS)}#{n}")
    for page in PAGES
    for n, block in enumerate(_BLOCK.findall(page.read_text()))
    if block.startswith(("import ", "from "))
]


def test_the_docs_have_programs_to_run() -> None:
    assert len(PROGRAMS) >= 12  # getting started and one per feature page


@pytest.mark.parametrize("program", PROGRAMS)
def test_each_program_in_the_docs_runs(program: str, tmp_path: Path) -> None:
    for module in re.findall(r"^(?:import|from) (\w+)", program, re.M):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install 'aiotls[{module}]')")
    script = tmp_path / "program.py"
    script.write_text(program)
    run = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=50,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout  # each one shows what happened


def test_the_error_page_names_every_code_aiotls_raises() -> None:
    page = (DOCS / "reference" / "errors.md").read_text()
    source = "\n".join(p.read_text() for p in (ROOT / "aiotls").glob("*.py"))
    codes = set(re.findall(r'code="([A-Z0-9_]+)"', source)) | {"ERR_TLS"}
    assert codes, "no codes found: the pattern no longer matches the code"
    missing = sorted(code for code in codes if f"`{code}`" not in page)
    assert not missing


@pytest.mark.parametrize("page", [ROOT / "README.md", *PAGES], ids=lambda p: p.name)
def test_relative_links_point_at_files_that_exist(page: Path) -> None:
    links = re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", page.read_text())
    broken = [link for link in links if not (page.parent / link).is_file()]
    assert not broken


@pytest.mark.parametrize(
    "path", [DOCS / "features" / "engine.md", ROOT / "examples" / "sansio_engine.py"]
)
def test_the_engine_guides_use_the_engine_verdicts(path: Path) -> None:
    """A client engine sends its ClientHello unprompted and judges the server itself:
    the guides must not teach the old kick or checking the verdict by hand."""
    text = path.read_text()
    for stale in ("do_handshake(", "verify_error", "check_server_identity(SERVERNAME"):
        assert stale not in text, f"{path.name} still shows {stale}"
    assert "authorized" in text
