"""aiotls: asyncio-native TLS with the whole of Node.js's tls module.

Engine (sans-I/O, :class:`TLSEngine`) -> context (:func:`create_secure_context`) ->
transports (:class:`TLSTransport`) -> front doors (:func:`start_server`,
:func:`open_connection`, :func:`create_server`, :func:`create_connection`,
:func:`start_tls`) -> the ``aiotls`` command line.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from . import _extended
from .certinfo import check_server_identity
from .ciphers import DEFAULT_CIPHERS, get_ciphers
from .client import create_connection, open_connection
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
from .server import Server, create_server, start_server
from .starttls import start_tls
from .tlssocket import TLSSocket
from .transport import TLSTransport
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

#: Renegotiations a client may start per CLIENT_RENEG_WINDOW seconds (Node's defaults).
CLIENT_RENEG_LIMIT = 3
CLIENT_RENEG_WINDOW = 600


def features() -> dict[str, bool]:
    """Which features that need extended OpenSSL access this build provides."""
    return _extended.features()


__all__ = [
    "CLIENT_RENEG_LIMIT",
    "CLIENT_RENEG_WINDOW",
    "DEFAULT_CIPHERS",
    "DEFAULT_ECDH_CURVE",
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
