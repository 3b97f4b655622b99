"""The asyncio layer: TLS transports over asyncio's socket transports, and the front
doors built on them.

Modules, each importing only those before it: :mod:`.tlssocket` (Node's TLSSocket
getters), :mod:`.transport` (TLSTransport, the state machine), :mod:`.streams`
(StreamProtocol and the stream plumbing start_tls needs), :mod:`.starttls`,
:mod:`.server`, :mod:`.client`. Everything public is re-exported by :mod:`aiotls`.
"""

from __future__ import annotations

from .client import create_connection, open_connection
from .server import Server, create_server, start_server
from .starttls import start_tls
from .tlssocket import TLSSocket
from .transport import TLSTransport

__all__ = [
    "Server",
    "TLSSocket",
    "TLSTransport",
    "create_connection",
    "create_server",
    "open_connection",
    "start_server",
    "start_tls",
]
