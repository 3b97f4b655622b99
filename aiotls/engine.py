"""TLSEngine: one TLS connection over memory BIOs, with no I/O of its own.

Design
------
Ciphertext from the network goes in with :meth:`TLSEngine.receive_data`; bytes for the
network come out of :meth:`TLSEngine.data_to_send`; plaintext goes in with
:meth:`TLSEngine.send` and comes out of :meth:`TLSEngine.read`. It is the modern form
of Node's ``createSecurePair``, and what aiotls's asyncio transports are built on.

It holds Node's rules for accepting a peer (the chain, a server's identity, the DH
size, renegotiation limits), so whoever drives it gets the same verdicts. OpenSSL sits
below it in :mod:`aiotls._openssl`: an :class:`~aiotls._openssl.SSLConnection` owns the
``SSL*`` and its two memory BIOs, and OpenSSL's callbacks reach the engine through the
floor's ``ConnectionCallbacks`` methods (client_hello, select_certificate, verify,
select_alpn, ocsp_status, new_session, lookup_session, keylog).

States: handshaking (possibly paused, :attr:`pause_reason` a :class:`PauseReason`, until
:meth:`resume`), established (:attr:`handshake_complete`), then closing one way or both
(:attr:`close_notify_sent`, :attr:`close_notify_received`). Calls that advance the
handshake report where it stands as a value (:class:`EngineStatus`); a refusal raises.

Buffers: the engine keeps none of its own. Received ciphertext waits in OpenSSL's
incoming BIO (at most 64 KiB before the handshake completes), outgoing ciphertext in
its outgoing BIO until :meth:`data_to_send` / :meth:`take_output`, plaintext inside
OpenSSL until :meth:`read`. :meth:`compact` gives back what a handshake left in them.

Errors are :class:`~aiotls.TLSError` raised by the call that met them; a fatal alert
OpenSSL produced is still queued for :meth:`data_to_send`, and plaintext decrypted
before an error is returned first (the error waits for the next read). :meth:`close`
queues close_notify; :meth:`release` forgets the connection once it ended.
"""

from __future__ import annotations

import enum
import inspect
import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

from . import _der, certinfo
from ._openssl import SSLConnection, alpn_offsets
from ._openssl import connection as ossl
from .ciphers import standard_name
from .clienthello import ALERTS, MAX_CLIENT_HELLO, ClientHello, ClientHelloError
from .errors import TLSCertificateError, TLSError, verify_code_name

if TYPE_CHECKING:
    from cryptography import x509

    from .context import SecureContext

__all__ = ["EngineStatus", "PauseReason", "TLSEngine"]

