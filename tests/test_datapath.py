"""The per-record data path (aiotls._speedups and its fallback aiotls._openssl.datapath), driven
over real engines: a client TLSEngine and a server whose post-handshake data path is a
DataPath built from the server engine's own SSL* and BIOs, pumped in memory."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiotls
from aiotls import TLSEngine, TLSError
from aiotls._openssl import datapath as _datapath
from aiotls._openssl.binding import ffi, lib
from aiotls._openssl.datapath import CLOSE_NOTIFY, ERROR, PAUSED, error_reasons
from aiotls._openssl.fnptrs import openssl_functions
from aiotls._openssl.speedups import NO_EXTENSIONS

ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def compiled_class(name: str = "DataPath") -> type[Any]:
    """aiotls._speedups.<name>; a skip when it was not built, but a failure on CI."""
    if NO_EXTENSIONS:
        pytest.skip("AIOTLS_NO_EXTENSIONS is set: only the fallback runs")
    try:
        from aiotls import _speedups
    except ImportError as exc:
        if ON_CI:
            pytest.fail(f"aiotls._speedups was not built (CI must build it): {exc}")
        pytest.skip(f"aiotls._speedups was not built: {exc}")
    return getattr(_speedups, name)  # type: ignore[no-any-return]


@pytest.fixture(params=["compiled", "fallback"])
def impl(request: pytest.FixtureRequest) -> type[Any]:
    return compiled_class() if request.param == "compiled" else _datapath.DataPath


class Recorder(asyncio.Protocol):
    """A Protocol that records each data_received call; ``on_data`` may act on it."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.on_data: Callable[[bytes], None] | None = None

    def data_received(self, data: bytes) -> None:
        assert type(data) is bytes
        self.chunks.append(data)
        if self.on_data is not None:
            self.on_data(data)

    @property
    def received(self) -> bytes:
        return b"".join(self.chunks)


class BufferRecorder(asyncio.BufferedProtocol):
    """A BufferedProtocol with a fixed buffer of ``size`` bytes."""

    def __init__(self, size: int) -> None:
        self.buf = bytearray(size)
        self.received = bytearray()
        self.calls = 0
        self.on_data: Callable[[bytes], None] | None = None

    def get_buffer(self, sizehint: int) -> bytearray:
        assert sizehint == -1
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.calls += 1
        self.received += self.buf[:nbytes]
        self.buf = bytearray(len(self.buf))  # a new buffer: the last one may not be touched
        if self.on_data is not None:
            self.on_data(bytes(self.received[-nbytes:]))


class Pair:
    """A client engine and a server whose data path is ``impl``, connected in memory.

    ``to_server`` holds the client's ciphertext not fed yet; ``sent`` records each
    ciphertext object the DataPath handed to its sink.
    """

    def __init__(
        self,
        impl: type[Any],
        contexts: tuple[aiotls.SecureContext, aiotls.SecureContext],
        protocol: asyncio.BaseProtocol,
        **server_options: Any,
    ) -> None:
        server_ctx, client_ctx = contexts
        self.client = TLSEngine(client_ctx, server_hostname="localhost")
        self.server = TLSEngine(server_ctx, server_side=True, **server_options)
        self._handshake()
        self.sent: list[bytes | bytearray] = []
        self.dp = impl(
            *self.server.raw_addresses(),
            openssl_functions(),
            protocol,
            self.sent.append,
            self.server,
        )

    def _handshake(self) -> None:
        moved = True
        while moved:
            moved = False
            for src, dst in ((self.client, self.server), (self.server, self.client)):
                if data := src.data_to_send():
                    dst.receive_data(data)
                    moved = True
        assert self.client.handshake_complete and self.server.handshake_complete
        assert not self.client.read()  # the client took the server's session tickets

    def client_sends(self, *messages: bytes) -> bytes:
        """The ciphertext of ``messages`` (one send, so one or more records, each)."""
        for message in messages:
            self.client.send(message)
        return self.client.data_to_send()

    def client_reads(self) -> bytes:
        """What the server's data path sent, decrypted by the client."""
        for out in self.sent:
            self.client.receive_data(out)
        self.sent.clear()
        return self.client.read()

    def want_read(self) -> bool:
        """OpenSSL's SSL_want_read on the server: True only after a read found no data."""
        return bool(lib.SSL_want_read(ffi.cast("SSL *", self.server.raw_addresses()[0])))


@pytest.fixture(scope="module")
def contexts(
    server_key_pem: str, server_chain_pem: str, ca_pem: str
) -> tuple[aiotls.SecureContext, aiotls.SecureContext]:
    return (
        aiotls.create_secure_context(key=server_key_pem, cert=server_chain_pem),
        aiotls.create_secure_context(ca=ca_pem),
    )


