"""The transport's state machine in memory: a TLSTransport over a fake socket transport
that records what it writes, with a real TLSEngine as the peer, pumped by the test.

No sockets, no sleeps: each test drives the transitions itself (open, handshake
paused and resumed, half-close both ways, close with and without the peer's
close_notify, abort, a ragged EOF, a failing application) and the two timeouts run
on a loop whose clock the test moves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

import aiotls
from aiotls._aio.transport import TLSTransport
from aiotls._openssl import speedups
from aiotls.options import ConnectionOptions


class FakeSocket(asyncio.Transport):
    """A socket transport in memory: records writes; the test feeds bytes, EOF, loss."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.BaseProtocol) -> None:
        super().__init__()
        self.loop, self.protocol = loop, protocol
        self.out = bytearray()
        self.writes = 0  # write() calls: socket writes on a real transport
        self.reading = True
        self.closing = self.aborted = self.lost = False

    # what the transport under test calls
    def write(self, data: Any) -> None:
        assert not self.closing, "write after close"
        self.writes += 1
        self.out += data

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.loop.call_soon(self.connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 4433) if name == "peername" else default

    # what the test calls: the network's side
    def take(self) -> bytes:
        data, self.out = bytes(self.out), bytearray()
        return data

    def feed(self, data: bytes) -> None:
        assert self.reading, "the transport paused reading; a socket would not deliver"
        self.protocol.data_received(data)  # type: ignore[attr-defined]

    def feed_eof(self) -> None:
        if not self.protocol.eof_received():  # type: ignore[attr-defined]
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connection_lost(exc)


class App(asyncio.Protocol):
    """Records what the application protocol is told."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.made: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[Exception | None] = loop.create_future()
        self.data = bytearray()
        self.eofs = 0
        self.keep_open_on_eof = False
        self.on_data: Callable[[bytes], None] | None = None
        self.on_made: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.set_result(None)
        if self.on_made is not None:
            self.on_made()

    def data_received(self, data: bytes) -> None:
        self.data += data
        if self.on_data is not None:
            self.on_data(bytes(data))

    def eof_received(self) -> bool:
        self.eofs += 1
        return self.keep_open_on_eof

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


class Pair:
    """A server TLSTransport on a FakeSocket, and a client engine the test pumps."""

    def __init__(
        self,
        server_ctx: aiotls.SecureContext,
        client_ctx: aiotls.SecureContext,
        **options: Any,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.app = App()
        self.waiter: asyncio.Future[None] = loop.create_future()
        self.tls = TLSTransport(
            loop, self.app, server_ctx, ConnectionOptions(server_side=True, **options),
            waiter=self.waiter,
        )  # fmt: skip
        self.sock = FakeSocket(loop, self.tls.raw_protocol)
        self.tls.raw_protocol.connection_made(self.sock)
        self.peer = aiotls.TLSEngine(client_ctx, server_hostname="localhost")
        self.received = bytearray()
        self.in_flight = b""  # the peer's bytes while the transport does not read

    async def pump(self) -> None:
        """Move bytes both ways and let the loop run until nothing moves."""
        for _ in range(50):
            moved = False
            if out := self.sock.take():
                self.peer.receive_data(out)
                if self.peer.handshake_complete:
                    self.received += self.peer.read()
                moved = True
            self.in_flight += self.peer.data_to_send()
            if self.in_flight and self.sock.reading and not self.sock.lost:
                back, self.in_flight = self.in_flight, b""
                self.sock.feed(back)
                moved = True
            await asyncio.sleep(0)  # one loop iteration: call_soon'd steps run
            if not moved and not self.sock.out:
                return

    def state(self) -> str:
        return repr(self.tls).removeprefix("<TLSTransport server ").removesuffix(">")

    async def open(self) -> None:
        await self.pump()
        await self.waiter
        assert self.app.made.done() and self.state() == "open"


async def test_open_then_data_both_ways(server_ctx, client_ctx) -> None:
    pair = Pair(server_ctx, client_ctx)
    assert pair.state() == "handshaking"
    await pair.open()
    pair.tls.write(b"to the client")
    pair.peer.send(b"to the server")
    await pair.pump()
    assert bytes(pair.received) == b"to the client"
    assert bytes(pair.app.data) == b"to the server"


async def test_open_data_runs_on_the_data_path_in_use(server_ctx, client_ctx) -> None:
    """OPEN: records and writes go through the DataPath speedups selected (the compiled one
    when built), rebuilt on the BIOs compaction left; data still flows both ways."""
    pair = Pair(server_ctx, client_ctx)
    await pair.open()
    datapath = pair.tls._datapath
    assert type(datapath) is speedups.DataPath
    pair.tls.writelines([b"to the ", b"client"])
    pair.peer.send(b"to the server")
    await pair.pump()
    assert bytes(pair.received) == b"to the client"
    assert bytes(pair.app.data) == b"to the server"
    pair.tls.close()
    assert pair.tls._datapath is None  # after OPEN, the engine decrypts and discards


async def test_last_flight_leaves_with_the_first_write_then_the_bios_shrink(
    server_ctx, client_ctx
) -> None:
    """The server's last flight (TLS 1.3 tickets) waits for the application's first
    write, made from a callback connection_made scheduled (as a streams handler's task
    is): both leave in one socket write. Data that came with the client's Finished is
    delivered; then the handshake's BIOs are replaced under the data path, which goes on."""
    pair = Pair(server_ctx, client_ctx)
    loop = asyncio.get_running_loop()
    pair.app.on_made = lambda: loop.call_soon(pair.tls.write, b"hello")
    pair.sock.feed(pair.peer.data_to_send())  # ClientHello
    pair.peer.receive_data(pair.sock.take())  # the server's flight
    assert pair.peer.handshake_complete
    pair.peer.send(b"ping")
    addresses = pair.tls._engine.raw_addresses()
    writes = pair.sock.writes
    pair.sock.feed(pair.peer.data_to_send())  # Finished, and data right behind it
    for _ in range(3):
        await asyncio.sleep(0)
    assert pair.sock.writes == writes + 1
    pair.peer.receive_data(pair.sock.take())
    assert pair.peer.read() == b"hello" and bytes(pair.app.data) == b"ping"
    assert pair.tls._engine.raw_addresses()[1:] != addresses[1:]  # fresh BIOs
    pair.peer.send(b" pong")
    pair.sock.feed(pair.peer.data_to_send())
    assert bytes(pair.app.data) == b"ping pong"


