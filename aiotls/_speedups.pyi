"""Types of the compiled data path (aiotls/_speedups.pyx); the same interface as
aiotls._openssl.datapath.DataPath and RawProtocol, whose docstrings describe them."""

import asyncio
from collections.abc import Sequence
from typing import Any

from ._openssl.datapath import RawEvents, Sink

class DataPath:
    paused: bool
    @property
    def error(self) -> tuple[int, tuple[int, ...]] | None: ...
    def __init__(
        self,
        ssl: int,
        bio_in: int,
        bio_out: int,
        functions: Sequence[int],
        protocol: asyncio.BaseProtocol,
        sink: Sink,
        owner: object = None,
    ) -> None: ...
    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None: ...
    def rebind(self, ssl: int, bio_in: int, bio_out: int) -> None: ...
    def feed(self, data: bytes | bytearray | memoryview) -> int: ...
    def write(self, data: bytes | bytearray | memoryview) -> int: ...

class RawProtocol(asyncio.BufferedProtocol):
    datapath: Any
    def __init__(self, owner: RawEvents, buffer: memoryview) -> None: ...
    def get_buffer(self, sizehint: int) -> memoryview: ...
    def buffer_updated(self, nbytes: int) -> None: ...
    def data_received(self, data: memoryview | bytes) -> None: ...
