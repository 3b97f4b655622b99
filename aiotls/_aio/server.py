"""Server front doors: create_server (protocols), start_server (streams) and Server."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Unpack

from .. import options as _options
from ..context import ContextOptions, SecureContext, create_secure_context, with_options
from ..errors import TLSConfigError
from ..stapling import StapleState
from .streams import StreamProtocol
from .transport import TLSTransport

__all__ = ["Server", "create_server", "start_server"]


class Server:
    """A listening TLS server (Node's ``tls.Server``), wrapping an asyncio Server."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        context: SecureContext,
        options: _options.ConnectionOptions,
    ) -> None:
        self._loop = loop
        self._factory = protocol_factory
        self._context = context
        self._options = options
        self._connections: set[TLSTransport] = set()
        self._server: asyncio.Server | None = None
        self._closed = False
        self._closed_waiters: list[asyncio.Future[None]] = []
        self._sni_contexts: list[tuple[re.Pattern[str], SecureContext]] = []
        self._sni_options = options
        self._stapler = options.ocsp_stapler
        self._owns_stapler = False  # ocsp_stapling="auto": close() stops it

    def _accept(self) -> asyncio.BaseProtocol:
        """Called by asyncio per accepted socket: a TLSTransport and its raw protocol."""
        tls = TLSTransport(
            self._loop,
            self._factory(),
            self._context,
            self._sni_options,
            on_lost=self._connection_lost,
        )
        self._connections.add(tls)
        return tls.raw_protocol

    def _connection_lost(self, tls: TLSTransport) -> None:
        self._connections.discard(tls)
        self._wake_closed_waiters()

    def _wake_closed_waiters(self) -> None:
        """Release wait_closed() once the server is closed and its last connection ended."""
        if not self._closed or self._connections:
            return
        waiters, self._closed_waiters = self._closed_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- asyncio.Server surface ------------------------------------------------------

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._server.sockets) if self._server is not None else ()

    def close(self) -> None:
        """Stop listening; connections already accepted go on (as in asyncio and Node)."""
        if not self._closed and self._stapler is not None:
            if self._owns_stapler:
                self._stapler.close()
            else:  # a stapler shared with others: only this server's certificates leave
                for ctx in [self._context, *(c for _, c in self._sni_contexts)]:
                    self._stapler.discard_context(ctx)
        self._closed = True
        if self._server is not None:
            self._server.close()
        self._wake_closed_waiters()

    async def wait_closed(self) -> None:
        """Return once close() was called and every accepted connection has ended.

        Node's close(callback) and asyncio's semantics since Python 3.12; on 3.11
        asyncio.Server.wait_closed() returns without waiting for the connections.
        """
        if not self._closed or self._connections:
            waiter = self._loop.create_future()
            self._closed_waiters.append(waiter)
            await waiter
        if self._server is not None:
            await self._server.wait_closed()
        if self._owns_stapler and self._stapler is not None:
            await self._stapler.wait_closed()

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def start_serving(self) -> None:
        assert self._server is not None
        await self._server.start_serving()

    def is_serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()

    # -- Node's tls.Server surface ---------------------------------------------------

    def address(self) -> dict[str, Any] | str | None:
        """Node's server.address(): ``{"address", "family", "port"}``, or the unix path."""
        if not self.sockets:
            return None
        name = self.sockets[0].getsockname()
        if isinstance(name, tuple):
            family = "IPv6" if self.sockets[0].family == socket.AF_INET6 else "IPv4"
            return {"address": name[0], "family": family, "port": name[1]}
        return name  # type: ignore[no-any-return]

    def get_connections(self) -> int:
        """How many accepted connections are still open (handshaking included)."""
        return len(self._connections)

    def set_secure_context(self, context_or_options: SecureContext | ContextOptions) -> None:
        """Use another context for connections accepted from now on (hot reload)."""
        if isinstance(context_or_options, dict):
            context_or_options = create_secure_context(**context_or_options)
        if not isinstance(context_or_options, SecureContext):
            raise TypeError("set_secure_context: expected a SecureContext or an options dict")
        _options.prepare(context_or_options, self._options)
        if self._stapler is not None and not self._closed:
            self._stapler.add_context(context_or_options)
            self._stapler.discard_context(self._context)
        self._context = context_or_options

    def add_context(
        self, hostname: str, context_or_options: SecureContext | ContextOptions
    ) -> None:
        """Serve ``context`` to clients whose SNI matches ``hostname`` (Node's addContext).

        A ``*`` stands for any run of characters within one label, as in Node:
        ``"*.example.com"`` matches "a.example.com" but neither "a.b.example.com" nor
        "example.com". Matching ignores case. When several patterns match, the one
        added last wins (Node's rule). A server's ``sni_callback``, if given, is
        asked instead.
        """
        if not isinstance(hostname, str):
            raise TypeError("add_context: hostname must be a str")
        if isinstance(context_or_options, dict):
            context_or_options = create_secure_context(**context_or_options)
        if not isinstance(context_or_options, SecureContext):
            raise TypeError("add_context: expected a SecureContext or an options dict")
        _options.prepare(context_or_options, self._options)
        if self._stapler is not None and not self._closed:
            self._stapler.add_context(context_or_options)
        pattern = (
            "^"
            + ".".join(
                "[^.]*".join(re.escape(part) for part in label.split("*"))
                for label in hostname.split(".")
            )
            + "$"
        )
        self._sni_contexts.append((re.compile(pattern, re.IGNORECASE), context_or_options))
        if self._options.sni_callback is None:
            self._sni_options = replace(self._options, sni_callback=self._match_context)

    def _match_context(self, servername: str | None) -> SecureContext | None:
        """The context of the last added pattern matching ``servername`` (None: default)."""
        if servername:
            for pattern, context in reversed(self._sni_contexts):
                if pattern.match(servername):
                    return context
        return None

    def get_ticket_keys(self) -> bytes:
        """The 80-byte session ticket keys (16-byte name, 32 HMAC, 32 AES) in use."""
        return self._context.get_ticket_keys()

    def set_ticket_keys(self, keys: bytes) -> None:
        """Rotate the ticket keys (80 bytes, OpenSSL's layout); tickets under other keys
        then get a full handshake. A bad length raises ValueError and keeps the old keys."""
        self._context.set_ticket_keys(keys)

    def ocsp_status(self) -> dict[str, StapleState]:
        """With ``ocsp_stapling``: each certificate's OCSP stapling state (status,
        thisUpdate, nextUpdate, last fetch and error, next refresh, whether it is stapled),
        keyed by SHA-256 fingerprint (hex); see :meth:`aiotls.stapling.OCSPStapler.status`.
        Empty without ``ocsp_stapling``."""
        return self._stapler.status() if self._stapler is not None else {}

    @property
    def context(self) -> SecureContext:
        """The context new connections get (before SNI)."""
        return self._context