# ClientHello extension types (IANA).
_EXT_SERVER_NAME: Final = 0
_EXT_ALPN: Final = 16
_EXT_SUPPORTED_VERSIONS: Final = 43
_MAX_RECORD: Final = 16384 + 2048
_BIO_SLACK: Final = 512  # a memory BIO that held no more than this is not worth replacing
# Ciphertext a peer may send ahead of the handshake (a paused server, say) before we refuse:
# a legitimate peer waits for our answer, so anything near this much is a flood.
_MAX_HANDSHAKE_BACKLOG: Final = 64 * 1024
# The copy of a ClientHello kept for on_client_hello: the longest OpenSSL reads, in records
# of at most 16 KiB (5-byte headers). The backlog bound above does not limit it: OpenSSL
# consumes each record as it completes, so a long hello never waits unprocessed.
_MAX_HELLO_COPY: Final = MAX_CLIENT_HELLO + 4 + 5 * (MAX_CLIENT_HELLO // 16384 + 2)
_R = TypeVar("_R")


class PauseReason(enum.StrEnum):
    """Why a handshake waits for :meth:`TLSEngine.resume` (equal to its string value)."""

    #: At the first ClientHello: on_client_hello (:attr:`TLSEngine.client_hello_pending`),
    #: then a session-store lookup or an ALPN selector to await.
    CLIENT_HELLO = "client_hello"
    #: After the ClientHello, at certificate selection: the server's SNI / OCSP hooks.
    CERTIFICATE = "certificate"
    #: Client: an async ``check_server_identity`` to await.
    SERVER_IDENTITY = "server_identity"


@dataclass(frozen=True, slots=True)
class EngineStatus:
    """What a call that advances the handshake left behind, as a value (h11 style):
    the handshake is complete, or paused (and why), or waits for more bytes."""

    handshake_complete: bool
    paused: PauseReason | None = None


_WAITING: Final = EngineStatus(False)
_COMPLETE: Final = EngineStatus(True)
_PAUSED: Final = {reason: EngineStatus(False, reason) for reason in PauseReason}


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
    :meth:`set_alpn_choice`). ``alpn_select`` (server side) answers the ALPN list
    without a pause; ``on_renegotiation`` (server side, with ``allow_renegotiation``)
    is asked at each client renegotiation and refuses it by returning an error.

    ``inspect_client_hello`` (server side) keeps a copy of the first bytes received
    until the ClientHello is read, then pauses there first ("client_hello",
    :attr:`client_hello_pending`) with the parsed :attr:`hello`, before anything
    else is decided (not again for a HelloRetryRequest's second ClientHello); answer with
    :meth:`set_context` or :meth:`refuse_client_hello`, then :meth:`resume`. A hello the
    parser refuses ends the handshake with a decode_error alert.
    """

    __slots__ = (
        "__weakref__",  # the floor reaches the engine from C callbacks by weak reference
        "_alpn_choice",
        "_choose_alpn",
        "_context",
        "_deferred",
        "_external_sessions",
        "_fault",
        "_held",
        "_hello_copy",
        "_hello_refusal",
        "_hello_seen",
        "_hello_sni",
        "_hello_state",
        "_hook_state",
        "_identity_answer",
        "_inspect_state",
        "_judge_later",
        "_judged",
        "_peer_start",
        "_refusal",
        "_rejection",
        "_renegotiating",
        "_resume_data",
        "_sent_since_take",
        "_through_peak",
        "_tls",
        "_verify_override",
        "alpn_offered",
        "alpn_select",
        "authorization_error",
        "authorized",
        "check_server_identity",
        "close_notify_received",
        "close_notify_sent",
        "handshake_complete",
        "hello",
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
        inspect_client_hello: bool = False,
        request_ocsp: bool = False,
        session: bytes | None = None,
        on_keylog: Callable[[bytes], object] | None = None,
        on_new_session: Callable[[bytes, bytes], object] | None = None,
        on_session: Callable[[bytes], object] | None = None,
        check_server_identity: Callable[[str, dict[str, Any]], object] | None = None,
        min_dh_size: int = 1024,
        alpn_select: Callable[[list[bytes]], bytes | None] | None = None,
        on_renegotiation: Callable[[], TLSError | None] | None = None,
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
        #: Server: picks the protocol from the client's ALPN list (None: none fits).
        self.alpn_select = alpn_select
        self._deferred: TLSError | None = None
        self._sent_since_take = 0  # plaintext sent since take_output(): sizes its buffer
        self._through_peak = 0  # largest chunk through a BIO since it was made: its capacity
        # None: no pause wanted; "armed": pause at the next ClientHello; "paused"; "done".
        self._hook_state: str | None = "armed" if pause_handshake else None
        # The ClientHello pause, for an external session store or an ALPN selector
        # that must be awaited (same states).
        self._hello_state: str | None = "armed" if external_sessions or choose_alpn else None
        self._external_sessions = external_sessions
        # The on_client_hello pause, before the one above (same states), the bytes
        # received until the ClientHello is read, and a refusal (alert, error) to fail with.
        self._inspect_state: str | None = "armed" if inspect_client_hello else None
        self._hello_copy: bytearray | None = bytearray() if inspect_client_hello else None
        self._hello_refusal: tuple[int, TLSError] | None = None
        #: The parsed ClientHello (with inspect_client_hello), once it has been read.
        self.hello: ClientHello | None = None
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
        # The context carries the callbacks; these two cache modes are added once per
        # context by the front doors (here only for callers that drive engines directly).
        if (
            on_session
            or on_new_session
            or on_keylog
            or external_sessions
            or choose_alpn
            or inspect_client_hello
        ):
            context._prepare(
                client_sessions=on_session is not None,
                session_store=external_sessions,
                async_alpn=choose_alpn,
                client_hello=inspect_client_hello,
                new_sessions=on_new_session is not None,
                keylog=on_keylog is not None,
            )
        #: Asked at each client renegotiation (server side); an error returned refuses it.
        self.on_renegotiation = on_renegotiation
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
        self._tls = tls = SSLConnection(context._ctx, self, server_side=server_side)
        if server_side:
            self._apply_server_verify()
            if pause_handshake or allow_renegotiation or on_new_session is not None:
                tls.enable_certificate_callback()
            if allow_renegotiation:
                tls.allow_client_renegotiation()
        else:
            # Like Node: the chain is checked in full and judged after the handshake
            # (authorized / authorization_error), so the codes match Node's.
            self._judge_later = True
            tls.set_verify(True, False)
            name = server_hostname
            tls.client_setup(name if name and not _is_ip(name) else None, request_ocsp, session)
            self.do_handshake()  # the ClientHello waits for the first data_to_send()

    def _apply_server_verify(self) -> None:
        ctx = self._context
        self._set_peer_verify(ctx.request_cert, ctx.reject_unauthorized)

    def _set_peer_verify(self, request_cert: bool, reject_unauthorized: bool) -> None:
        if request_cert:
            self._judge_later = not reject_unauthorized
        self._tls.set_verify(request_cert, reject_unauthorized)

    # -- the data path ---------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> EngineStatus:
        """Feed ciphertext from the network; advances the handshake if it is running.

        Returns where the handshake stands. Raises TLSError (ERR_TLS_HANDSHAKE_FLOOD)
        when more than 64 KiB waits unprocessed before the handshake completes, so a
        paused handshake buffers a bounded amount.
        """
        if n := len(data):
            if self._hello_copy is not None and len(self._hello_copy) < _MAX_HELLO_COPY:
                self._hello_copy += data[: _MAX_HELLO_COPY - len(self._hello_copy)]
            self._tls.feed(data, n)
            if n > self._through_peak:
                self._through_peak = n
        if self.handshake_complete:
            return _COMPLETE
        if not self.handshake_paused:
            if not self._peer_start:
                self._peer_start = bytes(data[:64])
            self.do_handshake()
        if not self.handshake_complete and self._tls.unprocessed() > _MAX_HANDSHAKE_BACKLOG:
            raise TLSError(
                f"peer sent more than {_MAX_HANDSHAKE_BACKLOG} bytes ahead of the handshake",
                code="ERR_TLS_HANDSHAKE_FLOOD",
            )
        return self.status

    @property
    def status(self) -> EngineStatus:
        """Where the handshake stands: complete, paused (and why), or waiting for bytes."""
        if self.handshake_complete and not self.handshake_paused:
            return _COMPLETE
        reason = self.pause_reason
        return _WAITING if reason is None else _PAUSED[reason]

    def data_to_send(self) -> bytes:
        """All ciphertext waiting for the network (a client's first call: ClientHello)."""
        data = self._tls.drain()
        if len(data) > self._through_peak:
            self._through_peak = len(data)
        return data

    def take_output(self) -> memoryview | None:
        """Like :meth:`data_to_send`, with one copy fewer for what :meth:`send` encrypted.

        The ciphertext is read from OpenSSL straight into a new buffer sized from
        the plaintext sent, which the caller owns (a socket transport may keep it).
        """
        hint, self._sent_since_take = self._sent_since_take, 0
        if not hint:
            data = self.data_to_send()
            return memoryview(data) if data else None
        view = self._tls.take(hint)
        if view is not None and len(view) > self._through_peak:
            self._through_peak = len(view)
        return view

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt plaintext for the peer; it comes out of :meth:`data_to_send`."""
        if not self.handshake_complete:
            raise TLSError("cannot send before the handshake completes", code="ERR_TLS_NOT_READY")
        if self.close_notify_sent:
            raise TLSError("cannot send after close_notify", code="ERR_TLS_CLOSED")
        self._sent_since_take += len(data)
        rc = self._tls.write_all(data)
        if rc <= 0:
            raise self._fail(rc)

    def read(self) -> bytes:
        """Plaintext decrypted so far (b"" if none); sets :attr:`close_notify_received`.

        A fatal error after some plaintext is deferred to the next call, so no
        decrypted byte is lost.
        """
        if not self._readable():
            return b""
        data, err, rc = self._tls.read_bytes(ossl.SCRATCH_SIZE - _MAX_RECORD)
        return self._after_read(data, len(data), err, rc)

    def read_view(self) -> memoryview:
        """Like :meth:`read` without the copy: a view that the next engine call reuses.

        For callers that copy it at once (a StreamReader's buffer does).
        """
        if not self._readable():
            return memoryview(b"")
        view, err, rc = self._tls.read_view()
        return self._after_read(view, len(view), err, rc)

    def read_into(self, buf: Any, size: int) -> int:
        """Decrypt into ``buf`` (cffi pointer or writable buffer) up to ``size`` bytes."""
        if not self._readable():
            return 0
        total, err, rc = self._tls.read_into(buf, size)
        return self._after_read(total, total, err, rc)

    def _readable(self) -> bool:
        """Before a read: raise a deferred error; False when nothing can be read."""
        if self._deferred is not None:
            exc, self._deferred = self._deferred, None
            raise exc
        return self.handshake_complete and not self.close_notify_received

    def _after_read(self, result: _R, total: int, err: int, rc: int) -> _R:
        """Act on what stopped a read (close_notify, an error) and on a renegotiation;
        an error after some plaintext waits for the next call, so no byte is lost."""
        if err == ossl.ERROR_ZERO_RETURN:
            self.close_notify_received = True
        elif err and err != ossl.ERROR_WANT_READ:
            exc = self._refusal or self._fail(rc, err)
            if not total:
                raise exc
            self._deferred = exc
        if self._renegotiating is not None and self._deferred is None:
            refusal = self._renegotiation_refusal()
            if refusal is None:
                return result
            if not total:
                raise refusal
            self._deferred = refusal
        return result

    @property
    def bloated(self) -> bool:
        """True when a BIO has held more than a few KiB, which it keeps allocated."""
        return self._through_peak > _BIO_SLACK

    def compact(self) -> None:
        """Give back the memory the handshake left in the memory BIOs (about 8 KiB).

        A memory BIO keeps the capacity of the largest flight it ever held. Call after
        :meth:`data_to_send` drained the outgoing side (the transport does so as the
        handshake completes): fresh BIOs replace the old ones, which OpenSSL frees;
        received bytes not yet decrypted move to the new incoming BIO.
        """
        if self._tls.compact():  # out of memory: the old ones stay
            self._through_peak = 0

    def raw_addresses(self) -> tuple[int, int, int]:
        """The ``SSL*`` and its incoming and outgoing ``BIO*`` as integers, for a compiled
        data path (valid until :meth:`compact` or :meth:`release`)."""
        return self._tls.addresses()

    # -- handshake -------------------------------------------------------------------

    @property
    def handshake_paused(self) -> bool:
        """True while the handshake waits for :meth:`resume` (a hook's answer)."""
        return (
            self._hook_state == "paused"
            or self._hello_state == "paused"
            or self._inspect_state == "paused"
            or self.identity_check is not None
        )

    @property
    def pause_reason(self) -> PauseReason | None:
        """Why the handshake waits (a :class:`PauseReason`, equal to its string):
        "client_hello" (session store, ALPN), "certificate" (server hooks) or
        "server_identity" (an async check_server_identity)."""
        if self._hello_state == "paused" or self._inspect_state == "paused":
            return PauseReason.CLIENT_HELLO
        if self.identity_check is not None:
            return PauseReason.SERVER_IDENTITY
        return PauseReason.CERTIFICATE if self._hook_state == "paused" else None

    def do_handshake(self) -> bool:
        """Advance the handshake with what has been received; True once complete.

        Raises TLSError when it fails, and when the handshake completed but the
        peer is refused (see the class docstring).
        """
        if self._rejection is not None:
            raise self._rejection
        rc, err = self._tls.do_handshake()
        if rc == 1:
            return self._complete_handshake()
        if err in ossl.HANDSHAKE_WAITS:
            return False
        error = self._fail(rc, err)
        raise error if self._hello_refusal is None else self._hello_refusal[1]

    def resume(self) -> bool:
        """Continue a paused handshake after the hooks ran; True once complete."""
        if self._inspect_state == "paused":
            self._inspect_state = "done"  # OpenSSL asks again: the other hooks come next
        elif self._hello_state == "paused":
            self._hello_state = "done"
        elif self._hook_state == "paused":
            self._hook_state = "done"
        return self.do_handshake()

    # -- what OpenSSL's callbacks ask (the floor's ConnectionCallbacks) -----------------

    @property
    def reports_sessions(self) -> bool:
        """Whether a hook wants each new session (server or client side)."""
        return (self.on_new_session if self.server_side else self.on_session) is not None

    def client_hello(self) -> int | tuple[int, int]:
        """The ClientHello callback: note the SNI of each ClientHello; at the first,
        pause for inspection (inspect_client_hello), then once more if the caller has
        something to look up (session id, ALPN list)."""
        tls = self._tls
        # OpenSSL's SSL_get_servername answers the session's name on a TLS 1.2
        # resumption (none unless a servername callback accepted it): keep our own.
        self._hello_sni = _hello_servername(tls.hello_extension(_EXT_SERVER_NAME))
        self._hello_seen = True
        if self._inspect_state == "armed":
            return self._inspect_hello()
        if self._hello_refusal is not None:
            return 0, self._hello_refusal[0]
        if self._hello_state != "armed":
            return 1
        if self._external_sessions and self._may_end_below_tls13():
            self.resume_session_id = tls.hello_session_id() or None
        if self._choose_alpn:
            wire = tls.hello_extension(_EXT_ALPN)  # a 2-byte length, then the list
            offered = list(alpn_offsets(wire[2:])) if wire else []
            self.alpn_offered = offered or None
        wanted = self.resume_session_id is not None or self.alpn_offered is not None
        self._hello_state = "paused" if wanted else "done"
        return -1 if wanted else 1

    def _inspect_hello(self) -> int | tuple[int, int]:
        """Parse the ClientHello OpenSSL has just read from the copy of what came in and
        pause with it; a hello the parser refuses ends the handshake (decode_error)."""
        copy, self._hello_copy = self._hello_copy or b"", None
        try:
            hello = ClientHello.from_records(bytes(copy))
            if hello is None:
                raise ClientHelloError(f"not within the first {_MAX_HELLO_COPY} bytes")
        except ClientHelloError as exc:
            self._inspect_state = "done"
            self.refuse_client_hello(ALERTS["decode_error"], exc)
            return 0, ALERTS["decode_error"]
        self.hello = hello
        self._inspect_state = "paused"
        return -1

    @property
    def client_hello_pending(self) -> bool:
        """Whether the handshake is paused for the inspection of :attr:`hello`."""
        return self._inspect_state == "paused"

    def refuse_client_hello(self, alert: int, error: TLSError) -> None:
        """End the handshake at the ClientHello with ``alert``; it raises ``error``
        (answer to :attr:`client_hello_pending`, before resume())."""
        self._hello_refusal = (alert, error)

    def _may_end_below_tls13(self) -> bool:
        """Whether this ClientHello can end on TLS 1.2 or lower, the only versions that
        resume by session id (a TLS 1.3 ClientHello's id is a compatibility id)."""
        if not _offers_tls13(self._tls.hello_extension(_EXT_SUPPORTED_VERSIONS)):
            return True
        return not self._tls.tls13_possible()

    def set_alpn_choice(self, protocol: bytes | None) -> None:
        """The answer to :attr:`alpn_offered` (before resume()); None refuses the
        handshake with the no_application_protocol alert."""
        self._alpn_choice = protocol

    def set_resume_data(self, session_der: bytes | None) -> None:
        """The external store's answer for :attr:`resume_session_id` (before resume())."""
        self._resume_data = session_der

    def lookup_session(self, session_id: bytes) -> bytes | None:
        """OpenSSL's get-session callback: the session the store gave for this id."""
        return self._resume_data if session_id == self.resume_session_id else None

    def new_session(self, session_id: bytes, session_der: bytes) -> None:
        """OpenSSL's new-session callback: hand the session to the side's hook."""
        if self.server_side and self.on_new_session is not None:
            self.on_new_session(session_id, session_der)
        elif not self.server_side and self.on_session is not None:
            self.on_session(session_der)

    @property
    def status_requested(self) -> bool:
        """Server: whether the client asked for a stapled OCSP response."""
        return self._tls.status_requested()

    def ocsp_status(self, stapled: bytes | None) -> bytes | None:
        """OpenSSL's status callback: the response to staple (server), or the one
        stapled (client, kept as :attr:`ocsp_response`)."""
        if self.server_side:
            return self.ocsp_response
        self.ocsp_response = stapled
        return None

    def keylog(self, line: bytes) -> None:
        """OpenSSL's key-log callback: to the hook, if any."""
        if self.on_keylog is not None:
            self.on_keylog(line)

    def verify(self, preverify_ok: bool, code: int, cert: Any) -> bool:
        """OpenSSL's verify callback: note the certificate a verify error concerns (for
        its message), then go on (the chain is judged after the handshake, as Node) or
        let OpenSSL refuse."""
        if not preverify_ok and cert is not None:
            self._fault = (code, cert)
        return self._judge_later or preverify_ok

    def select_certificate(self) -> int:
        """The certificate callback's answer: 1 go on, -1 pause for hooks, 0 refuse."""
        if self.on_new_session is not None:
            self._tls.name_ticket_session()
        if self.handshake_complete:  # a client-initiated renegotiation
            if self.on_renegotiation is not None:
                self._refusal = self.on_renegotiation()
            return 0 if self._refusal is not None else 1
        if self._hook_state == "armed":
            self._hook_state = "paused"
            return -1
        return 1

    def _complete_handshake(self) -> bool:
        """OpenSSL is done: judge the peer. A client's last flight (its Finished) leaves
        only once the server is accepted, so a refused server never sees the handshake
        complete (Node has no alert to send either)."""
        self._peer_start = b""  # it speaks TLS: nothing to name (64 bytes fewer per connection)
        if self.server_side:
            refusal = self._authorize()
        else:
            self._held += self.data_to_send()
            refusal = self._authorize()
            if self.identity_check is not None:
                return False  # paused until finish_identity_check() and resume()
            held, self._held = self._held, b""
            if held and refusal is None:
                self._tls.requeue(held)
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
        code = self._tls.verify_result()
        return None if code == 0 else self._certificate_error(code)

    def _certificate_error(self, code: int) -> TLSCertificateError:
        """Node's message for a verify error, with the code, the certificate at fault
        (subject and issuer) and what to do about it."""
        text = SSLConnection.verify_error_string(code)
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
        tls13 = self.get_protocol() == "TLSv1.3"
        if tls13 and not (self.server_side and request_cert):
            raise TLSError(
                "TLS 1.3 has no renegotiation; only a server may request a client"
                " certificate after the handshake (request_cert=True)",
                code="ERR_TLS_RENEGOTIATION_UNSUPPORTED",
            )
        # Every handshake (and TLS 1.3 post-handshake auth) ends with a new peer
        # Finished: its change is how completion shows, without an info callback.
        finished = self.get_peer_finished()
        started = self._tls.start_renegotiation(tls13, fresh_session=self.server_side)
        if started is None:  # e.g. a TLS 1.3 client that did not offer post-handshake auth
            raise self._fail(0, ossl.ERROR_SSL)
        self._renegotiating = finished
        rc, err = started
        if rc != 1 and err != ossl.ERROR_WANT_READ:
            raise self._fail(rc, err)

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
            self._tls.refuse_renegotiation()
        self.on_renegotiation = lambda: TLSError(
            "TLS session renegotiation disabled for this socket",
            code="ERR_TLS_RENEGOTIATION_DISABLED",
        )

    def select_alpn(self, offered: list[bytes]) -> bytes | Literal[False] | None:
        """OpenSSL's ALPN callback (server): the answer given at the ClientHello pause,
        the selector's, or the first of the context's list the client offers (Node's
        rule); False when this server has no ALPN (the extension is ignored)."""
        if not (self._choose_alpn or self.alpn_select is not None or self._context._alpn_list):
            return False
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
        self._tls.set_context(context._ctx)
        self._context = context
        self._apply_server_verify()

    @property
    def context(self) -> SecureContext:
        """The SecureContext in use (after SNI, the one the hook chose)."""
        return self._context

    def data_path_error(self, err: int, reasons: Sequence[str]) -> TLSError:
        """The error for a fatal failure a DataPath reported (SSL_get_error's code and the
        reasons of the error queue it drained): a renegotiation refusal first, as in read()."""
        return self._refusal or self._fail(0, err, reasons)

    def _fail(self, rc: int, err: int | None = None, drained: Sequence[str] = ()) -> TLSError:
        """Build the error for a failed OpenSSL call; its alert stays queued to send.
        ``drained``: reasons already taken off the error queue (by a DataPath)."""
        err, queued, verify = self._tls.failure(rc, err)
        reasons = [*drained, *queued]
        if verify != 0 and "certificate verify failed" in reasons:
            return self._certificate_error(verify)
        if err == ossl.ERROR_SYSCALL and not reasons:
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
            self._tls.shutdown()

    def release(self) -> None:
        """Forget the connection after it ended, cleanly or not.

        OpenSSL evicts a session from the server cache when a connection is freed
        without a shutdown; like nginx we mark the shutdown done so TLS 1.2 session
        resumption survives peer resets and EOFs without close_notify.
        """
        self._tls.release(self.handshake_complete)

    # -- what was negotiated ---------------------------------------------------------

    @property
    def servername(self) -> str | None:
        """The SNI name: sent (client) or received (server)."""
        if not self.server_side:
            return self.server_hostname
        if self._hello_seen:
            return self._hello_sni
        return self._tls.servername()

    @property
    def verify_error(self) -> str | None:
        """OpenSSL's verify error name for the peer's chain, or None if it verified."""
        code = self._tls.verify_result()
        return None if code == 0 else verify_code_name(code)

    def get_protocol(self) -> str | None:
        """ "TLSv1.3", "TLSv1.2", ...; "unknown" before the handshake completes."""
        if not self.handshake_complete:
            return "unknown"
        return self._tls.protocol_name()

    def get_cipher(self) -> dict[str, str] | None:
        """Node's ``{"name", "standardName", "version"}`` for the negotiated suite."""
        cipher = self._tls.cipher()
        if cipher is None:
            return None
        name, standard, version, _ = cipher
        return {"name": name, "standardName": standard or standard_name(name), "version": version}

    def stdlib_cipher(self) -> tuple[str, str, int] | None:
        """The ``ssl`` module's ``cipher()``: (OpenSSL name, version, secret bits)."""
        cipher = self._tls.cipher()
        return None if cipher is None else (cipher[0], cipher[2], cipher[3])

    def get_ephemeral_key_info(self) -> dict[str, Any]:
        """Node's getEphemeralKeyInfo() for the key exchange (meaningful on the client).

        ``{"type": "ECDH", "name": "X25519", "size": 253}``, ``{"type": "DH", "size":
        2048}``, ``{}`` when the exchange was not ephemeral. A post-quantum hybrid group
        (X25519MLKEM768) has no peer key to measure, only a KEM ciphertext: it is
        reported as ``{"type": "KEM", "name": "X25519MLKEM768"}``.
        """
        group = self.get_group_name()
        info = self._tls.peer_tmp_key()
        if info is None:
            return {"type": "KEM", "name": group} if group and "MLKEM" in group else {}
        kind, bits = info
        if kind == "DH":
            return {"type": "DH", "size": bits}
        name = _NODE_GROUP_NAMES.get((group or kind).lower(), group or kind)
        return {"type": "ECDH", "name": name, "size": bits}

    def set_max_send_fragment(self, size: int) -> bool:
        """Cap outgoing records at ``size`` bytes (512..16384); False outside that range."""
        return self._tls.set_max_send_fragment(size)

    @property
    def npn_protocol(self) -> str | bool:
        """The NPN result (Node's npnProtocol), False when none; ALPN wins when both."""
        if self.alpn_protocol:
            return False
        proto = self._tls.npn_protocol()
        return proto.decode("ascii", "replace") if proto else False

    def get_tls_ticket(self) -> bytes | None:
        """The session ticket the server gave (TLS 1.2 or 1.3), None without one."""
        session = self.get_session()
        return None if session is None else _session_ticket(session)

    @property
    def alpn_protocol(self) -> str | bool:
        """The negotiated ALPN protocol, or False (Node's alpnProtocol)."""
        proto = self._tls.alpn_protocol()
        return proto.decode() if proto else False

    @property
    def session_reused(self) -> bool:
        """True when the handshake resumed a session."""
        return self._tls.session_reused()

    def get_group_name(self) -> str | None:
        """The key-exchange group negotiated (X25519MLKEM768, X25519, ...)."""
        return self._tls.group_name()

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
        return self._tls.peer_certificate()

    def get_peer_x509_chain(self) -> list[x509.Certificate]:
        """The peer's chain, leaf first: as verified up to our trust anchor when it
        verified (so it ends at the root, as Node's detailed certificate does),
        else as the peer sent it."""
        return self._tls.peer_chain()

    def get_x509_certificate(self) -> x509.Certificate | None:
        """Our own certificate, as a cryptography object."""
        return self._tls.certificate()

    def get_session(self) -> bytes | None:
        """The current session, DER-encoded, for ``session=`` on a later connection."""
        return self._tls.session()

    def export_keying_material(
        self, length: int, label: str | bytes, context: bytes | None = None
    ) -> bytes:
        """RFC 5705 keying material (Node's exportKeyingMaterial)."""
        if isinstance(label, str):
            label = label.encode()
        return self._tls.export_keying_material(label, length, context)

    def get_finished(self) -> bytes | None:
        """The last Finished message we sent."""
        return self._tls.finished()

    def get_peer_finished(self) -> bytes | None:
        """The last Finished message the peer sent."""
        return self._tls.peer_finished()
