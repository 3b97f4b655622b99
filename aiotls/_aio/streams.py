"""Stream support: the StreamReaderProtocol variant used by aiotls's stream front doors."""

from __future__ import annotations

import asyncio

__all__ = ["StreamProtocol"]


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