@with_options(*_options.SERVER_HELP)
async def create_server(
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    host: str | Sequence[str] | None = None,
    port: int | None = None,
    *,
    path: str | None = None,
    sock: socket.socket | None = None,
    context: SecureContext | None = None,
    family: int = socket.AF_UNSPEC,
    flags: int = socket.AI_PASSIVE,
    backlog: int = 100,
    reuse_address: bool | None = None,
    reuse_port: bool | None = None,
    start_serving: bool = True,
    **kwargs: Unpack[_options.ServerOptions],
) -> Server:
    """Listen for TLS connections; each gets a protocol from ``protocol_factory``.

    ``host``, ``port``, ``sock`` and the listening keywords (``family`` to
    ``start_serving``) are :meth:`asyncio.loop.create_server`'s; ``path`` listens on
    a unix socket instead (:meth:`~asyncio.loop.create_unix_server`, which takes
    only ``sock``, ``backlog`` and ``start_serving``). The other keywords are
    listed below.
    """
    _options.check_names(create_server, kwargs, server_side=True)
    loop = asyncio.get_running_loop()
    ctx, opts = _options.split(kwargs, server_side=True, context=context)
    if not ctx.certificates and opts.sni_callback is None:
        raise TLSConfigError(
            "a TLS server needs a certificate: pass key= and cert= (or pfx=), a context= "
            "that has them, or sni_callback= to choose a context per connection "
            "(Server.add_context() serves only the names it matches, so it needs a "
            "default certificate too)"
        )
    server = Server(loop, protocol_factory, ctx, opts)
    if opts.ocsp_stapler is not None:
        opts.ocsp_stapler.add_context(ctx)  # starts fetching; ValueError if it never could
        server._owns_stapler = kwargs.get("ocsp_stapling") == "auto"
    try:
        if path is not None:
            server._server = await loop.create_unix_server(
                server._accept, path, sock=sock, backlog=backlog, start_serving=start_serving
            )
        else:
            # typeshed's overloads cannot express "host/port or sock"; asyncio checks.
            create: Any = loop.create_server
            server._server = await create(
                server._accept,
                host,
                port,
                sock=sock,
                family=family,
                flags=flags,
                backlog=backlog,
                reuse_address=reuse_address,
                reuse_port=reuse_port,
                start_serving=start_serving,
            )
    except BaseException:
        server.close()  # stops or releases the OCSP stapler
        raise
    return server


@with_options(*_options.SERVER_HELP)
async def start_server(
    client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
    host: str | Sequence[str] | None = None,
    port: int | None = None,
    *,
    path: str | None = None,
    sock: socket.socket | None = None,
    context: SecureContext | None = None,
    limit: int = 2**16,
    family: int = socket.AF_UNSPEC,
    flags: int = socket.AI_PASSIVE,
    backlog: int = 100,
    reuse_address: bool | None = None,
    reuse_port: bool | None = None,
    start_serving: bool = True,
    **kwargs: Unpack[_options.ServerOptions],
) -> Server:
    """Like :func:`asyncio.start_server`, over TLS: ``client_connected_cb(reader, writer)``.

    The listening keywords are :func:`create_server`'s; the others are listed below.
    """
    _options.check_names(start_server, kwargs, server_side=True)
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.BaseProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return StreamProtocol(reader, client_connected_cb, loop=loop)

    return await create_server(
        factory,
        host,
        port,
        path=path,
        sock=sock,
        context=context,
        family=family,
        flags=flags,
        backlog=backlog,
        reuse_address=reuse_address,
        reuse_port=reuse_port,
        start_serving=start_serving,
        **kwargs,
    )
