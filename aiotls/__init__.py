"""aiotls: asyncio-native TLS with the whole of Node.js's tls module.

Engine (sans-I/O, :class:`TLSEngine`) -> context (:func:`create_secure_context`) ->
transports (:class:`TLSTransport`) -> front doors (:func:`start_server`,
:func:`open_connection`, :func:`create_server`, :func:`create_connection`,
:func:`start_tls`) -> the ``aiotls`` command line.
"""

from __future__ import annotations

import importlib.metadata
import sys
import types
from pathlib import Path

from . import _openssl
from ._aio import transport as _transport
from ._aio.client import create_connection, open_connection
from ._aio.server import Server, create_server, start_server
from ._aio.starttls import start_tls
from ._aio.tlssocket import TLSSocket
from ._aio.transport import CLIENT_RENEG_LIMIT, CLIENT_RENEG_WINDOW, TLSTransport
from .certinfo import check_server_identity
from .ciphers import DEFAULT_CIPHERS, get_ciphers
from .clienthello import ClientHello, ClientHelloError, ClientHelloRefused
from .context import DEFAULT_ECDH_CURVE, ContextOptions, SecureContext, create_secure_context
from .engine import TLSEngine
from .errors import (
    TLSCertificateError,
    TLSConfigError,
    TLSError,
    TLSFeatureUnavailable,
    TLSHandshakeTimeout,
)
from .options import ClientOptions, ServerOptions
from .workers import serve


def _version() -> str:
    """The installed distribution's version; pyproject.toml is its one source."""
    try:
        return importlib.metadata.version("aiotls")
    except importlib.metadata.PackageNotFoundError:  # a source tree nobody installed
        import tomllib

        try:
            with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as f:
                return str(tomllib.load(f)["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "0+unknown"


__version__ = _version()


class _Aiotls(types.ModuleType):
    """The aiotls module, whose renegotiation limits (Node's tls.CLIENT_RENEG_LIMIT and
    CLIENT_RENEG_WINDOW, changeable at run time) live in the transport that applies them:
    reading or setting them here reads or sets them there, so the asyncio layer needs no
    import back up to the package."""

    @property
    def CLIENT_RENEG_LIMIT(self) -> int:
        """Renegotiations a client may start per CLIENT_RENEG_WINDOW seconds (3)."""
        return _transport.CLIENT_RENEG_LIMIT

    @CLIENT_RENEG_LIMIT.setter
    def CLIENT_RENEG_LIMIT(self, value: int) -> None:
        _transport.CLIENT_RENEG_LIMIT = value

    @property
    def CLIENT_RENEG_WINDOW(self) -> float:
        """The window of CLIENT_RENEG_LIMIT, in seconds (600)."""
        return _transport.CLIENT_RENEG_WINDOW

    @CLIENT_RENEG_WINDOW.setter
    def CLIENT_RENEG_WINDOW(self, value: float) -> None:
        _transport.CLIENT_RENEG_WINDOW = value  # type: ignore[assignment]


sys.modules[__name__].__class__ = _Aiotls


def features() -> dict[str, bool]:
    """Which features that need extended OpenSSL access this build provides."""
    return _openssl.features()


__all__ = [
    "CLIENT_RENEG_LIMIT",
    "CLIENT_RENEG_WINDOW",
    "DEFAULT_CIPHERS",
    "DEFAULT_ECDH_CURVE",
    "ClientHello",
    "ClientHelloError",
    "ClientHelloRefused",
    "ClientOptions",
    "ContextOptions",
    "SecureContext",
    "Server",
    "ServerOptions",
    "TLSCertificateError",
    "TLSConfigError",
    "TLSEngine",
    "TLSError",
    "TLSFeatureUnavailable",
    "TLSHandshakeTimeout",
    "TLSSocket",
    "TLSTransport",
    "check_server_identity",
    "create_connection",
    "create_secure_context",
    "create_server",
    "features",
    "get_ciphers",
    "open_connection",
    "serve",
    "start_server",
    "start_tls",
]
