"""aiotls's layers, read from its own source: no import cycle, no import running back up
a layer, and no OpenSSL / pyOpenSSL / cffi internals outside the floor (aiotls/_openssl).

Imports under ``if TYPE_CHECKING:`` count too (for cycles and for layers), with one
exception listed in ``ANNOTATION_ONLY``: the option table's hook types name the
transport that calls them, and the transport is configured from that table; the edge
exists for mypy only (never imported at run time), and a user's hook typed with
``TLSTransport`` could not be accepted otherwise.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import aiotls

PACKAGE = Path(aiotls.__file__).resolve().parent

#: Bottom to top; a module may import only modules of its own layer or below.
LAYERS: list[set[str]] = [
    {"errors", "_der"},
    {"_openssl", "_speedups"},  # the floor (and its submodules; the compiled data path)
    {"ciphers", "certinfo", "clienthello", "ocsp", "_checks"},  # pure helpers
    {"context"},
    {"engine"},
    {"stapling"},  # background OCSP fetching for servers (options builds it)
    {"options"},
    {"_aio", "workers"},  # the asyncio layer (and its submodules), multi-core serving
    {"aiotls"},  # the package: re-exports the public names
    {"aiohttp", "testing", "demo", "pki", "cli", "__main__", "_cli_cert", "_cli_common",
     "_cli_connect", "_cli_serve", "_cli_proxy", "proxy"},
]  # fmt: skip

ANNOTATION_ONLY = {("aiotls.options", "aiotls._aio.transport")}


def _modules() -> dict[str, Path]:
    mods = {}
    # A compiled module (.pyx) counts as a module others import; its own imports are
    # Cython, which ast cannot read (aiotls._speedups imports only from the floor).
    for path in sorted([*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.pyx")]):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The aiotls modules ``name`` imports (a ``from pkg import sub`` counts as ``sub``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    if path.suffix == ".pyx":
        return found
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in mods}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target not in mods:
                continue
            subs = {f"{target}.{a.name}" for a in node.names} & set(mods)
            found |= subs
            if len(subs) < len(node.names):  # some names are the package's own
                found.add(target)
    found.discard(name)
    return found


def _layer(name: str) -> int:
    parts = name.split(".")
    key = parts[1] if len(parts) > 1 else parts[0]
    for index, layer in enumerate(LAYERS):
        if key in layer:
            return index
    raise AssertionError(f"{name} is in no layer: add it to LAYERS")


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {
        name: {dep for dep in _imports(name, path, mods) if (name, dep) not in ANNOTATION_ONLY}
        for name, path in mods.items()
    }


def test_every_import_stays_in_its_layer_or_goes_down() -> None:
    upward = [
        f"{name} -> {dep}"
        for name, deps in _graph().items()
        for dep in deps
        if _layer(dep) > _layer(name)
    ]
    assert not upward


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            # A package importing its own submodules is how it re-exports them.
            if dep.startswith(node + "."):
                continue
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles


#: What only the floor may touch: cffi, cryptography's lib, pyOpenSSL and its internals.
_INTERNALS = re.compile(
    r"^\s*from OpenSSL\b|^\s*import OpenSSL\b|\bOpenSSL\._util\b|\b_reverse_mapping\b"
    r"|\b_into_ssl\b|\b_from_ssl\b|\._used\b|\b_original_lib\b|\bbindings\._rust\b"
    r"|\bffi\b|\blib\.\w+|\bctx\._context\b|\b_ctx\._context\b|\._x509\b"
)


def test_openssl_internals_only_in_the_floor() -> None:
    hits = [
        f"{path.relative_to(PACKAGE.parent)}:{lineno}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        if "_openssl" not in path.relative_to(PACKAGE).parts
        for lineno, line in enumerate(path.read_text().splitlines(), 1)
        if _INTERNALS.search(line.split("#", 1)[0])
    ]
    assert not hits
