"""The per-record data path in pure Python: the fallback of ``aiotls._speedups``.

A :class:`DataPath` carries the application data of one *established* TLS connection
between the socket and the application's protocol, on the engine's own ``SSL*`` and
memory BIOs; the handshake, hooks and every rare path stay with the engine. The compiled
``aiotls._speedups.DataPath`` has the same interface and behaviour, call for call:

* ``feed(chunk)`` writes a received chunk into OpenSSL, then decrypts what it can in
  batches: a ``Protocol`` gets one ``data_received(bytes)`` per batch (not per record), a
  ``BufferedProtocol`` one ``get_buffer(-1)`` that OpenSSL decrypts straight into and one
  ``buffer_updated(n)``. A batch ends when OpenSSL and the incoming BIO are empty, seen
  from a short ``SSL_read`` and the BIO's length, never from a failing ``SSL_read`` (one
  fails, once, only when a record is incomplete); the error queue is cleared and
  ``SSL_get_error`` asked once per batch.
* ``write(data)`` encrypts with one whole ``SSL_write`` and hands the ciphertext to the
  ``sink`` (the socket transport's ``write``) in one new object read from the BIO at its
  size. Writes made while ``feed`` delivers (``data_received`` -> ``transport.write``) only
  encrypt: ``feed`` sends everything the outgoing BIO holds once, at its end, post-handshake
  records (key updates, alerts) included.
* Results are bits: :data:`CLOSE_NOTIFY` (the peer's close_notify arrived; the plaintext
  before it was delivered), :data:`ERROR` (fatal: :attr:`DataPath.error` holds
  ``SSL_get_error``'s code and the OpenSSL error queue, for Python to turn into a
  TLSError with :func:`error_reasons`), :data:`PAUSED` (``paused`` was set with plaintext
  left: call ``feed(b"")`` after resuming). The first two are final: later calls return
  them again without touching OpenSSL.

:class:`RawProtocol` is the protocol on the socket transport under a TLS transport: while
the transport has a DataPath (its OPEN states), received chunks go straight to it, the
socket's other events and every chunk in other states to the transport (its owner). The
compiled ``aiotls._speedups.RawProtocol`` is its twin in C, so that a received record
reaches the application without a Python frame of aiotls's.

Callers keep three rules: build a DataPath after the handshake completed and after any
BIO replacement (``TLSEngine.compact``) and use it on that thread only; leave
``read_ahead`` off (OpenSSL's default, which aiotls never changes), so a short read means
the record is consumed; and keep ``owner`` (the object owning the ``SSL*``) alive, which
the DataPath does by holding it. Exceptions of the protocol's callbacks and of the sink
propagate, after the writes made so far were sent.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

from .binding import ffi, lib
from .fnptrs import FUNCTIONS

__all__ = [
    "CLOSE_NOTIFY",
    "ERROR",
    "MAX_ERRORS",
    "PAUSED",
    "SCRATCH_SIZE",
    "DataPath",
    "RawEvents",
    "RawProtocol",
    "error_reasons",
    "protocol_callbacks",
    "thread_scratch",
]

CLOSE_NOTIFY: Final = 1
ERROR: Final = 2
PAUSED: Final = 4
#: Plaintext decrypted per batch for a ``Protocol`` (a 256 KiB receive chunk and a record).
SCRATCH_SIZE: Final = 320 * 1024
#: Error-queue entries kept for a fatal error (OpenSSL's own queue holds 16).
MAX_ERRORS: Final = 16
#: SSL_get_error codes the data path tells apart (the compiled one imports them from here).
WANT_READ: Final[int] = lib.SSL_ERROR_WANT_READ
ZERO_RETURN: Final[int] = lib.SSL_ERROR_ZERO_RETURN
SSL_FAILURE: Final[int] = lib.SSL_ERROR_SSL

_local = threading.local()

#: Takes each flush's ciphertext, a new object it may keep (the socket transport's write).
Sink = Callable[[bytes | bytearray], object]


def thread_scratch() -> tuple[bytearray, Any]:
    """This thread's plaintext batch buffer and a cffi pointer into it.

    Shared by the thread's data paths (either kind): each copies its batch out before
    calling the protocol, and feed() runs from the event loop, never from inside another
    feed's OpenSSL call, so no two batches overlap. Per thread, because cffi lets other
    threads run during OpenSSL calls.
    """
    scratch = getattr(_local, "scratch", None)
    if scratch is None:
        buf = bytearray(SCRATCH_SIZE)
        scratch = _local.scratch = (buf, ffi.from_buffer(buf))
    return scratch


def protocol_callbacks(
    protocol: asyncio.BaseProtocol,
) -> tuple[Callable[[bytes], object] | None, asyncio.BufferedProtocol | None]:
    """``(data_received, None)`` for a Protocol, ``(None, protocol)`` for a BufferedProtocol;
    a protocol that is neither is a TypeError."""
    if isinstance(protocol, asyncio.BufferedProtocol):
        return None, protocol
    data_received = getattr(protocol, "data_received", None)
    if not callable(data_received):
        raise TypeError(f"protocol: {type(protocol).__name__} has no data_received()")
    return data_received, None


def error_reasons(codes: Sequence[int]) -> list[str]:
    """OpenSSL's reason strings for the packed error codes of :attr:`DataPath.error`."""
    reasons = []
    for code in codes:
        text = lib.ERR_reason_error_string(code)
        reasons.append(ffi.string(text).decode() if text != ffi.NULL else f"error {code:#x}")
    return reasons


