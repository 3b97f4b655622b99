"""The transport's state machine in memory: a TLSTransport over a fake socket transport
that records what it writes, with a real TLSEngine as the peer, pumped by the test.

No sockets, no sleeps: each test drives the transitions itself (open, handshake
paused and resumed, the half-closes WRITE_CLOSED and READ_CLOSED in either order on
TLS 1.2 and 1.3, close with and without the peer's close_notify, abort, a ragged EOF,
a failing application, transitions refused) and the two timeouts run on a loop whose
clock the test moves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

import aiotls
from aiotls._aio.transport import _TRANSITIONS, TLSTransport, _State
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
    when built), rebound to the BIOs compaction left; data still flows both ways."""
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


# -- half-closes: WRITE_CLOSED and READ_CLOSED, on both TLS versions -------------------


@pytest.fixture(params=["TLSv1.2", "TLSv1.3"])
def version_ctx(request: pytest.FixtureRequest, ca_pem: str) -> aiotls.SecureContext:
    """A client context that negotiates the given version (the server allows both)."""
    return aiotls.create_secure_context(ca=ca_pem, max_version=request.param)


async def test_half_close_by_the_peer_then_we_still_write(server_ctx, version_ctx) -> None:
    """OPEN -> READ_CLOSED (eof_received said True) -> CLOSING -> CLOSED at once: the
    peer's close_notify already came, so close() has nothing to wait for."""
    pair = Pair(server_ctx, version_ctx)
    await pair.open()
    pair.app.keep_open_on_eof = True
    pair.peer.close()
    await pair.pump()
    assert pair.app.eofs == 1 and pair.state() == "read closed"
    assert not pair.tls.is_closing() and pair.tls.is_reading()
    assert pair.tls._datapath is not None  # our writes still take the data path
    pair.tls.write(b"after your ")
    pair.tls.writelines([b"close_", b"notify"])
    await pair.pump()
    assert bytes(pair.received) == b"after your close_notify"
    assert pair.app.eofs == 1  # told once, however often the data path reports it
    pair.tls.close()
    assert pair.state() == "closed" and pair.sock.closing and not pair.sock.aborted
    assert await pair.app.lost is None
    await pair.pump()
    assert pair.peer.close_notify_received


async def test_half_close_by_us_then_the_peer_still_writes(server_ctx, version_ctx) -> None:
    """OPEN -> WRITE_CLOSED (still reading, on the data path) -> CLOSED with the peer's
    close_notify, after one eof_received; writing in WRITE_CLOSED raises, as in asyncio."""
    pair = Pair(server_ctx, version_ctx)
    await pair.open()
    pair.tls.write_eof()
    assert pair.state() == "write closed" and not pair.tls.is_closing()
    assert pair.tls.can_write_eof() and pair.tls.is_reading()
    with pytest.raises(RuntimeError, match="after write_eof"):
        pair.tls.write(b"too late")
    with pytest.raises(RuntimeError, match="after write_eof"):
        pair.tls.writelines([b"too late"])
    pair.tls.write_eof()  # a second one changes nothing
    await pair.pump()
    assert pair.peer.close_notify_received and pair.state() == "write closed"
    assert pair.tls._datapath is not None
    pair.peer.send(b"still talking")
    await pair.pump()
    assert bytes(pair.app.data) == b"still talking"
    pair.peer.close()
    await pair.pump()
    assert pair.app.eofs == 1
    assert await pair.app.lost is None
    assert pair.state() == "closed" and pair.sock.closing and not pair.sock.aborted


async def test_peer_answers_write_eof_at_once_as_tls12_asks(server_ctx, version_ctx) -> None:
    """RFC 5246's peer: its data in flight, then its close_notify in answer to ours; the
    data arrives first, then eof_received, then CLOSED (on TLS 1.3 a peer may do so too)."""
    pair = Pair(server_ctx, version_ctx)
    await pair.open()
    eofs_at_data: list[int] = []
    pair.app.on_data = lambda data: eofs_at_data.append(pair.app.eofs)
    pair.peer.send(b"in flight")
    pair.tls.write_eof()
    await pair.pump()
    pair.peer.close()
    await pair.pump()
    assert bytes(pair.app.data) == b"in flight" and eofs_at_data == [0]
    assert pair.app.eofs == 1 and await pair.app.lost is None and pair.state() == "closed"


async def test_close_notifies_crossing_write_eof_first(server_ctx, version_ctx) -> None:
    """Both sides close at once, ours first: WRITE_CLOSED, then the peer's close_notify
    (sent before it saw ours) -> CLOSED."""
    pair = Pair(server_ctx, version_ctx)
    await pair.open()
    pair.tls.write_eof()
    pair.peer.close()  # before it received ours
    await pair.pump()
    assert pair.app.eofs == 1 and pair.peer.close_notify_received
    assert await pair.app.lost is None and pair.state() == "closed"


async def test_close_notifies_crossing_peer_first(server_ctx, version_ctx) -> None:
    """Both sides close at once, theirs first: READ_CLOSED (kept open), then write_eof(),
    which closes: READ_CLOSED -> CLOSING -> CLOSED without waiting."""
    pair = Pair(server_ctx, version_ctx)
    await pair.open()
    pair.app.keep_open_on_eof = True
    pair.peer.close()
    await pair.pump()
    assert pair.state() == "read closed"
    pair.tls.write_eof()
    assert pair.state() == "closed" and pair.sock.closing and not pair.sock.aborted
    assert await pair.app.lost is None
    await pair.pump()
    assert pair.peer.close_notify_received and pair.app.eofs == 1


async def test_close_after_write_eof_waits_for_the_peer(server_ctx, version_ctx) -> None:
    """WRITE_CLOSED -> CLOSING: close() waits for the peer's close_notify (data meanwhile
    is discarded, eof_received is not called), then CLOSED."""
    pair = Pair(server_ctx, version_ctx)
    await pair.open()
    pair.tls.write_eof()
    await pair.pump()
    pair.tls.close()
    assert pair.state() == "closing" and pair.tls.is_closing() and not pair.sock.closing
    pair.peer.send(b"discarded")
    pair.peer.close()
    await pair.pump()
    assert not pair.app.data and pair.app.eofs == 0
    assert await pair.app.lost is None and pair.state() == "closed" and not pair.sock.aborted


async def test_ragged_eof_allowed_in_each_half_close(server_ctx, version_ctx) -> None:
    """With suppress_ragged_eofs a TCP EOF stands for close_notify: OPEN -> READ_CLOSED
    keeps the socket for our writes; in WRITE_CLOSED it ends the connection."""
    pair = Pair(server_ctx, version_ctx, suppress_ragged_eofs=True)
    await pair.open()
    pair.app.keep_open_on_eof = True
    pair.sock.feed_eof()
    assert pair.state() == "read closed" and not pair.sock.closing and pair.app.eofs == 1
    pair.tls.write(b"after your EOF")
    await pair.pump()
    assert bytes(pair.received) == b"after your EOF"
    pair.tls.close()
    assert await pair.app.lost is None

    pair = Pair(server_ctx, version_ctx, suppress_ragged_eofs=True)
    await pair.open()
    pair.tls.write_eof()
    pair.sock.feed_eof()
    assert pair.state() == "closed" and pair.app.eofs == 1
    assert await pair.app.lost is None


async def test_eof_received_failing_after_write_eof_is_connection_lost(
    server_ctx, client_ctx, caplog: pytest.LogCaptureFixture
) -> None:
    """An application failure in WRITE_CLOSED reaches connection_lost(exc), as in OPEN."""
    caplog.set_level(logging.ERROR, logger="aiotls")
    pair = Pair(server_ctx, client_ctx)
    await pair.open()

    def fail() -> bool:
        raise RuntimeError("application bug")

    pair.app.eof_received = fail  # type: ignore[method-assign]
    pair.tls.write_eof()
    pair.peer.close()
    await pair.pump()
    exc = await pair.app.lost
    assert isinstance(exc, RuntimeError) and pair.state() == "closed" and pair.sock.closing
    assert any("eof_received()" in r.getMessage() for r in caplog.records)


async def test_transitions_outside_the_table_are_refused(server_ctx, client_ctx) -> None:
    """Every state has its row; a half-closed side never reopens and the two half-closes
    do not combine (both closed is CLOSED); a renegotiation needs both directions."""
    assert set(_TRANSITIONS) == set(_State)
    pair = Pair(server_ctx, client_ctx)
    await pair.open()
    pair.tls.write_eof()
    for illegal in (_State.OPEN, _State.READ_CLOSED, _State.HANDSHAKING):
        with pytest.raises(RuntimeError, match="cannot go from"):
            pair.tls._set_state(illegal)
    assert pair.state() == "write closed"
    with pytest.raises(aiotls.TLSError) as info:
        await pair.tls.renegotiate()
    assert info.value.code == "ERR_TLS_NOT_READY"

    pair = Pair(server_ctx, client_ctx)
    await pair.open()
    pair.app.keep_open_on_eof = True
    pair.peer.close()
    await pair.pump()
    for illegal in (_State.OPEN, _State.WRITE_CLOSED):
        with pytest.raises(RuntimeError, match="cannot go from"):
            pair.tls._set_state(illegal)
    assert pair.state() == "read closed"
    pair.tls.abort()
    assert pair.state() == "closed" and await pair.app.lost is None


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
