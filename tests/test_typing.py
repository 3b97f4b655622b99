"""Options are typed: mypy refuses a misspelt or mistyped option, and help() lists them all.

The option table (the TypedDicts of aiotls.context and aiotls.options) is what mypy
checks calls against, what the front doors accept at run time and what help() shows.
"""

from __future__ import annotations

import dataclasses
import os
import pydoc
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import aiotls
from aiotls import context, options

ROOT = Path(aiotls.__file__).resolve().parents[1]

#: Each line that mypy must refuse, marked with the error code and a word of its message.
BAD = """\
from asyncio import Protocol

from aiotls import create_secure_context, create_server, open_connection, start_server

async def main() -> None:
    await open_connection("localhost", 443, reject_unauthorised=False)  # call-arg reject_unauth
    await start_server(print, handshake_timeout="10")  # arg-type handshake_timeout
    create_secure_context(min_version="TLSv1.4")  # arg-type min_version
    await create_server(Protocol, servername="x")  # call-arg servername
    await open_connection("localhost", 443, sni_callback=None)  # call-arg sni_callback
    await open_connection("localhost", 443, alpn_protocols=lambda p, s: None)  # arg-type alpn
    await start_server(print, sni_callback=lambda name: "ctx")  # arg-type sni_callback
    await start_server(print, on_keylog=lambda: None)  # arg-type on_keylog
    await start_server(print, backlog="8")  # arg-type backlog
"""

#: Real uses of options and hooks, plain and async, that mypy --strict must accept.
GOOD = """\
import asyncio
import socket
from pathlib import Path
from typing import Any

import aiotls
from aiotls import SecureContext, TLSTransport


async def sni(servername: str | None) -> SecureContext | None:
    return None


def select(protocols: list[str], servername: str | None) -> str | None:
    return protocols[0] if protocols else None


def secure(transport: TLSTransport) -> None:
    print(transport.authorized)


async def failed(exc: Exception, transport: TLSTransport) -> None:
    print(exc)


def store(session_id: bytes, data: bytes) -> None:
    pass


async def fetch(session_id: bytes) -> bytes | None:
    return None


async def identity(hostname: str, cert: dict[str, Any]) -> Exception | None:
    return None  # an async check_server_identity pauses the handshake


def staple(cert: Any, issuer: Any) -> bytes | None:
    return None


async def main(config: dict[str, Any]) -> None:
    ctx = aiotls.create_secure_context(
        key=Path("key.pem"), cert=[Path("cert.pem")], ca="-----BEGIN CERTIFICATE-----",
        min_version="TLSv1.3", alpn_protocols=["h2", "http/1.1"], passphrase=b"secret",
        pfx={"buf": b"...", "passphrase": "p"}, ecdh_curve="X25519", request_cert=True,
    )
    server = await aiotls.start_server(
        lambda reader, writer: None, "127.0.0.1", 0, context=ctx, sni_callback=sni,
        alpn_protocols=select, on_secure_connection=secure, on_tls_client_error=failed,
        on_new_session=store, on_resume_session=fetch, on_ocsp_request=staple,
        on_keylog=lambda line: None, handshake_timeout=10, shutdown_timeout=0.5,
        allow_renegotiation=True, backlog=8, reuse_port=True, key=[{"pem": "..."}],
    )
    server.add_context("*.example.com", {"key": "...", "cert": "..."})
    server.set_secure_context(ctx)
    loop = asyncio.get_running_loop()
    reader, writer = await aiotls.open_connection(
        "localhost", 443, lookup=loop.getaddrinfo, servername="localhost",
        on_session=lambda data: None, local_addr=("127.0.0.1", 0), session=None,
        check_server_identity=aiotls.check_server_identity, request_ocsp=True,
        on_ocsp_response=lambda response: None, min_dh_size=2048, sslkeylogfile=True,
    )
    await aiotls.open_connection("localhost", 443, lookup=socket.getaddrinfo)
    await aiotls.open_connection("localhost", 443, **config)  # options from a config file
    await aiotls.start_tls(writer, server_side=True, sni_callback=sni, key="...")
    await aiotls.start_tls(writer, servername="localhost", on_session=print)
    await aiotls.open_connection("localhost", 443, check_server_identity=identity)
"""