def check_addresses(ssl: int, bio_in: int, bio_out: int) -> None:
    """The checks of the addresses a DataPath binds, shared by both implementations."""
    if not (ssl and bio_in and bio_out):
        raise ValueError("DataPath needs the addresses of an SSL* and its two BIOs, not NULL")


def check_arguments(ssl: int, bio_in: int, bio_out: int, functions: Sequence[int]) -> None:
    """The constructor's checks, shared by both implementations."""
    check_addresses(ssl, bio_in, bio_out)
    if len(functions) != len(FUNCTIONS) or not all(functions):
        raise ValueError(
            f"functions: expected the {len(FUNCTIONS)} addresses of openssl_functions()"
        )


_from_buffer = ffi.from_buffer
_unpack = ffi.unpack
_release = ffi.release
_NULL = ffi.NULL
_INT_MAX = 2**31 - 1
_SSL_read = lib.SSL_read
_SSL_write = lib.SSL_write
_SSL_get_error = lib.SSL_get_error
_ERR_clear_error = lib.ERR_clear_error
_ERR_get_error = lib.ERR_get_error
_BIO_write = lib.BIO_write
_BIO_read = lib.BIO_read
_BIO_pending = lib.BIO_get_mem_data  # BIO_ctrl_pending for a memory BIO