async def test_handshake_paused_for_a_hook_then_resumed(server_ctx, client_ctx) -> None:
    """WAITING_FOR_HOOK: the socket is not read until the hook answers."""
    release = asyncio.Event()

    async def sni_callback(servername: str | None) -> None:
        await release.wait()

    pair = Pair(server_ctx, client_ctx, sni_callback=sni_callback)
    await pair.pump()
    assert pair.state() == "waiting for hook" and not pair.sock.reading
    release.set()
    await pair.open()
    assert pair.sock.reading


async def test_close_waits_for_the_peers_close_notify(server_ctx, client_ctx) -> None:
    pair = Pair(server_ctx, client_ctx)
    await pair.open()
    pair.tls.close()
    assert pair.state() == "closing" and pair.tls.is_closing() and not pair.sock.closing
    await pair.pump()  # our close_notify reaches the peer
    assert pair.peer.close_notify_received
    pair.peer.close()
    await pair.pump()  # the peer's close_notify comes back
    assert await pair.app.lost is None
    assert pair.state() == "closed" and pair.sock.closing and not pair.sock.aborted


async def test_peer_closes_first_and_the_app_closes_too(server_ctx, client_ctx) -> None:
    pair = Pair(server_ctx, client_ctx)
    await pair.open()
    pair.peer.close()
    await pair.pump()
    assert pair.app.eofs == 1  # eof_received said False: close_notify back, then closed
    assert pair.peer.close_notify_received
    assert await pair.app.lost is None


async def test_half_close_by_the_peer_then_we_still_write(server_ctx, client_ctx) -> None:
    pair = Pair(server_ctx, client_ctx)
    await pair.open()
    pair.app.keep_open_on_eof = True
    pair.peer.close()
    await pair.pump()
    assert pair.app.eofs == 1 and pair.state() == "open"
    pair.tls.write(b"after your close_notify")
    await pair.pump()
    assert bytes(pair.received) == b"after your close_notify"
    pair.tls.close()  # the peer already closed: nothing to wait for
    await pair.pump()
    assert await pair.app.lost is None and pair.state() == "closed"


