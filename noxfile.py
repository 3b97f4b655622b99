"""nox sessions: tests (on asyncio and on uvloop), lint, typecheck, docs, bench, demo."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]


@nox.session
@nox.parametrize("loop", ["asyncio", "uvloop"])
def tests(session: nox.Session, loop: str) -> None:
    """The test suite on one event loop (plain `pytest` runs both in one go)."""
    session.install("-e", ".[test,uvloop]")
    session.run("pytest", *session.posargs, env={"AIOTLS_TEST_LOOPS": loop})


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "aiotls", "tests", "benchmarks", "examples", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev,uvloop]")
    session.run("mypy", "--strict", "aiotls")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, warnings as errors (docs/_build/html/index.html)."""
    session.install("-e", ".[docs]")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session
def bench(session: nox.Session) -> None:
    """aiotls against asyncio+ssl and uvloop+ssl, side by side (see benchmarks/README.md)."""
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/bench.py", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    session.install("-e", ".")
    session.run("aiotls", "demo", *session.posargs)