class DataPath:
    """The data path of one established connection (see the module's docstring).

    ``functions`` is :func:`aiotls._openssl.fnptrs.openssl_functions`'s table: the compiled data
    path calls through it; this one checks it and calls the same functions through
    cryptography's cffi ``lib`` (a cffi pointer call would cost more).
    """

    __slots__ = (
        "_buffered",
        "_data_received",
        "_delivering",
        "_in",
        "_out",
        "_owner",
        "_refed",
        "_scratch",
        "_sink",
        "_ssl",
        "_status",
        "error",
        "paused",
    )

    def __init__(
        self,
        ssl: int,
        bio_in: int,
        bio_out: int,
        functions: Sequence[int],
        protocol: asyncio.BaseProtocol,
        sink: Sink,
        owner: object = None,
    ) -> None:
        check_arguments(ssl, bio_in, bio_out, functions)
        self._ssl = ffi.cast("SSL *", ssl)
        self._in = ffi.cast("BIO *", bio_in)
        self._out = ffi.cast("BIO *", bio_out)
        self._owner = owner
        self._sink = sink
        self._scratch = thread_scratch()[1]
        self._status = 0
        self._delivering = False  # corks write(): feed() sends once, at its end
        self._refed = False  # feed() was called from inside a delivery
        #: Set while the application paused reading: feed() only stores what arrives.
        self.paused = False
        #: ``(SSL_get_error code, OpenSSL error-queue codes)`` once a fatal error happened.
        self.error: tuple[int, tuple[int, ...]] | None = None
        self.set_protocol(protocol)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Deliver to ``protocol`` from now on (``Transport.set_protocol``)."""
        self._data_received, self._buffered = protocol_callbacks(protocol)

    def rebind(self, ssl: int, bio_in: int, bio_out: int) -> None:
        """Go on over the BIOs that replaced the old ones (a compaction), not inside feed()."""
        check_addresses(ssl, bio_in, bio_out)
        self._ssl = ffi.cast("SSL *", ssl)
        self._in = ffi.cast("BIO *", bio_in)
        self._out = ffi.cast("BIO *", bio_out)

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        """Take a chunk of ciphertext and deliver the plaintext it completes."""
        if self._status:
            return self._status
        ptr = _from_buffer(data)
        n = len(ptr)
        written = _BIO_write(self._in, ptr, n) if n else 0
        del ptr  # the caller's buffer is free again (a bytearray may be resized)
        if written != n:
            return self._fail(SSL_FAILURE)
        if self._delivering:
            self._refed = True
            return 0
        if self.paused:
            return PAUSED
        self._delivering = True
        try:
            return self._deliver()
        finally:
            self._delivering = False
            self._flush()

    def _deliver(self) -> int:
        """Decrypt batch by batch into the protocol until OpenSSL has nothing more."""
        ssl, bio_in = self._ssl, self._in
        while True:
            self._refed = False
            data_received, buffered = self._data_received, self._buffered
            if buffered is not None:
                ptr = _from_buffer(buffered.get_buffer(-1), require_writable=True)
                size = min(len(ptr), _INT_MAX)
                if not size:
                    _release(ptr)
                    raise RuntimeError("get_buffer() returned an empty buffer")
            else:
                ptr, size = self._scratch, SCRATCH_SIZE
            _ERR_clear_error()
            total = err = 0
            while True:
                n = _SSL_read(ssl, ptr + total, size - total)
                if n <= 0:
                    err = _SSL_get_error(ssl, n)
                    break
                total += n
                # A short read consumed its record: done once the BIO is empty too.
                if total == size or not _BIO_pending(bio_in, _NULL):
                    break
            if buffered is not None:
                _release(ptr)  # before the protocol's code: it may resize its buffer
            state = 0
            if err == ZERO_RETURN:
                self._status |= CLOSE_NOTIFY
                state = CLOSE_NOTIFY
            elif err and err != WANT_READ:
                state = self._fail(err)
            if buffered is not None:
                if total:
                    buffered.buffer_updated(total)
            elif total:
                assert data_received is not None
                data_received(_unpack(ptr, total))
            if state:
                return state
            if total < size and not self._refed:
                return 0
            if self.paused:
                return PAUSED

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Encrypt ``data`` and send it (at the end of feed() when inside one); 0 or ERROR."""
        if self._status & ERROR:
            return ERROR
        ptr = _from_buffer(data)
        total, sent = len(ptr), 0
        while sent < total:
            n = _SSL_write(self._ssl, ptr + sent, total - sent)
            if n <= 0:
                self._fail(_SSL_get_error(self._ssl, n))
                break
            sent += n
        del ptr
        if not self._delivering:
            self._flush()
        return self._status & ERROR

    def _flush(self) -> None:
        """Send what the outgoing BIO holds as one object, read from it at its size."""
        n = _BIO_pending(self._out, _NULL)
        if n > 0:
            out = bytearray(n)
            _BIO_read(self._out, _from_buffer(out), n)
            self._sink(out)

    def _fail(self, err: int) -> int:
        """Record a fatal error with the error queue (bounded), and report it."""
        codes: list[int] = []
        while len(codes) < MAX_ERRORS and (code := _ERR_get_error()):
            codes.append(code)
        _ERR_clear_error()
        self.error = (err, tuple(codes))
        self._status |= ERROR
        return ERROR


class RawEvents(Protocol):
    """What a :class:`RawProtocol` tells its owner (the TLS transport)."""

    def _raw_connection_made(self, transport: asyncio.Transport) -> None: ...
    def _raw_received(self, data: memoryview | bytes) -> None: ...
    def _raw_eof(self) -> bool: ...
    def _raw_connection_lost(self, exc: Exception | None) -> None: ...
    def _raw_pause_writing(self) -> None: ...
    def _raw_resume_writing(self) -> None: ...
    def _data_path_raised(self, exc: Exception) -> None: ...
    def _data_path_ended(self, datapath: Any, flags: int) -> None: ...


class RawProtocol(asyncio.BufferedProtocol):
    """The socket transport's protocol: chunks to ``datapath`` while one is set, all
    else to ``owner``. ``buffer`` is the receive buffer the socket transport fills."""

    __slots__ = ("_buf", "_owner", "datapath")

    def __init__(self, owner: RawEvents, buffer: memoryview) -> None:
        self._owner = owner
        self._buf = buffer
        #: The DataPath of the owner's OPEN states (None otherwise), set by the owner.
        self.datapath: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._owner._raw_connection_made(transport)  # type: ignore[arg-type]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buf

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._buf[:nbytes])

    def data_received(self, data: memoryview | bytes) -> None:
        """A chunk (also from a non-buffered transport, or b"": deliver what is held)."""
        datapath = self.datapath
        if datapath is None:
            self._owner._raw_received(data)
            return
        try:
            flags = datapath.feed(data)
        except Exception as exc:  # the application's protocol raised
            self._owner._data_path_raised(exc)
            return
        if flags & (ERROR | CLOSE_NOTIFY):
            self._owner._data_path_ended(datapath, flags)

    def eof_received(self) -> bool:
        return self._owner._raw_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._raw_connection_lost(exc)

    def pause_writing(self) -> None:
        self._owner._raw_pause_writing()

    def resume_writing(self) -> None:
        self._owner._raw_resume_writing()
