"""Client front doors: create_connection (protocols) and open_connection (streams)."""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar, Unpack

from .. import options as _options
from ..context import SecureContext, with_options
from .streams import StreamProtocol
from .transport import TLSTransport

__all__ = ["create_connection", "open_connection"]

P = TypeVar("P", bound=asyncio.BaseProtocol)


async def _resolve(lookup: Callable[..., Any], host: str, port: int) -> list[tuple[str, int]]:
    """Addresses from a user ``lookup`` shaped like ``loop.getaddrinfo`` (plain or async)."""
    infos = lookup(host, port, type=socket.SOCK_STREAM)
    if inspect.isawaitable(infos):
        infos = await infos
    addrs = [(info[4][0], info[4][1]) for info in infos]
    if not addrs:
        raise OSError(f"lookup returned no address for {host!r}")
    return addrs


@with_options(*_options.CLIENT_HELP)
async def create_connection(
    protocol_factory: Callable[[], P],
    host: str | None = None,
    port: int | None = None,
    *,
    path: str | None = None,
    sock: socket.socket | None = None,
    context: SecureContext | None = None,
    local_addr: tuple[str, int] | None = None,
    **kwargs: Unpack[_options.ClientOptions],
) -> tuple[TLSTransport, P]:
    """Connect, complete the TLS handshake, then return ``(transport, protocol)``.

    The protocol's ``connection_made`` runs once the handshake has succeeded and
    the server is authorized (with ``reject_unauthorized``, the default, a failed
    verification raises :class:`~aiotls.TLSError` here). SNI and the identity
    check use ``servername``, else ``host`` (an IP address sends no SNI). Without
    either (``sock=``, ``path=``) a ValueError names ``servername``, as asyncio
    does, unless ``reject_unauthorized=False``, a ``check_server_identity`` is
    given, or ``servername=""`` skips the identity check (the connection is then
    never ``authorized``: ``authorization_error`` is ``"ERR_TLS_NO_SERVERNAME"``).
    """
    _options.check_names(create_connection, kwargs, server_side=False)
    loop = asyncio.get_running_loop()
    ctx, opts = _options.split(kwargs, server_side=False, context=context)
    if opts.servername is None and host is not None:
        opts = replace(opts, servername=host)
    app = protocol_factory()
    waiter: asyncio.Future[None] = loop.create_future()
    tls = TLSTransport(loop, app, ctx, opts, waiter=waiter)
    try:
        if path is not None:
            raw, _ = await loop.create_unix_connection(lambda: tls.raw_protocol, path, sock=sock)
        elif opts.lookup is not None and host is not None and sock is None:
            last_exc: OSError | None = None
            for addr in await _resolve(opts.lookup, host, port or 0):
                try:
                    raw, _ = await loop.create_connection(
                        lambda: tls.raw_protocol, addr[0], addr[1], local_addr=local_addr
                    )
                    break
                except OSError as exc:
                    last_exc = exc
            else:
                assert last_exc is not None
                raise last_exc
        else:
            create: Any = loop.create_connection  # typeshed cannot express "host/port or sock"
            raw, _ = await create(
                lambda: tls.raw_protocol, host, port, sock=sock, local_addr=local_addr
            )
    except BaseException:
        # The loop may have made the transport, and so begun the handshake, before this
        # failed or was cancelled: losing it must not set an exception nobody awaits.
        waiter.cancel()
        raise
    try:
        await waiter
    except BaseException:
        raw.abort()
        raise
    return tls, app


@with_options(*_options.CLIENT_HELP)
async def open_connection(
    host: str | None = None,
    port: int | None = None,
    *,
    path: str | None = None,
    sock: socket.socket | None = None,
    context: SecureContext | None = None,
    limit: int = 2**16,
    local_addr: tuple[str, int] | None = None,
    **kwargs: Unpack[_options.ClientOptions],
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Like :func:`asyncio.open_connection`, over TLS (see :func:`create_connection`)."""
    _options.check_names(open_connection, kwargs, server_side=False)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = StreamProtocol(reader, loop=loop)
    transport, _ = await create_connection(
        lambda: protocol,
        host,
        port,
        path=path,
        sock=sock,
        context=context,
        local_addr=local_addr,
        **kwargs,
    )
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer
