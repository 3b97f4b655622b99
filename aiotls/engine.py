"""TLSEngine: one TLS connection over pyOpenSSL memory BIOs, with no I/O of its own.

Ciphertext from the network goes in with :meth:`TLSEngine.receive_data`; bytes for
the network come out of :meth:`TLSEngine.data_to_send`; plaintext goes in with
:meth:`TLSEngine.send` and comes out of :meth:`TLSEngine.read`. It is the modern form
of Node's ``createSecurePair``, and what aiotls's asyncio transports are built on.

The hot path calls OpenSSL directly through cryptography's cffi bindings on the
pyOpenSSL ``Connection``'s own ``SSL*`` and BIOs: it reads while OpenSSL has bytes
rather than looping until ``WantReadError`` (raising costs as much as reading), and
decrypts a whole received chunk per call rather than a record per call.
"""

from __future__ import annotations

import inspect
import ipaddress
import os
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from OpenSSL import SSL

from . import _bindings as b
from . import _der, _extended, certinfo
from .ciphers import standard_name
from .errors import TLSCertificateError, TLSError, verify_code_name

if TYPE_CHECKING:
    from cryptography import x509

    from .context import SecureContext

__all__ = ["TLSEngine"]

ffi, lib = b.ffi, b.lib

_OP_ALLOW_CLIENT_RENEGOTIATION = 0x100  # SSL_OP_ALLOW_CLIENT_RENEGOTIATION; pyOpenSSL lacks it
_OP_NO_RENEGOTIATION = 0x40000000
_WANT_CLIENT_HELLO_CB = 11  # SSL_ERROR_WANT_CLIENT_HELLO_CB; not in cryptography's bindings
_GET_TLSEXT_STATUS_REQ_TYPE = 127  # SSL_CTRL_GET_TLSEXT_STATUS_REQ_TYPE
_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION = 0x10000
_CTRL_GET_MAX_PROTO_VERSION = 131  # SSL_get_max_proto_version is a macro over SSL_ctrl
_TLS1_3 = SSL.TLS1_3_VERSION
# ClientHello extension types (IANA).
_EXT_SERVER_NAME = 0
_EXT_ALPN = 16
_EXT_SUPPORTED_VERSIONS = 43
_SCRATCH_SIZE = 320 * 1024  # one receive chunk (256 KiB) plus a carried-over record
_MAX_RECORD = 16384 + 2048
# Worst-case growth of a record when encrypted (header, nonce, tag, CBC padding and MAC).
_RECORD_OVERHEAD = 512
_BIO_SLACK = 512  # a memory BIO that held no more than this is not worth replacing
# Ciphertext a peer may send ahead of the handshake (a paused server, say) before we refuse:
# a legitimate peer waits for our answer, so anything near this much is a flood.
_MAX_HANDSHAKE_BACKLOG = 64 * 1024
_uninitialised = ffi.new_allocator(should_clear_after_alloc=False)
_tls = threading.local()


def _scratch() -> Any:
    """A per-thread output buffer; cffi drops the GIL in OpenSSL calls, so not global."""
    buf = getattr(_tls, "buf", None)
    if buf is None:
        buf = _tls.buf = _uninitialised("char[]", _SCRATCH_SIZE)
    return buf


# OpenSSL group names -> the curve names Node reports.
_NODE_GROUP_NAMES = {"secp256r1": "prime256v1", "x25519": "X25519", "x448": "X448"}


def _session_ticket(session_der: bytes) -> bytes | None:
    """The ticket field ([10] EXPLICIT OCTET STRING) of an OpenSSL SSL_SESSION in DER."""
    try:
        (_, body, end), *_ = _der.items(session_der)
        for tag, start, stop in _der.items(session_der, body, end):
            if tag == 0xAA:  # context-specific, constructed, 10
                (_, inner, inner_end), *_ = _der.items(session_der, start, stop)
                return session_der[inner:inner_end]
    except (IndexError, ValueError):
        return None
    return None


def _hello_servername(ext: bytes | None) -> str | None:
    """The host_name of a server_name extension body (RFC 6066); OpenSSL accepts exactly
    one entry, of that type, so only the first is read."""
    if not ext or len(ext) < 5 or ext[2] != 0:  # list length (2), name type (1), length (2)
        return None
    name = ext[5 : 5 + int.from_bytes(ext[3:5], "big")]
    return name.decode("ascii", "replace") or None


def _offers_tls13(ext: bytes | None) -> bool:
    """Whether a supported_versions extension body (a length byte, then 2-byte
    versions) lists TLS 1.3."""
    versions = ext[1 : 1 + ext[0]] if ext else b""
    return any(versions[i : i + 2] == b"\x03\x04" for i in range(0, len(versions) - 1, 2))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


#: authorization_error of a client that had no name to check the server's identity against.
NO_SERVERNAME = "ERR_TLS_NO_SERVERNAME"

_SELF_SIGNED = 18  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
# X509_V_ERR_*: no trusted issuer (19 is a self-signed root the peer sent, 27 an untrusted CA).
_UNTRUSTED = {2, 19, 20, 21, 27}
_NOT_YET_VALID, _EXPIRED = 9, 10


def require_server_name(
    context: SecureContext,
    name: str | None,
    check_server_identity: Callable[..., object] | None,
    option: str,
) -> None:
    """A client must have a name to check the server's identity against (as asyncio says).

    Allowed without one: verification off (``reject_unauthorized=False``), a
    ``check_server_identity`` of one's own, or the explicit opt-out ``""``, which
    skips the identity check and leaves the connection unauthorized.
    """
    if name is None and check_server_identity is None and context.reject_unauthorized:
        raise ValueError(
            f"{option}: a client needs the server's name to check its certificate against;"
            f' give {option}=, or {option}="" to skip the identity check (the connection is'
            " then never authorized), or check_server_identity=, or reject_unauthorized=False"
        )


def _not_tls(first: bytes, server_side: bool) -> str | None:
    """Why the peer's first bytes are not TLS, in words; None when they could be."""
    line = first.split(b"\r\n", 1)[0].split(b"\n", 1)[0][:40]
    if first.startswith(b"HTTP/"):
        return f"it answered like an HTTP server: {line.decode('latin-1')!r}"
    if server_side and first[:1].isalpha() and b" HTTP/1." in first:
        return f"it sent a plain HTTP request: {line.decode('latin-1')!r}"
    if not server_side and first[:1] == b"\x16" and first[5:6] == b"\x01":
        return "it sent our ClientHello back, like a plain echo server"
    if len(first) >= 2 and (first[0] not in range(20, 25) or first[1] != 3):
        return f"its first bytes are not a TLS record: {first[:16]!r}"
    return None


def _certificate_hint(code: int, cert: x509.Certificate, server_side: bool) -> str:
    """What to do about a refused certificate, said after Node's message ("" if nothing)."""
    if code in (_NOT_YET_VALID, _EXPIRED):
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        return (
            f"it is valid from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC;"
            " renew it, or check this machine's clock"
        )
    if code not in _UNTRUSTED and code != _SELF_SIGNED:
        return ""
    if server_side:
        return "the server trusts client certificates issued by the CAs in its ca= option"
    if code == _SELF_SIGNED:
        return "to trust this self-signed certificate, pass it as ca="
    return (
        "to trust it, pass the certificate of the CA that issued it as ca="
        " (ca= replaces the system trust store)"
    )


class TLSEngine:
    """One client or server TLS connection, driven by bytes in and bytes out.

    It holds Node's rules for accepting the peer, so whoever drives it gets the
    same verdicts as aiotls's transports. A client engine checks the server's
    chain, its identity against ``server_hostname`` (also sent as SNI unless it is
    an IP address) with ``check_server_identity`` (default: Node's
    :func:`~aiotls.check_server_identity`), and the DH prime against
    ``min_dh_size``; the verdict is :attr:`authorized` / :attr:`authorization_error`,
    and with the context's ``reject_unauthorized`` (the default) a refused server
    makes the handshake raise :class:`~aiotls.TLSCertificateError` (a small DH
    prime: TLSError ``ERR_TLS_DH_PARAM_SIZE``, whatever ``reject_unauthorized``
    says). A resumed session skips the identity check, as in Node: it was checked
    when the session was made. ``server_hostname=""`` skips the identity check and
    leaves the connection unauthorized (:data:`NO_SERVERNAME`); ``None`` is only
    allowed with ``reject_unauthorized=False`` or a ``check_server_identity``.

    A ``check_server_identity`` that returns an awaitable pauses the handshake
    (:attr:`pause_reason` ``"server_identity"``): await :attr:`identity_check`,
    pass its outcome (what it returned, or the exception it raised) to
    :meth:`finish_identity_check`, then :meth:`resume`.

    ``pause_handshake`` (server side) stops the handshake once, after the
    ClientHello, with :attr:`handshake_paused` set, so that the caller may run hooks
    (for example swap the context for SNI with :meth:`set_context`) and then
    :meth:`resume`. ``external_sessions`` and ``choose_alpn`` (server side) pause it
    earlier, at the first ClientHello (:attr:`pause_reason` "client_hello"), when it
    offers a session id that may resume (:attr:`resume_session_id`; answer with
    :meth:`set_resume_data`) or an ALPN list (:attr:`alpn_offered`; answer with
    :meth:`set_alpn_choice`).
    """

    __slots__ = (
        "_alpn_choice",
        "_choose_alpn",
        "_conn",
        "_context",
        "_deferred",
        "_external_sessions",
        "_fault",
        "_held",
        "_hello_seen",
        "_hello_sni",
        "_hello_state",
        "_hook_state",
        "_identity_answer",
        "_in",
        "_judge_later",
        "_judged",
        "_out",
        "_peer_start",
        "_refusal",
        "_rejection",
        "_renegotiating",
        "_resume_data",
        "_sent_since_take",
        "_ssl",
        "_through_peak",
        "_verify_override",
        "alpn_offered",
        "alpn_select",
        "authorization_error",
        "authorized",
        "check_server_identity",
        "close_notify_received",
        "close_notify_sent",
        "handshake_complete",
        "identity_check",
        "min_dh_size",
        "ocsp_response",
        "on_keylog",
        "on_new_session",
        "on_renegotiation",
        "on_session",
        "resume_session_id",
        "server_hostname",
        "server_side",
    )

    def __init__(
        self,
        context: SecureContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        pause_handshake: bool = False,
        allow_renegotiation: bool = False,
        external_sessions: bool = False,
        choose_alpn: bool = False,
        request_ocsp: bool = False,
        session: bytes | None = None,
        on_keylog: Callable[[bytes], object] | None = None,
        on_new_session: Callable[[bytes, bytes], object] | None = None,
        on_session: Callable[[bytes], object] | None = None,
        check_server_identity: Callable[[str, dict[str, Any]], object] | None = None,
        min_dh_size: int = 1024,
    ) -> None:
        if not server_side:
            require_server_name(context, server_hostname, check_server_identity, "server_hostname")
        self._context = context
        self.server_side = server_side
        self.server_hostname = server_hostname
        self.handshake_complete = False
        self.close_notify_received = False
        self.close_notify_sent = False
        self.on_keylog = on_keylog
        self.alpn_select: Callable[[list[bytes]], bytes | None] | None = None
        self._deferred: TLSError | None = None
        self._sent_since_take = 0  # plaintext sent since take_output(): sizes its buffer
        self._through_peak = 0  # largest chunk through a BIO since it was made: its capacity
        # None: no pause wanted; "armed": pause at the next ClientHello; "paused"; "done".
        self._hook_state: str | None = "armed" if pause_handshake else None
        # The ClientHello pause, for an external session store or an ALPN selector
        # that must be awaited (same states).
        self._hello_state: str | None = "armed" if external_sessions or choose_alpn else None
        self._external_sessions = external_sessions
        self._choose_alpn = choose_alpn
        #: The session id to look up (set at the ClientHello pause), None if none.
        self.resume_session_id: bytes | None = None
        self._resume_data: bytes | None = None
        #: The client's ALPN list (set at the ClientHello pause), None if it sent none.
        self.alpn_offered: list[bytes] | None = None
        self._alpn_choice: bytes | None = None
        # The SNI of the ClientHello being handled (server), once one has been read.
        self._hello_seen = False
        self._hello_sni: str | None = None
        #: Server: the OCSP response to staple. Client: the one stapled (None if none).
        self.ocsp_response: bytes | None = None
        #: Server hook (session_id, session_der) for each session OpenSSL creates.
        self.on_new_session = on_new_session
        #: Client hook (session_der) for each session or TLS 1.3 ticket received.
        self.on_session = on_session
        if on_session is not None or on_new_session is not None:
            context._wire_new_sessions(client=on_session is not None)
        if external_sessions:
            context._wire_session_store()
        if choose_alpn:
            _extended.require("client_hello_cb", "alpn_protocols (a selector that may await)")
        if server_side:
            context._wire_client_hello()
        #: Asked at each client renegotiation (server side); False refuses it.
        self.on_renegotiation: Callable[[], TLSError | None] | None = None
        self._refusal: TLSError | None = None
        self._renegotiating: bytes | None = None  # the peer's Finished when it started
        #: Node's verdict on the peer, set when the handshake (or a renegotiation) completes.
        self.authorized = False
        self.authorization_error: str | None = None
        self.check_server_identity = check_server_identity
        self.min_dh_size = min_dh_size
        #: While the handshake waits for an async check_server_identity: its awaitable.
        self.identity_check: Awaitable[object] | None = None
        self._identity_answer: tuple[object] | None = None  # its outcome, once given
        self._rejection: TLSError | None = None  # why the handshake refused the peer
        self._held = b""  # a client's last flight, while the server is judged
        # Client: the server certificate the handshake judged, and the verdict's error.
        self._judged: tuple[x509.Certificate | None, TLSError | None] | None = None
        self._verify_override: tuple[bool, bool] | None = None  # set by renegotiate()
        self._judge_later = False  # the chain is judged after the handshake, not by OpenSSL
        self._fault: tuple[int, x509.Certificate] | None = None  # last verify error, its cert
        self._peer_start = b""  # the peer's first bytes, to say what it speaks if not TLS
        if not server_side:
            context._load_default_trust()  # before the context is "used" (pyOpenSSL)
        conn = SSL.Connection(context._ctx, None)
        conn.set_app_data(self)
        self._conn = conn
        self._ssl, self._in, self._out = conn._ssl, conn._into_ssl, conn._from_ssl
        if on_keylog is not None:  # shared context: the callback asks each engine for its hook
            lib.SSL_CTX_set_keylog_callback(context._ctx._context, b.keylog_callback)
        if server_side:
            conn.set_accept_state()
            self._apply_server_verify()
            if pause_handshake or allow_renegotiation or on_new_session is not None:
                lib.SSL_set_cert_cb(self._ssl, b.cert_callback, ffi.NULL)
            if allow_renegotiation:  # OpenSSL 3.2+ refuses client renegotiation without it
                lib.SSL_set_options(self._ssl, _OP_ALLOW_CLIENT_RENEGOTIATION)
        else:
            conn.set_connect_state()
            lib.SSL_set_post_handshake_auth(self._ssl, 1)  # TLS 1.3 servers may ask later
            if request_ocsp:
                lib.SSL_set_tlsext_status_type(self._ssl, lib.TLSEXT_STATUSTYPE_ocsp)
            self._configure_client(session)
            self.do_handshake()  # the ClientHello waits for the first data_to_send()

    def _apply_server_verify(self) -> None:
        ctx = self._context
        self._set_peer_verify(ctx.request_cert, ctx.reject_unauthorized)

    def _set_peer_verify(self, request_cert: bool, reject_unauthorized: bool) -> None:
        if request_cert:
            reject = reject_unauthorized
            mode = lib.SSL_VERIFY_PEER | (lib.SSL_VERIFY_FAIL_IF_NO_PEER_CERT if reject else 0)
            self._judge_later = not reject
            lib.SSL_set_verify(self._ssl, mode, b.verify_callback)
        else:
            lib.SSL_set_verify(self._ssl, lib.SSL_VERIFY_NONE, ffi.NULL)

    def _configure_client(self, session: bytes | None) -> None:
        # Like Node: the chain is checked in full and judged after the handshake
        # (authorized / authorization_error), so the codes match Node's.
        self._judge_later = True
        lib.SSL_set_verify(self._ssl, lib.SSL_VERIFY_PEER, b.verify_callback)
        name = self.server_hostname
        if name and not _is_ip(name):
            lib.SSL_set_tlsext_host_name(self._ssl, name.encode("idna"))
        if session:
            data = ffi.cast("unsigned char *", ffi.from_buffer(session))
            sess = lib.d2i_SSL_SESSION(ffi.NULL, ffi.new("unsigned char **", data), len(session))
            if sess != ffi.NULL:  # junk means a full handshake, never a crash
                lib.SSL_set_session(self._ssl, sess)
                lib.SSL_SESSION_free(sess)
            b.error_queue()

    # -- the data path ---------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed ciphertext from the network; advances the handshake if it is running.

        Raises TLSError (ERR_TLS_HANDSHAKE_FLOOD) when more than 64 KiB waits unprocessed
        before the handshake completes, so a paused handshake buffers a bounded amount.
        """
        if n := len(data):
            lib.BIO_write(self._in, ffi.from_buffer(data), n)
            if n > self._through_peak:
                self._through_peak = n
        if self.handshake_complete:
            return
        if not self.handshake_paused:
            if not self._peer_start:
                self._peer_start = bytes(data[:64])
            self.do_handshake()
        if not self.handshake_complete and self._unprocessed() > _MAX_HANDSHAKE_BACKLOG:
            raise TLSError(
                f"peer sent more than {_MAX_HANDSHAKE_BACKLOG} bytes ahead of the handshake",
                code="ERR_TLS_HANDSHAKE_FLOOD",
            )

    def _unprocessed(self) -> int:
        """Received ciphertext OpenSSL has not consumed yet (what the incoming BIO holds)."""
        return int(lib.BIO_get_mem_data(self._in, ffi.NULL))

    def data_to_send(self) -> bytes:
        """All ciphertext waiting for the network (a client's first call: ClientHello)."""
        buf = _scratch()
        n = lib.BIO_read(self._out, buf, _SCRATCH_SIZE)
        if n <= 0:
            return b""  # BIO_read drained it: nothing waits in the outgoing BIO
        if n > self._through_peak:
            self._through_peak = n
        if n < _SCRATCH_SIZE:
            return ffi.buffer(buf, n)[:]  # type: ignore[no-any-return]
        pieces = [ffi.buffer(buf, n)[:]]
        while (n := lib.BIO_read(self._out, buf, _SCRATCH_SIZE)) > 0:
            pieces.append(ffi.buffer(buf, n)[:])
        return b"".join(pieces)

    def take_output(self) -> memoryview | None:
        """Like :meth:`data_to_send`, with one copy fewer for what :meth:`send` encrypted.

        The ciphertext is read from OpenSSL straight into a new buffer sized from
        the plaintext sent, which the caller owns (a socket transport may keep it).
        """
        hint, self._sent_since_take = self._sent_since_take, 0
        if not hint:
            data = self.data_to_send()
            return memoryview(data) if data else None
        size = hint + (hint // 16384 + 1) * _RECORD_OVERHEAD + 4096
        buf = _uninitialised("char[]", size)
        n = lib.BIO_read(self._out, buf, size)
        if n <= 0:
            return None
        if n > self._through_peak:
            self._through_peak = n
        view = memoryview(ffi.buffer(buf, n))
        if n < size:
            return view
        rest = self.data_to_send()  # more than the estimate (a renegotiation, say)
        return memoryview(view.tobytes() + rest)

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt plaintext for the peer; it comes out of :meth:`data_to_send`."""
        if not self.handshake_complete:
            raise TLSError("cannot send before the handshake completes", code="ERR_TLS_NOT_READY")
        if self.close_notify_sent:
            raise TLSError("cannot send after close_notify", code="ERR_TLS_CLOSED")
        view = memoryview(data).cast("B")
        total, sent = len(view), 0
        self._sent_since_take += total
        ptr = ffi.from_buffer(view)
        lib.ERR_clear_error()
        while sent < total:
            n = lib.SSL_write(self._ssl, ptr + sent, total - sent)
            if n <= 0:
                raise self._fail(n)
            sent += n

    def read(self) -> bytes:
        """Plaintext decrypted so far (b"" if none); sets :attr:`close_notify_received`.

        A fatal error after some plaintext is deferred to the next call, so no
        decrypted byte is lost.
        """
        buf = _scratch()
        total = self.read_into(buf, _SCRATCH_SIZE)
        if total < _SCRATCH_SIZE - _MAX_RECORD:
            return ffi.buffer(buf, total)[:]  # type: ignore[no-any-return]
        pieces = [ffi.buffer(buf, total)[:]]
        while n := self.read_into(buf, _SCRATCH_SIZE):
            pieces.append(ffi.buffer(buf, n)[:])
        return b"".join(pieces)

    def read_view(self) -> memoryview:
        """Like :meth:`read` without the copy: a view that the next engine call reuses.

        For callers that copy it at once (a StreamReader's buffer does).
        """
        buf = _scratch()
        return memoryview(ffi.buffer(buf, self.read_into(buf, _SCRATCH_SIZE)))

    def read_into(self, buf: Any, size: int) -> int:
        """Decrypt into ``buf`` (cffi pointer or writable buffer) up to ``size`` bytes."""
        if self._deferred is not None:
            exc, self._deferred = self._deferred, None
            raise exc
        if not self.handshake_complete or self.close_notify_received:
            return 0
        ptr = buf if isinstance(buf, ffi.CData) else ffi.from_buffer(buf, require_writable=True)
        ssl, total = self._ssl, 0
        lib.ERR_clear_error()
        while total < size:
            n = lib.SSL_read(ssl, ptr + total, size - total)
            if n <= 0:
                err = lib.SSL_get_error(ssl, n)
                if err == lib.SSL_ERROR_ZERO_RETURN:
                    self.close_notify_received = True
                elif err != lib.SSL_ERROR_WANT_READ:
                    exc = self._refusal or self._fail(n, err)
                    b.error_queue()
                    if not total:
                        raise exc
                    self._deferred = exc
                break
            total += n
        if self._renegotiating is not None and self._deferred is None:
            refusal = self._renegotiation_refusal()
            if refusal is None:
                return total
            if not total:
                raise refusal
            self._deferred = refusal
        return total

    @property
    def bloated(self) -> bool:
        """True when a BIO has held more than a few KiB, which it keeps allocated."""
        return self._through_peak > _BIO_SLACK

    def compact(self) -> None:
        """Give back the memory the handshake left in the memory BIOs (about 8 KiB).

        A memory BIO keeps the capacity of the largest flight it ever held. Call at an
        idle point, after :meth:`data_to_send` and :meth:`read` have drained both
        directions (the transport does so right after the handshake): fresh BIOs
        replace the old ones, which OpenSSL frees.
        """
        fresh_in, fresh_out = lib.BIO_new(lib.BIO_s_mem()), lib.BIO_new(lib.BIO_s_mem())
        if fresh_in == ffi.NULL or fresh_out == ffi.NULL:  # out of memory: keep the old ones
            lib.BIO_free(fresh_in)
            lib.BIO_free(fresh_out)
            return
        lib.SSL_set_bio(self._ssl, fresh_in, fresh_out)
        self._in = self._conn._into_ssl = fresh_in
        self._out = self._conn._from_ssl = fresh_out
        self._through_peak = 0

    # -- handshake -------------------------------------------------------------------

    @property
    def handshake_paused(self) -> bool:
        """True while the handshake waits for :meth:`resume` (a hook's answer)."""
        return (
            self._hook_state == "paused"
            or self._hello_state == "paused"
            or self.identity_check is not None
        )

    @property
    def pause_reason(self) -> str | None:
        """Why the handshake waits: "client_hello" (session store, ALPN), "certificate"
        (server hooks) or "server_identity" (an async check_server_identity)."""
        if self._hello_state == "paused":
            return "client_hello"
        if self.identity_check is not None:
            return "server_identity"
        return "certificate" if self._hook_state == "paused" else None

    def do_handshake(self) -> bool:
        """Advance the handshake with what has been received; True once complete.

        Raises TLSError when it fails, and when the handshake completed but the
        peer is refused (see the class docstring).
        """
        if self._rejection is not None:
            raise self._rejection
        lib.ERR_clear_error()
        rc = lib.SSL_do_handshake(self._ssl)
        if rc == 1:
            return self._complete_handshake()
        err = lib.SSL_get_error(self._ssl, rc)
        if err in (lib.SSL_ERROR_WANT_READ, lib.SSL_ERROR_WANT_X509_LOOKUP, _WANT_CLIENT_HELLO_CB):
            return False
        raise self._fail(rc, err)

    def resume(self) -> bool:
        """Continue a paused handshake after the hooks ran; True once complete."""
        if self._hello_state == "paused":
            self._hello_state = "done"
        elif self._hook_state == "paused":
            self._hook_state = "done"
        return self.do_handshake()

    def _on_early_client_hello(self) -> int:
        """The ClientHello callback: note the SNI of each ClientHello; at the first,
        pause once if the caller has something to look up (session id, ALPN list)."""
        ssl = self._ssl
        # OpenSSL's SSL_get_servername answers the session's name on a TLS 1.2
        # resumption (none unless a servername callback accepted it): keep our own.
        self._hello_sni = _hello_servername(_extended.client_hello_ext(ssl, _EXT_SERVER_NAME))
        self._hello_seen = True
        if self._hello_state != "armed":
            return 1
        if self._external_sessions and self._may_end_below_tls13():
            self.resume_session_id = _extended.client_hello_session_id(ssl) or None
        if self._choose_alpn:
            wire = _extended.client_hello_ext(ssl, _EXT_ALPN)  # a 2-byte length, then the list
            offered = list(b._alpn_offsets(wire[2:])) if wire else []
            self.alpn_offered = offered or None
        wanted = self.resume_session_id is not None or self.alpn_offered is not None
        self._hello_state = "paused" if wanted else "done"
        return -1 if wanted else 1

    def _may_end_below_tls13(self) -> bool:
        """Whether this ClientHello can end on TLS 1.2 or lower, the only versions that
        resume by session id (a TLS 1.3 ClientHello's id is a compatibility id)."""
        if not _offers_tls13(_extended.client_hello_ext(self._ssl, _EXT_SUPPORTED_VERSIONS)):
            return True
        highest = _extended.ssl_ctrl(self._ssl, _CTRL_GET_MAX_PROTO_VERSION, 0)  # 0: no limit
        no_tls13 = lib.SSL_get_options(self._ssl) & lib.SSL_OP_NO_TLSv1_3
        return bool(no_tls13) or 0 < highest < _TLS1_3

    def set_alpn_choice(self, protocol: bytes | None) -> None:
        """The answer to :attr:`alpn_offered` (before resume()); None refuses the
        handshake with the no_application_protocol alert."""
        self._alpn_choice = protocol

    def set_resume_data(self, session_der: bytes | None) -> None:
        """The external store's answer for :attr:`resume_session_id` (before resume())."""
        self._resume_data = session_der

    def _lookup_session(self, session_id: bytes) -> bytes | None:
        """OpenSSL's get-session callback: the session the store gave for this id."""
        return self._resume_data if session_id == self.resume_session_id else None

    def _new_session(self, session: Any) -> None:
        """OpenSSL's new-session callback: hand the session to the side's hook."""
        if self.server_side and self.on_new_session is not None:
            self.on_new_session(_extended.session_id(session), _extended.session_der(session))
        elif not self.server_side and self.on_session is not None:
            self.on_session(_extended.session_der(session))

    @property
    def status_requested(self) -> bool:
        """Server: whether the client asked for a stapled OCSP response."""
        if not _extended.features()["max_send_fragment"]:  # no SSL_ctrl: assume it did
            return True
        return _extended.ssl_ctrl(self._ssl, _GET_TLSEXT_STATUS_REQ_TYPE, 0) == 1

    def _on_status(self) -> int:
        """OpenSSL's status callback: staple (server) or collect (client) the response."""
        if self.server_side:
            data = self.ocsp_response
            if not data:
                return int(lib.SSL_TLSEXT_ERR_NOACK)
            buf = lib.OPENSSL_malloc(len(data))  # OpenSSL takes ownership
            ffi.memmove(buf, data, len(data))
            lib.SSL_set_tlsext_status_ocsp_resp(self._ssl, buf, len(data))
            return int(lib.SSL_TLSEXT_ERR_OK)
        out = ffi.new("unsigned char **")
        n = lib.SSL_get_tlsext_status_ocsp_resp(self._ssl, out)
        self.ocsp_response = ffi.buffer(out[0], n)[:] if n > 0 and out[0] != ffi.NULL else None
        return 1

    def _on_client_hello(self) -> int:
        """The certificate callback's answer: 1 go on, -1 pause for hooks, 0 refuse."""
        if self.on_new_session is not None:
            self._name_ticket_session()
        if self.handshake_complete:  # a client-initiated renegotiation
            if self.on_renegotiation is not None:
                self._refusal = self.on_renegotiation()
            return 0 if self._refusal is not None else 1
        if self._hook_state == "armed":
            self._hook_state = "paused"
            return -1
        return 1

    def _name_ticket_session(self) -> None:
        """Give a new TLS 1.2 session that will go out as a ticket an id of its own.

        OpenSSL leaves such a session without an id and never reports an id-less
        session to the new-session callback, so on_new_session would miss every
        TLS 1.2 handshake with tickets. With an id (sent in the ServerHello beside
        the ticket, as RFC 5077 allows) the session is reported, and resumable by
        id as well as by ticket.
        """
        ssl = self._ssl
        if lib.SSL_version(ssl) >= _TLS1_3 or lib.SSL_session_reused(ssl):
            return
        session = lib.SSL_get_session(ssl)
        if session != ffi.NULL and not _extended.session_id(session):
            _extended.set_session_id(session, os.urandom(32))
    def _complete_handshake(self) -> bool:
        """OpenSSL is done: judge the peer. A client's last flight (its Finished) leaves
        only once the server is accepted, so a refused server never sees the handshake
        complete (Node has no alert to send either)."""
        if self.server_side:
            refusal = self._authorize()
        else:
            self._held += self.data_to_send()
            refusal = self._authorize()
            if self.identity_check is not None:
                return False  # paused until finish_identity_check() and resume()
            held, self._held = self._held, b""
            if held and refusal is None:
                lib.BIO_write(self._out, held, len(held))
        if refusal is not None:
            self._rejection = refusal
            raise refusal
        self.handshake_complete = True
        return True

    def finish_identity_check(self, outcome: object) -> None:
        """The outcome of the awaited :attr:`identity_check`: what it returned (None to
        accept, an exception to refuse) or the exception it raised. Then :meth:`resume`."""
        self.identity_check = None
        self._identity_answer = (outcome,)

    # -- Node's verdict on the peer --------------------------------------------------

    def _authorize(self) -> TLSError | None:
        """Set :attr:`authorized` / :attr:`authorization_error` as Node does; return the
        error when the peer must be refused. Runs when a handshake or renegotiation ends."""
        ctx = self._context
        if self.server_side:
            request_cert, reject = self._verify_override or (
                ctx.request_cert,
                ctx.reject_unauthorized,
            )
            if not request_cert:
                self.authorized, self.authorization_error = False, None  # nothing asked, as Node
                return None
            error = self._chain_error(self.get_peer_x509_certificate())
        else:
            reject = ctx.reject_unauthorized
            small = self._small_dh_prime()
            if small is not None:  # refused whatever reject_unauthorized says, as in Node
                return small
            peer = self.get_peer_x509_certificate()
            error = self._chain_error(peer)
            if self._judged is not None:  # a renegotiation
                error = error or self._judged_again(peer)
            else:
                if error is None:
                    error = self._identity_error(peer)
                    if self.identity_check is not None:
                        return None  # the verdict waits for an async check_server_identity
                self._judged = (peer, error)
        self.authorized = error is None
        self.authorization_error = None if error is None else error.code
        if error is None or error.code == NO_SERVERNAME:  # opted out: unauthorized, not refused
            return None
        return error if reject else None

    def _judged_again(self, peer: x509.Certificate | None) -> TLSError | None:
        """A renegotiation keeps the handshake's verdict on the server's identity, and
        refuses a new server certificate (as browsers do: the triple-handshake attack)."""
        assert self._judged is not None
        first, error = self._judged
        if peer != first:
            return TLSCertificateError(
                "the server's certificate changed in a renegotiation",
                code="ERR_TLS_SERVER_CERT_CHANGED",
            )
        return error

    def _small_dh_prime(self) -> TLSError | None:
        """Node's minDHSize: a client refuses a DHE server whose prime is too small."""
        info = self.get_ephemeral_key_info()
        if info.get("type") == "DH" and info["size"] < self.min_dh_size:
            return TLSError(
                f"DH parameter size {info['size']} is less than {self.min_dh_size}",
                code="ERR_TLS_DH_PARAM_SIZE",
            )
        return None

    def _chain_error(self, peer: x509.Certificate | None) -> TLSError | None:
        """The peer's chain as OpenSSL verified it (a resumed session keeps its result)."""
        if peer is None:
            return TLSCertificateError("peer sent no certificate", code="UNABLE_TO_GET_ISSUER_CERT")
        code = lib.SSL_get_verify_result(self._ssl)
        return None if code == 0 else self._certificate_error(code)

    def _certificate_error(self, code: int) -> TLSCertificateError:
        """Node's message for a verify error, with the code, the certificate at fault
        (subject and issuer) and what to do about it."""
        text = ffi.string(lib.X509_verify_cert_error_string(code)).decode()
        name = verify_code_name(code)
        fault = self._fault[1] if self._fault and self._fault[0] == code else None
        cert = fault or self.get_peer_x509_certificate()
        if cert is None:
            return TLSCertificateError(f"{text} ({name})", code=name, reason=text)
        whose = "client" if self.server_side else "server"
        message = (
            f"{text} ({name}): the {whose}'s certificate {cert.subject.rfc4514_string()!r},"
            f" issued by {cert.issuer.rfc4514_string()!r}"
        )
        hint = _certificate_hint(code, cert, self.server_side)
        return TLSCertificateError(
            f"{message}; {hint}" if hint else message, code=name, reason=text
        )

    def _note_verify_fault(self, code: int, cert: x509.Certificate) -> None:
        """The verify callback's report of an error and the certificate it concerns."""
        self._fault = (code, cert)

    def _identity_error(self, peer: x509.Certificate | None) -> TLSError | None:
        """Client: the server's identity (skipped when resuming a session, as Node does)."""
        name, check = self.server_hostname or "", self.check_server_identity
        if not name and check is None:
            return TLSCertificateError(
                "no server name to check the certificate against", code=NO_SERVERNAME
            )
        if self.session_reused:
            return None
        if self._identity_answer is not None:
            (result,), self._identity_answer = self._identity_answer, None
        elif check is None:
            assert peer is not None
            try:
                certinfo.check_server_identity(name, certinfo.identity_fields(peer))
            except TLSCertificateError as exc:
                exc.cert = self.get_peer_certificate()  # the full dict, as Node's error has
                return exc
            return None
        else:
            try:
                result = check(name, self.get_peer_certificate())
            except Exception as exc:  # a user's check may raise anything: refuse, cleanly
                result = exc
            if inspect.isawaitable(result):
                self.identity_check = result
                return None
        if not isinstance(result, BaseException):
            return None
        if isinstance(result, TLSError):
            return result
        return TLSCertificateError(str(result), code="ERR_TLS_CERT_ALTNAME_INVALID")

    # -- renegotiation and post-handshake authentication -----------------------------

    def renegotiate(self, *, request_cert: bool = False, reject_unauthorized: bool = True) -> None:
        """Start a TLS 1.2 renegotiation, or (TLS 1.3 server) ask for a client certificate.

        The messages come out of :meth:`data_to_send`; :attr:`renegotiation_complete`
        turns True once the peer has answered (bytes fed through :meth:`read`).
        """
        if not self.handshake_complete or self.close_notify_sent:
            raise TLSError("renegotiate: no established connection", code="ERR_TLS_NOT_READY")
        if self.server_side:
            self._verify_override = (request_cert, reject_unauthorized)
            self._set_peer_verify(request_cert, reject_unauthorized)
            # A resumed renegotiation would skip the CertificateRequest.
            lib.SSL_set_options(self._ssl, _OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION)
        lib.ERR_clear_error()
        if self.get_protocol() == "TLSv1.3":
            if not (self.server_side and request_cert):
                raise TLSError(
                    "TLS 1.3 has no renegotiation; only a server may request a client"
                    " certificate after the handshake (request_cert=True)",
                    code="ERR_TLS_RENEGOTIATION_UNSUPPORTED",
                )
            if lib.SSL_verify_client_post_handshake(self._ssl) != 1:
                raise self._fail(0, lib.SSL_ERROR_SSL)  # e.g. the client did not offer PHA
        elif lib.SSL_renegotiate(self._ssl) != 1:
            raise self._fail(0, lib.SSL_ERROR_SSL)
        # Every handshake (and TLS 1.3 post-handshake auth) ends with a new peer
        # Finished: its change is how completion shows, without an info callback.
        self._renegotiating = self.get_peer_finished()
        rc = lib.SSL_do_handshake(self._ssl)
        if rc != 1 and lib.SSL_get_error(self._ssl, rc) != lib.SSL_ERROR_WANT_READ:
            raise self._fail(rc)

    @property
    def renegotiating(self) -> bool:
        """True from :meth:`renegotiate` until the peer's new Finished has arrived and
        the peer was judged again (a refusal is raised by :meth:`read`)."""
        return self._renegotiating is not None

    def _renegotiation_refusal(self) -> TLSError | None:
        """Once the peer's new Finished is in: judge the peer again, as after a handshake."""
        if self.get_peer_finished() == self._renegotiating:
            return None
        refusal = self._authorize()  # the peer may have sent (another) certificate
        if refusal is None:
            self._renegotiating = None
        return refusal

    def disable_renegotiation(self) -> None:
        """Refuse renegotiation from now on (Node's disableRenegotiation).

        A server fails the connection with ERR_TLS_RENEGOTIATION_DISABLED when the
        client tries; a client declines the server's HelloRequest.
        """
        if not self.server_side:
            lib.SSL_set_options(self._ssl, _OP_NO_RENEGOTIATION)
        self.on_renegotiation = lambda: TLSError(
            "TLS session renegotiation disabled for this socket",
            code="ERR_TLS_RENEGOTIATION_DISABLED",
        )

    @property
    def _alpn_configured(self) -> bool:
        return self._choose_alpn or self.alpn_select is not None or bool(self._context._alpn_list)

    def _select_alpn(self, offered: list[bytes]) -> bytes | None:
        if self._choose_alpn:  # answered at the ClientHello pause
            return self._alpn_choice if self._alpn_choice in offered else None
        if self.alpn_select is not None:
            return self.alpn_select(offered)
        for proto in self._context._alpn_list:
            if proto in offered:
                return proto
        return None

    def set_context(self, context: SecureContext) -> None:
        """Switch this server connection to another context (SNI), before resuming."""
        self._conn.set_context(context._ctx)
        self._context = context
        self._apply_server_verify()

    @property
    def context(self) -> SecureContext:
        """The SecureContext in use (after SNI, the one the hook chose)."""
        return self._context

    def _fail(self, rc: int, err: int | None = None) -> TLSError:
        """Build the error for a failed OpenSSL call; its alert stays queued to send."""
        if err is None:
            err = lib.SSL_get_error(self._ssl, rc)
        reasons = b.error_queue()
        verify = lib.SSL_get_verify_result(self._ssl)
        if verify != 0 and "certificate verify failed" in reasons:
            return self._certificate_error(verify)
        if err == lib.SSL_ERROR_SYSCALL and not reasons:
            reasons = ["unexpected eof while reading"]
        reason = reasons[0] if reasons else "TLS failure"
        code = "ERR_SSL_" + reason.upper().replace(" ", "_").replace("-", "_")
        message = "; ".join(reasons) or reason
        if not self.handshake_complete and (why := _not_tls(self._peer_start, self.server_side)):
            message = f"the peer does not speak TLS ({why}); OpenSSL: {message}"
        return TLSError(message, code=code, reason=reason)

    # -- closing ---------------------------------------------------------------------

    def close(self) -> None:
        """Queue close_notify (take it with :meth:`data_to_send`); idempotent."""
        if self.close_notify_sent:
            return
        self.close_notify_sent = True
        if self.handshake_complete:
            lib.ERR_clear_error()
            lib.SSL_shutdown(self._ssl)
            b.error_queue()

    def release(self) -> None:
        """Forget the connection after it ended, cleanly or not.

        OpenSSL evicts a session from the server cache when a connection is freed
        without a shutdown; like nginx we mark the shutdown done so TLS 1.2 session
        resumption survives peer resets and EOFs without close_notify.
        """
        if self.handshake_complete:
            lib.SSL_set_shutdown(self._ssl, lib.SSL_SENT_SHUTDOWN | lib.SSL_RECEIVED_SHUTDOWN)
        self._conn.set_app_data(None)

    # -- what was negotiated ---------------------------------------------------------

    @property
    def connection(self) -> SSL.Connection:
        """The pyOpenSSL Connection (for getters aiotls does not wrap)."""
        return self._conn

    @property
    def servername(self) -> str | None:
        """The SNI name: sent (client) or received (server)."""
        if not self.server_side:
            return self.server_hostname
        if self._hello_seen:
            return self._hello_sni
        name = lib.SSL_get_servername(self._ssl, lib.TLSEXT_NAMETYPE_host_name)
        return None if name == ffi.NULL else ffi.string(name).decode("ascii", "replace")

    @property
    def verify_error(self) -> str | None:
        """OpenSSL's verify error name for the peer's chain, or None if it verified."""
        code = lib.SSL_get_verify_result(self._ssl)
        return None if code == 0 else verify_code_name(code)

    def get_protocol(self) -> str | None:
        """ "TLSv1.3", "TLSv1.2", ...; "unknown" before the handshake completes."""
        if not self.handshake_complete:
            return "unknown"
        return self._conn.get_protocol_version_name()

    def get_cipher(self) -> dict[str, str] | None:
        """Node's ``{"name", "standardName", "version"}`` for the negotiated suite."""
        name = self._conn.get_cipher_name()
        if name is None:
            return None
        standard = None
        if _extended.features()["standard_cipher_name"]:
            standard = _extended.cipher_standard_name(self._ssl)
        return {
            "name": name,
            "standardName": standard or standard_name(name),
            "version": self._conn.get_cipher_version() or "unknown",
        }

    def get_ephemeral_key_info(self) -> dict[str, Any]:
        """Node's getEphemeralKeyInfo() for the key exchange (meaningful on the client).

        ``{"type": "ECDH", "name": "X25519", "size": 253}``, ``{"type": "DH", "size":
        2048}``, ``{}`` when the exchange was not ephemeral. A post-quantum hybrid group
        (X25519MLKEM768) has no peer key to measure, only a KEM ciphertext: it is
        reported as ``{"type": "KEM", "name": "X25519MLKEM768"}``.
        """
        group = self.get_group_name()
        info = None
        if _extended.features()["peer_tmp_key"]:
            info = _extended.peer_tmp_key_info(self._ssl)
        if info is None:
            return {"type": "KEM", "name": group} if group and "MLKEM" in group else {}
        kind, bits = info
        if kind == "DH":
            return {"type": "DH", "size": bits}
        name = _NODE_GROUP_NAMES.get((group or kind).lower(), group or kind)
        return {"type": "ECDH", "name": name, "size": bits}

    def set_max_send_fragment(self, size: int) -> bool:
        """Cap outgoing records at ``size`` bytes (512..16384); False outside that range."""
        _extended.require("max_send_fragment", "set_max_send_fragment")
        return _extended.set_max_send_fragment(self._ssl, size)

    @property
    def npn_protocol(self) -> str | bool:
        """The NPN result (Node's npnProtocol), False when none; ALPN wins when both."""
        if not _extended.features()["npn"] or self.alpn_protocol:
            return False
        proto = _extended.npn_negotiated(self._ssl)
        return proto.decode("ascii", "replace") if proto else False

    def get_tls_ticket(self) -> bytes | None:
        """The session ticket the server gave (TLS 1.2 or 1.3), None without one."""
        session = self.get_session()
        return None if session is None else _session_ticket(session)

    @property
    def alpn_protocol(self) -> str | bool:
        """The negotiated ALPN protocol, or False (Node's alpnProtocol)."""
        proto = self._conn.get_alpn_proto_negotiated()
        return proto.decode() if proto else False

    @property
    def session_reused(self) -> bool:
        """True when the handshake resumed a session."""
        return bool(lib.SSL_session_reused(self._ssl))

    def get_group_name(self) -> str | None:
        """The key-exchange group negotiated (X25519MLKEM768, X25519, ...)."""
        return self._conn.get_group_name()

    def get_peer_certificate(self, detailed: bool = False) -> dict[str, Any]:
        """Node's getPeerCertificate(detailed): {} when the peer sent none."""
        cert = self.get_peer_x509_certificate()
        if cert is None:
            return {}
        return certinfo.node_certificate(cert, self.get_peer_x509_chain(), detailed=detailed)

    def get_certificate(self) -> dict[str, Any]:
        """Our own certificate in Node's shape ({} without one)."""
        cert = self.get_x509_certificate()
        return {} if cert is None else certinfo.node_certificate(cert)

    def get_peer_x509_certificate(self) -> x509.Certificate | None:
        """The peer's leaf certificate as a cryptography object."""
        return self._conn.get_peer_certificate(as_cryptography=True)

    def get_peer_x509_chain(self) -> list[x509.Certificate]:
        """The peer's chain, leaf first: as verified up to our trust anchor when it
        verified (so it ends at the root, as Node's detailed certificate does),
        else as the peer sent it."""
        chain = self._conn.get_verified_chain(as_cryptography=True)
        if not chain:
            chain = self._conn.get_peer_cert_chain(as_cryptography=True)
        return list(chain or [])

    def get_x509_certificate(self) -> x509.Certificate | None:
        """Our own certificate, as a cryptography object."""
        cert = self._conn.get_certificate(as_cryptography=True)
        return cert

    def get_session(self) -> bytes | None:
        """The current session, DER-encoded, for ``session=`` on a later connection."""
        sess = lib.SSL_get_session(self._ssl)
        if sess == ffi.NULL:
            return None
        n = lib.i2d_SSL_SESSION(sess, ffi.NULL)
        if n <= 0:
            return None
        out = ffi.new("unsigned char[]", n)
        lib.i2d_SSL_SESSION(sess, ffi.new("unsigned char **", out))
        return ffi.buffer(out, n)[:]  # type: ignore[no-any-return]

    def export_keying_material(
        self, length: int, label: str | bytes, context: bytes | None = None
    ) -> bytes:
        """RFC 5705 keying material (Node's exportKeyingMaterial)."""
        if isinstance(label, str):
            label = label.encode()
        return self._conn.export_keying_material(label, length, context)

    def get_finished(self) -> bytes | None:
        """The last Finished message we sent."""
        return self._conn.get_finished()

    def get_peer_finished(self) -> bytes | None:
        """The last Finished message the peer sent."""
        return self._conn.get_peer_finished()