def splits(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    """``data`` cut at the given offsets (taken modulo its length)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for a, b in itertools.pairwise(points):
        yield data[a:b]


messages_st = st.lists(st.integers(1, 40_000), min_size=1, max_size=6).map(
    lambda sizes: [bytes([i % 251]) * n for i, n in enumerate(sizes)]
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    messages=messages_st,
    cuts=st.lists(st.integers(0, 10**6), max_size=8),
    buffer_size=st.one_of(st.none(), st.integers(1, 70_000)),
)
def test_plaintext_arrives_whole_whatever_the_record_splits(
    impl: type[Any], contexts, messages: list[bytes], cuts: list[int], buffer_size: int | None
) -> None:
    """Echo through the DataPath: what the client sent (in records cut anywhere) reaches the
    protocol in order, and what the protocol writes back (in sizes of its own) reaches the
    client; for a Protocol or a BufferedProtocol with a buffer of any size."""
    protocol: Recorder | BufferRecorder = (
        Recorder() if buffer_size is None else BufferRecorder(buffer_size)
    )
    pair = Pair(impl, contexts, protocol)

    def echo_in_halves(data: bytes) -> None:
        half = len(data) // 2
        assert pair.dp.write(data[:half]) == pair.dp.write(data[half:]) == 0

    protocol.on_data = echo_in_halves
    expected = b"".join(messages)
    for chunk in splits(pair.client_sends(*messages), cuts):
        assert pair.dp.feed(chunk) == 0
    assert bytes(protocol.received) == expected
    assert pair.client_reads() == expected


def test_rebind_after_compaction_carries_unread_ciphertext_over(impl: type[Any], contexts) -> None:
    """A compaction swaps the BIOs under a paused data path: ciphertext it stored but did
    not decrypt moves to the new incoming BIO, and after rebind() it is delivered and
    answered over the new ones."""
    protocol = Recorder()
    pair = Pair(impl, contexts, protocol)
    pair.dp.paused = True
    assert pair.dp.feed(pair.client_sends(b"before")) == _datapath.PAUSED
    old = pair.server.raw_addresses()
    pair.server.compact()
    assert pair.server.raw_addresses()[1:] != old[1:]
    pair.dp.rebind(*pair.server.raw_addresses())
    pair.dp.paused = False
    protocol.on_data = lambda data: pair.dp.write(data.upper())
    assert pair.dp.feed(b"") == 0
    assert pair.dp.feed(pair.client_sends(b"after")) == 0
    assert protocol.received == b"beforeafter"
    assert pair.client_reads() == b"BEFOREAFTER"
    with pytest.raises(ValueError, match="not NULL"):
        pair.dp.rebind(0, 0, 0)


class Owner:
    """What a RawProtocol tells its TLS transport, recorded."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if not name.startswith(("_raw_", "_data_path_")):
            raise AttributeError(name)
        return lambda *args: self.events.append((name, args)) or (name == "_raw_eof")


@pytest.mark.parametrize("kind", ["compiled", "fallback"])
def test_raw_protocol_feeds_the_data_path_and_tells_the_owner_the_rest(kind: str, contexts) -> None:
    """Without a DataPath every chunk goes to the owner; with one, chunks go to it and the
    owner hears only of close_notify (or an error, or a raising protocol); the socket's
    other events always go to the owner."""
    datapath_class = compiled_class() if kind == "compiled" else _datapath.DataPath
    raw_class = compiled_class("RawProtocol") if kind == "compiled" else _datapath.RawProtocol
    owner, protocol = Owner(), Recorder()
    buffer = memoryview(bytearray(64 * 1024))
    raw = raw_class(owner, buffer)
    assert raw.get_buffer(-1) is buffer
    raw.data_received(b"early")
    assert owner.events == [("_raw_received", (b"early",))]
    pair = Pair(datapath_class, contexts, protocol)
    raw.datapath = pair.dp
    data = pair.client_sends(b"through the data path")
    buffer[: len(data)] = data
    raw.buffer_updated(len(data))
    assert protocol.received == b"through the data path" and len(owner.events) == 1
    protocol.on_data = lambda data: 1 / 0
    raw.data_received(pair.client_sends(b"boom"))
    name, (exc,) = owner.events[-1]
    assert name == "_data_path_raised" and isinstance(exc, ZeroDivisionError)
    protocol.on_data = None
    pair.client.close()
    raw.data_received(pair.client.data_to_send())
    assert owner.events[-1] == ("_data_path_ended", (pair.dp, CLOSE_NOTIFY))
    assert raw.eof_received() is True
    raw.pause_writing(), raw.resume_writing(), raw.connection_lost(None)
    assert [e[0] for e in owner.events[-4:]] == [
        "_raw_eof", "_raw_pause_writing", "_raw_resume_writing", "_raw_connection_lost"
    ]


def test_one_data_received_per_batch_and_no_failing_read(impl: type[Any], contexts) -> None:
    """Ten records in one chunk: one data_received with all of them; the batch ends without
    a failing SSL_read (OpenSSL's want_read stays off), unlike the engine's read loop."""
    protocol = Recorder()
    pair = Pair(impl, contexts, protocol)
    chunk = pair.client_sends(*(bytes([i]) * 100 for i in range(10)))
    assert pair.dp.feed(chunk) == 0
    assert protocol.chunks == [b"".join(bytes([i]) * 100 for i in range(10))]
    assert not pair.want_read()
    # The engine's own loop reads until OpenSSL fails for want of data (the contrast).
    pair.server.receive_data(pair.client_sends(b"x"))
    assert pair.server.read() == b"x"
    assert pair.want_read()


def test_an_incomplete_record_costs_one_failing_read(impl: type[Any], contexts) -> None:
    protocol = Recorder()
    pair = Pair(impl, contexts, protocol)
    chunk = pair.client_sends(b"a" * 100, b"b" * 100)
    cut = len(chunk) - 10  # the second record's last bytes are still on the way
    assert pair.dp.feed(chunk[:cut]) == 0
    assert protocol.chunks == [b"a" * 100]
    assert pair.want_read()
    assert pair.dp.feed(chunk[cut:]) == 0
    assert protocol.chunks == [b"a" * 100, b"b" * 100]
    assert not pair.want_read()


def test_writes_during_delivery_are_flushed_once(impl: type[Any], contexts) -> None:
    """data_received -> three writes: one ciphertext object for the socket, at the end of
    feed(); a write outside feed() goes out at once, one object per write."""
    protocol = Recorder()
    pair = Pair(impl, contexts, protocol)

    def answer(data: bytes) -> None:
        for part in (b"one ", b"two ", b"three"):
            assert pair.dp.write(part) == 0
        assert pair.sent == []  # corked while delivering

    protocol.on_data = answer
    assert pair.dp.feed(pair.client_sends(b"hello")) == 0
    assert len(pair.sent) == 1
    assert pair.client_reads() == b"one two three"
    assert pair.dp.write(b"later") == 0
    assert len(pair.sent) == 1
    assert pair.client_reads() == b"later"


def test_close_notify_after_the_data_before_it(impl: type[Any], contexts) -> None:
    protocol = Recorder()
    pair = Pair(impl, contexts, protocol)
    pair.client.send(b"last words")
    pair.client.close()
    assert pair.dp.feed(pair.client.data_to_send()) == CLOSE_NOTIFY
    assert protocol.chunks == [b"last words"]
    assert pair.dp.feed(b"junk after close_notify") == CLOSE_NOTIFY  # final
    assert protocol.chunks == [b"last words"]
    # Half-close: the server may still answer after the client's close_notify.
    assert pair.dp.write(b"goodbye") == 0
    assert pair.client_reads() == b"goodbye"


def test_a_corrupted_record_is_a_fatal_error_with_openssl_reasons(
    impl: type[Any], contexts
) -> None:
    """The plaintext before the bad record is delivered, the error reported with OpenSSL's
    queue, the alert sent to the peer; from then on feed() and write() only say ERROR."""
    protocol = Recorder()
    pair = Pair(impl, contexts, protocol)
    good = pair.client_sends(b"fine")
    bad = bytearray(pair.client_sends(b"tampered"))
    bad[-1] ^= 0x01  # the AEAD tag
    more = pair.client_sends(b"more")
    assert pair.dp.feed(good + bad) == ERROR
    assert protocol.chunks == [b"fine"]
    assert pair.dp.error is not None
    code, queue = pair.dp.error
    assert code == lib.SSL_ERROR_SSL
    assert any("bad record mac" in r or "decryption failed" in r for r in error_reasons(queue))
    assert not lib.ERR_peek_error()  # the queue was taken, not left for the next call
    with pytest.raises(TLSError, match="alert"):
        pair.client_reads()  # the alert reached the client
    assert pair.dp.feed(more) == ERROR
    assert pair.dp.write(b"no") == ERROR
    assert protocol.chunks == [b"fine"]


def test_buffered_protocol_decrypts_into_its_buffer(impl: type[Any], contexts) -> None:
    """One get_buffer/buffer_updated per buffer-full; the plaintext is in the app's buffer."""
    protocol = BufferRecorder(4096)
    pair = Pair(impl, contexts, protocol)
    data = bytes(range(256)) * 64  # 16 KiB: four buffers
    assert pair.dp.feed(pair.client_sends(data)) == 0
    assert protocol.received == data
    assert protocol.calls == 4


def test_an_empty_buffer_is_an_error(impl: type[Any], contexts) -> None:
    pair = Pair(impl, contexts, BufferRecorder(0))
    with pytest.raises(RuntimeError, match="empty buffer"):
        pair.dp.feed(pair.client_sends(b"data"))


def test_paused_reading_keeps_the_rest_until_resumed(impl: type[Any], contexts) -> None:
    protocol = BufferRecorder(1000)
    pair = Pair(impl, contexts, protocol)

    def pause(data: bytes) -> None:
        pair.dp.paused = True

    protocol.on_data = pause
    data = b"p" * 3000
    assert pair.dp.feed(pair.client_sends(data)) == PAUSED
    assert protocol.received == data[:1000]
    assert pair.dp.feed(pair.client_sends(b"q")) == PAUSED  # stored, not delivered
    assert protocol.received == data[:1000]
    protocol.on_data = None
    pair.dp.paused = False
    assert pair.dp.feed(b"") == 0
    assert protocol.received == data + b"q"


def test_feed_from_inside_a_delivery_is_delivered_after_it(impl: type[Any], contexts) -> None:
    protocol = Recorder()
    pair = Pair(impl, contexts, protocol)
    first, second = pair.client_sends(b"first"), pair.client_sends(b"second")

    def feed_again(data: bytes) -> None:
        protocol.on_data = None
        assert pair.dp.feed(second) == 0

    protocol.on_data = feed_again
    assert pair.dp.feed(first) == 0
    assert protocol.chunks == [b"first", b"second"]


def test_set_protocol_switches_delivery(impl: type[Any], contexts) -> None:
    first, second = Recorder(), BufferRecorder(100)
    pair = Pair(impl, contexts, first)
    pair.dp.feed(pair.client_sends(b"to the first"))
    pair.dp.set_protocol(second)
    pair.dp.feed(pair.client_sends(b"to the second"))
    assert first.received == b"to the first"
    assert second.received == b"to the second"


def test_bad_arguments_raise_at_construction(impl: type[Any], contexts) -> None:
    engine = TLSEngine(contexts[0], server_side=True)
    pointers, table = engine.raw_addresses(), openssl_functions()
    with pytest.raises(ValueError, match="NULL"):
        impl(0, *pointers[1:], table, Recorder(), print)
    with pytest.raises(ValueError, match="functions"):
        impl(*pointers, table[:-1], Recorder(), print)
    with pytest.raises(TypeError, match="data_received"):
        impl(*pointers, table, asyncio.BaseProtocol(), print)


def test_the_function_table_is_cryptographys_own_openssl() -> None:
    """Every address is what cffi gives for cryptography's compiled lib, with the C type
    the compiled data path casts it to."""
    from aiotls._openssl.binding import original_lib
    from aiotls._openssl.fnptrs import FUNCTIONS, ffi

    for (name, ctype), address in zip(FUNCTIONS, openssl_functions(), strict=True):
        pointer = ffi.addressof(original_lib(), name)
        assert ffi.typeof(pointer) == ffi.typeof(ctype)
        assert int(ffi.cast("uintptr_t", pointer)) == address


@pytest.mark.parametrize("env", [{}, {"AIOTLS_NO_EXTENSIONS": "1"}])
def test_the_loader_picks_the_compiled_path_unless_told_not_to(env: dict[str, str]) -> None:
    code = "from aiotls._openssl import speedups as s; print(s.COMPILED, s.DataPath.__module__)"
    environ = {k: v for k, v in os.environ.items() if k != "AIOTLS_NO_EXTENSIONS"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    if env:
        assert out == ["False", "aiotls._openssl.datapath"]
    else:
        compiled_class()  # skips (or fails on CI) when the extension was not built
        assert out == ["True", "aiotls._speedups"]


def test_tls12_and_a_renegotiation_through_the_data_path(impl: type[Any], contexts, ca_pem) -> None:
    """OpenSSL's own records (here a TLS 1.2 renegotiation's flights, written while
    SSL_read takes the client's) leave with feed()'s flush, with no write to carry them."""
    tls12 = aiotls.create_secure_context(ca=ca_pem, max_version="TLSv1.2")
    protocol = Recorder()
    pair = Pair(impl, (contexts[0], tls12), protocol, allow_renegotiation=True)
    assert pair.client.get_protocol() == "TLSv1.2"
    pair.client.renegotiate()
    for _ in range(2):  # ClientHello -> the server's flight; the client's -> its Finished
        assert pair.dp.feed(pair.client.data_to_send()) == 0
        (flight,) = pair.sent
        assert flight[0] in (20, 22)  # handshake records (ChangeCipherSpec may lead)
        assert pair.client_reads() == b""
    assert not pair.client.renegotiating
    assert pair.dp.feed(pair.client_sends(b"after")) == 0
    assert protocol.chunks == [b"after"]