async def test_half_close_by_us_then_the_peer_still_writes(server_ctx, client_ctx) -> None:
    pair = Pair(server_ctx, client_ctx)
    await pair.open()
    pair.tls.write_eof()
    await pair.pump()
    assert pair.peer.close_notify_received and pair.state() == "open"
    pair.peer.send(b"still talking")
    await pair.pump()
    assert bytes(pair.app.data) == b"still talking"
    pair.peer.close()
    await pair.pump()
    assert await pair.app.lost is None and pair.state() == "closed"


async def test_tcp_eof_without_close_notify_is_an_error(server_ctx, client_ctx) -> None:
    pair = Pair(server_ctx, client_ctx)
    await pair.open()
    pair.sock.feed_eof()
    await pair.pump()
    exc = await pair.app.lost
    assert isinstance(exc, aiotls.TLSError) and exc.code == "ERR_SSL_UNEXPECTED_EOF_WHILE_READING"


async def test_abort_closes_at_once(server_ctx, client_ctx) -> None:
    pair = Pair(server_ctx, client_ctx)
    await pair.open()
    pair.tls.abort()
    assert pair.state() == "closed" and pair.sock.aborted
    assert await pair.app.lost is None


async def test_abort_during_the_handshake_fails_it(server_ctx, client_ctx) -> None:
    pair = Pair(server_ctx, client_ctx)
    pair.tls.abort()
    with pytest.raises(aiotls.TLSError, match="aborted during handshake"):
        await pair.waiter
    assert pair.state() == "closed" and not pair.app.made.done()


async def test_an_app_failing_after_resume_reading_closes_the_connection(
    server_ctx, client_ctx, caplog: pytest.LogCaptureFixture
) -> None:
    """data_received raising in the delivery resume_reading schedules: connection_lost(exc)
    and a log line (before: the loop's exception handler, and the connection stayed open)."""
    caplog.set_level(logging.ERROR, logger="aiotls")
    pair = Pair(server_ctx, client_ctx)
    await pair.open()
    pair.tls.pause_reading()
    pair.sock.resume_reading()  # a socket that still delivers what was in flight
    pair.peer.send(b"waiting while paused")
    await pair.pump()
    assert not pair.app.data

    def fail(data: bytes) -> None:
        raise RuntimeError("application bug")

    pair.app.on_data = fail
    pair.tls.resume_reading()
    exc = await pair.app.lost
    assert isinstance(exc, RuntimeError) and pair.sock.closing
    assert any("data_received()" in r.getMessage() for r in caplog.records)


# -- timeouts, on a loop whose clock the test moves ----------------------------------


class ManualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose time only moves when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def time(self) -> float:
        return self.now


def run_on_manual_clock(test: Callable[[ManualClockLoop], Any]) -> None:
    loop = ManualClockLoop()
    try:
        loop.run_until_complete(asyncio.wait_for(test(loop), None))
    finally:
        loop.close()


def test_handshake_timeout(server_ctx, client_ctx) -> None:
    async def scenario(loop: ManualClockLoop) -> None:
        pair = Pair(server_ctx, client_ctx, handshake_timeout=5.0)
        loop.now += 4.9
        await asyncio.sleep(0)
        assert pair.state() == "handshaking"
        loop.now += 0.2
        with pytest.raises(aiotls.TLSHandshakeTimeout):
            await pair.waiter
        assert pair.state() == "closed" and pair.sock.closing

    run_on_manual_clock(scenario)


def test_shutdown_timeout_aborts_when_the_peer_never_answers(server_ctx, client_ctx) -> None:
    async def scenario(loop: ManualClockLoop) -> None:
        pair = Pair(server_ctx, client_ctx, shutdown_timeout=2.0)
        await pair.open()
        pair.tls.close()
        await pair.pump()  # close_notify out; the peer stays silent
        loop.now += 1.9
        await asyncio.sleep(0)
        assert pair.state() == "closing" and not pair.sock.closing
        loop.now += 0.2
        assert await pair.app.lost is None
        assert pair.state() == "closed" and pair.sock.aborted

    run_on_manual_clock(scenario)
