"""Stream support: the StreamReaderProtocol variant used by aiotls's stream front doors,
and the one place that reaches inside asyncio's streams (for start_tls)."""

from __future__ import annotations

import asyncio

__all__ = ["StreamParts", "StreamProtocol"]


class StreamParts:
    """A StreamWriter's protocol and reader, as start_tls needs them.

    asyncio has no public way to move a live stream pair onto another transport, nor
    to take what its reader buffered: CPython's own ``StreamWriter.start_tls`` assigns
    ``writer._transport`` and calls ``protocol._replace_writer``, and drops the buffer.
    Every private attribute aiotls touches is here, in this class, checked against
    CPython 3.11 to 3.14 and uvloop (which uses asyncio's streams).
    """

    __slots__ = ("protocol", "reader", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        protocol = writer.transport.get_protocol()
        if not isinstance(protocol, asyncio.StreamReaderProtocol):
            raise TypeError("start_tls: the writer's transport has no StreamReaderProtocol")
        self.writer, self.protocol = writer, protocol
        self.reader: asyncio.StreamReader | None = protocol._stream_reader  # type: ignore[attr-defined]

    def buffered(self) -> bytearray | None:
        """The reader's buffer: bytes that arrived and nobody read yet (kept, not lost)."""
        return None if self.reader is None else self.reader._buffer  # type: ignore[attr-defined]

    def move_to(self, transport: asyncio.Transport) -> None:
        """The writer, the protocol and the reader go on over ``transport``."""
        self.writer._transport = transport  # type: ignore[attr-defined]
        self.protocol._transport = transport  # type: ignore[attr-defined]
        if self.reader is not None:
            self.reader._transport = transport  # type: ignore[attr-defined]


class StreamProtocol(asyncio.StreamReaderProtocol):
    """asyncio's StreamReaderProtocol, keeping TLS half-close.

    asyncio's version closes the transport as soon as an SSL peer's EOF arrives;
    aiotls implements half-close (the peer's close_notify ends reading, writing may
    go on until ``writer.close()``), so EOF is treated exactly as on plain TCP.
    """

    #: data_received may get a view of a buffer the transport reuses: the StreamReader
    #: copies it into its own buffer at once, which saves the transport a copy.
    accepts_transient_views = True

    def eof_received(self) -> bool:
        super().eof_received()
        return True
