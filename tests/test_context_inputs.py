"""Option values as Python users give them (issue 7, items 10, 18 and 19b).

- a shared passphrase is ignored by keys and pfx files that are not encrypted (Node's rule),
  and "bad passphrase?" is said only where a passphrase could be the problem;
- an unknown keyword names the option it most likely meant, at create_secure_context and
  at every front door, while asyncio's own listen/connect keywords stay valid.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trustme
from parity import HOST, Pki, connected, issue, serving
from test_parity_context import PASSPHRASE, encrypted, pkcs12_of

import aiotls

pytestmark = pytest.mark.timeout(20)


@pytest.fixture(scope="module")
def rsa() -> Pki:
    return issue(trustme.CA(key_type=trustme.KeyType.RSA), trustme.KeyType.RSA)


# -- item 10: passphrases -------------------------------------------------------------


def test_shared_passphrase_is_ignored_where_nothing_is_encrypted(rsa: Pki) -> None:
    plain_pfx = pkcs12_of(rsa, None)
    for options in (
        {"key": rsa.key, "cert": rsa.chain},
        {"key": [{"pem": rsa.key, "passphrase": "unused"}], "cert": rsa.chain},
        {"pfx": plain_pfx},
        {"pfx": [{"buf": plain_pfx, "passphrase": "unused"}]},
    ):
        ctx = aiotls.create_secure_context(passphrase=PASSPHRASE, **options)
        assert ctx.certificates[0] == rsa.cert


def test_bad_passphrase_is_suspected_only_where_it_matters(rsa: Pki) -> None:
    corrupt = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    with pytest.raises(aiotls.TLSConfigError, match=r"^key: cannot load private key: ") as info:
        aiotls.create_secure_context(key=corrupt, cert=rsa.chain, passphrase=PASSPHRASE)
    assert "passphrase" not in str(info.value)
    locked = encrypted(rsa.key, PASSPHRASE)
    with pytest.raises(aiotls.TLSConfigError, match=r"^key: .*\(bad passphrase\?\)"):
        aiotls.create_secure_context(key=locked, cert=rsa.chain, passphrase="wrong")
    pfx = pkcs12_of(rsa, PASSPHRASE)
    with pytest.raises(aiotls.TLSConfigError, match=r"^pfx: .*\(bad passphrase\?\)"):
        aiotls.create_secure_context(pfx=pfx, passphrase="wrong")
    with pytest.raises(aiotls.TLSConfigError, match=r"^pfx: .*\(encrypted\? give passphrase\)"):
        aiotls.create_secure_context(pfx=pfx)


# -- item 19b: unknown keywords -------------------------------------------------------


@contextlib.asynccontextmanager
async def plain_connection() -> AsyncIterator[asyncio.StreamWriter]:
    """A plain TCP connection on loopback (for start_tls), closed afterwards."""
    server = await asyncio.start_server(lambda r, w: None, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection(HOST, port)
    try:
        yield writer
    finally:
        writer.close()
        server.close()


async def call(door: str, **kwargs: Any) -> None:
    """Call one front door with ``kwargs`` (the tests expect it to raise before any I/O)."""
    if door == "create_secure_context":
        aiotls.create_secure_context(**kwargs)
    elif door in {"open_connection", "create_connection"}:
        args = () if door == "open_connection" else (asyncio.Protocol,)
        await getattr(aiotls, door)(*args, HOST, 9, **kwargs)
    elif door in {"start_server", "create_server"}:
        handler = (lambda r, w: None) if door == "start_server" else asyncio.Protocol
        server = await getattr(aiotls, door)(handler, HOST, 0, **kwargs)
        server.close()  # not reached when the keyword is refused
    else:
        async with plain_connection() as writer:
            await aiotls.start_tls(writer, **kwargs)


CLIENTS = ["open_connection", "create_connection", "start_tls"]
SERVERS = ["start_server", "create_server"]


@pytest.mark.parametrize(
    ("doors", "name", "hint"),
    [
        (CLIENTS, "server_hostname", "did you mean 'servername'?"),
        (CLIENTS, "ssl", "did you mean 'context'?"),
        (CLIENTS + SERVERS, "cafile", "did you mean 'ca'?"),
        (CLIENTS + SERVERS, "certfile", "did you mean 'cert'?"),
        (CLIENTS + SERVERS, "keyfile", "did you mean 'key'?"),
        (CLIENTS, "reject_unauthorised", "did you mean 'reject_unauthorized'?"),
        (CLIENTS + SERVERS, "ssl_handshake_timeout", "did you mean 'handshake_timeout'?"),
        (SERVERS, "ssl_shutdown_timeout", "did you mean 'shutdown_timeout'?"),
        (["open_connection"], "check_hostname", "did you mean 'check_server_identity'?"),
        (["open_connection"], "rejectUnauthorized", "did you mean 'reject_unauthorized'?"),
        (["start_server"], "SNICallback", "did you mean 'sni_callback'?"),
        (["start_server"], "reuse_adress", "did you mean 'reuse_address'?"),
        (["open_connection"], "local_adr", "did you mean 'local_addr'?"),
        (["open_connection"], "sni_callback", "a server option"),
        (["create_server"], "servername", "a client option"),
        (["start_server"], "server_hostname", "did you mean 'servername'? a client option"),
        (["create_secure_context"], "cafile", "did you mean 'ca'?"),
        (["create_secure_context"], "reject_unauthorised", "did you mean 'reject_unauthorized'?"),
        (["create_secure_context"], "ALPNProtocols", "did you mean 'alpn_protocols'?"),
        (
            ["create_secure_context"],
            "server_hostname",
            "did you mean 'servername'? an option of the connection, not of create_secure_context",
        ),
    ],
)
async def test_unknown_keyword_suggests_the_right_one(
    doors: list[str], name: str, hint: str
) -> None:
    for door in doors:
        message = f"{door}: unknown option {name!r} ({hint})"
        with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
            await call(door, **{name: None})


async def test_several_unknown_keywords_are_all_named() -> None:
    message = (
        "open_connection: unknown option 'bogus'; "
        "unknown option 'server_hostname' (did you mean 'servername'?)"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        await call("open_connection", server_hostname="localhost", bogus=1)


async def test_asyncio_listen_and_connect_keywords_stay_valid(rsa: Pki) -> None:
    async with (
        serving(**rsa.identity(), reuse_address=True, backlog=8) as served,
        connected(served.port, ca=rsa.ca_pem, local_addr=(HOST, 0)) as tls,
    ):
        assert tls.authorized
        assert tls.local_address == HOST
