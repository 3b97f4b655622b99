"""pytest fixtures for testing code that speaks TLS (a pytest plugin, loaded automatically).

Installing aiotls registers this module with pytest (entry point ``pytest11``), so
these fixtures are available in every test without an import:

``tls_ca``
    An :class:`EphemeralCA` for the test session: a throwaway certificate authority
    in memory (:mod:`aiotls.pki`), like trustme's. ``tls_ca.identity("localhost")``
    gives ``{"key": ..., "cert": ...}`` for a server or a client certificate,
    ``tls_ca.client_options()`` the options of a client that trusts it.
``tls_client_options``
    ``{"ca": <the CA>, "servername": "localhost"}``: what a client passes to
    ``aiotls.open_connection`` (or any front door) to verify ``tls_server``.
``tls_server``
    A :class:`TLSTestServer`: an aiotls stream server already listening on
    127.0.0.1 (a free port) with a certificate from ``tls_ca`` for localhost,
    127.0.0.1 and ::1, closed after the test. ``await tls_server.connect()`` opens a
    verified client connection. It echoes by default; override the
    ``tls_server_handler`` fixture (a ``(reader, writer)`` coroutine function) or
    ``tls_server_options`` (keyword arguments for ``aiotls.start_server``: hooks,
    timeouts, context options) in a conftest, a module, or per test with
    ``@pytest.mark.parametrize("tls_server_options", [{...}])``. An async fixture:
    it needs pytest-asyncio, and runs on the test's own event loop.

Example::

    async def test_greeting(tls_server):
        reader, writer = await tls_server.connect()
        writer.write(b"hello")
        assert await reader.readexactly(5) == b"hello"
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from cryptography import x509

from . import pki
from ._aio.client import open_connection
from ._aio.server import Server, start_server
from .errors import TLSError

if TYPE_CHECKING or importlib.util.find_spec("pytest_asyncio"):
    from pytest_asyncio import fixture as _async_fixture
else:  # pragma: no cover - the plugin still loads; pytest reports the async fixture unsupported
    _async_fixture = pytest.fixture

__all__ = ["EphemeralCA", "Handler", "TLSTestServer", "echo"]

#: A stream server's connection handler, as for ``aiotls.start_server``.
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

HOST = "127.0.0.1"
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


class EphemeralCA:
    """A throwaway CA with aiotls-ready options (the ``tls_ca`` fixture)."""

    def __init__(self, name: str = "aiotls.testing CA") -> None:
        #: The :class:`aiotls.pki.CA` underneath (OCSP responses, CRLs, raw issuing).
        self.pki = pki.make_ca(name)

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate (PEM), for ``ca=``."""
        return self.pki.cert_pem

    @property
    def cert(self) -> x509.Certificate:
        """The CA certificate as a cryptography object."""
        return self.pki.cert

    def identity(self, *names: str, key_type: pki.KeyType = "ecdsa") -> dict[str, bytes]:
        """A new key and certificate for ``names`` (host names, IP addresses), as the
        ``key``/``cert`` options of a server or of a client with a certificate."""
        key, cert = self.pki.issue(names, key_type=key_type)
        return {"key": key, "cert": cert}

    def client_options(self, servername: str = "localhost") -> dict[str, Any]:
        """Options of a client that trusts this CA and verifies ``servername``."""
        return {"ca": self.pki.cert_pem, "servername": servername}

    def crl(self, revoked: list[x509.Certificate | bytes] | None = None) -> bytes:
        """A CRL revoking ``revoked`` (certificates, or their PEM), for ``crl=``."""
        certs = [
            x509.load_pem_x509_certificate(c) if isinstance(c, bytes) else c for c in revoked or ()
        ]
        return self.pki.crl(certs)


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo everything back until the client ends; then close."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (TLSError, ConnectionError):
        pass  # the client went away abruptly: not the server's business
    finally:
        writer.close()


@dataclass
class TLSTestServer:
    """A listening aiotls server and how to reach it (the ``tls_server`` fixture)."""

    server: Server
    host: str
    port: int
    #: What a client needs to verify this server: ``ca`` and ``servername``.
    client_options: dict[str, Any]
    _writers: list[asyncio.StreamWriter] = field(default_factory=list, repr=False)

    async def connect(self, **options: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A verified client connection (``options`` add to or override the client's);
        the fixture closes it after the test if the test did not."""
        reader, writer = await open_connection(
            self.host, self.port, **{**self.client_options, **options}
        )
        self._writers.append(writer)
        return reader, writer

    async def _close(self) -> None:
        for writer in self._writers:
            writer.close()
        for writer in self._writers:
            with contextlib.suppress(TLSError, ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 5)
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture(scope="session")
def tls_ca() -> EphemeralCA:
    """An ephemeral CA shared by the test session."""
    return EphemeralCA()


@pytest.fixture
def tls_client_options(tls_ca: EphemeralCA) -> dict[str, Any]:
    """Client options that verify ``tls_server`` (a fresh dict per test)."""
    return tls_ca.client_options()


@pytest.fixture
def tls_server_handler() -> Handler:
    """The handler ``tls_server`` runs for each connection (override it; default: echo)."""
    return echo


@pytest.fixture
def tls_server_options() -> dict[str, Any]:
    """Extra ``aiotls.start_server`` keyword arguments for ``tls_server`` (override it)."""
    return {}


@_async_fixture
async def tls_server(
    tls_ca: EphemeralCA,
    tls_server_handler: Handler,
    tls_server_options: dict[str, Any],
    tls_client_options: dict[str, Any],
) -> AsyncIterator[TLSTestServer]:
    """An aiotls server on 127.0.0.1 with a certificate from ``tls_ca``, closed afterwards."""
    options = {**tls_ca.identity(*SERVER_NAMES), **tls_server_options}
    server = await start_server(tls_server_handler, HOST, 0, **options)
    port = server.sockets[0].getsockname()[1]
    test_server = TLSTestServer(server, HOST, port, dict(tls_client_options))
    try:
        yield test_server
    finally:
        await test_server._close()