def mypy(tmp_path: Path, **files: str) -> list[str]:
    """mypy --strict (the project's configuration) on the given files; its error lines."""
    pytest.importorskip("mypy", reason="mypy is in the test extra; CI installs it")
    for name, text in files.items():
        (tmp_path / f"{name}.py").write_text(text)
    run = subprocess.run(
        [
            sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "pyproject.toml"),
            "--cache-dir", str(tmp_path / ".mypy_cache"), "--no-error-summary",
            *(f"{name}.py" for name in files),
        ],
        cwd=tmp_path, env={**os.environ, "MYPYPATH": str(ROOT)},
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode in (0, 1), run.stderr + run.stdout  # 2 would be mypy's own failure
    return [line for line in run.stdout.splitlines() if ": error:" in line]


@pytest.mark.timeout(300)
def test_mypy_refuses_misspelt_and_mistyped_options_and_accepts_real_use(tmp_path: Path) -> None:
    errors = mypy(tmp_path, bad=BAD, good=GOOD)
    assert not [e for e in errors if e.startswith("good.py")], errors
    expected = {
        n: line.rsplit("# ", 1)[1].split()
        for n, line in enumerate(BAD.splitlines(), 1)
        if "# " in line
    }
    found: dict[int, list[str]] = {}
    for error in errors:
        _, lineno, rest = error.split(":", 2)
        found.setdefault(int(lineno), []).append(rest)
    assert sorted(found) == sorted(expected), errors
    for lineno, (code, word) in expected.items():
        assert any(f"[{code}]" in e and word in e for e in found[lineno]), (lineno, found[lineno])


FRONT_DOORS = {
    "create_secure_context": [context.ContextOptions],
    "start_server": [options.ServerOptions],
    "create_server": [options.ServerOptions],
    "open_connection": [options.ClientOptions],
    "create_connection": [options.ClientOptions],
    "start_tls": [options.ServerOptions, options.ClientOptions],
}


@pytest.mark.parametrize("door", sorted(FRONT_DOORS))
def test_help_lists_every_option_on_a_line_of_its_own(door: str) -> None:
    text = pydoc.render_doc(getattr(aiotls, door), renderer=pydoc.plaintext)
    lines = text.splitlines()
    for table in FRONT_DOORS[door]:
        for name, opt in context.option_specs(table).items():
            assert any(line.strip().startswith(f"- ``{name}``: {opt.doc}") for line in lines), name


def test_every_option_is_documented_and_accepted_where_it_is_declared() -> None:
    for table in (context.ContextOptions, options.ServerOptions, options.ClientOptions):
        for name, opt in context.option_specs(table).items():
            assert opt.doc and "\n" not in opt.doc, name
    # The names the table declares are the names the front doors accept, and no others.
    server_names = dict.fromkeys(context.option_names(options.ServerOptions))
    options.check_names(aiotls.start_server, server_names, server_side=True)
    client_names = dict.fromkeys(context.option_names(options.ClientOptions))
    options.check_names(aiotls.open_connection, client_names, server_side=False)
    with pytest.raises(TypeError, match="'lookup' \\(a client option\\)"):
        options.check_names(aiotls.start_server, {"lookup": None}, server_side=True)


def test_the_table_shows_the_defaults_the_code_uses() -> None:
    specs = context.option_specs(options.ServerOptions) | context.option_specs(
        options.ClientOptions
    )
    runtime = {f.name: f.default for f in dataclasses.fields(options.ConnectionOptions)}
    shown = {name: opt.default for name, opt in specs.items() if opt.default is not None}
    for name in shown.keys() & runtime.keys():
        assert shown[name] == runtime[name], name
    assert typing.get_args(context.TLSVersion) == tuple(context._VERSIONS)


def test_a_misspelt_keyword_still_names_the_asyncio_keyword_it_meant() -> None:
    # backlog, reuse_address, local_addr... are the front doors' own typed parameters now.
    with pytest.raises(TypeError, match=r"'backlg' \(did you mean 'backlog'\?\)"):
        options.check_names(aiotls.create_server, {"backlg": 1}, server_side=True)
    with pytest.raises(TypeError, match=r"'local_adr' \(did you mean 'local_addr'\?\)"):
        options.check_names(aiotls.create_connection, {"local_adr": 1}, server_side=False)
