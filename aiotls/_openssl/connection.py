"""One OpenSSL connection (``SSL*`` and its two memory BIOs) as plain Python calls.

The engine drives it; nothing above the floor sees an ``SSL*``, a ``BIO*`` or cffi.
It owns the ``SSL*`` itself (freed when it is collected) and registers its owner for the
C callbacks (:func:`.callbacks.register`); there is no pyOpenSSL ``Connection`` per
connection, whose construction and reverse mapping cost a handshake ~10 us and an idle
connection ~0.5 KiB. The getters (certificates, chain, keying material, Finished
messages, names) are a few OpenSSL calls each.

The data path (:meth:`feed`, :meth:`drain`, :meth:`take`, :meth:`write_all`,
:meth:`read_into`) reads while OpenSSL has bytes rather than looping until
``WantReadError`` (raising costs as much as reading), and decrypts a whole received
chunk per call rather than a record per call.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Final

from cryptography import x509

from . import callbacks, extended
from .binding import address, certificate, cipher_list, error_queue, ffi, lib

if TYPE_CHECKING:
    from .callbacks import ConnectionCallbacks
    from .context import NativeContext

__all__ = [
    "SCRATCH_SIZE",
    "WANT_CLIENT_HELLO_CB",
    "SSLConnection",
]

_OP_ALLOW_CLIENT_RENEGOTIATION: Final = 0x100  # not in pyOpenSSL
_OP_NO_RENEGOTIATION: Final = 0x40000000
_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION: Final = 0x10000
_GET_TLSEXT_STATUS_REQ_TYPE: Final = 127  # SSL_CTRL_GET_TLSEXT_STATUS_REQ_TYPE
_CTRL_GET_MAX_PROTO_VERSION: Final = 131  # SSL_get_max_proto_version is a macro over SSL_ctrl
_TLS1_3: Final = 0x0304
#: SSL_ERROR_WANT_CLIENT_HELLO_CB; not in cryptography's bindings.
WANT_CLIENT_HELLO_CB: Final = 11
#: The SSL_ERROR_* values the engine tells apart.
ERROR_SSL: Final[int] = lib.SSL_ERROR_SSL
ERROR_SYSCALL: Final[int] = lib.SSL_ERROR_SYSCALL
ERROR_ZERO_RETURN: Final[int] = lib.SSL_ERROR_ZERO_RETURN
ERROR_WANT_READ: Final[int] = lib.SSL_ERROR_WANT_READ
#: Handshake errors that mean "waiting": for bytes, or for a suspended callback.
HANDSHAKE_WAITS: Final = frozenset(
    {lib.SSL_ERROR_WANT_READ, lib.SSL_ERROR_WANT_X509_LOOKUP, WANT_CLIENT_HELLO_CB}
)
#: One receive chunk (256 KiB) plus a carried-over record.
SCRATCH_SIZE: Final = 320 * 1024
# Worst-case growth of a record when encrypted (header, nonce, tag, CBC padding and MAC).
_RECORD_OVERHEAD: Final = 512
_uninitialised = ffi.new_allocator(should_clear_after_alloc=False)
_tls = threading.local()


def _scratch() -> Any:
    """A per-thread output buffer; cffi drops the GIL in OpenSSL calls, so not global."""
    buf = getattr(_tls, "buf", None)
    if buf is None:
        buf = _tls.buf = _uninitialised("char[]", SCRATCH_SIZE)
    return buf


class SSLConnection:
    """An ``SSL*`` on ``context`` whose C callbacks reach ``owner``."""

    __slots__ = ("_contexts", "bio_in", "bio_out", "ssl")

    def __init__(self, context: NativeContext, owner: ConnectionCallbacks, *, server_side: bool):
        raw = lib.SSL_new(context.pointer)
        if raw == ffi.NULL:
            error_queue()
            raise MemoryError("OpenSSL could not allocate a connection")
        self.ssl = ffi.gc(raw, _free_ssl)
        # The contexts the SSL* was on: their callbacks (cffi objects) must outlive it.
        self._contexts = [context]
        self.bio_in = self.bio_out = ffi.NULL
        if not self._new_bios():
            raise MemoryError("OpenSSL could not allocate a memory BIO")
        callbacks.register(raw, owner)
        if server_side:
            lib.SSL_set_accept_state(raw)
        else:
            lib.SSL_set_connect_state(raw)

    # -- configuration ---------------------------------------------------------------

    def set_verify(self, request_cert: bool, fail_if_no_cert: bool) -> None:
        """Ask for (and verify) the peer's certificate through the verify callback."""
        if request_cert:
            mode = lib.SSL_VERIFY_PEER | (
                lib.SSL_VERIFY_FAIL_IF_NO_PEER_CERT if fail_if_no_cert else 0
            )
            lib.SSL_set_verify(self.ssl, mode, callbacks.verify_callback)
        else:
            lib.SSL_set_verify(self.ssl, lib.SSL_VERIFY_NONE, ffi.NULL)

    def enable_certificate_callback(self) -> None:
        """Have OpenSSL call the owner's on_certificate after each ClientHello."""
        lib.SSL_set_cert_cb(self.ssl, callbacks.cert_callback, ffi.NULL)

    def allow_client_renegotiation(self) -> None:
        """OpenSSL 3.2+ refuses client renegotiation without this."""
        lib.SSL_set_options(self.ssl, _OP_ALLOW_CLIENT_RENEGOTIATION)

    def refuse_renegotiation(self) -> None:
        """A client declines the server's HelloRequest."""
        lib.SSL_set_options(self.ssl, _OP_NO_RENEGOTIATION)

    def client_setup(self, sni: str | None, request_ocsp: bool, session: bytes | None) -> None:
        """A client's connection: post-handshake auth, SNI, OCSP request, a session to
        resume (junk means a full handshake, never a crash)."""
        lib.SSL_set_post_handshake_auth(self.ssl, 1)  # TLS 1.3 servers may ask later
        if request_ocsp:
            lib.SSL_set_tlsext_status_type(self.ssl, lib.TLSEXT_STATUSTYPE_ocsp)
        if sni:
            lib.SSL_set_tlsext_host_name(self.ssl, sni.encode("idna"))
        if session:
            data = ffi.cast("unsigned char *", ffi.from_buffer(session))
            sess = lib.d2i_SSL_SESSION(ffi.NULL, ffi.new("unsigned char **", data), len(session))
            if sess != ffi.NULL:
                lib.SSL_set_session(self.ssl, sess)
                lib.SSL_SESSION_free(sess)
            error_queue()

    def set_context(self, context: NativeContext) -> None:
        """Switch a server connection to another context (SNI)."""
        lib.SSL_set_SSL_CTX(self.ssl, context.pointer)
        if context not in self._contexts:  # each held once, however often switched to
            self._contexts.append(context)

    # -- the data path ---------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview, n: int) -> None:
        """Ciphertext from the network into the incoming BIO."""
        lib.BIO_write(self.bio_in, ffi.from_buffer(data), n)

    def requeue(self, data: bytes) -> None:
        """Put ciphertext taken with :meth:`drain` back into the outgoing BIO."""
        lib.BIO_write(self.bio_out, data, len(data))

    def unprocessed(self) -> int:
        """Received ciphertext OpenSSL has not consumed yet."""
        return int(lib.BIO_get_mem_data(self.bio_in, ffi.NULL))

    def drain(self) -> bytes:
        """All ciphertext waiting in the outgoing BIO."""
        buf = _scratch()
        n = lib.BIO_read(self.bio_out, buf, SCRATCH_SIZE)
        if n <= 0:
            return b""
        if n < SCRATCH_SIZE:
            return ffi.buffer(buf, n)[:]  # type: ignore[no-any-return]
        pieces = [ffi.buffer(buf, n)[:]]
        while (n := lib.BIO_read(self.bio_out, buf, SCRATCH_SIZE)) > 0:
            pieces.append(ffi.buffer(buf, n)[:])
        return b"".join(pieces)

    def take(self, hint: int) -> memoryview | None:
        """The outgoing ciphertext in a new buffer sized from ``hint`` bytes of plaintext
        sent, which the caller owns (one copy fewer than :meth:`drain`)."""
        size = hint + (hint // 16384 + 1) * _RECORD_OVERHEAD + 4096
        buf = _uninitialised("char[]", size)
        n = lib.BIO_read(self.bio_out, buf, size)
        if n <= 0:
            return None
        view = memoryview(ffi.buffer(buf, n))
        if n < size:
            return view
        rest = self.drain()  # more than the estimate (a renegotiation, say)
        return memoryview(view.tobytes() + rest)

    def write_all(self, data: bytes | bytearray | memoryview) -> int:
        """Encrypt all of ``data``: 1, or the failing SSL_write's return value."""
        view = memoryview(data).cast("B")
        total, sent = len(view), 0
        ptr = ffi.from_buffer(view)
        lib.ERR_clear_error()
        while sent < total:
            n = lib.SSL_write(self.ssl, ptr + sent, total - sent)
            if n <= 0:
                return int(n)
            sent += n
        return 1

    def read_into(self, buf: Any, size: int) -> tuple[int, int, int]:
        """Decrypt into ``buf`` (cffi pointer or writable buffer) up to ``size`` bytes:
        (bytes read, the SSL_ERROR_* that stopped it or 0, SSL_read's return value)."""
        ptr = buf if isinstance(buf, ffi.CData) else ffi.from_buffer(buf, require_writable=True)
        ssl, total = self.ssl, 0
        lib.ERR_clear_error()
        while total < size:
            n = lib.SSL_read(ssl, ptr + total, size - total)
            if n <= 0:
                return total, lib.SSL_get_error(ssl, n), n
            total += n
        return total, 0, 1

    def read_bytes(self, limit: int) -> tuple[bytes, int, int]:
        """Like :meth:`read_into`, into bytes; goes on past the scratch buffer while
        it came back fuller than ``limit``."""
        buf = _scratch()
        total, err, rc = self.read_into(buf, SCRATCH_SIZE)
        if err or total < limit:
            return ffi.buffer(buf, total)[:], err, rc
        pieces = [ffi.buffer(buf, total)[:]]
        while not err:
            n, err, rc = self.read_into(buf, SCRATCH_SIZE)
            if not n:
                break
            pieces.append(ffi.buffer(buf, n)[:])
        return b"".join(pieces), err, rc

    def read_view(self) -> tuple[memoryview, int, int]:
        """Like :meth:`read_bytes` without the copy: a view the next call reuses."""
        buf = _scratch()
        total, err, rc = self.read_into(buf, SCRATCH_SIZE)
        return memoryview(ffi.buffer(buf, total)), err, rc

    def scratch(self) -> tuple[Any, int]:
        """The per-thread scratch buffer and its size (for :meth:`read_into`)."""
        return _scratch(), SCRATCH_SIZE

    def compact(self) -> bool:
        """Replace both memory BIOs with fresh ones (giving back the memory a handshake
        left in them), carrying over received bytes OpenSSL has not read yet; the
        outgoing BIO must have been drained. False when out of memory (the old ones stay)."""
        pending = self.unprocessed()
        carried = b""
        if pending:
            buf = _uninitialised("char[]", pending)
            carried = ffi.buffer(buf, lib.BIO_read(self.bio_in, buf, pending))[:]
        if not self._new_bios():
            if carried:
                self.feed(carried, len(carried))
            return False
        if carried:
            self.feed(carried, len(carried))
        return True

    def _new_bios(self) -> bool:
        """Give the SSL* two fresh memory BIOs (SSL_set_bio frees the old ones)."""
        fresh_in, fresh_out = lib.BIO_new(lib.BIO_s_mem()), lib.BIO_new(lib.BIO_s_mem())
        if fresh_in == ffi.NULL or fresh_out == ffi.NULL:
            lib.BIO_free(fresh_in)
            lib.BIO_free(fresh_out)
            return False
        lib.SSL_set_bio(self.ssl, fresh_in, fresh_out)
        self.bio_in, self.bio_out = fresh_in, fresh_out
        return True

    def addresses(self) -> tuple[int, int, int]:
        """The ``SSL*``, incoming and outgoing ``BIO*`` as integers (for a compiled data
        path; valid until :meth:`compact` or the connection is freed)."""
        return address(self.ssl), address(self.bio_in), address(self.bio_out)

    # -- handshake, renegotiation, shutdown -------------------------------------------

    def do_handshake(self) -> tuple[int, int]:
        """One SSL_do_handshake: (its return value, SSL_get_error of it or 0)."""
        lib.ERR_clear_error()
        rc = lib.SSL_do_handshake(self.ssl)
        return (1, 0) if rc == 1 else (rc, lib.SSL_get_error(self.ssl, rc))

    def failure(self, rc: int, err: int | None) -> tuple[int, list[str], int]:
        """After a failed call: (SSL_get_error, OpenSSL's reasons, the verify result)."""
        if err is None:
            err = lib.SSL_get_error(self.ssl, rc)
        return err, error_queue(), lib.SSL_get_verify_result(self.ssl)

    def start_renegotiation(self, tls13: bool, fresh_session: bool) -> tuple[int, int] | None:
        """TLS 1.2 renegotiation, or TLS 1.3 post-handshake auth; None when OpenSSL
        refused to start (its reasons are queued for :meth:`failure`)."""
        if fresh_session:  # a resumed renegotiation would skip the CertificateRequest
            lib.SSL_set_options(self.ssl, _OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION)
        lib.ERR_clear_error()
        if tls13:
            if lib.SSL_verify_client_post_handshake(self.ssl) != 1:
                return None
        elif lib.SSL_renegotiate(self.ssl) != 1:
            return None
        rc = lib.SSL_do_handshake(self.ssl)
        return rc, 0 if rc == 1 else lib.SSL_get_error(self.ssl, rc)

    def shutdown(self) -> None:
        """Queue close_notify."""
        lib.ERR_clear_error()
        lib.SSL_shutdown(self.ssl)
        error_queue()

    def release(self, handshake_done: bool) -> None:
        """Forget the owner. OpenSSL evicts a session from the server cache when a
        connection is freed without a shutdown; like nginx we mark it done so TLS 1.2
        resumption survives resets and EOFs without close_notify."""
        if handshake_done:
            lib.SSL_set_shutdown(self.ssl, lib.SSL_SENT_SHUTDOWN | lib.SSL_RECEIVED_SHUTDOWN)
        callbacks.forget(self.ssl)

    # -- the ClientHello (inside its callback) -----------------------------------------

    def hello_extension(self, ext_type: int) -> bytes | None:
        """The body of ClientHello extension ``ext_type`` (None if absent)."""
        return extended.client_hello_ext(self.ssl, ext_type)

    def hello_session_id(self) -> bytes:
        """The ClientHello's legacy session id."""
        return extended.client_hello_session_id(self.ssl)

    def tls13_possible(self) -> bool:
        """Whether this connection's settings allow TLS 1.3 at all."""
        highest = extended.ssl_ctrl(self.ssl, _CTRL_GET_MAX_PROTO_VERSION, 0)  # 0: no limit
        no_tls13 = lib.SSL_get_options(self.ssl) & lib.SSL_OP_NO_TLSv1_3
        return not no_tls13 and not 0 < highest < _TLS1_3

    def status_requested(self) -> bool:
        """Server: whether the client asked for a stapled OCSP response."""
        if not extended.has("max_send_fragment"):  # no SSL_ctrl: assume it did
            return True
        return extended.ssl_ctrl(self.ssl, _GET_TLSEXT_STATUS_REQ_TYPE, 0) == 1

    def name_ticket_session(self) -> None:
        """Give a new TLS 1.2 session that will go out as a ticket an id of its own, so
        that OpenSSL reports it to the new-session callback (it skips id-less ones)."""
        ssl = self.ssl
        if lib.SSL_version(ssl) >= _TLS1_3 or lib.SSL_session_reused(ssl):
            return
        session = lib.SSL_get_session(ssl)
        if session != ffi.NULL and not extended.session_id(session):
            extended.set_session_id(session, os.urandom(32))

    # -- what was negotiated -----------------------------------------------------------

    def servername(self) -> str | None:
        """The SNI name OpenSSL holds."""
        name = lib.SSL_get_servername(self.ssl, lib.TLSEXT_NAMETYPE_host_name)
        return None if name == ffi.NULL else ffi.string(name).decode("ascii", "replace")

    def verify_result(self) -> int:
        """SSL_get_verify_result: 0 when the peer's chain verified."""
        return int(lib.SSL_get_verify_result(self.ssl))

    @staticmethod
    def verify_error_string(code: int) -> str:
        """OpenSSL's words for an X509_V_ERR_* code."""
        return ffi.string(lib.X509_verify_cert_error_string(code)).decode()  # type: ignore[no-any-return]

    def protocol_name(self) -> str:
        """ "TLSv1.3", "TLSv1.2", ..."""
        return ffi.string(lib.SSL_get_version(self.ssl)).decode()  # type: ignore[no-any-return]

    def cipher(self) -> tuple[str, str | None, str, int] | None:
        """(OpenSSL name, standard name if OpenSSL can say, version, secret bits) of the
        suite; None before one was chosen."""
        suite = lib.SSL_get_current_cipher(self.ssl)
        if suite == ffi.NULL:
            return None
        standard = None
        if extended.has("standard_cipher_name"):
            standard = extended.cipher_standard_name(self.ssl)
        version = ffi.string(lib.SSL_CIPHER_get_version(suite)).decode() or "unknown"
        name = ffi.string(lib.SSL_CIPHER_get_name(suite)).decode()
        return name, standard, version, int(lib.SSL_CIPHER_get_bits(suite, ffi.NULL))

    def peer_tmp_key(self) -> tuple[str, int] | None:
        """The peer's ephemeral key as (OpenSSL type name, bits), when OpenSSL can say."""
        if not extended.has("peer_tmp_key"):
            return None
        return extended.peer_tmp_key_info(self.ssl)

    def set_max_send_fragment(self, size: int) -> bool:
        """Cap outgoing records at ``size`` bytes; False outside 512..16384."""
        extended.require("max_send_fragment", "set_max_send_fragment")
        return extended.set_max_send_fragment(self.ssl, size)

    def npn_protocol(self) -> bytes | None:
        """The NPN result, None if none (or NPN unavailable)."""
        return extended.npn_negotiated(self.ssl) if extended.has("npn") else None

    def alpn_protocol(self) -> bytes | None:
        """The negotiated ALPN protocol."""
        data, length = ffi.new("unsigned char **"), ffi.new("unsigned int *")
        lib.SSL_get0_alpn_selected(self.ssl, data, length)
        return ffi.buffer(data[0], length[0])[:] if length[0] else None

    def session_reused(self) -> bool:
        """True when the handshake resumed a session."""
        return bool(lib.SSL_session_reused(self.ssl))

    def group_name(self) -> str | None:
        """The key-exchange group negotiated."""
        if lib.SSL_get_session(self.ssl) == ffi.NULL:  # OpenSSL crashes without one
            return None
        name = lib.SSL_get0_group_name(self.ssl)
        return None if name == ffi.NULL else ffi.string(name).decode()

    def peer_certificate(self) -> x509.Certificate | None:
        """The peer's leaf certificate."""
        cert = lib.SSL_get_peer_certificate(self.ssl)  # a new reference
        if cert == ffi.NULL:
            return None
        try:
            return certificate(cert)
        finally:
            lib.X509_free(cert)

    def peer_chain(self) -> list[x509.Certificate]:
        """The peer's chain as verified to our anchor, else as the peer sent it."""
        stack = lib.SSL_get0_verified_chain(self.ssl)
        if stack == ffi.NULL or not lib.sk_X509_num(stack):
            stack = lib.SSL_get_peer_cert_chain(self.ssl)
        if stack == ffi.NULL:
            return []
        return [certificate(lib.sk_X509_value(stack, i)) for i in range(lib.sk_X509_num(stack))]

    def certificate(self) -> x509.Certificate | None:
        """Our own certificate."""
        cert = lib.SSL_get_certificate(self.ssl)  # borrowed
        return None if cert == ffi.NULL else certificate(cert)

    def session(self) -> bytes | None:
        """The current session, DER-encoded."""
        sess = lib.SSL_get_session(self.ssl)
        if sess == ffi.NULL:
            return None
        try:
            return extended.session_der(sess)
        except ValueError:  # OpenSSL could not serialise it
            return None

    def export_keying_material(self, label: bytes, length: int, context: bytes | None) -> bytes:
        """RFC 5705 keying material; ValueError when OpenSSL refuses (no handshake yet)."""
        out = _uninitialised("unsigned char[]", length)
        ok = lib.SSL_export_keying_material(
            self.ssl, out, length, label, len(label),
            ffi.NULL if context is None else context, len(context or b""), context is not None,
        )  # fmt: skip
        if ok != 1:
            error_queue()
            raise ValueError("OpenSSL cannot export keying material from this connection")
        return ffi.buffer(out, length)[:]  # type: ignore[no-any-return]

    def finished(self) -> bytes | None:
        """The last Finished message we sent."""
        return _finished_message(lib.SSL_get_finished, self.ssl)

    def peer_finished(self) -> bytes | None:
        """The last Finished message the peer sent."""
        return _finished_message(lib.SSL_get_peer_finished, self.ssl)

    def cipher_list(self) -> list[str]:
        """The cipher names this connection may use, in preference order."""
        return cipher_list(self.ssl)


def _free_ssl(ssl: Any) -> None:
    """The finaliser of an owned ``SSL*``: unregister it, then free it (and its BIOs)."""
    callbacks.forget(ssl)
    lib.SSL_free(ssl)


def _finished_message(get: Any, ssl: Any) -> bytes | None:
    """SSL_get_finished or SSL_get_peer_finished as bytes (None before one was sent)."""
    buf = _uninitialised("char[]", 64)  # the longest Finished (SHA-512 based) is 64 bytes
    size = int(get(ssl, buf, 64))
    return ffi.buffer(buf, min(size, 64))[:] if size else None
