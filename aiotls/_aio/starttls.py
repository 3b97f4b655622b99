"""start_tls: upgrade a live connection (a StreamWriter or a transport) to TLS in place."""

from __future__ import annotations

import asyncio
from typing import Any, Literal, Unpack, overload

from .. import options as _options
from ..context import SecureContext, with_options
from .streams import StreamParts
from .transport import TLSTransport

__all__ = ["start_tls"]


async def _upgrade(
    raw: asyncio.Transport,
    app: asyncio.BaseProtocol,
    *,
    server_side: bool,
    context: SecureContext | None,
    kwargs: dict[str, Any],
    buffered: bytearray | None = None,
) -> TLSTransport:
    loop = asyncio.get_running_loop()
    ctx, opts = _options.split(kwargs, server_side=server_side, context=context)
    waiter: asyncio.Future[None] = loop.create_future()
    tls = TLSTransport(loop, app, ctx, opts, waiter=waiter, connect_app=False)
    # The options are good: only now take what the reader buffered (an error above keeps it).
    already_read = bytes(buffered or b"")
    if buffered:
        buffered.clear()
    raw.set_protocol(tls.raw_protocol)
    tls.raw_protocol.connection_made(raw)
    raw.resume_reading()  # before the bytes below, which may pause it for a handshake hook
    if already_read:  # the peer's first TLS bytes may have arrived with the plaintext
        tls.raw_protocol.data_received(already_read)
    try:
        await waiter
    except BaseException:
        raw.abort()
        raise
    return tls


@overload
async def start_tls(
    writer_or_transport: asyncio.StreamWriter | asyncio.Transport,
    *,
    server_side: Literal[True],
    protocol: asyncio.BaseProtocol | None = None,
    context: SecureContext | None = None,
    **kwargs: Unpack[_options.ServerOptions],
) -> TLSTransport | None: ...


@overload
async def start_tls(
    writer_or_transport: asyncio.StreamWriter | asyncio.Transport,
    *,
    server_side: Literal[False] = False,
    protocol: asyncio.BaseProtocol | None = None,
    context: SecureContext | None = None,
    **kwargs: Unpack[_options.ClientOptions],
) -> TLSTransport | None: ...


@with_options(*_options.EITHER_SIDE_HELP)
async def start_tls(
    writer_or_transport: asyncio.StreamWriter | asyncio.Transport,
    *,
    server_side: bool = False,
    protocol: asyncio.BaseProtocol | None = None,
    context: SecureContext | None = None,
    **kwargs: Any,
) -> TLSTransport | None:
    """Run a TLS handshake over a live connection (STARTTLS), either side.

    Given a StreamWriter, the same reader and writer go on over TLS and the call
    returns None; bytes the StreamReader had buffered but nobody read yet are
    treated as the start of the TLS stream, so a ClientHello that arrived with
    the plaintext command is not lost. Given a transport, pass ``protocol=`` (the
    default is the transport's current protocol); the new TLSTransport is returned,
    as ``loop.start_tls`` does, and ``connection_made`` is not called again.
    A client needs ``servername`` (the name its identity check uses), as in
    :func:`~aiotls.create_connection`; a ValueError says so before anything changes.
    """
    _options.check_names(start_tls, kwargs, server_side=server_side)
    if kwargs.get("ocsp_stapling") == "auto":
        raise ValueError(
            "ocsp_stapling: 'auto' needs a server to own it (start_server, create_server); "
            "give start_tls an aiotls.stapling.OCSPStapler that you close"
        )
    if isinstance(writer_or_transport, asyncio.StreamWriter):
        writer = writer_or_transport
        await writer.drain()
        parts = StreamParts(writer)
        tls = await _upgrade(
            writer.transport,  # type: ignore[arg-type]
            parts.protocol,
            server_side=server_side,
            context=context,
            kwargs=kwargs,
            buffered=parts.buffered(),
        )
        parts.move_to(tls)
        return None
    transport = writer_or_transport
    app = protocol if protocol is not None else transport.get_protocol()
    return await _upgrade(transport, app, server_side=server_side, context=context, kwargs=kwargs)
